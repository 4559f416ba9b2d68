"""The `delira` command line: info, run (config, --set, --fold, --resume), aggregate and errors."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest
import yaml

from delira.training.cli import main

TINY = {
    "name": "tiny-cli",
    "model": {
        "name": "unet",
        "args": {"spatial_dims": 3, "in_channels": 1, "num_classes": 3, "features": [4, 8]},
    },
    "data": {"phantom": {"num_cases": 4, "shape": [16, 16, 16], "num_classes": 3}, "transforms": "none"},
    "training": {"epochs": 1, "batch_size": 2},
    "experiment": {"folds": 2},
}


def test_info_lists_versions_backends_and_the_augment_build(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    for name in (
        "delira-augment",
        "delira-data",
        "delira-io",
        "delira-models",
        "delira-training",
        "torch",
        "tensorflow",
    ):
        assert name in out
    assert "augment." in out


def test_the_module_runs_as_the_delira_command():
    done = subprocess.run(
        [sys.executable, "-m", "delira.training.cli", "--help"], capture_output=True, text=True
    )
    assert done.returncode == 0
    for command in ("run", "aggregate", "predict", "info"):
        assert command in done.stdout


def test_an_invalid_config_exits_2_with_the_problems(tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text("training:\n  epoch: 3\n")
    assert main(["run", str(config)]) == 2
    err = capsys.readouterr().err
    assert "training.epoch: unknown key; did you mean 'epochs'?" in err
    assert main(["run", "--set", "trainng.epochs=3"]) == 2
    assert "did you mean 'training'?" in capsys.readouterr().err
    assert main(["run", "--resume", str(tmp_path)]) == 2
    assert "has no config.yaml" in capsys.readouterr().err


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="the run trains a PyTorch network")
def test_run_one_fold_at_a_time_then_resume_and_aggregate(tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    run_dir = tmp_path / "run"
    assert (
        main(["run", str(config), "--run-dir", str(run_dir), "--fold", "0", "--set", "training.lr=0.02"]) == 0
    )
    assert (run_dir / "fold_0" / "result.json").exists() and not (run_dir / "fold_1").exists()
    assert not (run_dir / "summary.json").exists()
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["training"]["lr"] == 0.02 and saved["training"]["epochs"] == 1  # the resolved config
    assert main(["aggregate", str(run_dir)]) == 1  # fold 1 is missing
    assert "folds not finished yet: [1]" in capsys.readouterr().out
    assert main(["run", "--resume", str(run_dir)]) == 0  # runs what is missing, with the saved config
    out = capsys.readouterr().out
    assert "fold_0: finished earlier, skipped" in out
    summary = json.loads((run_dir / "summary.json").read_text())
    assert [f["fold"] for f in summary["folds"]] == [0, 1] and summary["missing"] == []
