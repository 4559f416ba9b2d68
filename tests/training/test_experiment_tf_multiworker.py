"""``delira run`` with ``backend: tf`` on 2 workers (TensorFlow's ``MultiWorkerMirroredStrategy``),
started as two plain processes with torchrun's variables (``RANK``, ``WORLD_SIZE``, ...) and with
SLURM's (what ``srun -n 2`` would set), on the CPU: both exit 0, the run folder is written once (by
rank 0), both workers end every fold with the weights of rank 0's ``last.safetensors``, and a batch
size that the workers cannot split fails before training with the value to set."""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.tf

#: the line every worker prints to stderr after each fold (delira.training.experiment)
DIGEST_LINE = re.compile(
    r"delira: fold (\d+) worker (\d+) of (\d+) \((\d+) replicas\): weights sha256 ([0-9a-f]{64})"
)


def _config(tiny_config, tmp_path: Path, **training) -> Path:
    import yaml

    cfg = tiny_config(
        backend="tf",
        data={**tiny_config()["data"], "transforms": "none"},  # no augmentation preview to draw
        training={"epochs": 1, "device": "/CPU:0", "workers": 0, **training},
        experiment={"folds": 2, "seed": 0, "output": str(tmp_path / "out")},
    )
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _free_ports() -> int:
    """A port ``p`` with ``p``, ``p + 1`` and ``p + 2`` free: the TF workers on this host listen at
    ``p + local rank`` (SLURM) or ``p + 1 + local rank`` (torchrun, whose store has ``p``)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port + 2 > 65535:
            continue
        sockets = [socket.socket() for _ in range(3)]
        try:
            for k, sock in enumerate(sockets):
                sock.bind(("127.0.0.1", port + k))
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
        return port
    pytest.skip("no three consecutive free ports for the TensorFlow workers")


def _clean_env() -> dict[str, str]:
    """The test's environment without any launcher's variables, one thread, no GPU."""
    drop = {"RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "NODE_RANK"}
    drop |= {"MASTER_ADDR", "MASTER_PORT", "TF_CONFIG"}
    env = {
        k: v for k, v in os.environ.items() if k not in drop and not k.startswith(("SLURM_", "TORCHELASTIC"))
    }
    env.update(
        OMP_NUM_THREADS="1",
        TF_NUM_INTRAOP_THREADS="1",
        TF_NUM_INTEROP_THREADS="1",
        CUDA_VISIBLE_DEVICES="",
        TF_CPP_MIN_LOG_LEVEL="3",
    )
    return env


def _torchrun_env(rank: int, port: int) -> dict[str, str]:
    return {
        "RANK": str(rank),
        "WORLD_SIZE": "2",
        "LOCAL_RANK": str(rank),
        "LOCAL_WORLD_SIZE": "2",
        "MASTER_ADDR": "localhost",
        "MASTER_PORT": str(port),
    }


def _slurm_env(rank: int, port: int) -> dict[str, str]:
    return {
        "SLURM_PROCID": str(rank),
        "SLURM_NTASKS": "2",
        "SLURM_LOCALID": str(rank),
        "SLURM_NODEID": "0",
        "SLURM_JOB_NODELIST": "localhost",
        "SLURM_TASKS_PER_NODE": "2",
        "SLURM_JOB_ID": "4343",
        "SLURM_JOB_NAME": "delira-tf-run",
        "MASTER_PORT": str(port),
    }


def _run_workers(
    tmp_path: Path, variables, args: list[str], hold_master_port: bool = False
) -> list[tuple[int, str, str]]:
    """Start ``python -m delira.training.cli run ARGS`` as ranks 0 and 1 (``variables(rank, port)``
    set) in ``tmp_path``; ``[(returncode, stdout, stderr)]`` per rank. ``hold_master_port``: a
    socket listens on ``MASTER_PORT`` meanwhile, as torchrun's rendezvous store does."""
    port = _free_ports()
    store = socket.socket()
    if hold_master_port:
        store.bind(("", port))  # all interfaces, as torch's TCPStore
        store.listen()
    with store:
        return _communicate(tmp_path, variables, args, port)


def _communicate(tmp_path: Path, variables, args: list[str], port: int) -> list[tuple[int, str, str]]:
    """Run the two workers, output to files; 30 s after a worker failed the other is stopped (it
    may wait for the failed one in a collective), and both after 300 s."""
    logs = [(tmp_path / f"rank{r}.out", tmp_path / f"rank{r}.err") for r in range(2)]
    procs = []
    for rank, (out, err) in enumerate(logs):
        with out.open("w") as fo, err.open("w") as fe:
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "delira.training.cli", "run", *args],
                    cwd=tmp_path,
                    env={**_clean_env(), **variables(rank, port)},
                    stdout=fo,
                    stderr=fe,
                    text=True,
                )
            )
    deadline = time.monotonic() + 300
    try:
        while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
            if any(p.poll() not in (None, 0) for p in procs):
                deadline = min(deadline, time.monotonic() + 30)
            time.sleep(0.5)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
    return [(p.returncode, out.read_text(), err.read_text()) for p, (out, err) in zip(procs, logs)]


def _digest(tensors: dict[str, np.ndarray]) -> str:
    """The documented digest, written out here: per key in sorted order its name, dtype, shape, bytes."""
    h = hashlib.sha256()
    for key in sorted(tensors):
        value = np.ascontiguousarray(tensors[key])
        h.update(key.encode() + f"|{value.dtype.str}|{value.shape}|".encode() + value.tobytes())
    return h.hexdigest()


def _checkpoint_digest(path: Path) -> str:
    from safetensors.numpy import load_file

    tensors = load_file(str(path))
    return _digest({k[len("model/") :]: v for k, v in tensors.items() if k.startswith("model/")})


def _digests(stderr: str) -> list[tuple[int, int, int, int, str]]:
    return [(int(f), int(w), int(n), int(r), d) for f, w, n, r, d in DIGEST_LINE.findall(stderr)]


def _check_run(run_dir: Path, results: list[tuple[int, str, str]], folds: int, epochs: int) -> None:
    for rank, (code, _, err) in enumerate(results):
        assert code == 0, f"rank {rank}:\n{err[-4000:]}"
    # the same folds in the same order on both workers, 2 replicas each, equal weights, and those
    # equal to the last checkpoint that rank 0 wrote
    lines = [_digests(err) for _, _, err in results]
    for rank in range(2):
        assert [(f, w, n, r) for f, w, n, r, _ in lines[rank]] == [(k, rank, 2, 2) for k in range(folds)]
    for k in range(folds):
        digest = lines[0][k][4]
        assert lines[1][k][4] == digest, f"fold {k}: the workers hold different weights"
        assert _checkpoint_digest(run_dir / f"fold_{k}" / "checkpoints" / "last.safetensors") == digest
    assert len({line[4] for line in lines[0]}) == folds  # each fold trained a model of its own
    # written once, by rank 0: one summary (with every fold), one event file, one metrics row per epoch
    summary = json.loads((run_dir / "summary.json").read_text())
    assert [row["fold"] for row in summary["folds"]] == list(range(folds)) and summary["missing"] == []
    assert "summary:" in results[0][1] and "summary:" not in results[1][1]
    for k in range(folds):
        fold = run_dir / f"fold_{k}"
        assert (fold / "checkpoints" / "best.safetensors").exists()
        assert json.loads((fold / "result.json").read_text())["fold"] == k
        assert len(list((fold / "tensorboard").iterdir())) == 1
        assert len((fold / "metrics.csv").read_text().strip().splitlines()) == 1 + epochs
    assert sorted(p.name for p in run_dir.glob("fold_*")) == [f"fold_{k}" for k in range(folds)]


def test_delira_run_tf_two_workers_torchrun_variables(tmp_path, tiny_config):
    pytest.importorskip("tensorflow")
    config = _config(tiny_config, tmp_path)
    run_dir = tmp_path / "run"
    results = _run_workers(
        tmp_path, _torchrun_env, [str(config), "--run-dir", str(run_dir)], hold_master_port=True
    )
    _check_run(run_dir, results, folds=2, epochs=1)


def test_delira_run_tf_two_workers_slurm_variables_default_folder(tmp_path, tiny_config, monkeypatch):
    """SLURM's variables, one train/val split and no ``--run-dir``: both workers pick rank 0's
    timestamped folder under ``experiment.output``; the 2 replicas' step (half a batch each,
    gradients summed, each loss divided by 2) trains the weights of one process on whole batches."""
    pytest.importorskip("tensorflow")
    from safetensors.numpy import load_file

    from delira.training.experiment import Experiment

    # cross-entropy alone: the mean over the batch is the mean of the halves' means (a soft Dice over
    # the batch is not, so with it the workers' step differs from one process's, as under DDP)
    config = _config(tiny_config, tmp_path, loss="ce")
    results = _run_workers(tmp_path, _slurm_env, [str(config), "--set", "experiment.folds=1"])
    runs = list((tmp_path / "out").iterdir())
    assert len(runs) == 1, runs  # one folder, not one per worker
    _check_run(runs[0], results, folds=1, epochs=1)

    for key in [k for k in os.environ if k.startswith("SLURM_")] + ["RANK", "WORLD_SIZE", "TF_CONFIG"]:
        monkeypatch.delenv(key, raising=False)
    single = tmp_path / "single"
    Experiment(str(config), run_dir=single, overrides=["experiment.folds=1"], verbose=False).kfold()
    reference = load_file(str(single / "fold_0" / "checkpoints" / "last.safetensors"))
    workers = load_file(str(runs[0] / "fold_0" / "checkpoints" / "last.safetensors"))
    keys = [k for k in reference if k.startswith("model/")]
    assert keys and sorted(keys) == sorted(k for k in workers if k.startswith("model/"))
    # float32 sums in another order
    for key in keys:
        np.testing.assert_allclose(workers[key], reference[key], rtol=1e-4, atol=1e-6, err_msg=key)


def test_batch_size_not_a_multiple_of_the_workers_fails_before_training(tmp_path, tiny_config):
    config = _config(tiny_config, tmp_path, batch_size=3)
    run_dir = tmp_path / "run"
    results = _run_workers(tmp_path, _torchrun_env, [str(config), "--run-dir", str(run_dir)])
    for code, _, err in results:
        assert code == 2, err[-4000:]
        assert "training.batch_size: 3 is not a multiple of the 2 TensorFlow workers" in err
        assert "set training.batch_size to 2 or 4 (--set training.batch_size=4)" in err
    assert not run_dir.exists()  # nothing trained, nothing written


@pytest.mark.parametrize(
    ("device", "gpus", "local_world", "expected"),
    [
        ("/CPU:0", ["g0", "g1"], 2, []),  # the CPU: no replica on a GPU
        ("cpu", ["g0"], 1, []),
        ("cuda", ["g0", "g1"], 2, "g1"),  # torchrun on a 2-GPU node: rank 1 keeps GPU 1
        ("/GPU:0", ["g0", "g1"], 2, "g1"),
        ("cuda", ["g0"], 1, None),  # srun --gpus-per-task=1: its one GPU, left as it is
        ("cuda", [], 2, None),  # no GPU: nothing to set
    ],
)
def test_worker_devices_before_the_strategy(monkeypatch, device, gpus, local_world, expected):
    """Which GPUs a worker keeps (tf.config calls recorded instead of made)."""
    tf = pytest.importorskip("tensorflow")
    from delira.training.distributed import ClusterEnvironment
    from delira.training.experiment import _tf_worker_devices

    calls = []
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind: list(gpus) if kind == "GPU" else [])
    monkeypatch.setattr(tf.config, "set_visible_devices", lambda devices, kind: calls.append((devices, kind)))
    env = ClusterEnvironment(
        source="torchrun",
        rank=1,
        world_size=2,
        local_rank=1 if local_world > 1 else 0,
        local_world_size=local_world,
    )
    _tf_worker_devices(device, env)
    assert calls == ([] if expected is None else [(expected, "GPU")])
