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
from collections import Counter
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


# --- the other tasks and the splits of the config ------------------------------------------------
_GAN = {
    "name": "tiny-gan",
    "task": "gan",
    "model": {
        "name": "dcgan",
        "args": {
            "spatial_dims": 2,
            "channels": 1,
            "image_size": 16,
            "latent_dim": 8,
            "generator_features": 8,
            "discriminator_features": 8,
        },
    },
    "data": {
        "phantom": {"num_cases": 8, "shape": [16, 16], "num_classes": 3, "seed": 0},
        "transforms": "mirror",
    },
    "training": {"epochs": 2, "batch_size": 4, "lr": 0.0002},
    "experiment": {"folds": 1, "seed": 0},
}


def test_a_gan_run_reports_its_last_losses_and_writes_sample_grids(tmp_path):
    run_dir = tmp_path / "gan"
    summary = Experiment(_GAN, run_dir=run_dir, verbose=False).kfold()
    fold = run_dir / "fold_0"
    history = _read_csv(fold / "metrics.csv")
    result = json.loads((fold / "result.json").read_text())
    last = history[-1]
    assert result["metrics"] == pytest.approx(
        {k: float(v) for k, v in last.items() if k.startswith("train_")}
    )
    assert result["best_epoch"] == int(min(history, key=lambda r: float(r["train_loss"]))["epoch"])
    assert (
        not (fold / "cases.csv").exists() and summary["mean"]["train_loss"] == result["metrics"]["train_loss"]
    )
    pngs = sorted(p.name for p in (fold / "samples").iterdir())
    assert pngs == ["samples_epoch_001.png", "samples_epoch_002.png"]
    # 16 samples of 16 x 16 in a 4 x 4 grid with 2-pixel borders: 4 * 18 + 2 = 74 pixels a side
    head = (fold / "samples" / pngs[0]).read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and int.from_bytes(head[16:20], "big") == 74
    splits = json.loads((run_dir / "splits.json").read_text())
    assert splits["kind"] == "train_val" and len(splits["folds"][0]["val"]) == 2  # round(8 * 0.2)


def test_a_classification_kfold_reports_the_accuracy_of_its_cases(tmp_path):
    config = {
        "name": "tiny-cls",
        "task": "classification",
        "model": {
            "name": "resnet18",
            "args": {"spatial_dims": 3, "in_channels": 1, "num_classes": 3, "width": 4},
        },
        "data": {
            "phantom": {"num_cases": 6, "shape": [16, 16, 16], "num_classes": 3, "seed": 0},
            "transforms": "none",
        },
        "training": {"epochs": 1, "batch_size": 2, "lr": 0.001},
        "experiment": {"folds": 2, "seed": 0, "stratify_key": "label"},
    }
    run_dir = tmp_path / "cls"
    summary = Experiment(config, run_dir=run_dir, verbose=False).kfold()
    splits = json.loads((run_dir / "splits.json").read_text())
    accuracies = []
    for k in range(2):
        rows = _read_csv(run_dir / f"fold_{k}" / "cases.csv")
        assert sorted(r["case_id"] for r in rows) == sorted(splits["folds"][k]["val"])
        # phantom case i has label i % 3
        assert all(int(r["label"]) == int(r["case_id"].split("_")[1]) % 3 for r in rows)
        accuracies.append(np.mean([r["label"] == r["predicted"] for r in rows]))
        result = json.loads((run_dir / f"fold_{k}" / "result.json").read_text())
        assert result["metrics"]["accuracy"] == pytest.approx(accuracies[-1])
    assert summary["mean"]["accuracy"] == pytest.approx(np.mean(accuracies))


class _Cases:
    """A dataset of plain sample dicts (no training; only the splitting reads it)."""

    def __init__(self, n):
        self.case_ids = [f"c{i:02d}" for i in range(n)]

    def __len__(self):
        return len(self.case_ids)

    def __getitem__(self, i):
        return {"case_id": self.case_ids[i], "label": i % 2 if i < 12 else 2, "patient": f"p{i // 3}"}


def test_one_fold_splits_are_stratified_and_grouped_too(tmp_path):
    data = _Cases(20)  # labels: 6 x 0, 6 x 1, 8 x 2; patients of 3 cases
    label_of = {data[i]["case_id"]: data[i]["label"] for i in range(20)}
    patient_of = {data[i]["case_id"]: data[i]["patient"] for i in range(20)}
    strat = Experiment(_config(), run_dir=tmp_path / "a", verbose=False).splits(
        data, 1, stratify_key="label", val_fraction=0.5, seed=3
    )
    fold = strat[0]
    assert strat.kind == "train_val" and strat.params["stratified"] is True
    assert Counter(label_of[c] for c in fold.val) == {0: 3, 1: 3, 2: 4}  # half of each class
    grouped = Experiment(_config(), run_dir=tmp_path / "b", verbose=False).splits(
        data, 1, group_key="patient", val_fraction=0.3, seed=3
    )
    fold = grouped[0]
    assert not {patient_of[c] for c in fold.train} & {patient_of[c] for c in fold.val}
    assert sorted(fold.train + fold.val) == sorted(data.case_ids)
    # k-fold with a hold-out: no patient on two sides of any fold
    held = Experiment(_config(), run_dir=tmp_path / "c", verbose=False).splits(
        data, 3, group_key="patient", val_fraction=0.25, seed=1
    )
    for fold in held:
        parts = [{patient_of[c] for c in part} for part in (fold.train, fold.val, fold.test)]
        assert fold.val and not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    # the splits are saved and read back as they are
    again = Experiment(_config(), run_dir=tmp_path / "c", verbose=False).splits(data, 3, seed=99)
    assert again.folds == held.folds
