"""Several processes on one run: mlx's distributed group, as `mlx.launch` starts it.

Every rank runs the same command on the same run directory (one machine, or a folder every host sees at the same
path). Rank 0 alone writes; the others compute their share and send it to rank 0:

- answer, the judge, the probe and evaluate cut their batches exactly as one process does and give batch i to
  rank i % N (`map_batches`); every rank receives every batch's results, in order, and rank 0 appends them, so
  the files are those of one process, and resuming them works as it does for one;
- training is data-parallel: each rank takes a strided share of every batch and the gradients are summed,
  weighted by tokens, so N ranks take the steps one process takes (see training/loop.py);
- every write of rank 0 ends in a barrier (`RecordWriter.close`, `atomic_file`), so a rank reads a file only
  once rank 0 has finished writing it.

A rank that stops (an error, a kill) makes the others stop with one line: `mlx.launch` sends them SIGTERM
(`stop_on_sigterm`), and a rank that reaches an exchange first finds its peer gone (`collective`).
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from typing import Callable, Iterator, Sequence, TypeVar

from slearn_mlx.errors import UserError

T = TypeVar("T")
_group = None


class PeerLost(UserError):
    """Another rank of the group stopped."""


def group():
    """The group this process belongs to: mlx's world group (size 1 when not launched by mlx.launch)."""
    global _group
    if _group is None:
        import mlx.core as mx

        _group = mx.distributed.init()
    return _group


def launched() -> bool:
    """Whether this process was started as one rank of several (without initializing anything)."""
    return any(name in os.environ for name in ("MLX_RANK", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MLX_JACCL_COORDINATOR"))


def size() -> int:
    return group().size() if launched() else 1


def rank() -> int:
    return group().rank() if launched() else 0


def is_writer() -> bool:
    """Rank 0 writes the run directory; the others only read it."""
    return rank() == 0


def backend() -> str | None:
    """The backend mlx.launch chose, from the environment it set."""
    if not launched():
        return None
    if "OMPI_COMM_WORLD_SIZE" in os.environ or "PMI_SIZE" in os.environ:
        return "mpi"
    if "MLX_JACCL_COORDINATOR" in os.environ or "MLX_IBV_DEVICES" in os.environ:
        return "jaccl"
    if "NCCL_PORT" in os.environ:
        return "nccl"
    return "ring"


def describe() -> dict | None:
    """backend, rank and size, for `slearn info` and run reports; None for one process."""
    if not launched():
        return None
    return {"backend": backend(), "rank": rank(), "size": size()}


def _stopped(why: str) -> str:
    return f"rank {rank()} of {size()}: {why}; what is finished is kept: run the same command again"


@contextmanager
def collective() -> Iterator[None]:
    """Turn the error a collective raises when a rank is gone into one line for the user."""
    try:
        yield
    except RuntimeError as exc:
        message = str(exc)
        if not any(word in message for word in ("[ring]", "[mpi]", "[jaccl]", "[nccl]", "peer")):
            raise
        raise PeerLost(_stopped(f"another rank of the group stopped ({message})")) from None


def stop_on_sigterm() -> None:
    """Under mlx.launch, SIGTERM means another rank ended and the launcher stops the rest: end with one line
    (a PeerLost, raised where this rank is; what is finished is kept, as after any stop)."""
    import signal

    def stopped(signum, frame):
        raise PeerLost(_stopped("stopped because another rank of the group ended (mlx.launch stops the others)"))

    signal.signal(signal.SIGTERM, stopped)


def barrier() -> None:
    """Wait until every rank gets here."""
    if size() == 1:
        return
    import mlx.core as mx

    with collective():
        mx.eval(mx.distributed.all_sum(mx.array(1, mx.int32), group=group()))


def exchange(obj) -> list:
    """Every rank's JSON-serializable `obj`, in rank order, on every rank."""
    if size() == 1:
        return [obj]
    import mlx.core as mx
    import numpy as np

    data = np.frombuffer(json.dumps(obj, ensure_ascii=False).encode(), np.uint8)
    with collective():
        lengths = mx.distributed.all_gather(mx.array([data.size], mx.int32), group=group())
        longest = int(mx.max(lengths).item())
        padded = np.zeros(max(longest, 1), np.uint8)
        padded[: data.size] = data
        gathered = np.array(mx.distributed.all_gather(mx.array(padded), group=group())).reshape(size(), -1)
    return [json.loads(bytes(row[:n])) for row, n in zip(gathered, np.array(lengths).tolist())]


def all_sum(x):
    """mx.distributed.all_sum over the group; `x` itself for one process."""
    if size() == 1:
        return x
    import mlx.core as mx

    return mx.distributed.all_sum(x, group=group())


def map_batches(batches: Sequence[list[T]], compute: Callable[[list[T]], list]) -> Iterator[tuple[list[T], list]]:
    """(batch, compute(batch)) for every batch, in order, on every rank; batch i is computed by rank i % N.

    `compute` returns JSON-serializable results. The caller writes them through a RecordWriter, whose close
    waits for every rank: no rank reads the file before rank 0 has written it whole.
    """
    n = size()
    if n == 1:
        for batch in batches:
            yield batch, compute(batch)
        return
    for start in range(0, len(batches), n):
        round_ = batches[start : start + n]
        mine = round_[rank()] if rank() < len(round_) else None
        results = exchange(compute(mine) if mine is not None else None)
        for batch, result in zip(round_, results):
            yield batch, result
