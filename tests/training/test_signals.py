"""Checkpoint-on-signal: SIGUSR1 sent to a child process that trains a tiny model writes the
checkpoint inside the epoch and exits with status 75, and a resume ends with the weights of an
uninterrupted run; SIGTERM under SLURM requeues the job; handlers only where they belong; resuming
inside an epoch in both trainers (in-process) equals the uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

from delira.training.callbacks import Callback
from delira.training.trainer_base import (
    INTERRUPTED_EXIT_CODE,
    TrainingInterrupted,
    slurm_requeue_id,
)

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="needs POSIX signals")

BACKENDS = [pytest.param("torch", marks=pytest.mark.torch), pytest.param("tf", marks=pytest.mark.tf)]

CHILD = textwrap.dedent(
    """
    import json, os, sys, time
    import numpy as np
    import torch

    torch.set_num_threads(1)
    from delira.data import DataLoader
    from delira.models.torch import UNet
    from delira.training import PyTorchNetworkTrainer
    from delira.training.callbacks import Callback, ModelEMA
    from delira.training.losses import make_loss
    from delira.training.schedules import LinearWarmup

    save_dir, mode, marker = sys.argv[1], sys.argv[2], sys.argv[3]


    class WaitForSignal(Callback):
        # in epoch 1, after iteration 1: tell the parent, then wait until its signal arrived
        def on_iteration_end(self, trainer, iteration, logs):
            if mode == "wait" and trainer.epoch == 1 and iteration == 1:
                with open(marker, "w") as fh:
                    fh.write(str(os.getpid()))
                deadline = time.monotonic() + 60
                while trainer.interrupt_signal is None and time.monotonic() < deadline:
                    time.sleep(0.01)


    rng = np.random.default_rng(0)
    cases = []
    for _ in range(10):
        data = rng.normal(size=(1, 8, 8)).astype(np.float32)
        cases.append({"data": data, "seg": (data > 0).astype(np.int16)})
    torch.manual_seed(0)
    net = UNet(spatial_dims=2, num_classes=2, features=(4, 8))
    trainer = PyTorchNetworkTrainer(
        net,
        {"ce": make_loss("ce", "torch")},
        optimizer="sgd",
        lr=0.1,
        scheduler="onecycle",
        callbacks=[LinearWarmup(1), ModelEMA(0.8), WaitForSignal()],
        save_dir=save_dir,
        verbose=False,
    )
    train = DataLoader(cases, batch_size=2, shuffle=True, seed=3)
    val = DataLoader(cases[:4], batch_size=2)
    history = trainer.fit(train, val, epochs=3, resume_from="last" if mode == "resume" else None)
    np.savez(os.path.join(save_dir, "final.npz"), **{k: v.numpy() for k, v in net.state_dict().items()})
    with open(os.path.join(save_dir, "history.json"), "w") as fh:
        json.dump(history, fh)
    """
)


def run_child(tmp_path, save_dir, mode, send=None, env=None):
    """Run the child script; with ``send`` deliver that signal once it waits for it. Returns the
    exit status and the output."""
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    marker = tmp_path / f"marker-{save_dir.name}-{mode}"
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    for key in ("SLURM_JOB_ID", "SUBMITIT_EXECUTOR", "SUBMITIT_FOLDER"):
        if env is None or key not in env:
            full_env.pop(key, None)
    process = subprocess.Popen(
        [sys.executable, str(script), str(save_dir), mode, str(marker)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=full_env,
    )
    if send is not None:
        deadline = time.monotonic() + 120
        while not marker.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.exists(), process.communicate()[0].decode()[-3000:]
        os.kill(process.pid, send)
    output = process.communicate(timeout=300)[0].decode()
    return process.returncode, output


@pytest.mark.torch
def test_sigusr1_checkpoints_exits_and_resumes_to_the_same_weights(tmp_path):
    pytest.importorskip("torch")
    from delira.io import read_checkpoint_info

    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    straight.mkdir()
    interrupted.mkdir()
    code, output = run_child(tmp_path, straight, "plain")
    assert code == 0, output[-3000:]

    code, output = run_child(tmp_path, interrupted, "wait", send=signal.SIGUSR1)
    assert code == INTERRUPTED_EXIT_CODE, output[-3000:]
    assert "SIGUSR1" in output and "last.safetensors" in output
    info = read_checkpoint_info(interrupted / "checkpoints" / "last.safetensors")
    assert info.epoch == 1  # one finished epoch ...
    position = info.extra["trainer"]["position"]
    assert position["epoch"] == 1 and position["iteration"] == 2  # ... and 2 batches of the second
    assert position["loss_count"] == 2 and len(info.extra["history"]) == 1
    assert not (interrupted / "final.npz").exists()

    code, output = run_child(tmp_path, interrupted, "resume")
    assert code == 0, output[-3000:]
    a, b = np.load(straight / "final.npz"), np.load(interrupted / "final.npz")
    assert sorted(a.files) == sorted(b.files)
    for key in a.files:
        np.testing.assert_array_equal(b[key], a[key], err_msg=key)
    assert json.loads((interrupted / "history.json").read_text()) == json.loads(
        (straight / "history.json").read_text()
    )


@pytest.mark.torch
def test_sigterm_under_slurm_requeues_the_job(tmp_path):
    pytest.importorskip("torch")
    bin_dir, log = tmp_path / "bin", tmp_path / "scontrol.log"
    bin_dir.mkdir()
    fake = bin_dir / "scontrol"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {log}\n')
    fake.chmod(0o755)
    save_dir = tmp_path / "run"
    save_dir.mkdir()
    env = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "SLURM_JOB_ID": "4242",
        "SLURM_JOB_NAME": "train",
    }
    code, output = run_child(tmp_path, save_dir, "wait", send=signal.SIGTERM, env=env)
    assert code == INTERRUPTED_EXIT_CODE, output[-3000:]
    assert log.read_text().split() == ["requeue", "4242"]
    assert "requeued" in output


def test_requeue_id_by_hand():
    assert slurm_requeue_id({}) is None
    assert slurm_requeue_id({"SLURM_JOB_ID": "17", "SLURM_JOB_NAME": "train"}) == "17"
    array = {"SLURM_JOB_ID": "18", "SLURM_ARRAY_JOB_ID": "10", "SLURM_ARRAY_TASK_ID": "3"}
    assert slurm_requeue_id(array) == "10_3"
    assert slurm_requeue_id({"SLURM_JOB_ID": "17", "SUBMITIT_EXECUTOR": "slurm"}) is None  # submitit's job
    assert slurm_requeue_id({"SLURM_JOB_ID": "17", "SLURM_JOB_NAME": "bash"}) is None  # an salloc shell
    error = TrainingInterrupted(signal.SIGTERM, "x/last.safetensors", False)
    assert isinstance(error, SystemExit) and error.code == INTERRUPTED_EXIT_CODE == 75
    assert "SIGTERM" in str(error)


# --- in-process ----------------------------------------------------------------------------------------
def cases(n, size=8, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        data = rng.normal(size=(1, size, size)).astype(np.float32)
        out.append({"data": data, "seg": (data > 0).astype(np.int16)})
    return out


def make_trainer(backend, seed=0, **kwargs):
    from delira.training.losses import make_loss

    kwargs.setdefault("verbose", False)
    if backend == "torch":
        torch = pytest.importorskip("torch")
        from delira.models.torch import UNet
        from delira.training import PyTorchNetworkTrainer

        torch.manual_seed(seed)
        net = UNet(spatial_dims=2, num_classes=2, features=(4, 8))
        return PyTorchNetworkTrainer(net, {"ce": make_loss("ce", "torch")}, **kwargs)
    keras = pytest.importorskip("keras")
    from delira.models.tf import UNet
    from delira.training import TfNetworkTrainer

    keras.utils.set_random_seed(seed)
    net = UNet(spatial_dims=2, num_classes=2, features=(4, 8))
    net(np.zeros((1, 1, 8, 8), np.float32))
    return TfNetworkTrainer(net, {"ce": make_loss("ce", "tf")}, **kwargs)


def weights(trainer):
    if trainer.framework == "torch":
        return [v.numpy().copy() for v in trainer.network.state_dict().values()]
    return [np.array(v.numpy()) for v in trainer.network.weights]


class Signal(Callback):
    """Deliver ``signum`` to the trainer's installed handler after iteration ``at`` of ``epoch``
    (what the interpreter does when the signal arrives), and count the iterations trained."""

    def __init__(self, epoch, at, signum=signal.SIGUSR1):
        self.epoch, self.at, self.signum, self.iterations = epoch, at, signum, []

    def on_iteration_end(self, trainer, iteration, logs):
        self.iterations.append((trainer.epoch, iteration))
        if (trainer.epoch, iteration) == (self.epoch, self.at):
            signal.getsignal(self.signum)(self.signum, None)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("at", "accumulate", "expected"), [(0, 1, 1), (2, 1, 3), (0, 2, 2)])
def test_resume_inside_the_epoch_equals_the_uninterrupted_run(backend, tmp_path, at, accumulate, expected):
    """Signal after iteration ``at`` of epoch 1 (3 iterations): the checkpoint is taken after the
    next optimizer step (``expected`` batches trained; 3: at the epoch's end), the resume trains
    the rest."""
    from delira.data import DataLoader
    from delira.io import read_checkpoint_info

    def loaders():
        return DataLoader(cases(6), batch_size=2, shuffle=True, seed=4), DataLoader(
            cases(2, seed=1), batch_size=2
        )

    kwargs = dict(optimizer="sgd", lr=0.1, scheduler="onecycle", grad_accumulation=accumulate)
    straight = make_trainer(backend, **kwargs)
    h_straight = straight.fit(*loaders(), epochs=3)

    sig = Signal(1, at)
    first = make_trainer(backend, save_dir=tmp_path, callbacks=[sig], **kwargs)
    with pytest.raises(TrainingInterrupted) as info:
        first.fit(*loaders(), epochs=3)
    assert info.value.code == INTERRUPTED_EXIT_CODE and info.value.signal == signal.SIGUSR1
    assert not info.value.requeued
    position = read_checkpoint_info(tmp_path / "checkpoints" / "last.safetensors").extra["trainer"][
        "position"
    ]
    assert position["iteration"] == expected
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL  # restored after fit

    resumed_sig = Signal(-1, -1)
    resumed = make_trainer(backend, seed=5, save_dir=tmp_path, callbacks=[resumed_sig], **kwargs)
    h_resumed = resumed.fit(*loaders(), epochs=3, resume_from="last")
    assert resumed_sig.iterations[0] == (1, expected) if expected < 3 else resumed_sig.iterations[0] == (2, 0)
    assert h_resumed == h_straight
    for a, b in zip(weights(resumed), weights(straight)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.torch
def test_another_loader_restarts_the_epoch(tmp_path):
    """A loader that is not a delira DataLoader cannot skip batches: the resume trains the
    interrupted epoch from its first batch, on the weights of the interrupt."""
    from delira.data import DataLoader

    batches = list(DataLoader(cases(6), batch_size=2))  # a plain list of 3 batches
    first = make_trainer("torch", save_dir=tmp_path, callbacks=[Signal(1, 0)])
    with pytest.raises(TrainingInterrupted):
        first.fit(batches, epochs=3)
    sig = Signal(-1, -1)
    resumed = make_trainer("torch", save_dir=tmp_path, callbacks=[sig])
    history = resumed.fit(batches, epochs=3, resume_from="last")
    assert sig.iterations == [(1, 0), (1, 1), (1, 2), (2, 0), (2, 1), (2, 2)]
    assert [h["epoch"] for h in history] == [0, 1, 2]


class Handlers(Callback):
    """The handlers of SIGUSR1 and SIGTERM while fit runs."""

    def on_train_begin(self, trainer):
        self.seen = {s: signal.getsignal(s) for s in (signal.SIGUSR1, signal.SIGTERM)}


@pytest.mark.torch
def test_handlers_only_with_save_dir_in_the_main_thread(tmp_path, monkeypatch):
    from delira.data import DataLoader

    loader = DataLoader(cases(2), batch_size=2)
    before = {s: signal.getsignal(s) for s in (signal.SIGUSR1, signal.SIGTERM)}

    seen = Handlers()
    trainer = make_trainer("torch", save_dir=tmp_path / "a", callbacks=[seen])
    trainer.fit(loader, epochs=1)
    assert seen.seen == {signal.SIGUSR1: trainer._on_signal, signal.SIGTERM: trainer._on_signal}
    assert {s: signal.getsignal(s) for s in before} == before

    seen = Handlers()
    make_trainer("torch", callbacks=[seen]).fit(loader, epochs=1)  # no save_dir: nothing to write
    assert seen.seen == before

    seen = Handlers()
    thread = threading.Thread(
        target=lambda: make_trainer("torch", save_dir=tmp_path / "b", callbacks=[seen]).fit(loader, epochs=1)
    )
    thread.start()
    thread.join()
    assert seen.seen == before  # signal handlers belong to the main thread

    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    monkeypatch.setenv("SLURM_JOB_ID", "99")
    seen = Handlers()
    trainer = make_trainer("torch", save_dir=tmp_path / "c", callbacks=[seen, Signal(0, 0)])
    with pytest.raises(TrainingInterrupted) as info:
        trainer.fit(loader, epochs=2)
    assert seen.seen[signal.SIGTERM] == before[signal.SIGTERM]  # submitit keeps SIGTERM
    assert seen.seen[signal.SIGUSR1] == trainer._on_signal
    assert not info.value.requeued  # submitit requeues its own jobs
