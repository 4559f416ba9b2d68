"""``delira sweep``: Optuna trials as experiment folders, per-epoch pruning on the validation metric,
a study that a rerun continues, and the results read back through Optuna's own storage."""

from __future__ import annotations

import csv
import json
import math

import pytest

from delira.training.config import ConfigError
from delira.training.sweep import Param, parse_param, sweep

optuna = pytest.importorskip("optuna")


@pytest.fixture
def TINY(tiny_config):
    """The tiny experiment without augmentation (the pruning test compares learning curves)."""
    return tiny_config(data={"transforms": "none"})


pytest.importorskip("torch", reason="the sweep trials train PyTorch networks")


def test_parameters_are_parsed_and_bad_ones_explained():
    assert parse_param("training.lr=log:1e-4:1e-2") == Param("training.lr", "log", 1e-4, 1e-2)
    assert parse_param("training.batch_size=int:2:4") == Param("training.batch_size", "int", 2, 4)
    assert parse_param("model.args.features=choice:[4,8]|[8,16]").choices == ([4, 8], [8, 16])
    for bad, why in [
        ("training.lr", "KEY=log:LOW:HIGH"),
        ("training.lr=uniform:1:2", "KEY=log:LOW:HIGH"),
        ("training.lr=log:0:1", "LOW > 0"),
        ("training.lr=float:2:1", "below HIGH"),
        ("training.batch_size=int:1.5:3", "whole numbers"),
        ("training.lr=float:a:b", "must be numbers"),
        ("training.lr=choice:1", "at least two"),
    ]:
        with pytest.raises(ConfigError, match=why):
            parse_param(bad)


def test_keys_and_ranges_are_checked_against_the_config_before_any_trial(tmp_path, TINY):
    with pytest.raises(ConfigError, match="trainig"):
        sweep(TINY, ["trainig.lr=log:1e-4:1e-2"], trials=1, run_dir=tmp_path / "s", verbose=False)
    with pytest.raises(ConfigError, match=r"training\.epochs"):
        sweep(TINY, ["training.epochs=int:-3:2"], trials=1, run_dir=tmp_path / "s", verbose=False)
    assert not list((tmp_path / "s").glob("trial_*")), "no trial may start on a bad search space"


def _read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_trials_are_experiments_and_a_rerun_continues_the_study(tmp_path, TINY):
    folder = tmp_path / "sweep"
    params = ["training.lr=log:1e-3:1e-1", "model.args.features=choice:[4,8]|[8,16]"]
    result = sweep(TINY, params, trials=2, run_dir=folder, pruner="none", verbose=False)
    assert len(result["trials"]) == 2
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{folder / 'optuna.db'}")
    for trial in study.trials:
        assert trial.state == optuna.trial.TrialState.COMPLETE
        assert 1e-3 <= trial.params["training.lr"] <= 1e-1
        run_dir = folder / f"trial_{trial.number:03d}"
        summary = json.loads((run_dir / "summary.json").read_text())
        assert trial.value == pytest.approx(summary["mean"]["dice_mean"])  # the objective is the fold mean
        saved = (run_dir / "config.yaml").read_text()
        assert f"lr: {trial.params['training.lr']}" in saved or repr(trial.params["training.lr"])[:6] in saved
        # the per-epoch reports are the validation Dice of each fold's epochs, steps fold * epochs + epoch
        want = {}
        for fold in (0, 1):
            rows = _read_csv(run_dir / f"fold_{fold}" / "metrics.csv")
            for row in rows:
                want[fold * 2 + int(row["epoch"])] = float(row["val_dice"])
        assert trial.intermediate_values == pytest.approx(want)
    rows = _read_csv(folder / "trials.csv")
    assert [r["state"] for r in rows] == ["complete", "complete"]
    best = json.loads((folder / "sweep.json").read_text())["best"]
    values = [t.value for t in study.trials]
    assert best["value"] == max(values) and best["number"] == values.index(max(values))
    assert (folder / "trials.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    again = sweep(TINY, params, trials=3, run_dir=folder, pruner="none", verbose=False)
    assert len(again["trials"]) == 3, "the rerun adds only the missing trial"
    assert sorted(p.name for p in folder.glob("trial_*")) == ["trial_000", "trial_001", "trial_002"]


def test_a_trial_below_the_median_is_pruned_during_training(tmp_path, TINY):
    """MedianPruner: after one complete trial, a trial whose validation Dice at a step (after the
    first) is below the completed trials' median there is stopped at that step. A learning rate of
    1e-9 cannot learn, so its Dice stays where the untrained network starts while the baseline's rises."""
    folder = tmp_path / "sweep"
    config = json.loads(json.dumps(TINY))
    config["training"]["epochs"] = 4
    result = sweep(
        config,
        ["training.lr=log:1e-9:1e-1"],
        trials=2,
        run_dir=folder,
        initial=[{"training.lr": 0.05}, {"training.lr": 1e-9}],
        verbose=False,
    )
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{folder / 'optuna.db'}")
    baseline, slow = study.trials
    assert baseline.params["training.lr"] == 0.05 and slow.params["training.lr"] == 1e-9
    reference = baseline.intermediate_values
    below = sorted(s for s, v in slow.intermediate_values.items() if s >= 1 and v < reference[s])
    assert below, (
        f"the setup must put the slow trial below the baseline: {slow.intermediate_values} vs {reference}"
    )
    assert [r["state"] for r in result["trials"]] == ["complete", "pruned"]
    assert max(slow.intermediate_values) == below[0], "training stops at the first step below the median"
    assert not (folder / "trial_001" / "summary.json").exists()
    assert not math.isnan(baseline.value)
