"""Where the halves live: one process holding both (emulation), or torchrun's processes.

Processes form a ("dp", "mp") device mesh: every model-parallel pair ("mp",
size 2) holds one network, one half per process, and pairs are data-parallel
replicas along "dp". NCCL and the process's own GPU when CUDA is there,
gloo and the CPU otherwise.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

from split_alexnet.model.split import SplitAlexNet
from split_alexnet.model.table import Variant, resolve_variant
from split_alexnet.parallel.collectives import ProcessGroupExchange


def distributed(
    group: dist.ProcessGroup | None = None,
    variant: Variant | None = None,
    *,
    seed: int = 0,
    **options: object,
) -> SplitAlexNet:
    """This rank's half; the other rank of the 2-rank `group` holds the other one."""
    variant = resolve_variant(variant, options)
    if variant.halves != 2:
        raise ValueError("the one-GPU net has no halves to distribute; use emulated()")
    return SplitAlexNet(ProcessGroupExchange(group), variant, seed=seed)


# How long the other ranks wait for the main process to prepare the data (wait_for_main).
PATIENCE = timedelta(days=7)


class LayoutError(ValueError):
    """The processes cannot form pairs (one-line message for the console)."""


# What gloo says when a peer is gone (it raises a plain RuntimeError); NCCL raises DistError.
_PEER_GONE = ("Timed out waiting", "Connection closed by peer", "Connection reset by peer")


def peer_lost(error: BaseException) -> bool:
    """Whether `error` is a collective giving up on another process."""
    return isinstance(error, dist.DistError) or (
        isinstance(error, RuntimeError) and any(s in str(error) for s in _PEER_GONE)
    )


@dataclass(frozen=True)
class Layout:
    mode: str  # "emulate" | "distributed"
    device: torch.device
    rank: int = 0
    world: int = 1
    dp_rank: int = 0
    dp_size: int = 1
    mp_group: dist.ProcessGroup | None = None
    dp_group: dist.ProcessGroup | None = None
    patient_group: dist.ProcessGroup | None = None  # every rank, gloo, no practical timeout

    @property
    def is_main(self) -> bool:
        """The one process that prints, writes metrics and the run state."""
        return self.rank == 0

    @property
    def writes_halves(self) -> bool:
        """The pair of data-parallel rank 0 saves the halves; the replicas hold copies."""
        return self.dp_rank == 0

    def build(
        self,
        variant: Variant,
        seed: int,
        channels_last: bool = False,
        dtype: torch.dtype = torch.float32,
    ) -> SplitAlexNet:
        if self.mode == "emulate":
            model = SplitAlexNet.emulated(variant, seed=seed)
        else:
            model = distributed(self.mp_group, variant, seed=seed)
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        return model.to(self.device, dtype, memory_format=memory_format)

    def replicate(self, model: SplitAlexNet) -> nn.Module:
        """The module to train: each half's gradients averaged over its "dp" group.

        DDP's bucketed all-reduce runs on the dp group only, overlapping the
        backward pass, while the exchange's reduce-scatters run on the mp group:
        the two never share a communicator. broadcast_buffers=False keeps the
        forward pass free of dp collectives (the network has no buffers), so
        validation may run a different number of batches on each pair.
        """
        if self.dp_size == 1:
            return model
        from torch.nn.parallel import DistributedDataParallel

        model.shard_dropout(self.dp_rank, self.dp_size)
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        # torch 2.14 renamed broadcast_buffers; older versions know only that name.
        known = inspect.signature(DistributedDataParallel).parameters
        no_sync = "forward_sync_buffers" if "forward_sync_buffers" in known else "broadcast_buffers"
        return DistributedDataParallel(
            model, device_ids=device_ids, process_group=self.dp_group, **{no_sync: False}
        )

    def pair_batch(self, global_batch: int) -> int:
        """Each pair's share of a global training batch, which must split evenly.

        DDP averages the pairs' mean losses; that is the global batch's mean
        only when every pair holds the same number of examples.
        """
        if global_batch % self.dp_size:
            raise LayoutError(
                f"global batch {global_batch} does not split evenly over {self.dp_size} "
                f"model-parallel pairs: choose data.batch_size a multiple of {self.dp_size}"
            )
        return global_batch // self.dp_size

    def mean_over_replicas(self, values: torch.Tensor) -> torch.Tensor:
        """The mean over the data-parallel replicas (e.g. their equal-shard losses)."""
        if self.dp_size > 1:
            values = values.clone()
            dist.all_reduce(values, group=self.dp_group)
            values /= self.dp_size
        return values

    def barrier(self) -> None:
        if self.mode == "distributed":
            dist.barrier()

    def wait_for_main(self) -> None:
        """Wait, however long it takes, for the main process's work the others need.

        Building the data cache and its statistics takes hours on ImageNet; a
        barrier on the default group would give up at the collectives' timeout
        (10 minutes for NCCL) and torchrun would restart the waiting ranks.
        """
        if self.mode == "distributed":
            dist.barrier(group=self.patient_group)

    def any(self, flags: torch.Tensor) -> torch.Tensor:
        """Each flag (non-zero: true) true on every process if it is true on any, so that
        all stop at the same step; a collective on the device, no wait for its result."""
        if self.mode == "emulate":
            return flags
        flags = flags.clone()
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        return flags

    def sum_over_replicas(self, values: torch.Tensor) -> torch.Tensor:
        """Counts summed over the data-parallel replicas (each pair counts its own shard)."""
        if self.dp_size > 1:
            dist.all_reduce(values, group=self.dp_group)
        return values

    def gather(self, value: object) -> list[object]:
        """Every process's `value`, in rank order, on every process."""
        if self.mode == "emulate":
            return [value]
        values: list[object] = [None] * self.world
        dist.all_gather_object(values, value)
        return values

    def broadcast(self, value: object) -> object:
        """Process 0's `value` on every process (e.g. the run directory)."""
        if self.mode == "emulate":
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def close(self) -> None:
        if self.mode == "distributed" and dist.is_initialized():
            dist.destroy_process_group()


def _attempt_store(world: int) -> dist.Store | None:
    """torchrun's store, with its keys kept apart for every restart of the workers.

    Under --max-restarts the restarted workers share the agent's store with the
    dead ones; without a prefix per attempt a worker can read a dead peer's
    gloo address and fail with "Connection refused". None: plain env://.
    """
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None
    store = dist.TCPStore(
        os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world, is_master=False
    )
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    return dist.PrefixStore(f"split_alexnet/attempt{attempt}/", store)


def setup_layout(mode: str, timeout_s: float | None = None) -> Layout:
    """The layout `mode` asks for; "distributed" reads torchrun's environment, and "auto"
    is "distributed" under torchrun (it sets WORLD_SIZE) and "emulate" otherwise."""
    if mode == "auto":
        mode = "distributed" if "WORLD_SIZE" in os.environ else "emulate"
    if mode == "emulate":
        device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
        return Layout("emulate", device)
    if mode != "distributed":
        raise LayoutError(f"mode.layout must be auto, distributed or emulate, not {mode!r}")
    if "WORLD_SIZE" not in os.environ:
        raise LayoutError(
            "mode=distributed runs under torchrun (see launch/); for one process use mode=emulate"
        )
    world = int(os.environ["WORLD_SIZE"])
    if world % 2:
        raise LayoutError(
            f"world size {world} is not a multiple of 2: every network is a pair of processes"
        )
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    if not dist.is_initialized():
        store = _attempt_store(world)
        # timeout_s bounds every collective of the run: a peer that died or hangs ends
        # the wait with an error instead of holding this process forever.
        timeout = None if timeout_s is None else timedelta(seconds=timeout_s)
        if store is None:
            dist.init_process_group(backend, timeout=timeout)
        else:
            rank = int(os.environ["RANK"])
            dist.init_process_group(
                backend, store=store, rank=rank, world_size=world, timeout=timeout
            )
    from torch.distributed.device_mesh import init_device_mesh

    mesh = init_device_mesh(device.type, (world // 2, 2), mesh_dim_names=("dp", "mp"))
    return Layout(
        mode="distributed",
        device=device,
        rank=dist.get_rank(),
        world=world,
        dp_rank=mesh.get_local_rank("dp"),
        dp_size=world // 2,
        mp_group=mesh.get_group("mp"),
        dp_group=mesh.get_group("dp"),
        patient_group=dist.new_group(backend="gloo", timeout=PATIENCE),
    )
