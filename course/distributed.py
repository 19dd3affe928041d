"""Past one device: data-parallel training under torchrun, the same table as one process.

    torchrun --standalone --nproc_per_node 8 task07.py ...             # one machine, 8 processes
    torchrun --nnodes 2 --node_rank R --nproc_per_node 8 --rdzv_backend c10d \
             --rdzv_endpoint HOST:29500 task07.py ...                  # two machines

Every process builds the same model (the same seed) and draws the same batch, the one a single
process would draw (`--batch-size` is the global batch); each takes its share of it, rows
rank * B/N to (rank + 1) * B/N, and DistributedDataParallel averages the gradients, so that the
update is the single process's. `--grad-accum K` splits each process's share further into K
micro-steps, whose gradients add up before the update (course/steps.py). Every process evaluates
(the same model on the same batches, so the same numbers); process 0 alone prints, draws and saves,
and a checkpoint is the same file whether one process or many wrote it.
"""

import datetime
import os

import torch
import torch.distributed as dist

from gpt.errors import UserError

# How long a process waits for the others at a gradient exchange before it gives up: a process
# that died (torchrun then stops the rest) or hangs ends the run instead of blocking it forever.
TIMEOUT = datetime.timedelta(seconds=60)
BACKENDS = ("auto", "nccl", "gloo")


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def is_main_process() -> bool:
    """Whether this process speaks for the run: process 0 under torchrun, or the only one. (From the
    environment torchrun sets, so that it can be asked before the processes have joined.)"""
    return os.environ.get("RANK", "0") == "0"


def rank_and_world_size() -> tuple[int, int]:
    """This process's rank and the number of processes: (0, 1) outside torchrun."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class DataParallel:
    """This process's place among torchrun's (rank 0 of 1 without torchrun): joins the others at
    start, wraps the model in DistributedDataParallel, and leaves at the end of its `with` block."""

    def __init__(self, cfg, device: str):
        self.rank, self.world_size, self.local_rank = 0, 1, 0
        self.backend = None
        if not launched_by_torchrun():  # one process: the config has checked that grad_accum divides the batch
            return
        self.rank, self.world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.backend = cfg.backend if cfg.backend != "auto" else "nccl" if device == "cuda" else "gloo"
        if self.backend == "nccl" and not torch.cuda.is_available():
            raise UserError("--backend nccl needs CUDA GPUs, and this machine has none; on CPUs, torchrun runs with "
                            "--backend gloo (or auto)")
        if cfg.time_budget:
            raise UserError("--time-budget stops each process on its own clock, and the processes must take every "
                            "step together: under torchrun, give --max-iters instead")
        check_divisible(cfg.batch_size, self.world_size, cfg.grad_accum)
        if device == "cuda":
            torch.cuda.set_device(self.local_rank)  # "cuda" is then this process's GPU
        dist.init_process_group(self.backend, timeout=TIMEOUT)

    @property
    def main(self) -> bool:
        """Whether this process evaluates, prints and saves."""
        return self.rank == 0

    def wrap(self, model):
        """The model the loop trains: DistributedDataParallel's wrapper under torchrun, which averages
        the gradients across the processes in the backward pass. Buffers (RoPE's angles) are the same
        everywhere and never change, so they are not sent."""
        if self.world_size == 1:
            return model
        device_ids = [self.local_rank] if self.backend == "nccl" else None
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids, forward_sync_buffers=False)

    def describe(self, batch_size: int, grad_accum: int) -> str:
        """How the batch is split, for the lines a run starts with ('' for one process, one step)."""
        if self.world_size == 1 and grad_accum == 1:
            return ""
        micro = batch_size // (self.world_size * grad_accum)
        return (f"data parallel: {self.world_size} process{'es' if self.world_size > 1 else ''}"
                f"{f' ({self.backend})' if self.backend else ''} | global batch {batch_size} = {self.world_size} "
                f"x {grad_accum} micro-step{'s' if grad_accum > 1 else ''} x micro-batch {micro}")

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        """Leave the process group, however the run ends (Ctrl-C and errors included)."""
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


def check_divisible(batch_size: int, world_size: int, grad_accum: int) -> None:
    if batch_size % (world_size * grad_accum):
        raise UserError(f"--batch-size {batch_size} is the global batch: it must split evenly into {world_size} "
                        f"process{'es' if world_size > 1 else ''} x {grad_accum} micro-step"
                        f"{'s' if grad_accum > 1 else ''}; give a batch size that is a multiple of "
                        f"{world_size * grad_accum}")


def this_ranks_share(x: torch.Tensor, y: torch.Tensor, micro_steps: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The batch one process would train on, (B, T) each: this process's share of its rows (all of
    them outside torchrun), in micro_steps equal parts."""
    rank, world_size = rank_and_world_size()
    rows = len(x) // world_size
    x, y = x[rank * rows:(rank + 1) * rows], y[rank * rows:(rank + 1) * rows]  # (B/N, T) each
    return list(zip(x.chunk(micro_steps), y.chunk(micro_steps)))  # micro_steps x ((B/N/K, T), (B/N/K, T))
