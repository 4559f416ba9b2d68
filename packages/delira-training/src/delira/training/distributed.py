"""Distributed training: where this process stands in the job, and this rank's share of a loader.

- :class:`ClusterEnvironment` reads the rank, the world size, the local rank, the node list and the
  rendezvous address from the variables that ``torchrun`` sets (``RANK``, ``WORLD_SIZE``,
  ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``) or from SLURM's (``SLURM_PROCID``,
  ``SLURM_NTASKS``, ``SLURM_LOCALID``, ``SLURM_JOB_NODELIST``, ...), else describes a single process.
- :func:`init_torch_distributed` starts torch's process group from it; :func:`tf_config` /
  :func:`tf_multi_worker_strategy` build ``TF_CONFIG`` and TensorFlow's
  ``MultiWorkerMirroredStrategy`` from the same variables.
- :func:`shard_keys` and :func:`shard_loader` give each rank its part of every epoch.

See ``docs/distributed.md`` for the detection rules and the sharding contract.
"""

from __future__ import annotations

import inspect
import itertools
import json
import math
import os
import re
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "ClusterEnvironment",
    "barrier",
    "expand_nodelist",
    "expand_tasks_per_node",
    "get_rank",
    "get_world_size",
    "init_torch_distributed",
    "rank_seed",
    "shard_batches",
    "shard_keys",
    "shard_loader",
    "slurm_port",
    "tf_config",
    "tf_multi_worker_strategy",
    "torch_distributed_active",
]

#: ``SLURM_JOB_NAME`` of an interactive ``salloc`` shell (``salloc`` names the job after its command).
INTERACTIVE_JOB_NAMES = ("bash", "interactive")
#: ``MASTER_PORT`` under SLURM when it is not set: ``SLURM_PORT_BASE + SLURM_JOB_ID % SLURM_PORT_SPAN``.
SLURM_PORT_BASE, SLURM_PORT_SPAN = 15000, 15000
_TORCHRUN_PORT = 29500  # torchrun's default, for a single process that never opens it


# --- SLURM's host lists ------------------------------------------------------------------------------
def _split_top_level(text: str, what: str) -> list[str]:
    """``text`` split at the commas outside brackets."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        if char == "[":
            depth += 1
            if depth > 1:
                raise ValueError(f"{what}={text!r}: nested brackets; a SLURM host list has none")
        elif char == "]":
            depth -= 1
            if depth < 0:
                raise ValueError(f"{what}={text!r}: ']' without '['; check the host list")
        elif char == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if depth:
        raise ValueError(f"{what}={text!r}: '[' without ']'; check the host list")
    parts.append(text[start:])
    return parts


def _expand_range(inner: str, text: str, what: str) -> list[str]:
    """``"01-03,07"`` -> ``["01", "02", "03", "07"]`` (zero padding kept, as the width of the start)."""
    values = []
    for part in inner.split(","):
        bounds = part.split("-")
        if len(bounds) == 1 and bounds[0].isdigit():
            values.append(bounds[0])
        elif len(bounds) == 2 and bounds[0].isdigit() and bounds[1].isdigit():
            low, high = int(bounds[0]), int(bounds[1])
            if low > high:
                raise ValueError(f"{what}={text!r}: the range [{part}] runs backwards; write it low-high")
            values.extend(str(k).zfill(len(bounds[0])) for k in range(low, high + 1))
        else:
            raise ValueError(
                f"{what}={text!r}: [{inner}] is not a list of numbers and ranges such as [01-03,07]"
            )
    return values


def _expand_host(item: str, text: str, what: str) -> list[str]:
    start = item.find("[")
    if start < 0:
        return [item]
    end = item.index("]", start)
    heads = _expand_range(item[start + 1 : end], text, what)
    tails = _expand_host(item[end + 1 :], text, what)
    return [item[:start] + head + tail for head in heads for tail in tails]


def expand_nodelist(text: str, what: str = "SLURM_JOB_NODELIST") -> list[str]:
    """The host names of a SLURM host list, in SLURM's order.

    ``"node[01-03,07]"`` -> ``node01, node02, node03, node07``; ``"gpu-a1,gpu-b2"`` -> both;
    ``"node[1-2]-ib"`` -> ``node1-ib, node2-ib``; ``"r[1-2]n[1-2]"`` -> ``r1n1, r1n2, r2n1, r2n2``;
    groups mix: ``"a[1-2],b3"``. Zero padding follows the start of each range (``[08-10]`` ->
    ``08, 09, 10``).

    Raises:
        ValueError: an empty list, unbalanced or nested brackets, a range that is not ``low-high``
            of decimal numbers, or an empty host name; ``what`` names the variable in the message.
    """
    text = str(text).strip()
    if not text:
        raise ValueError(f"{what} is empty; expected a SLURM host list such as node[01-04]")
    hosts: list[str] = []
    for item in _split_top_level(text, what):
        if not item:
            raise ValueError(f"{what}={text!r} has an empty entry (two commas in a row or a trailing comma)")
        hosts.extend(_expand_host(item, text, what))
    if any(not h for h in hosts):
        raise ValueError(f"{what}={text!r} expands to an empty host name")
    return hosts


def expand_tasks_per_node(text: str, what: str = "SLURM_TASKS_PER_NODE") -> list[int]:
    """SLURM's tasks-per-node list: ``"2(x3),1"`` -> ``[2, 2, 2, 1]``, ``"4"`` -> ``[4]``."""
    counts: list[int] = []
    for part in str(text).strip().split(","):
        match = re.fullmatch(r"(\d+)(?:\(x(\d+)\))?", part.strip())
        if match is None:
            raise ValueError(f"{what}={text!r}: {part!r} is not a count such as 2 or 2(x3)")
        counts.extend([int(match.group(1))] * int(match.group(2) or 1))
    return counts


def slurm_port(job_id: int | str) -> int:
    """The rendezvous port of SLURM job ``job_id`` when ``MASTER_PORT`` is not set:
    ``15000 + job_id % 15000``, in ``[15000, 30000)`` (below Linux's ephemeral ports); every task of
    the job computes the same port, and two jobs sharing a node differ unless their ids are
    15000 apart."""
    return SLURM_PORT_BASE + int(job_id) % SLURM_PORT_SPAN


# --- the environment -----------------------------------------------------------------------------------
def _int(environ: Mapping[str, str], name: str, default: int | None = None) -> int:
    value = environ.get(name)
    if value is None or value == "":
        if default is None:
            raise ValueError(f"{name} is not set; the launcher should set it (torchrun, srun)")
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name}={value!r} is not an integer; unset it or give a number") from None


def _is_interactive(environ: Mapping[str, str]) -> bool:
    """An interactive ``salloc`` shell whose tasks were not started by ``srun``."""
    if environ.get("SLURM_JOB_NAME", "") not in INTERACTIVE_JOB_NAMES:
        return False
    # `srun -n 2 python train.py` typed into the salloc shell starts a step of 2 tasks: that counts
    return _int(environ, "SLURM_STEP_NUM_TASKS", 1) <= 1


@dataclass(frozen=True)
class ClusterEnvironment:
    """Where this process stands in a distributed job (see :meth:`detect`).

    Attributes:
        source: ``"torchrun"`` (torch's ``env://`` variables, set by ``torchrun`` or by hand),
            ``"slurm"`` (a task started by ``srun``) or ``"single"``.
        rank: this process's global rank, ``0 <= rank < world_size``.
        world_size: the number of processes.
        local_rank: the rank on this node (the GPU index to use).
        local_world_size: processes on this node.
        node_rank: this node's index.
        master_addr: host name or address of rank 0, where the processes meet.
        master_port: the port there.
        hosts: the nodes of the job in rank order of their first task (SLURM's node list; torchrun
            on one node: ``(master_addr,)``; multi-node torchrun: empty, unknown).
        tasks_per_node: the tasks on each of ``hosts`` (SLURM); empty when not known.
    """

    source: str = "single"
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = _TORCHRUN_PORT
    hosts: tuple[str, ...] = ()
    tasks_per_node: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.world_size < 1 or not 0 <= self.rank < self.world_size:
            raise ValueError(
                f"{self.source}: rank {self.rank} with world size {self.world_size}; need "
                "0 <= rank < world size (check RANK / WORLD_SIZE or SLURM_PROCID / SLURM_NTASKS)"
            )
        if not 0 <= self.local_rank < max(self.local_world_size, 1):
            raise ValueError(
                f"{self.source}: local rank {self.local_rank} with {self.local_world_size} processes on "
                "this node; need 0 <= local rank < local world size (LOCAL_RANK / SLURM_LOCALID)"
            )
        if not 0 < self.master_port < 65536:
            raise ValueError(f"MASTER_PORT={self.master_port} is not a TCP port; use one in 1..65535")

    # --- detection ------------------------------------------------------------------------------------
    @classmethod
    def detect(cls, environ: Mapping[str, str] | None = None) -> ClusterEnvironment:
        """Read the environment (``os.environ`` unless given), in this order:

        1. **torchrun**: ``RANK`` and ``WORLD_SIZE`` set (``torchrun`` sets them, and
           ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``, ``GROUP_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``;
           setting them by hand works too). It wins over SLURM's variables: ``torchrun`` started
           inside an ``srun`` task describes the processes that really train.
        2. **SLURM**: ``SLURM_PROCID`` and ``SLURM_NTASKS`` set (``srun`` sets them), unless the job
           is an interactive shell: ``SLURM_JOB_NAME`` is ``bash`` or ``interactive`` (what ``salloc``
           names it) and no ``srun`` step of several tasks runs (``SLURM_STEP_NUM_TASKS`` <= 1 or
           unset). World size ``SLURM_STEP_NUM_TASKS`` (else ``SLURM_NTASKS``), local rank
           ``SLURM_LOCALID``, node ``SLURM_NODEID``, hosts ``SLURM_STEP_NODELIST`` (else
           ``SLURM_JOB_NODELIST``, ``SLURM_NODELIST``), rank 0's host ``MASTER_ADDR`` if set, else the
           first host; port ``MASTER_PORT`` if set, else :func:`slurm_port` of ``SLURM_JOB_ID``.
        3. **single**: one process (rank 0 of 1).

        Raises:
            ValueError: a variable that is not a number, a rank outside the world, a host list
                that does not parse, or a multi-process job without ``MASTER_ADDR``
                (torchrun) or a node list / ``SLURM_JOB_ID`` / ``MASTER_PORT`` (SLURM).
        """
        env = os.environ if environ is None else environ
        if "RANK" in env and "WORLD_SIZE" in env:
            return cls._from_torchrun(env)
        if "SLURM_PROCID" in env and ("SLURM_NTASKS" in env or "SLURM_STEP_NUM_TASKS" in env):
            if not _is_interactive(env):
                return cls._from_slurm(env)
        return cls()

    @classmethod
    def _from_torchrun(cls, env: Mapping[str, str]) -> ClusterEnvironment:
        world = _int(env, "WORLD_SIZE")
        rank = _int(env, "RANK")
        local_world = _int(env, "LOCAL_WORLD_SIZE", world)
        if world > 1 and not env.get("MASTER_ADDR"):
            raise ValueError(
                "RANK and WORLD_SIZE are set but MASTER_ADDR is not; start the processes with torchrun, "
                "or set MASTER_ADDR and MASTER_PORT to rank 0's host and a free port"
            )
        master = env.get("MASTER_ADDR") or "127.0.0.1"
        return cls(
            source="torchrun",
            rank=rank,
            world_size=world,
            local_rank=_int(env, "LOCAL_RANK", 0),
            local_world_size=local_world,
            node_rank=_int(env, "GROUP_RANK", _int(env, "NODE_RANK", 0)),
            master_addr=master,
            master_port=_int(env, "MASTER_PORT", _TORCHRUN_PORT),
            hosts=(master,) if local_world == world else (),
            tasks_per_node=(world,) if local_world == world else (),
        )

    @classmethod
    def _from_slurm(cls, env: Mapping[str, str]) -> ClusterEnvironment:
        world = _int(env, "SLURM_STEP_NUM_TASKS", _int(env, "SLURM_NTASKS", 1))
        rank = _int(env, "SLURM_PROCID")
        hosts: list[str] = []
        counts: list[int] = []
        try:
            for name in ("SLURM_STEP_NODELIST", "SLURM_JOB_NODELIST", "SLURM_NODELIST"):
                if env.get(name):
                    hosts = expand_nodelist(env[name], name)
                    break
            for name in ("SLURM_STEP_TASKS_PER_NODE", "SLURM_TASKS_PER_NODE"):
                if env.get(name):
                    counts = expand_tasks_per_node(env[name], name)
                    break
        except ValueError:
            if world > 1:
                raise
            hosts, counts = [], []  # a single task needs neither (e.g. a fold job of the launcher)
        if counts and (len(counts) != len(hosts) or sum(counts) != world):
            counts = []  # describes the allocation, not this step: unknown
        if world > 1 and not hosts and not env.get("MASTER_ADDR"):
            raise ValueError(
                "SLURM_PROCID and SLURM_NTASKS describe several tasks but neither SLURM_JOB_NODELIST nor "
                "MASTER_ADDR says where rank 0 runs; start the tasks with srun, or set MASTER_ADDR"
            )
        if env.get("MASTER_PORT"):
            port = _int(env, "MASTER_PORT")
        elif env.get("SLURM_JOB_ID"):
            port = slurm_port(_int(env, "SLURM_JOB_ID"))
        elif world > 1:
            raise ValueError(
                "neither MASTER_PORT nor SLURM_JOB_ID is set, so the tasks cannot agree on a port; "
                "start the tasks with srun, or export MASTER_PORT"
            )
        else:
            port = _TORCHRUN_PORT
        node, local_rank = _int(env, "SLURM_NODEID", 0), _int(env, "SLURM_LOCALID", 0)
        if counts and node < len(counts):
            local_world = counts[node]
        elif hosts and world % len(hosts) == 0:
            local_world = world // len(hosts)
        else:
            local_world = world
        local_world = max(local_world, local_rank + 1)
        return cls(
            source="slurm",
            rank=rank,
            world_size=world,
            local_rank=local_rank,
            local_world_size=local_world,
            node_rank=node,
            master_addr=env.get("MASTER_ADDR") or (hosts[0] if hosts else "127.0.0.1"),
            master_port=port,
            hosts=tuple(hosts),
            tasks_per_node=tuple(counts),
        )

    # --- derived --------------------------------------------------------------------------------------
    @property
    def is_distributed(self) -> bool:
        """More than one process."""
        return self.world_size > 1

    @property
    def is_main_process(self) -> bool:
        """Rank 0: the process that writes checkpoints, logs and summaries."""
        return self.rank == 0

    @property
    def init_method(self) -> str:
        """``tcp://MASTER_ADDR:MASTER_PORT`` for ``torch.distributed.init_process_group``."""
        host = f"[{self.master_addr}]" if ":" in self.master_addr else self.master_addr
        return f"tcp://{host}:{self.master_port}"

    def worker_addresses(self, base_port: int | None = None) -> list[str]:
        """``host:port`` of every rank, in rank order: rank ``k`` on its node's host, listening on
        ``base_port + (its rank on that node)`` (``base_port`` default ``master_port``). Ranks are
        laid out on the hosts in blocks (SLURM's default distribution): the first
        ``tasks_per_node[0]`` ranks on ``hosts[0]``, and so on; without ``tasks_per_node`` the ranks
        divide evenly over the hosts.

        Raises:
            ValueError: the hosts are not known (multi-node torchrun) or the ranks do not divide
                over them.
        """
        port = self.master_port if base_port is None else int(base_port)
        if self.world_size == 1:
            return [f"{self.master_addr}:{port}"]
        counts = list(self.tasks_per_node)
        if not counts and self.hosts and self.world_size % len(self.hosts) == 0:
            counts = [self.world_size // len(self.hosts)] * len(self.hosts)
        if not counts:
            raise ValueError(
                f"cannot tell which host each of the {self.world_size} ranks runs on ({self.source}, hosts "
                f"{list(self.hosts)}); run under srun with the same number of tasks on every node, or set "
                "TF_CONFIG yourself"
            )
        if max(counts) + port > 65535:
            raise ValueError(f"base port {port} + {max(counts)} tasks per node leaves the TCP port range")
        return [f"{host}:{port + local}" for host, n in zip(self.hosts, counts) for local in range(n)]

    def tf_config(self, base_port: int | None = None) -> dict[str, Any]:
        """``TF_CONFIG`` for ``tf.distribute.MultiWorkerMirroredStrategy``:
        ``{"cluster": {"worker": worker_addresses(base_port)}, "task": {"type": "worker",
        "index": rank}}`` (worker 0 is the chief)."""
        return {
            "cluster": {"worker": self.worker_addresses(base_port)},
            "task": {"type": "worker", "index": self.rank},
        }


def get_world_size() -> int:
    """The world size of :meth:`ClusterEnvironment.detect` (1 outside a distributed job)."""
    return ClusterEnvironment.detect().world_size


def get_rank() -> int:
    """The rank of :meth:`ClusterEnvironment.detect` (0 outside a distributed job)."""
    return ClusterEnvironment.detect().rank


# --- torch ---------------------------------------------------------------------------------------------
def torch_distributed_active() -> bool:
    """True when torch's default process group is running (torch imported lazily)."""
    import torch.distributed as dist

    return bool(dist.is_available() and dist.is_initialized())


def init_torch_distributed(
    device: str = "cpu", env: ClusterEnvironment | None = None, timeout_s: float | None = None
) -> tuple[int, int]:
    """Start torch's default process group unless it is running: ``gloo`` on the CPU, ``nccl`` on
    CUDA (the device becomes this process's current CUDA device), rendezvous at
    ``env.init_method`` with ``env.rank`` and ``env.world_size`` (``env`` default
    :meth:`ClusterEnvironment.detect`). Returns ``(rank, world_size)`` of the process group.

    Args:
        device: ``"cpu"``, ``"cuda:<local rank>"``.
        env: the cluster environment.
        timeout_s: how long collectives (and the rendezvous) wait for the other ranks; torch's
            default when None.
    """
    import torch
    import torch.distributed as dist

    if not dist.is_available():
        raise RuntimeError(
            "this torch build has no torch.distributed; install a build with distributed support"
        )
    if not dist.is_initialized():
        env = ClusterEnvironment.detect() if env is None else env
        cuda = str(device).startswith("cuda")
        if cuda:
            torch.cuda.set_device(torch.device(device))
        kwargs: dict[str, Any] = {}
        if timeout_s is not None:
            import datetime

            kwargs["timeout"] = datetime.timedelta(seconds=float(timeout_s))
        dist.init_process_group(
            backend="nccl" if cuda else "gloo",
            init_method=env.init_method,
            rank=env.rank,
            world_size=env.world_size,
            **kwargs,
        )
    return dist.get_rank(), dist.get_world_size()


def barrier() -> None:
    """Wait until every rank of torch's running process group gets here; nothing when no process
    group runs (a single process, or torch not imported). For code around the trainer, e.g. rank 0
    writing a summary that the other ranks read afterwards."""
    import sys

    if "torch" not in sys.modules:
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


# --- TensorFlow ----------------------------------------------------------------------------------------
def tf_config(env: ClusterEnvironment | None = None, base_port: int | None = None) -> dict[str, Any]:
    """:meth:`ClusterEnvironment.tf_config` of ``env`` (default: detected)."""
    env = ClusterEnvironment.detect() if env is None else env
    return env.tf_config(base_port)


def tf_multi_worker_strategy(env: ClusterEnvironment | None = None, base_port: int | None = None) -> Any:
    """The ``tf.distribute`` strategy of this job; call it first thing, before TensorFlow runs
    anything, and build the network under ``strategy.scope()``.

    - ``TF_CONFIG`` already set: ``MultiWorkerMirroredStrategy()`` on it, as it is;
    - a distributed job (torchrun or SLURM variables, see :meth:`ClusterEnvironment.detect`):
      ``TF_CONFIG`` set to :func:`tf_config` (worker ``k`` on its host at ``base_port + local
      rank``; ``base_port`` default ``MASTER_PORT`` under SLURM, ``MASTER_PORT + 1`` under
      torchrun, whose rendezvous store listens on ``MASTER_PORT``), then
      ``MultiWorkerMirroredStrategy()``;
    - one process: TensorFlow's default strategy (one replica).
    """
    import tensorflow as tf

    if os.environ.get("TF_CONFIG"):
        return tf.distribute.MultiWorkerMirroredStrategy()
    env = ClusterEnvironment.detect() if env is None else env
    if not env.is_distributed:
        return tf.distribute.get_strategy()
    if base_port is None and env.source == "torchrun":
        base_port = env.master_port + 1
    os.environ["TF_CONFIG"] = json.dumps(env.tf_config(base_port))
    return tf.distribute.MultiWorkerMirroredStrategy()


# --- sharding ------------------------------------------------------------------------------------------
def rank_seed(seed: int, rank: int) -> int:
    """The loader seed of rank ``rank``: ``seed`` on rank 0, else the first 32-bit word of
    ``numpy.random.SeedSequence([seed, rank])``, so that the ranks' random augmentations differ
    (batch ``i`` of every rank would otherwise draw the same numbers)."""
    if rank == 0:
        return int(seed)
    return int(np.random.SeedSequence([int(seed), int(rank)]).generate_state(1)[0])


def shard_keys(
    keys: Sequence[Any], rank: int, world_size: int, batch_size: int, drop_last: bool = False
) -> list[Any]:
    """Rank ``rank``'s keys of one training epoch, in the order its loader batches them.

    The epoch is cut into rounds of ``world_size * batch_size`` consecutive keys; rank ``r`` takes the
    ``r``-th block of ``batch_size`` keys of every round, so its batches are the unsharded loader's
    batches ``r, r + W, r + 2W, ...``. The last, incomplete round (``s = len(keys) % (W * B)`` keys)
    is dropped with ``drop_last``; otherwise it is padded to a multiple of ``W`` with keys from the
    start of the epoch (fewer than ``W``, none when ``W`` divides ``s``) and split into ``W`` equal
    blocks of ``ceil(s / W)`` keys, one per rank, as each rank's last batch. Every rank so gets the same
    number of batches of the same sizes (no rank waits for a gradient all-reduce that never comes), and
    together the ranks see every key of the epoch exactly once, except the padded ones twice.

    Args:
        keys: the epoch's keys, the same list on every rank (same sampler, same seed).
        rank, world_size: ``0 <= rank < world_size``.
        batch_size: the loader's batch size, >= 1.
        drop_last: drop the incomplete last round (``s`` keys) instead of padding it.

    Raises:
        ValueError: bad rank / world size / batch size, or ``drop_last`` leaves no batch.
    """
    _check_rank(rank, world_size)
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    keys = list(keys)
    step = world_size * batch_size
    full = len(keys) // step * step
    out: list[Any] = []
    for start in range(0, full, step):
        out.extend(keys[start + rank * batch_size : start + (rank + 1) * batch_size])
    tail = keys[full:]
    if tail and not drop_last:
        block = math.ceil(len(tail) / world_size)
        padded = tail + list(itertools.islice(itertools.cycle(keys), block * world_size - len(tail)))
        out.extend(padded[rank * block : (rank + 1) * block])
    if not out:
        raise ValueError(
            f"the epoch has {len(keys)} samples, fewer than world_size * batch_size = {world_size} * "
            f"{batch_size}, and drop_last=True leaves no batch for the ranks; lower the batch size, use "
            "fewer processes or set drop_last=False"
        )
    return out


def _shard_length(n: int, rank: int, world_size: int, batch_size: int, drop_last: bool) -> int:
    """``len(shard_keys(range(n), ...))`` without building the list."""
    step = world_size * batch_size
    rounds, tail = divmod(n, step)
    return rounds * batch_size + (math.ceil(tail / world_size) if tail and not drop_last else 0)


def _check_rank(rank: int, world_size: int) -> None:
    if int(world_size) < 1 or not 0 <= int(rank) < int(world_size):
        raise ValueError(
            f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}; pass the process's "
            "rank and the number of processes (ClusterEnvironment.detect())"
        )


def shard_batches(
    loader: Iterable[Mapping[str, Any]], rank: int, world_size: int, even: bool = True
) -> Iterator[Mapping[str, Any]]:
    """Batches ``rank, rank + world_size, rank + 2 * world_size, ...`` of any iterable ``loader``
    (the fallback of :func:`shard_loader` for loaders other than ``delira.data.DataLoader``).

    Every process iterates (and so loads) the whole loader and keeps its share. With ``even`` and a
    sized loader the last ``len(loader) % world_size`` batches are dropped, so that every process
    gets the same number of batches (training: no process waits for a gradient all-reduce that
    never comes); ``even=False`` keeps them (evaluation).
    """
    _check_rank(rank, world_size)
    if world_size <= 1:
        yield from loader
        return
    limit = (len(loader) // world_size) * world_size if even and hasattr(loader, "__len__") else None
    if limit == 0:
        raise ValueError(
            f"the loader has {len(loader)} batches, fewer than the {world_size} processes; "
            "use a smaller batch size or more data"
        )
    for index, batch in enumerate(loader):
        if limit is not None and index >= limit:
            break
        if index % world_size == rank:
            yield batch


class _TrainShard:
    """Sampler of a rank's training keys (:func:`shard_keys`) of the wrapped loader's sampler."""

    def __init__(self, sampler: Any, rank: int, world_size: int, batch_size: int, drop_last: bool) -> None:
        self.sampler, self.rank, self.world_size = sampler, rank, world_size
        self.batch_size, self.drop_last = batch_size, drop_last
        self.epoch = 0
        if len(self) == 0:
            raise ValueError(
                f"the sampler has {len(sampler)} keys, fewer than world_size * batch_size = {world_size} * "
                f"{batch_size}, and drop_last=True leaves no batch for the ranks; lower the batch size, use "
                "fewer processes or set drop_last=False"
            )

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[Any]:
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(self.epoch)
        keys = list(self.sampler)
        return iter(shard_keys(keys, self.rank, self.world_size, self.batch_size, self.drop_last))

    def __len__(self) -> int:
        return _shard_length(len(self.sampler), self.rank, self.world_size, self.batch_size, self.drop_last)


class _EvalShard:
    """Sampler of the keys of the wrapped loader's batches ``rank, rank + W, ...`` (all of them)."""

    def __init__(self, loader: Any, rank: int, world_size: int) -> None:
        self.loader, self.rank, self.world_size = loader, rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[Any]:
        batches = self.loader.batch_keys(self.epoch)
        return iter([k for batch in batches[self.rank :: self.world_size] for k in batch])

    def __len__(self) -> int:
        n, size, count = len(self.loader.sampler), self.loader.batch_size, len(self.loader)
        mine = range(self.rank, count, self.world_size)
        return sum(min(size, n - b * size) for b in mine)


def _rebuild(loader: Any, **overrides: Any) -> Any:
    """A new loader of ``loader``'s class with its constructor arguments (read from the attributes
    of the same names) and ``overrides``."""
    kwargs = {}
    parameters = list(inspect.signature(type(loader).__init__).parameters.values())[1:]
    for p in parameters:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if p.name in overrides:
            kwargs[p.name] = overrides[p.name]
        elif hasattr(loader, p.name):
            kwargs[p.name] = getattr(loader, p.name)
        elif p.default is p.empty:
            raise TypeError(f"{type(loader).__name__} has no attribute {p.name!r} to rebuild it from")
    return type(loader)(**kwargs)


class _Sharded:
    """A rank's view of any iterable loader through :func:`shard_batches`."""

    def __init__(self, loader: Any, rank: int, world_size: int, even: bool) -> None:
        self.loader, self.rank, self.world_size, self.even = loader, rank, world_size, even

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.loader, "set_epoch"):
            self.loader.set_epoch(epoch)

    def __iter__(self) -> Iterator[Mapping[str, Any]]:
        return shard_batches(self.loader, self.rank, self.world_size, even=self.even)

    def __len__(self) -> int:
        n = len(self.loader)
        if self.even:
            return n // self.world_size
        return len(range(self.rank, n, self.world_size))

    def close(self) -> None:
        """Nothing to stop: the wrapped loader belongs to the caller."""


def shard_loader(loader: Any, rank: int, world_size: int, training: bool = True) -> Any:
    """Rank ``rank``'s share of ``loader``: an iterable of batches with ``set_epoch`` and ``len``.

    For a ``delira.data.DataLoader`` a loader of the same class and arguments is built that loads
    only this rank's samples (its own workers; :meth:`close` it when done):

    - ``training``: the keys of :func:`shard_keys` of the sampler's epoch (every rank the same
      number of equal batches: the unsharded batches ``r, r + W, ...``, the last round split evenly,
      padded or, with the loader's ``drop_last``, dropped), loaded with the seed
      :func:`rank_seed` so that the ranks' augmentations differ;
    - evaluation: the unsharded loader's batches ``r, r + W, ...``, all of them (the ranks'
      counts may differ by one; a rank may get none, then the result is empty), with its seed, so
      that losses and metrics summed over the ranks equal those of one process.

    Any other iterable falls back to :func:`shard_batches` (every rank loads every batch and keeps
    its own; training drops the last ``len % W`` batches, evaluation keeps them). ``world_size`` 1
    returns ``loader`` itself.
    """
    _check_rank(rank, world_size)
    if world_size == 1:
        return loader
    from delira.data import DataLoader

    if isinstance(loader, DataLoader):
        try:
            if training:
                sampler = _TrainShard(loader.sampler, rank, world_size, loader.batch_size, loader.drop_last)
                seed = rank_seed(loader.seed, rank)
            else:
                sampler = _EvalShard(loader, rank, world_size)
                if len(sampler) == 0:
                    return ()
                seed = loader.seed
            shard = _rebuild(loader, sampler=sampler, seed=seed, drop_last=False, shuffle=False)
            shard.set_epoch(loader.epoch)
            return shard
        except TypeError as exc:  # a subclass that cannot be rebuilt from its attributes
            warnings.warn(
                f"cannot build a sharded copy of {type(loader).__name__} ({exc}); every rank loads every "
                "batch and keeps its share (shard_batches)",
                RuntimeWarning,
                stacklevel=2,
            )
    return _Sharded(loader, rank, world_size, even=training)
