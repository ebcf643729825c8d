"""Run a function in real gloo processes, as torchrun would, and collect what each returns."""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

# Each process is forked from a server (one per test process, started at the first call)
# that imported these once, instead of being spawned to import them again: about 3 s of
# two cores' time per pair saved, a process still starts without the caller's threads and
# state. The server keeps the environment of that first call; no caller changes it after.
mp.set_forkserver_preload(["torch", "torch.distributed", "split_alexnet"])


def _entry(rank: int, world: int, init_file: str, out_dir: str, fn: Callable, args: tuple) -> None:
    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        result = fn(rank, *args)
        torch.save(result, Path(out_dir) / f"rank{rank}.pt")
    finally:
        if dist.is_initialized():  # fn may have closed it (e.g. a training run's end)
            dist.destroy_process_group()


def free_port() -> int:
    """A TCP port free on this machine now, for a process group's store."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_processes(fn: Callable[..., Any], *args: Any, world: int = 2) -> list[Any]:
    """fn(rank, *args) in `world` fresh processes joined by gloo; their results by rank.

    `fn` must be importable (defined at module level). A failure in any process
    fails the caller with that process's traceback.
    """
    with tempfile.TemporaryDirectory() as tmp:
        init_file = str(Path(tmp) / "init")
        mp.start_processes(
            _entry, args=(world, init_file, tmp, fn, args), nprocs=world, start_method="forkserver"
        )
        return [torch.load(Path(tmp) / f"rank{r}.pt", weights_only=False) for r in range(world)]
