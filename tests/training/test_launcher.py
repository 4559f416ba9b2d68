"""Fold launchers: parallel local processes and submitit jobs (its local executor: the same code
path as on SLURM, without a cluster) give the sequential run's per-fold figures; a fold job killed
or pre-empted mid-training resumes from its last checkpoint."""

from __future__ import annotations

import json
import math
import os
import signal
import time
from pathlib import Path

import pytest

from delira.training.config import ConfigError
from delira.training.experiment import Experiment
from delira.training.launcher import launch, local_slots

pytest.importorskip("torch", reason="the launcher tests train PyTorch networks")


@pytest.fixture(scope="session")
def _config(tiny_config):
    """``make(epochs)``: the tiny experiment, one CPU core per submitit job."""
    return lambda epochs=2: tiny_config(training={"epochs": epochs}, launcher={"cpus_per_fold": 1})


def _fold_figures(run_dir: Path) -> list[dict]:
    summary = json.loads((run_dir / "summary.json").read_text())
    return summary["folds"]


def _same(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for fa, fb in zip(a, b):
        assert fa.keys() == fb.keys()
        for key in fa:
            va, vb = fa[key], fb[key]
            if isinstance(va, float) and math.isnan(va):
                assert isinstance(vb, float) and math.isnan(vb), key
            else:
                assert va == pytest.approx(vb, rel=1e-6, abs=1e-9), key


@pytest.fixture(scope="module")
def sequential(tmp_path_factory, _config):
    """The reference: every fold in this process, one after the other."""
    figures = {}
    for epochs in (2, 6):
        run_dir = tmp_path_factory.mktemp(f"seq{epochs}") / "run"
        Experiment(_config(epochs), run_dir=run_dir, verbose=False).kfold()
        figures[epochs] = _fold_figures(run_dir)
    return figures


def test_local_processes_give_the_sequential_figures(tmp_path, sequential, _config):
    experiment = Experiment(_config(), run_dir=tmp_path / "run", verbose=False)
    report = launch(experiment, "local", jobs=2)
    assert report.folds == [0, 1] and len(report.job_ids) == 2 and not report.failed
    assert report.summary is not None and not report.summary["missing"]
    _same(_fold_figures(tmp_path / "run"), sequential[2])
    for k in (0, 1):  # each fold process wrote its own log
        assert "fold" in (tmp_path / "run" / f"fold_{k}" / "launcher.log").read_text()
    again = launch(Experiment(_config(), run_dir=tmp_path / "run", verbose=False), "local", jobs=2)
    assert again.folds == [] and again.job_ids == [] and again.summary is not None  # nothing left to run


def test_a_failing_fold_process_is_reported_with_its_log(tmp_path, _config):
    experiment = Experiment(_config(), run_dir=tmp_path / "run", verbose=False)
    experiment.prepare()
    (tmp_path / "run" / "config.yaml").write_text("model: {name: 3}\n")  # broken under the fold jobs
    with pytest.raises(RuntimeError) as info:
        launch(experiment, "local", jobs=2)
    message = str(info.value)
    assert "fold 0: exit code" in message and "fold 1: exit code" in message
    assert "launcher.log" in message and "Run the same command again" in message


def _wait_for(path: Path, timeout: float = 120.0) -> None:
    end = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < end, f"{path} did not appear within {timeout} s"
        time.sleep(0.05)


def _epochs_done(fold_dir: Path) -> int:
    from delira.io import read_checkpoint_info

    return read_checkpoint_info(fold_dir / "checkpoints" / "last.safetensors").epoch


def test_submitit_job_killed_mid_training_resumes_on_the_rerun(tmp_path, sequential, _config):
    pytest.importorskip("submitit")
    run_dir = tmp_path / "run"
    config = _config(6)
    config["launcher"].update(name="submitit", cluster="local")
    report = launch(Experiment(config, run_dir=run_dir, verbose=False), wait=False)
    assert report.folds == [0, 1] and len(report.jobs) == 2
    fold0 = run_dir / "fold_0"
    _wait_for(fold0 / "checkpoints" / "last.safetensors")
    report.jobs[0].cancel()  # SIGINT to the fold's process, mid-training
    with pytest.raises(Exception):  # noqa: B017 - submitit's own failure type for a cancelled job
        report.jobs[0].result()
    report.jobs[1].result()
    assert not (fold0 / "result.json").exists(), "the cancelled fold must not count as finished"
    stopped_after = _epochs_done(fold0)
    assert 1 <= stopped_after < 6

    rerun = launch(Experiment(config, run_dir=run_dir, verbose=False))
    assert rerun.folds == [0], "only the unfinished fold runs again"
    assert rerun.summary is not None
    _same(_fold_figures(run_dir), sequential[6])
    log = "".join(p.read_text() for p in (run_dir / "jobs").rglob("*_log.out"))
    assert f"resuming after epoch {stopped_after}" in log


def test_a_preempted_submitit_job_requeues_and_resumes(tmp_path, sequential, _config):
    pytest.importorskip("submitit")
    run_dir = tmp_path / "run"
    config = _config(6)
    config["launcher"].update(name="submitit", cluster="local", max_requeues=2)
    report = launch(Experiment(config, run_dir=run_dir, verbose=False), wait=False)
    _wait_for(run_dir / "fold_1" / "checkpoints" / "last.safetensors")
    # the signal SLURM sends a task before pre-empting it or at its time limit (submitit's USR2),
    # sent to the fold's task process under submitit's local job controller
    (task,) = _children(report.jobs[1]._process.pid)
    os.kill(task, signal.SIGUSR2)
    for job in report.jobs:
        job.result()  # the requeued job finishes
    log = "".join(p.read_text() for p in (run_dir / "jobs").rglob("*_log.*"))
    assert "Requeued job" in log, "submitit must requeue the fold job"
    assert "resuming after epoch" in log, "the requeued job must resume, not start over"
    final = launch(Experiment(config, run_dir=run_dir, verbose=False))
    assert final.folds == [] and final.summary is not None
    _same(_fold_figures(run_dir), sequential[6])


def _children(pid: int) -> list[int]:
    end = time.monotonic() + 30
    while time.monotonic() < end:
        found = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        if found:
            return [int(c) for c in found]
        time.sleep(0.05)
    raise AssertionError(f"the job controller {pid} started no task")


def test_launcher_inputs_are_checked(tmp_path, monkeypatch, _config):
    experiment = Experiment(_config(), run_dir=tmp_path / "run", verbose=False)
    with pytest.raises(ConfigError, match="unknown"):
        launch(experiment, "slurm-by-hand")
    with pytest.raises(ConfigError, match="at least 1"):
        launch(experiment, "local", jobs=0)
    with pytest.raises(ConfigError, match=r"launcher\.name"):
        Experiment({**_config(), "launcher": {"name": "ray"}}, run_dir=tmp_path / "other")
    slots = local_slots(experiment.config, jobs=2)
    assert [s["device"] for s in slots] == ["cpu", "cpu"]
    gpu = json.loads(json.dumps(experiment.config))
    gpu["training"]["device"] = "cuda"
    import delira.training.launcher as launcher

    monkeypatch.setattr(launcher, "_gpu_count", lambda config: 3)
    assert [s["device"] for s in local_slots(gpu)] == ["cuda:0", "cuda:1", "cuda:2"]
    with pytest.raises(ConfigError, match="only 3 GPU"):
        local_slots(gpu, jobs=4)
    monkeypatch.setattr(launcher, "_gpu_count", lambda config: 0)
    with pytest.raises(ConfigError, match="no GPU is visible"):
        local_slots(gpu)
    import builtins

    real_import = builtins.__import__

    def no_submitit(name, *args, **kwargs):
        if name == "submitit":
            raise ImportError("No module named 'submitit'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_submitit)
    with pytest.raises(ConfigError, match=r"delira-training\[cluster\]"):
        launch(Experiment(_config(), run_dir=tmp_path / "third", verbose=False), "submitit")
    assert not (tmp_path / "third").exists(), "nothing is written before the launcher is known to work"
