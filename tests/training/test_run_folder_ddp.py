"""The default run folder of a torch job of several processes: the same on every rank, derived from
the job's id (SLURM, torchrun), refused with the fix when the variables were set by hand."""

from __future__ import annotations

import pytest

from delira.training import Experiment
from delira.training.config import ConfigError
from delira.training.experiment import _shared_stamp

TORCHRUN = {"WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}
SLURM = {"SLURM_NTASKS": "2", "SLURM_JOB_NODELIST": "node01", "SLURM_JOB_NAME": "train"}


def _env(base, rank, **extra):
    rank_keys = (
        {"RANK": str(rank), "LOCAL_RANK": str(rank)}
        if "WORLD_SIZE" in base
        else {
            "SLURM_PROCID": str(rank),
            "SLURM_LOCALID": str(rank),
        }
    )
    return {**base, **rank_keys, **extra}


def test_one_process_keeps_the_time_stamp():
    assert _shared_stamp("20261204-051500", {}) == "20261204-051500"


@pytest.mark.parametrize(
    ("base", "extra", "expected"),
    [
        (TORCHRUN, {"TORCHELASTIC_RUN_ID": "5f2c"}, "torchrun-5f2c"),
        (SLURM, {"SLURM_JOB_ID": "812"}, "slurm812"),
        (
            SLURM,
            {"SLURM_JOB_ID": "813", "SLURM_ARRAY_JOB_ID": "800", "SLURM_ARRAY_TASK_ID": "3"},
            "slurm800_3",
        ),
        (  # torchrun inside an srun task: the SLURM job names it
            TORCHRUN,
            {"TORCHELASTIC_RUN_ID": "5f2c", "SLURM_JOB_ID": "812"},
            "slurm812",
        ),
    ],
)
def test_every_rank_derives_the_same_name_from_the_job(base, extra, expected):
    # the ranks' clocks differ (here by an hour): the name does not depend on them
    names = {_shared_stamp(f"20261204-0{5 + rank}1500", _env(base, rank, **extra)) for rank in range(2)}
    assert names == {expected}


def test_variables_set_by_hand_need_a_run_folder():
    for env in (_env(TORCHRUN, 1), _env(TORCHRUN, 0, TORCHELASTIC_RUN_ID="none")):
        with pytest.raises(ConfigError, match=r"rank \d of 2 \(torchrun variables\).*pass --run-dir DIR"):
            _shared_stamp("20261204-051500", env)


def test_experiment_ranks_share_the_default_folder(monkeypatch, tiny_config, tmp_path):
    config = tiny_config(experiment={"output": str(tmp_path)})
    folders = []
    for rank in range(2):
        for key, value in _env(TORCHRUN, rank, TORCHELASTIC_RUN_ID="ab12").items():
            monkeypatch.setenv(key, value)
        folders.append(Experiment(config, verbose=False).run_dir)
    assert folders[0] == folders[1] == tmp_path / f"{config['name']}-torchrun-ab12"
    monkeypatch.delenv("TORCHELASTIC_RUN_ID")
    with pytest.raises(ConfigError, match="pass --run-dir"):
        Experiment(config, verbose=False)
    assert Experiment(config, run_dir=tmp_path / "given", verbose=False).run_dir == tmp_path / "given"
