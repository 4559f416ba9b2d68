"""ClusterEnvironment (torchrun / SLURM / single process detection, SLURM host lists, ports,
TF_CONFIG) and the sharding of a loader's epoch across ranks, against hand-written cases; all in
this process, no process group."""

from __future__ import annotations

import json

import numpy as np
import pytest

from delira.training.distributed import (
    ClusterEnvironment,
    expand_nodelist,
    expand_tasks_per_node,
    rank_seed,
    shard_keys,
    shard_loader,
    slurm_port,
    tf_config,
)

# --- SLURM host lists --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, hosts",
    [
        ("node[01-03,07]", ["node01", "node02", "node03", "node07"]),
        ("gpu-a1,gpu-b2", ["gpu-a1", "gpu-b2"]),
        ("node[1-2]-ib", ["node1-ib", "node2-ib"]),
        ("node[08-10]", ["node08", "node09", "node10"]),
        ("node[8-10]", ["node8", "node9", "node10"]),
        ("a[1-2],b3,c[5]", ["a1", "a2", "b3", "c5"]),
        ("r[1-2]n[1-2]", ["r1n1", "r1n2", "r2n1", "r2n2"]),
        ("gpu[001-002,010]-ib,login", ["gpu001-ib", "gpu002-ib", "gpu010-ib", "login"]),
        ("localhost", ["localhost"]),
        (" node1 ", ["node1"]),
    ],
)
def test_expand_nodelist(text, hosts):
    assert expand_nodelist(text) == hosts


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "empty"),
        ("node[1-3", "'\\[' without '\\]'"),
        ("node]1[", "'\\]' without '\\['"),
        ("node[3-1]", "backwards"),
        ("node[a-b]", "not a list of numbers"),
        ("node[1-]", "not a list of numbers"),
        ("a,,b", "empty entry"),
        ("n[[1]]", "nested"),
    ],
)
def test_expand_nodelist_errors_name_the_variable(text, message):
    with pytest.raises(ValueError, match=message) as info:
        expand_nodelist(text)
    assert "SLURM_JOB_NODELIST" in str(info.value)


def test_expand_tasks_per_node():
    assert expand_tasks_per_node("2(x3),1") == [2, 2, 2, 1]
    assert expand_tasks_per_node("4") == [4]
    with pytest.raises(ValueError, match="SLURM_TASKS_PER_NODE"):
        expand_tasks_per_node("2x3")


def test_slurm_port_in_fixed_range():
    assert slurm_port(123456) == 15000 + 3456  # 123456 = 8 * 15000 + 3456
    assert slurm_port(7) == 15007
    assert all(15000 <= slurm_port(j) < 30000 for j in (0, 14999, 15000, 10**9 + 7))


# --- detection ---------------------------------------------------------------------------------------


def test_single_process_without_variables():
    env = ClusterEnvironment.detect({})
    assert (env.source, env.rank, env.world_size, env.local_rank, env.is_distributed) == (
        "single",
        0,
        1,
        0,
        False,
    )
    assert env.is_main_process


def test_torchrun_variables():
    env = ClusterEnvironment.detect(
        {
            "RANK": "5",
            "WORLD_SIZE": "8",
            "LOCAL_RANK": "1",
            "LOCAL_WORLD_SIZE": "4",
            "GROUP_RANK": "1",
            "MASTER_ADDR": "node01",
            "MASTER_PORT": "29400",
        }
    )
    assert (env.source, env.rank, env.world_size, env.local_rank, env.local_world_size) == (
        "torchrun",
        5,
        8,
        1,
        4,
    )
    assert (env.node_rank, env.master_addr, env.master_port) == (1, "node01", 29400)
    assert env.hosts == ()  # other nodes' hosts are not known under torchrun
    assert env.init_method == "tcp://node01:29400"
    assert not env.is_main_process


def test_torchrun_wins_over_slurm():
    env = ClusterEnvironment.detect(
        {
            "RANK": "1",
            "WORLD_SIZE": "4",
            "LOCAL_RANK": "1",
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": "1234",
            "SLURM_PROCID": "0",
            "SLURM_NTASKS": "1",
            "SLURM_JOB_NODELIST": "n1",
        }
    )
    assert (env.source, env.rank, env.world_size) == ("torchrun", 1, 4)


def test_torchrun_without_master_addr_is_refused():
    with pytest.raises(ValueError, match="MASTER_ADDR"):
        ClusterEnvironment.detect({"RANK": "0", "WORLD_SIZE": "2"})


SLURM = {
    "SLURM_PROCID": "3",
    "SLURM_NTASKS": "4",
    "SLURM_LOCALID": "1",
    "SLURM_NODEID": "1",
    "SLURM_JOB_NODELIST": "gpu[01-02]",
    "SLURM_TASKS_PER_NODE": "2(x2)",
    "SLURM_JOB_ID": "123456",
    "SLURM_JOB_NAME": "train-unet",
}


def test_slurm_variables():
    env = ClusterEnvironment.detect(SLURM)
    assert (env.source, env.rank, env.world_size, env.local_rank, env.local_world_size) == (
        "slurm",
        3,
        4,
        1,
        2,
    )
    assert (env.node_rank, env.master_addr, env.master_port) == (1, "gpu01", 18456)
    assert env.hosts == ("gpu01", "gpu02") and env.tasks_per_node == (2, 2)


def test_slurm_master_from_environment_wins():
    env = ClusterEnvironment.detect({**SLURM, "MASTER_ADDR": "10.0.0.5", "MASTER_PORT": "23456"})
    assert (env.master_addr, env.master_port) == ("10.0.0.5", 23456)


def test_slurm_step_variables_win_over_the_job():
    env = ClusterEnvironment.detect(
        {**SLURM, "SLURM_STEP_NUM_TASKS": "2", "SLURM_STEP_NODELIST": "gpu02", "SLURM_PROCID": "1"}
    )
    assert (env.world_size, env.master_addr, env.hosts) == (2, "gpu02", ("gpu02",))
    assert env.tasks_per_node == ()  # SLURM_TASKS_PER_NODE (4 tasks) describes the job, not the step


@pytest.mark.parametrize("name", ["bash", "interactive"])
def test_interactive_salloc_shell_is_one_process(name):
    shell = {**SLURM, "SLURM_PROCID": "0", "SLURM_JOB_NAME": name}
    assert ClusterEnvironment.detect(shell).source == "single"
    # ... but `srun -n 4 python train.py` typed into that shell is a job of 4 ranks
    step = {**shell, "SLURM_STEP_NUM_TASKS": "4", "SLURM_PROCID": "2"}
    env = ClusterEnvironment.detect(step)
    assert (env.source, env.rank, env.world_size) == ("slurm", 2, 4)


def test_salloc_shell_without_procid_is_one_process():
    env = {k: v for k, v in SLURM.items() if k != "SLURM_PROCID"}
    assert ClusterEnvironment.detect(env).source == "single"


def test_slurm_errors_name_the_variable():
    with pytest.raises(ValueError, match="SLURM_PROCID='x'"):
        ClusterEnvironment.detect({**SLURM, "SLURM_PROCID": "x"})
    with pytest.raises(ValueError, match="rank 4 with world size 4"):
        ClusterEnvironment.detect({**SLURM, "SLURM_PROCID": "4"})
    with pytest.raises(ValueError, match="MASTER_PORT nor SLURM_JOB_ID"):
        ClusterEnvironment.detect({k: v for k, v in SLURM.items() if k != "SLURM_JOB_ID"})
    with pytest.raises(ValueError, match="SLURM_JOB_NODELIST='gpu\\[02-01\\]'"):
        ClusterEnvironment.detect({**SLURM, "SLURM_JOB_NODELIST": "gpu[02-01]"})


def test_single_slurm_task_ignores_an_unparsable_host_list():
    env = ClusterEnvironment.detect({"SLURM_PROCID": "0", "SLURM_NTASKS": "1", "SLURM_JOB_NODELIST": "n[1-"})
    assert (env.source, env.rank, env.world_size, env.is_distributed) == ("slurm", 0, 1, False)


def test_barrier_is_a_no_op_in_a_single_process():
    from delira.training.distributed import barrier

    barrier()  # no process group: returns at once


def test_init_method_brackets_ipv6():
    assert ClusterEnvironment(master_addr="fe80::1", master_port=1234).init_method == "tcp://[fe80::1]:1234"


# --- TF_CONFIG -----------------------------------------------------------------------------------------


def test_tf_config_from_slurm_variables():
    config = tf_config(ClusterEnvironment.detect(SLURM))
    assert config == {
        "cluster": {"worker": ["gpu01:18456", "gpu01:18457", "gpu02:18456", "gpu02:18457"]},
        "task": {"type": "worker", "index": 3},
    }
    assert json.loads(json.dumps(config)) == config  # what goes into the TF_CONFIG variable


def test_tf_config_uneven_tasks_per_node_and_base_port():
    env = ClusterEnvironment.detect(
        {
            **SLURM,
            "SLURM_NTASKS": "3",
            "SLURM_PROCID": "2",
            "SLURM_TASKS_PER_NODE": "2,1",
            "SLURM_LOCALID": "0",
        }
    )
    assert env.tf_config(base_port=20000) == {
        "cluster": {"worker": ["gpu01:20000", "gpu01:20001", "gpu02:20000"]},
        "task": {"type": "worker", "index": 2},
    }


def test_tf_config_without_tasks_per_node_divides_evenly():
    env = ClusterEnvironment.detect({k: v for k, v in SLURM.items() if k != "SLURM_TASKS_PER_NODE"})
    assert env.worker_addresses() == ["gpu01:18456", "gpu01:18457", "gpu02:18456", "gpu02:18457"]


def test_tf_config_from_single_node_torchrun():
    env = ClusterEnvironment.detect(
        {
            "RANK": "1",
            "WORLD_SIZE": "2",
            "LOCAL_WORLD_SIZE": "2",
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": "29500",
        }
    )
    assert env.tf_config() == {
        "cluster": {"worker": ["127.0.0.1:29500", "127.0.0.1:29501"]},
        "task": {"type": "worker", "index": 1},
    }


def test_tf_config_refuses_unknown_hosts():
    env = ClusterEnvironment.detect(
        {"RANK": "1", "WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "n1", "MASTER_PORT": "29500"}
    )
    with pytest.raises(ValueError, match="set TF_CONFIG yourself"):
        env.tf_config()


# --- sharding ------------------------------------------------------------------------------------------


def test_shard_keys_hand_written():
    keys = list(range(10))
    # W=2, B=2: rounds [0..3], [4..7]; the tail [8, 9] split one key per rank
    assert shard_keys(keys, 0, 2, 2) == [0, 1, 4, 5, 8]
    assert shard_keys(keys, 1, 2, 2) == [2, 3, 6, 7, 9]
    assert shard_keys(keys, 0, 2, 2, drop_last=True) == [0, 1, 4, 5]
    assert shard_keys(keys, 1, 2, 2, drop_last=True) == [2, 3, 6, 7]
    # W=3, B=2: round [0..5]; tail [6..9] padded with [0, 1] from the start, blocks of 2
    assert [shard_keys(keys, r, 3, 2) for r in range(3)] == [[0, 1, 6, 7], [2, 3, 8, 9], [4, 5, 0, 1]]
    # fewer keys than ranks: the padding goes round the epoch
    assert [shard_keys([7], r, 3, 4) for r in range(3)] == [[7], [7], [7]]


def _reference_shards(keys, world, batch, drop_last):
    """numpy formulation of the contract: a (rounds, W, B) reshape, and the tail np.resize-padded
    from the start to W equal blocks."""
    keys = np.asarray(keys)
    step = world * batch
    full = len(keys) // step * step
    body = keys[:full].reshape(-1, world, batch)
    tail = keys[full:]
    shards = []
    for r in range(world):
        mine = list(body[:, r].ravel())
        if len(tail) and not drop_last:
            block = -(-len(tail) // world)
            padded = np.concatenate([tail, np.resize(keys, block * world - len(tail))])
            mine += list(padded.reshape(world, block)[r])
        shards.append(mine)
    return shards


@pytest.mark.parametrize("n", [1, 5, 8, 9, 17, 24])
@pytest.mark.parametrize("world, batch", [(2, 1), (2, 3), (3, 2), (4, 4)])
@pytest.mark.parametrize("drop_last", [False, True])
def test_shard_keys_contract(n, world, batch, drop_last):
    keys = list(np.random.default_rng(n).permutation(100)[:n])
    if drop_last and n < world * batch:
        with pytest.raises(ValueError, match="drop_last=True leaves no batch"):
            shard_keys(keys, 0, world, batch, drop_last)
        return
    shards = [shard_keys(keys, r, world, batch, drop_last) for r in range(world)]
    assert shards == _reference_shards(keys, world, batch, drop_last)
    assert len({len(s) for s in shards}) == 1  # every rank the same number of keys (same batches)
    seen = [k for s in shards for k in s]
    if drop_last:
        assert sorted(seen) == sorted(keys[: n // (world * batch) * world * batch])
    else:
        assert set(seen) == set(keys)  # every key, and only (-tail) % W of them twice
        assert len(seen) - n == (-(n % (world * batch))) % world


def test_shard_keys_rejects_bad_ranks():
    with pytest.raises(ValueError, match="0 <= rank < world_size"):
        shard_keys([1, 2], 2, 2, 1)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        shard_keys([1, 2], 0, 2, 0)


def _cases(n):
    return [{"data": np.full((1, 2), k, np.float32), "case_id": f"c{k}"} for k in range(n)]


def _ids(loader):
    return [list(b["case_id"]) for b in loader]


@pytest.mark.parametrize("n, drop_last", [(10, False), (9, False), (11, True)])
def test_shard_loader_training_follows_the_sampler_order(n, drop_last):
    from delira.data import DataLoader

    loader = DataLoader(_cases(n), batch_size=2, shuffle=True, seed=5, drop_last=drop_last)
    shards = [shard_loader(loader, r, 2) for r in range(2)]
    for epoch in range(3):
        order = [f"c{k}" for k in np.random.default_rng([5, epoch]).permutation(n)]  # RandomSampler's
        expected = _reference_shards(order, 2, 2, drop_last)
        for rank, shard in enumerate(shards):
            shard.set_epoch(epoch)
            batches = _ids(shard)
            assert len(batches) == len(shard)
            assert [c for b in batches for c in b] == expected[rank]
            assert all(len(b) == 2 for b in batches[:-1])
        assert len(shards[0]) == len(shards[1])
    assert shards[0].seed == loader.seed and shards[1].seed == rank_seed(5, 1) != 5


def test_shard_loader_ranks_draw_different_augmentations():
    from delira.data import DataLoader

    def noise(rng, **batch):
        return {**batch, "noise": rng.integers(1 << 30, size=len(batch["case_id"]))}

    loader = DataLoader(_cases(8), batch_size=2, transforms=noise, seed=1)
    shards = [shard_loader(loader, r, 2) for r in range(2)]
    first = [next(iter(s))["noise"] for s in shards]
    assert not np.array_equal(first[0], first[1])
    np.testing.assert_array_equal(first[0], next(iter(loader))["noise"])  # rank 0: the loader's seed


def test_shard_loader_with_workers():
    from delira.data import DataLoader

    loader = DataLoader(_cases(8), batch_size=2, num_workers=1, seed=2)
    shard = shard_loader(loader, 1, 2)
    try:
        assert _ids(shard) == [["c2", "c3"], ["c6", "c7"]]
    finally:
        shard.close()


def test_shard_loader_evaluation_divides_the_batches_without_padding():
    from delira.data import DataLoader

    loader = DataLoader(_cases(7), batch_size=2)  # batches [0 1] [2 3] [4 5] [6]
    assert _ids(shard_loader(loader, 0, 2, training=False)) == [["c0", "c1"], ["c4", "c5"]]
    assert _ids(shard_loader(loader, 1, 2, training=False)) == [["c2", "c3"], ["c6"]]
    assert len(shard_loader(loader, 1, 2, training=False)) == 2
    three = [_ids(shard_loader(loader, r, 3, training=False)) for r in range(3)]
    assert three == [[["c0", "c1"], ["c6"]], [["c2", "c3"]], [["c4", "c5"]]]
    assert list(shard_loader(DataLoader(_cases(1), batch_size=1), 1, 2, training=False)) == []


def test_shard_loader_falls_back_for_other_iterables():
    batches = [{"case_id": [k]} for k in range(5)]
    assert shard_loader(batches, 0, 1) is batches
    train = shard_loader(batches, 1, 2)
    assert list(train) == [batches[1], batches[3]] and len(train) == 2  # the 5th batch dropped
    assert list(shard_loader(batches, 0, 2, training=False)) == [batches[0], batches[2], batches[4]]


def test_shard_loader_drop_last_too_small_is_refused():
    from delira.data import DataLoader

    loader = DataLoader(_cases(3), batch_size=2, drop_last=True)
    with pytest.raises(ValueError, match="drop_last=True leaves no batch"):
        shard_loader(loader, 0, 2)
