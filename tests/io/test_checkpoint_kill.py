"""A process killed (SIGKILL) in the middle of a save leaves the previous checkpoint loadable."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import pytest

torch = pytest.importorskip("torch")
pytestmark = [
    pytest.mark.torch,
    pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL (POSIX)"),
]

# ~34 MB of float32 weights: large enough that a save takes a while, small enough to stay quick.
IN_FEATURES, OUT_FEATURES = 2048, 4096

CHILD = textwrap.dedent(
    f"""
    import sys, time
    import torch
    from delira.io import save_checkpoint

    model = torch.nn.Linear({IN_FEATURES}, {OUT_FEATURES})
    epoch = int(sys.argv[2])
    while True:
        with torch.no_grad():  # every weight of checkpoint n equals n
            model.weight.fill_(float(epoch))
            model.bias.fill_(float(epoch))
        print("start", epoch, flush=True)
        t0 = time.perf_counter()
        save_checkpoint(sys.argv[1], model, epoch=epoch, metrics={{"value": float(epoch)}})
        print("done", epoch, time.perf_counter() - t0, flush=True)
        epoch += 1
    """
)


def _next_line(process: subprocess.Popen, deadline: float) -> str:
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if line:
            return line.strip()
        if process.poll() is not None:
            raise AssertionError(f"the saving process died early: {process.stderr.read()}")
    raise AssertionError("the saving process did not report in time")


def _save_and_kill(script, path, first_epoch: int, rng: random.Random) -> int:
    """Run the saver, SIGKILL it at a random moment of a save; returns the last finished epoch."""
    process = subprocess.Popen(
        [sys.executable, str(script), str(path), str(first_epoch)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    done = -1
    try:
        deadline = time.monotonic() + 120
        duration = None
        while True:
            words = _next_line(process, deadline).split()
            if words[0] == "done":
                done, duration = int(words[1]), float(words[2])
            elif words[0] == "start" and duration is not None:
                break  # a checkpoint exists and the next save has just begun
        time.sleep(rng.uniform(0.0, duration))
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        for line in process.stdout.read().splitlines():  # saves that finished before the kill
            if line.startswith("done"):
                done = int(line.split()[1])
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()
        process.stderr.close()
    assert process.returncode == -signal.SIGKILL
    return done


def test_sigkill_during_save_keeps_the_previous_checkpoint(tmp_path):
    from delira.io import load_checkpoint

    script = tmp_path / "saver.py"
    script.write_text(CHILD)
    path = tmp_path / "ckpt.safetensors"
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    for first_epoch in (0, 1000):  # two kills: each lands inside the write most of the time
        done = _save_and_kill(script, path, first_epoch, rng)
        model = torch.nn.Linear(IN_FEATURES, OUT_FEATURES)
        info = load_checkpoint(path, model)
        # the last completed save, or the one in flight if its rename happened before the kill
        assert info.epoch in (done, done + 1), f"seed {seed}: loaded epoch {info.epoch}, last done {done}"
        assert torch.all(model.weight == info.epoch) and torch.all(model.bias == info.epoch), f"seed {seed}"
        assert info.metrics == {"value": float(info.epoch)}
    # a kill before the rename may leave a hidden temporary file, nothing else
    leftovers = [name for name in os.listdir(tmp_path) if name not in ("saver.py", "ckpt.safetensors")]
    assert all(name.startswith(".ckpt.safetensors.") and name.endswith(".tmp") for name in leftovers), (
        leftovers
    )
