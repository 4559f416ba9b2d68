"""Experiment end to end on tiny phantoms: k-fold folders and summaries, folds run apart, run/test,
resume after a killed process, and both backends."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from delira.training.experiment import Experiment, aggregate

pytest.importorskip("torch", reason="the Experiment tests train PyTorch networks")

TINY = {
    "name": "tiny",
    "model": {
        "name": "unet",
        "args": {"spatial_dims": 3, "in_channels": 1, "num_classes": 3, "features": [4, 8]},
    },
    "data": {
        "phantom": {"num_cases": 6, "shape": [16, 16, 16], "num_classes": 3, "seed": 1},
        "transforms": "mirror",
    },
    "training": {"epochs": 2, "batch_size": 2, "lr": 0.01},
    "experiment": {"folds": 2, "seed": 0},
    # the fold figures without test-time mirroring equal the trainer's own validation Dice
    "prediction": {"mirror": False},
}


def _config(**sections):
    out = json.loads(json.dumps(TINY))
    for section, values in sections.items():
        if isinstance(values, dict):
            out.setdefault(section, {}).update(values)
        else:
            out[section] = values
    return out


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def kfold_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("kfold") / "run"
    experiment = Experiment(_config(), run_dir=run_dir, verbose=False)
    summary = experiment.kfold()
    return run_dir, summary


def test_kfold_writes_the_experiment_folder(kfold_run):
    run_dir, _ = kfold_run
    assert (run_dir / "config.yaml").exists() and (run_dir / "splits.json").exists()
    splits = json.loads((run_dir / "splits.json").read_text())
    folds = splits["folds"]
    assert len(folds) == 2
    # the validation folds partition the cases; each fold trains on the others
    val = [c for f in folds for c in f["val"]]
    assert sorted(val) == [f"phantom_{i:04d}" for i in range(6)]
    for f in folds:
        assert sorted(f["train"] + f["val"]) == sorted(val)
    for k in range(2):
        fold = run_dir / f"fold_{k}"
        for name in (
            "checkpoints/best.safetensors",
            "checkpoints/last.safetensors",
            "metrics.csv",
            "curves.png",
        ):
            assert (fold / name).exists(), name
        assert any((fold / "tensorboard").iterdir())
        result = json.loads((fold / "result.json").read_text())
        assert result["fold"] == k and result["epochs"] == 2
        cases = _read_csv(fold / "cases.csv")
        assert sorted(r["case_id"] for r in cases) == sorted(folds[k]["val"])


def test_summary_is_the_mean_and_std_of_the_per_fold_files(kfold_run):
    run_dir, summary = kfold_run
    # per-fold figures recomputed from the per-case CSV files (independent of result.json)
    per_fold = []
    for k in range(2):
        rows = _read_csv(run_dir / f"fold_{k}" / "cases.csv")
        per_fold.append(
            {key: np.nanmean([float(r[key]) for r in rows]) for key in ("dice_class_1", "dice_class_2")}
        )
    for key in ("dice_class_1", "dice_class_2"):
        values = np.array([f[key] for f in per_fold])
        assert summary["mean"][key] == pytest.approx(values.mean(), abs=1e-12)
        assert summary["std"][key] == pytest.approx(values.std(), abs=1e-12)
    on_disk = json.loads((run_dir / "summary.json").read_text())
    # undefined figures (HD95 of a class one side never predicts) are NaN on both sides
    assert on_disk["mean"] == pytest.approx(summary["mean"], nan_ok=True) and on_disk["missing"] == []
    table = {r["fold"]: r for r in _read_csv(run_dir / "summary.csv")}
    assert set(table) == {"0", "1", "mean", "std"}
    for key in summary["mean"]:
        column = np.array([float(table[str(k)][key]) for k in range(2)])
        assert float(table["mean"][key]) == pytest.approx(np.nanmean(column), abs=1e-12, nan_ok=True)
        assert float(table["std"][key]) == pytest.approx(np.nanstd(column), abs=1e-12, nan_ok=True)


def test_fold_figures_match_the_best_epoch_of_the_trainer(kfold_run):
    # The fold's Dice is measured again on whole volumes after loading the best checkpoint; with
    # validation batches of one whole case the trainer's val_dice of the best epoch is the same number.
    run_dir, _ = kfold_run
    for k in range(2):
        result = json.loads((run_dir / f"fold_{k}" / "result.json").read_text())
        history = _read_csv(run_dir / f"fold_{k}" / "metrics.csv")
        best = max(history, key=lambda r: float(r["val_dice"]))
        assert int(best["epoch"]) == result["best_epoch"]
        assert result["metrics"]["dice_mean"] == pytest.approx(float(best["val_dice"]), abs=1e-5)


def test_a_finished_experiment_is_not_rerun(kfold_run):
    run_dir, summary = kfold_run
    stamps = {p: p.stat().st_mtime_ns for p in run_dir.glob("fold_*/**/*") if p.is_file()}
    again = Experiment(_config(), run_dir=run_dir, verbose=False).kfold()
    assert again["mean"] == pytest.approx(summary["mean"], nan_ok=True)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


def test_resuming_with_another_config_is_refused(kfold_run):
    run_dir, _ = kfold_run
    with pytest.raises(ValueError, match=r"another configuration \(differences: training\.epochs: 2 -> 3\)"):
        Experiment(_config(training={"epochs": 3}), run_dir=run_dir)


def test_folds_run_apart_then_aggregate(tmp_path, capsys):
    run_dir = tmp_path / "run"
    # two "machines": each runs one fold into the same folder
    assert Experiment(_config(), run_dir=run_dir, verbose=False).kfold(folds=[1]) is None
    with pytest.raises(FileNotFoundError):
        aggregate(tmp_path / "elsewhere")
    partial = aggregate(run_dir, quiet=True)
    assert partial["missing"] == [0] and [f["fold"] for f in partial["folds"]] == [1]
    Experiment(_config(), run_dir=run_dir, verbose=False).kfold(folds=[0])
    from delira.training.cli import main

    assert main(["aggregate", str(run_dir)]) == 0
    printed = capsys.readouterr().out
    assert "mean" in printed and "std" in printed and "dice_mean" in printed
    summary = json.loads((run_dir / "summary.json").read_text())
    dice = [
        json.loads((run_dir / f"fold_{k}" / "result.json").read_text())["metrics"]["dice_mean"]
        for k in (0, 1)
    ]
    assert summary["mean"]["dice_mean"] == pytest.approx(np.mean(dice))
    assert summary["std"]["dice_mean"] == pytest.approx(np.std(dice))


def test_run_and_test_with_the_fold_ensemble(kfold_run, tmp_path):
    from delira.data import Subset, SyntheticPhantomDataset

    data = SyntheticPhantomDataset(num_cases=6, shape=(16, 16, 16), num_classes=3, seed=1)
    exp = Experiment(_config(), run_dir=tmp_path / "single", verbose=False)
    result = exp.run(Subset(data, [0, 1, 2, 3]), Subset(data, [4, 5]))
    assert (tmp_path / "single" / "run" / "checkpoints" / "best.safetensors").exists()
    assert 0.0 <= result["metrics"]["dice_mean"] <= 1.0

    run_dir, _ = kfold_run
    held_out = SyntheticPhantomDataset(num_cases=2, shape=(16, 16, 16), num_classes=3, seed=99)
    out = Experiment(_config(), run_dir=run_dir, verbose=False).test(held_out)
    assert out["folds"] == 2 and len(out["cases"]) == 2
    # the reported mean is the mean of the per-case figures
    assert out["metrics"]["dice_class_1"] == pytest.approx(
        np.nanmean([c["dice_class_1"] for c in out["cases"]])
    )
    assert json.loads((run_dir / "test.json").read_text())["metrics"] == pytest.approx(out["metrics"])


def test_val_fraction_reports_on_held_out_fold(tmp_path):
    run_dir = tmp_path / "run"
    exp = Experiment(
        _config(experiment={"val_fraction": 0.25}, training={"epochs": 1}), run_dir=run_dir, verbose=False
    )
    exp.kfold()
    folds = json.loads((run_dir / "splits.json").read_text())["folds"]
    for k, fold in enumerate(folds):
        assert fold["test"] and not set(fold["test"]) & set(fold["train"] + fold["val"])
        cases = _read_csv(run_dir / f"fold_{k}" / "cases.csv")
        assert sorted(r["case_id"] for r in cases) == sorted(fold["test"])


_RESUME_SCRIPT = """
import sys
from delira.training.experiment import Experiment
Experiment(sys.argv[1], run_dir=sys.argv[2], verbose=True).kfold()
"""


def test_resume_after_the_process_is_killed_mid_fold(tmp_path):
    import yaml

    from delira.io import read_checkpoint_info

    epochs = 40
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(_config(training={"epochs": epochs}, data={"transforms": "none"})))
    run_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", _RESUME_SCRIPT, str(config_path), str(run_dir)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    last = run_dir / "fold_1" / "checkpoints" / "last.safetensors"
    deadline = time.monotonic() + 240
    try:
        while not last.exists():  # kill it in the middle of the second fold
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "the second fold never started"
            time.sleep(0.02)
        time.sleep(0.3)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not (run_dir / "fold_1" / "result.json").exists(), "the second fold finished before the kill"
    finished = run_dir / "fold_0" / "result.json"
    before = (finished.read_bytes(), finished.stat().st_mtime_ns)
    # nothing left corrupted: every checkpoint and JSON file there reads back
    for path in run_dir.rglob("*.safetensors"):
        read_checkpoint_info(path)
    for path in run_dir.rglob("*.json"):
        json.loads(path.read_text())
    stopped_after = read_checkpoint_info(last).epoch
    assert 1 <= stopped_after < epochs

    lines = []
    exp = Experiment(config_path, run_dir=run_dir, verbose=False)
    exp._log = lines.append
    summary = exp.kfold()
    assert "fold_0: finished earlier, skipped" in lines
    assert f"fold_1: resuming after epoch {stopped_after}" in lines
    assert (finished.read_bytes(), finished.stat().st_mtime_ns) == before  # not rerun
    history = read_checkpoint_info(last).extra["history"]
    assert [int(h["epoch"]) for h in history] == list(range(epochs))  # each epoch exactly once
    assert json.loads((run_dir / "fold_1" / "result.json").read_text())["epochs"] == epochs
    assert summary is not None and summary["missing"] == []


def test_initial_weights_depend_only_on_the_seed_and_fold(tmp_path):
    import torch

    def weights(seed, fold):
        exp = Experiment(_config(experiment={"seed": seed}), run_dir=tmp_path / "w", verbose=False)
        torch.manual_seed(int(time.time_ns() % 2**31))  # whatever the global state was before
        return [p.detach().clone() for p in exp._trainer(None, fold).network.parameters()]

    first, again = weights(0, 1), weights(0, 1)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not all(torch.equal(a, b) for a, b in zip(first, weights(0, 2)))
