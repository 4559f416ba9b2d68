"""The TensorFlow side of multi-process training: ``MultiWorkerMirroredStrategy`` configured from
SLURM's variables (``TF_CONFIG`` built by ``tf_multi_worker_strategy``), 2 workers on the CPU, and
the trainer refusing to train one model per process without it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.tf

WORKER = textwrap.dedent(
    """
    import json, os, sys
    from pathlib import Path
    from delira.training.distributed import ClusterEnvironment, tf_multi_worker_strategy
    strategy = tf_multi_worker_strategy()  # first thing: builds TF_CONFIG from the SLURM variables
    import keras
    import numpy as np
    from delira.data import DataLoader
    from delira.models.tf import UNet, channels_first
    from delira.training import TfNetworkTrainer

    out = Path(sys.argv[1])
    rng = np.random.default_rng(0)
    cases = []
    for _ in range(4):
        d = rng.normal(size=(1, 8, 8)).astype(np.float32)
        cases.append({"data": d, "seg": (d > 0).astype(np.int16)})
    loss = channels_first(keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    with strategy.scope():
        keras.utils.set_random_seed(0)
        net = UNet(spatial_dims=2, num_classes=2, features=(4, 8))
    before = [np.asarray(w).copy() for w in net.weights]
    trainer = TfNetworkTrainer(
        net, {"ce": loss}, optimizer="sgd", lr=0.1, strategy=strategy, verbose=False, save_dir=out / "run"
    )
    trainer.fit(DataLoader(cases, batch_size=2, shuffle=True, seed=1), epochs=1)
    rank = ClusterEnvironment.detect().rank
    np.savez(out / f"w{rank}.npz", *[np.asarray(w) for w in net.weights])
    np.savez(out / f"before{rank}.npz", *before)
    info = {"tf_config": json.loads(os.environ["TF_CONFIG"]), "rank": trainer.rank, "replicas": trainer.replicas}
    (out / f"rank{rank}.json").write_text(json.dumps(info))
    """
)


def _free_port_pair() -> int:
    """A port ``p`` with ``p`` and ``p + 1`` free (the two workers on this host)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port >= 65535:
            continue
        with socket.socket() as a, socket.socket() as b:
            try:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    pytest.skip("no two consecutive free ports for the TensorFlow workers")


def _clean_env() -> dict[str, str]:
    drop = {
        "RANK",
        "WORLD_SIZE",
        "LOCAL_RANK",
        "LOCAL_WORLD_SIZE",
        "GROUP_RANK",
        "MASTER_ADDR",
        "MASTER_PORT",
    }
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in drop | {"TF_CONFIG"} and not k.startswith(("SLURM_", "TORCHELASTIC"))
    }
    env.update(TF_CPP_MIN_LOG_LEVEL="3", OMP_NUM_THREADS="1")
    return env


def test_multi_worker_strategy_from_slurm_variables(tmp_path: Path):
    pytest.importorskip("tensorflow")
    port = _free_port_pair()
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    procs = []
    for rank in range(2):
        env = {
            **_clean_env(),
            "SLURM_PROCID": str(rank),
            "SLURM_NTASKS": "2",
            "SLURM_LOCALID": str(rank),
            "SLURM_NODEID": "0",
            "SLURM_JOB_NODELIST": "localhost",
            "SLURM_JOB_ID": "4242",
            "SLURM_JOB_NAME": "delira-tf-test",
            "MASTER_PORT": str(port),
        }
        procs.append(
            subprocess.Popen(
                [sys.executable, str(script), str(tmp_path)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    errors = []
    for p in procs:
        try:
            errors.append(p.communicate(timeout=240)[1])
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
    for p, err in zip(procs, errors):
        assert p.returncode == 0, err[-4000:]
    infos = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    workers = [f"localhost:{port}", f"localhost:{port + 1}"]  # one per task, MASTER_PORT + local rank
    for rank, info in enumerate(infos):
        assert info["tf_config"] == {
            "cluster": {"worker": workers},
            "task": {"type": "worker", "index": rank},
        }
        assert (info["rank"], info["replicas"]) == (rank, 2)
    w0, w1 = np.load(tmp_path / "w0.npz"), np.load(tmp_path / "w1.npz")
    before = np.load(tmp_path / "before0.npz")
    for key in w0.files:
        np.testing.assert_array_equal(w0[key], w1[key], err_msg=key)  # the same model on both workers
    assert any(not np.array_equal(w0[k], before[k]) for k in w0.files)  # and it trained
    assert len(list((tmp_path / "run" / "tensorboard").iterdir())) == 1  # the chief logs, worker 1 not
    assert (tmp_path / "run" / "checkpoints" / "last.safetensors").exists()


def test_trainer_refuses_one_model_per_process(monkeypatch, make_cases):
    pytest.importorskip("tensorflow")
    import keras

    from delira.data import DataLoader
    from delira.models.tf import UNet, channels_first
    from delira.training import TfNetworkTrainer

    for key in ("RANK", "WORLD_SIZE", "TF_CONFIG"):
        monkeypatch.delenv(key, raising=False)
    for key, value in {
        "SLURM_PROCID": "1",
        "SLURM_NTASKS": "2",
        "SLURM_JOB_NODELIST": "localhost",
        "SLURM_JOB_ID": "7",
        "SLURM_JOB_NAME": "train",
    }.items():
        monkeypatch.setenv(key, value)
    keras.utils.set_random_seed(0)
    net = UNet(spatial_dims=3, num_classes=2, features=(4, 8))
    loss = channels_first(keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    trainer = TfNetworkTrainer(net, {"ce": loss}, verbose=False)
    with pytest.raises(ValueError, match=r"rank 1 of 2 \(slurm\).*tf_multi_worker_strategy"):
        trainer.fit(DataLoader(make_cases(2), batch_size=2), epochs=1)
