"""DistributedDataParallel with 2 CPU processes (gloo), against single-process training on the
combined batches."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytestmark = pytest.mark.torch

WORKER = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import torch
    torch.set_num_threads(1)
    from delira.data import DataLoader
    from delira.models.torch import UNet
    from delira.training import PyTorchNetworkTrainer, metrics

    out, save_dir = sys.argv[1], sys.argv[2]
    rng = np.random.default_rng(0)
    cases = []
    for _ in range(16):
        d = rng.normal(size=(1, 8, 8, 8)).astype(np.float32)
        cases.append({"data": d, "seg": (d > 0).astype(np.int16)})
    torch.manual_seed(0)
    net = UNet(spatial_dims=3, num_classes=2, features=(4, 8))
    trainer = PyTorchNetworkTrainer(
        net, {"ce": torch.nn.CrossEntropyLoss()}, optimizer="sgd", lr=0.1, save_dir=save_dir, verbose=False,
        metrics={"dice": metrics.segmentation_metric("dice", 2)},
    )
    history = trainer.fit(
        DataLoader(cases, batch_size=2, shuffle=True, seed=1), DataLoader(cases[:8], batch_size=2), epochs=2
    )
    np.savez(out, **{k: v.numpy() for k, v in trainer.network.state_dict().items()})
    with open(out + ".json", "w") as f:
        json.dump({"rank": trainer.rank, "world": trainer.world_size, "history": history}, f)
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_processes_equal_single_process_on_combined_batches(tmp_path, make_cases):
    import torch

    from delira.data import DataLoader
    from delira.models.torch import UNet

    port = _free_port()
    procs = []
    for rank in range(2):
        env = {
            **os.environ,
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": "2",
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "OMP_NUM_THREADS": "1",
        }
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", WORKER, str(tmp_path / f"rank{rank}.npz"), str(tmp_path / "run")],
                env=env,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
    w0, w1 = np.load(tmp_path / "rank0.npz"), np.load(tmp_path / "rank1.npz")
    for key in w0.files:
        np.testing.assert_array_equal(w0[key], w1[key], err_msg=key)  # identical across ranks
    # reference: one process, each step on the concatenation of the two ranks' batches (2k, 2k + 1)
    cases = make_cases(16)
    torch.manual_seed(0)
    net = UNet(spatial_dims=3, num_classes=2, features=(4, 8))
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    loader = DataLoader(cases, batch_size=2, shuffle=True, seed=1)
    for epoch in range(2):
        loader.set_epoch(epoch)
        batches = list(loader)
        for a, b in zip(batches[::2], batches[1::2]):
            x = torch.from_numpy(np.concatenate([a["data"], b["data"]]))
            y = torch.from_numpy(np.concatenate([a["seg"], b["seg"]])[:, 0].astype(np.int64))
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
    for key, value in net.state_dict().items():
        np.testing.assert_allclose(w0[key], value.numpy(), atol=1e-5, rtol=0, err_msg=key)
    # metrics reduced over the ranks: both report the same, the mean over all 4 validation batches
    r0 = json.loads((tmp_path / "rank0.npz.json").read_text())
    r1 = json.loads((tmp_path / "rank1.npz.json").read_text())
    assert (r0["rank"], r1["rank"], r0["world"]) == (0, 1, 2)
    assert r0["history"] == r1["history"]
    net.eval()
    with torch.no_grad():
        losses = [
            float(
                torch.nn.functional.cross_entropy(
                    net(torch.from_numpy(b["data"])), torch.from_numpy(b["seg"][:, 0].astype(np.int64))
                )
            )
            for b in DataLoader(cases[:8], batch_size=2)
        ]
    assert r0["history"][-1]["val_loss"] == pytest.approx(np.mean(losses), abs=1e-5)
    # logging and checkpoints on rank 0 only: one event file, one CSV
    assert len(list((tmp_path / "run" / "tensorboard").iterdir())) == 1
    assert (tmp_path / "run" / "checkpoints" / "last.safetensors").exists()


DS_WORKER = textwrap.dedent(
    """
    import sys
    import numpy as np
    import torch
    torch.set_num_threads(1)
    from delira.data import DataLoader
    from delira.models.torch import UNet
    from delira.training import PyTorchNetworkTrainer
    from delira.training.losses import DeepSupervisionLoss

    out, save_dir = sys.argv[1], sys.argv[2]
    rng = np.random.default_rng(0)
    cases = []
    for _ in range(8):
        d = rng.normal(size=(1, 8, 8, 8)).astype(np.float32)
        cases.append({"data": d, "seg": (d > 0).astype(np.int16)})
    torch.manual_seed(0)
    net = UNet(spatial_dims=3, num_classes=2, features=(4, 6, 8), deep_supervision=True)
    loss = DeepSupervisionLoss(torch.nn.CrossEntropyLoss(), "torch", strides=net.config.cumulative_strides)
    trainer = PyTorchNetworkTrainer(net, {"ce": loss}, optimizer="sgd", lr=0.1, save_dir=save_dir, verbose=False)
    trainer.fit(DataLoader(cases, batch_size=2, shuffle=True, seed=1), None, epochs=2)
    np.savez(out, **{k: v.numpy() for k, v in trainer.network.state_dict().items()})
    """
)


def test_ddp_with_deep_supervision_keeps_the_zero_weight_output_in_the_graph(tmp_path):
    """nnU-Net's weights give the lowest-resolution output weight 0; skipping it would leave its head
    without gradients, which DistributedDataParallel refuses on the next step. Under DDP it is
    computed with weight 0 (its head stays as initialised, on every rank)."""
    port = _free_port()
    procs = []
    for rank in range(2):
        env = {
            **os.environ,
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": "2",
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "OMP_NUM_THREADS": "1",
        }
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", DS_WORKER, str(tmp_path / f"rank{rank}.npz"), str(tmp_path / "run")],
                env=env,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
    w0, w1 = np.load(tmp_path / "rank0.npz"), np.load(tmp_path / "rank1.npz")
    for key in w0.files:
        np.testing.assert_array_equal(w0[key], w1[key], err_msg=key)
