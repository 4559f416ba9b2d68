"""``logging.mlflow`` / ``logging.wandb`` in an Experiment: one MLflow run per experiment with a
nested run per fold (params, per-epoch metrics equal to metrics.csv, the fold's files as artifacts,
the summary on the parent), continued when a fold resumes; W&B runs offline in the run folder.
Everything is read back through mlflow's own client; nothing reaches the network."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from delira.training.experiment import Experiment

pytest.importorskip("torch", reason="the Experiment tests train PyTorch networks")


pytestmark = pytest.mark.usefixtures("offline_tracking")


def _config(make, store, **logging):
    config = make()
    config["logging"] = {
        "mlflow": {"enabled": True, "tracking_uri": str(store), "experiment": "tracked"},
        **logging,
    }
    return config


def _csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_folds_are_nested_mlflow_runs_with_their_metrics_and_files(tmp_path, tiny_config):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    store, run_dir = tmp_path / "mlruns", tmp_path / "run"
    summary = Experiment(_config(tiny_config, store), run_dir=run_dir, verbose=False).kfold()
    client = MlflowClient(tracking_uri=f"sqlite:///{store / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("tracked")
    runs = client.search_runs([experiment.experiment_id])
    parent_id = json.loads((run_dir / "mlflow.json").read_text())["run_id"]
    parent = client.get_run(parent_id)
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent_id]
    assert len(runs) == 3 and len(children) == 2
    assert parent.info.status == "FINISHED" and all(c.info.status == "FINISHED" for c in children)
    assert parent.data.params["training.lr"] == "0.01" and parent.data.params["model.name"] == "unet"
    assert parent.data.metrics["mean_dice_mean"] == pytest.approx(summary["mean"]["dice_mean"])
    for child in children:
        fold = int(child.data.tags["fold"])
        fold_dir = run_dir / f"fold_{fold}"
        assert json.loads((fold_dir / "mlflow.json").read_text())["run_id"] == child.info.run_id
        rows = _csv(fold_dir / "metrics.csv")
        history = client.get_metric_history(child.info.run_id, "val_dice")
        assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == [
            (int(r["epoch"]), pytest.approx(float(r["val_dice"]))) for r in rows
        ]
        out = tmp_path / f"download_{fold}"
        out.mkdir()
        local = client.download_artifacts(child.info.run_id, "", str(out))
        names = {p.relative_to(local).as_posix() for p in Path(local).rglob("*") if p.is_file()}
        assert {"checkpoints/best.safetensors", "metrics.csv", "result.json"} <= names
        for name in ("checkpoints/best.safetensors", "result.json"):
            assert (Path(local) / name).read_bytes() == (fold_dir / name).read_bytes()
    parent_files = tmp_path / "download_parent"
    parent_files.mkdir()
    local = client.download_artifacts(parent_id, "summary.json", str(parent_files))
    assert open(local, "rb").read() == (run_dir / "summary.json").read_bytes()


def test_a_resumed_fold_continues_its_mlflow_run(tmp_path, tiny_config):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    store, run_dir = tmp_path / "mlruns", tmp_path / "run"
    config = _config(tiny_config, store)
    Experiment(config, run_dir=run_dir, verbose=False).kfold(folds=[0])
    first = json.loads((run_dir / "fold_0" / "mlflow.json").read_text())["run_id"]
    # the fold's result is lost (a crash after training): it trains again from its last checkpoint
    (run_dir / "fold_0" / "result.json").unlink()
    Experiment(config, run_dir=run_dir, verbose=False).kfold()
    client = MlflowClient(tracking_uri=f"sqlite:///{store / 'mlflow.db'}")
    assert json.loads((run_dir / "fold_0" / "mlflow.json").read_text())["run_id"] == first
    steps = [m.step for m in client.get_metric_history(first, "train_loss")]
    assert sorted(steps) == [0, 1], "each epoch once, in the one run of the fold"
    runs = client.search_runs([client.get_experiment_by_name("tracked").experiment_id])
    assert len(runs) == 3


def test_wandb_fold_runs_stay_offline_in_the_run_folder(tmp_path, tiny_config):
    wandb = pytest.importorskip("wandb")
    run_dir = tmp_path / "run"
    config = tiny_config()
    config["logging"] = {"wandb": {"enabled": True, "project": "tracked", "offline": True}}
    try:
        Experiment(config, run_dir=run_dir, verbose=False).kfold()
    finally:
        wandb.teardown()
    offline = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline) == 2, "one offline run per fold"
    for folder in offline:
        assert list(folder.glob("*.wandb")) and next(folder.glob("*.wandb")).stat().st_size > 0
