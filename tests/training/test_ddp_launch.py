"""DDP with 2 gloo ranks on the CPU, started by ``torchrun --nproc_per_node 2`` and as two plain
processes with SLURM's variables set by hand (what ``srun -n 2`` would set): the sharding of every
epoch against the sampler's documented order, identical weights on both ranks, files written by
rank 0 only, and a resumed run that continues from ``last.safetensors`` to the weights of an
uninterrupted one."""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.torch

NUM_CASES, BATCH, SEED, EPOCHS = 10, 2, 7, 2

WORKER = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    import numpy as np
    import torch
    torch.set_num_threads(1)
    from delira.data import DataLoader
    from delira.models.torch import UNet
    from delira.training import PyTorchNetworkTrainer
    from delira.training.distributed import ClusterEnvironment, barrier

    out = Path(sys.argv[1])
    num_cases, batch, seed, epochs = (int(a) for a in sys.argv[2:6])
    env = ClusterEnvironment.detect()
    rng = np.random.default_rng(0)
    cases = []
    for k in range(num_cases):
        d = rng.normal(size=(1, 8, 8, 8)).astype(np.float32)
        cases.append({"data": d, "seg": (d > 0).astype(np.int16), "case_id": f"c{k:02d}"})
    val_cases = cases[:3]  # 3 batches of 1 over 2 ranks: rank 0 gets 2, rank 1 gets 1


    def run(save_dir, n_epochs, resume):
        torch.manual_seed(0)
        net = UNet(spatial_dims=3, num_classes=2, features=(4, 8))
        trainer = PyTorchNetworkTrainer(
            net, {"ce": torch.nn.CrossEntropyLoss()}, optimizer="sgd", lr=0.1, save_dir=save_dir,
            verbose=False, seed=3,
        )
        seen, saves = {}, []
        step, save = trainer._train_step, trainer.save_checkpoint

        def spy_step(b, step_now, context):
            seen.setdefault(str(context[0]), []).append([str(c) for c in b["case_id"]])
            return step(b, step_now, context)

        def spy_save(path, *args, **kwargs):
            saves.append(str(path))
            return save(path, *args, **kwargs)

        trainer._train_step, trainer.save_checkpoint = spy_step, spy_save
        train = DataLoader(cases, batch_size=batch, shuffle=True, seed=seed)
        history = trainer.fit(train, DataLoader(val_cases, batch_size=1), epochs=n_epochs, resume_from=resume)
        return trainer, {"seen": seen, "saves": saves, "history": history}


    trainer, full = run(out / "full", epochs, None)
    _, first = run(out / "resumed", 1, None)
    resumed_trainer, resumed = run(out / "resumed", epochs, "last")
    barrier()
    # the validation loss of the final weights, by hand over all validation cases
    net = trainer.network.eval()
    with torch.no_grad():
        losses = [
            float(torch.nn.functional.cross_entropy(
                net(torch.from_numpy(c["data"][None])), torch.from_numpy(c["seg"].astype(np.int64))
            ))
            for c in val_cases
        ]
    tag = f"rank{env.rank}"
    np.savez(out / f"{tag}_full.npz", **{k: v.numpy() for k, v in trainer.network.state_dict().items()})
    np.savez(
        out / f"{tag}_resumed.npz", **{k: v.numpy() for k, v in resumed_trainer.network.state_dict().items()}
    )
    info = {
        "source": env.source, "rank": env.rank, "world": env.world_size, "local_rank": env.local_rank,
        "trainer": [trainer.rank, trainer.world_size], "full": full, "first": first, "resumed": resumed,
        "val_loss_by_hand": float(np.mean(losses)),
    }
    (out / f"{tag}.json").write_text(json.dumps(info))
    """
)


def _clean_env() -> dict[str, str]:
    """The test's environment without any launcher's variables (the tests may run under SLURM)."""
    drop = {"RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "NODE_RANK"}
    drop |= {"MASTER_ADDR", "MASTER_PORT", "TF_CONFIG"}
    env = {
        k: v for k, v in os.environ.items() if k not in drop and not k.startswith(("SLURM_", "TORCHELASTIC"))
    }
    env["OMP_NUM_THREADS"] = "1"
    return env


def _worker_args(tmp_path: Path) -> list[str]:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    return [str(script), str(tmp_path), str(NUM_CASES), str(BATCH), str(SEED), str(EPOCHS)]


def _expected_shards(epoch: int) -> list[list[list[str]]]:
    """Per rank, its batches of ``epoch`` by hand: the RandomSampler's order is
    ``default_rng([seed, epoch]).permutation(n)`` (delira.data's documented protocol); rounds of
    2 ranks x 2 keys, rank r the r-th pair of each round; the 2 tail keys one per rank."""
    order = [f"c{k:02d}" for k in np.random.default_rng([SEED, epoch]).permutation(NUM_CASES)]
    assert NUM_CASES == 10 and BATCH == 2
    return [
        [order[0:2], order[4:6], order[8:9]],  # rank 0
        [order[2:4], order[6:8], order[9:10]],  # rank 1
    ]


def _check(tmp_path: Path, source: str) -> None:
    infos = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [(i["source"], i["rank"], i["world"], i["local_rank"]) for i in infos] == [
        (source, 0, 2, 0),
        (source, 1, 2, 1),
    ]
    assert [i["trainer"] for i in infos] == [[0, 2], [1, 2]]
    # sharding: each rank's batches as by hand; together every case once per epoch
    for epoch in range(EPOCHS):
        expected = _expected_shards(epoch)
        for rank in range(2):
            assert infos[rank]["full"]["seen"][str(epoch)] == expected[rank], (epoch, rank)
        union = [c for info in infos for b in info["full"]["seen"][str(epoch)] for c in b]
        assert sorted(union) == [f"c{k:02d}" for k in range(NUM_CASES)]  # each exactly once
    # identical weights on both ranks after the steps
    full = [np.load(tmp_path / f"rank{r}_full.npz") for r in range(2)]
    for key in full[0].files:
        np.testing.assert_array_equal(full[0][key], full[1][key], err_msg=key)
    # losses and metrics reduced over the ranks: the same history on both, the validation loss the
    # mean over all 3 validation cases (2 on rank 0, 1 on rank 1)
    assert infos[0]["full"]["history"] == infos[1]["full"]["history"]
    assert infos[0]["full"]["history"][-1]["val_loss"] == pytest.approx(
        infos[0]["val_loss_by_hand"], abs=1e-5
    )
    # only rank 0 writes: checkpoints, one event file, one CSV with one row per epoch
    assert infos[1]["full"]["saves"] == [] and infos[1]["first"]["saves"] == []
    assert any(p.endswith("last.safetensors") for p in infos[0]["full"]["saves"])
    run = tmp_path / "full"
    assert (run / "checkpoints" / "last.safetensors").exists()
    assert len(list((run / "tensorboard").iterdir())) == 1
    assert len((run / "metrics.csv").read_text().strip().splitlines()) == 1 + EPOCHS
    # resume: the second run starts after epoch 1 from last.safetensors on both ranks, trains the
    # same batches as the uninterrupted run's epoch 1 and ends with its weights
    for info in infos:
        assert sorted(info["resumed"]["seen"]) == [str(e) for e in range(1, EPOCHS)]
        assert info["resumed"]["seen"]["1"] == info["full"]["seen"]["1"]
        assert [h["epoch"] for h in info["resumed"]["history"]] == list(range(EPOCHS))
        assert info["resumed"]["history"][0] == info["first"]["history"][0]
    resumed = [np.load(tmp_path / f"rank{r}_resumed.npz") for r in range(2)]
    for key in full[0].files:
        np.testing.assert_array_equal(resumed[0][key], resumed[1][key], err_msg=key)
        np.testing.assert_allclose(resumed[0][key], full[0][key], atol=1e-6, rtol=0, err_msg=key)


def _communicate(procs: list[subprocess.Popen]) -> None:
    errors = []
    for p in procs:
        try:
            _, err = p.communicate(timeout=240)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        errors.append(err)
    for p, err in zip(procs, errors):
        assert p.returncode == 0, err[-4000:]


def test_torchrun_two_ranks(tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    launcher = [str(torchrun)] if torchrun.exists() else [sys.executable, "-m", "torch.distributed.run"]
    cmd = [*launcher, "--standalone", "--nproc_per_node", "2", *_worker_args(tmp_path)]
    proc = subprocess.Popen(cmd, env=_clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _communicate([proc])
    _check(tmp_path, "torchrun")


def _free_slurm_job_id() -> int:
    """A job id whose derived port (15000 + id % 15000) is free here, as srun's tasks would derive it."""
    for _ in range(200):
        port = random.randrange(15000, 30000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return 4 * 15000 + (port - 15000)
    pytest.skip("no free port in 15000..29999 for the SLURM rendezvous")


def test_slurm_variables_two_ranks(tmp_path):
    job_id = _free_slurm_job_id()
    procs = []
    for rank in range(2):
        env = {
            **_clean_env(),
            "SLURM_PROCID": str(rank),
            "SLURM_NTASKS": "2",
            "SLURM_LOCALID": str(rank),
            "SLURM_NODEID": "0",
            "SLURM_JOB_NODELIST": "localhost",
            "SLURM_TASKS_PER_NODE": "2",
            "SLURM_JOB_ID": str(job_id),
            "SLURM_JOB_NAME": "delira-ddp-test",
        }
        procs.append(
            subprocess.Popen(
                [sys.executable, *_worker_args(tmp_path)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    _communicate(procs)
    _check(tmp_path, "slurm")
