"""The Experiment with the TensorFlow/Keras backend: the same folder, the same summary rules."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

pytest.importorskip("tensorflow", reason="the TensorFlow backend needs tensorflow")

from delira.training.experiment import Experiment

CONFIG = {
    "name": "tiny-tf",
    "backend": "tf",
    "model": {
        "name": "unet",
        "args": {"spatial_dims": 3, "in_channels": 1, "num_classes": 3, "features": [4, 8]},
    },
    "data": {
        "phantom": {"num_cases": 6, "shape": [16, 16, 16], "num_classes": 3, "seed": 1},
        "transforms": "mirror",
    },
    "training": {"epochs": 2, "batch_size": 2, "lr": 0.01, "device": "/CPU:0"},
    "experiment": {"folds": 2, "seed": 0},
    "prediction": {"mirror": False},  # fold figures then equal the trainer's validation Dice
}


def test_tf_kfold_end_to_end(tmp_path):
    run_dir = tmp_path / "run"
    summary = Experiment(CONFIG, run_dir=run_dir, verbose=False).kfold()
    per_fold = []
    for k in range(2):
        fold = run_dir / f"fold_{k}"
        for name in (
            "checkpoints/best.safetensors",
            "checkpoints/last.safetensors",
            "metrics.csv",
            "result.json",
        ):
            assert (fold / name).exists(), name
        with (fold / "cases.csv").open(newline="") as fh:
            rows = list(csv.DictReader(fh))
        per_fold.append(np.nanmean([float(r["dice_class_1"]) for r in rows]))
        result = json.loads((fold / "result.json").read_text())
        with (fold / "metrics.csv").open(newline="") as fh:
            history = list(csv.DictReader(fh))
        best = max(history, key=lambda r: float(r["val_dice"]))
        assert result["metrics"]["dice_mean"] == pytest.approx(float(best["val_dice"]), abs=1e-4)
    assert summary["mean"]["dice_class_1"] == pytest.approx(np.mean(per_fold), abs=1e-12)
    assert summary["std"]["dice_class_1"] == pytest.approx(np.std(per_fold), abs=1e-12)

    # the fold ensemble (Keras models rebuilt from the folder) on held-out phantoms
    from delira.data import SyntheticPhantomDataset

    held_out = SyntheticPhantomDataset(num_cases=2, shape=(16, 16, 16), num_classes=3, seed=42)
    out = Experiment(CONFIG, run_dir=run_dir, verbose=False).test(held_out)
    assert out["folds"] == 2 and [c["case_id"] for c in out["cases"]] == held_out.case_ids
    assert out["metrics"]["dice_class_2"] == pytest.approx(
        np.nanmean([c["dice_class_2"] for c in out["cases"]])
    )
