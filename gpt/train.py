"""Training: the loop, loss estimation, and the small pieces around them (device, seed, optimizer).

Nothing here knows which model it trains, and nothing here prints: the loop reports through
callbacks and the scripts decide what to show.
"""

import math
import sys
import time
from contextlib import nullcontext

import torch
from tqdm import tqdm

from .data import get_batch
from .errors import UserError


def resolve_device(name: str) -> str:
    """'auto' picks cuda, then mps, then cpu; an explicit device must exist."""
    if name == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for, but PyTorch sees no CUDA GPU; use --device cpu or auto")
    if name == "mps" and not torch.backends.mps.is_available():
        raise UserError("--device mps was asked for, but this PyTorch has no MPS support; use --device cpu or auto")
    if name not in ("cuda", "mps", "cpu"):
        raise UserError(f"unknown device {name!r}; choose auto, cuda, mps or cpu")
    return name


def make_optimizer(model: torch.nn.Module, learning_rate: float, weight_decay: float = 0.01) -> torch.optim.AdamW:
    """AdamW with PyTorch's default hyperparameters.

    fused=True updates every parameter in one kernel instead of a dozen small ops per parameter:
    for models this small the optimizer step is mostly per-op overhead (RESEARCH_LOG.md measures it).
    """
    device = next(model.parameters()).device.type
    fused = device in ("cpu", "cuda")
    return torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=weight_decay,
                             fused=fused, foreach=None if fused else True)


@torch.inference_mode()
def estimate_loss(model, splits: dict, batch_size: int, block_size: int, eval_iters: int,
                  generator: torch.Generator | None = None, device: str = "cpu",
                  max_tokens_per_forward: int | None = None) -> dict:
    """Mean loss over eval_iters batches per split, in eval mode; the model's mode is restored after.

    All eval_iters * batch_size windows are scored in as few forward passes as memory allows: the mean
    of equal-sized batch means is the mean over all windows, so this is the same estimate as
    eval_iters separate batches, with a fraction of the per-call overhead.
    """
    if max_tokens_per_forward is None:
        # On a CPU, chunks of ~4k tokens keep the activations in cache (measured fastest); a GPU wants more.
        max_tokens_per_forward = 1 << 12 if device == "cpu" else 1 << 16
    was_training = model.training
    model.eval()
    out = {}
    chunk = max(1, max_tokens_per_forward // block_size)
    for name, data in splits.items():
        x, y = get_batch(data, eval_iters * batch_size, block_size, generator)  # (N, T), (N, T)
        total = 0.0
        for i in range(0, len(x), chunk):
            _, loss = model(x[i:i + chunk].to(device), y[i:i + chunk].to(device))
            total += loss.item() * len(x[i:i + chunk])
        out[name] = total / len(x)
    model.train(was_training)
    return out


def lr_at(progress: float, peak: float, min_lr: float, warmup: float) -> float:
    """Linear warmup over the first `warmup` fraction of the run, then cosine decay to min_lr at progress 1."""
    if progress < warmup:
        return peak * (progress + 1e-9) / warmup
    decay = min(1.0, (progress - warmup) / max(1e-9, 1.0 - warmup))
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * decay)) * (peak - min_lr)


def train(model, optimizer, train_data, val_data, *, batch_size: int, block_size: int, max_iters: int,
          eval_interval: int, eval_iters: int, seed: int, device: str = "cpu", on_eval=None,
          start_iter: int = 0, generators: dict | None = None, time_budget: float | None = None,
          time_spent: float = 0.0, schedule: dict | None = None, amp_dtype: torch.dtype | None = None,
          eval_first: bool = True, progress: bool | None = None) -> list[dict]:
    """Train from start_iter to max_iters (or until time_budget seconds have passed), evaluating every
    eval_interval steps and at the last one, before that step's update (as the lecture does).

    Returns the evaluations: [{'iter', 'train', 'val', 'time'}, ...]; on_eval(record) is called after
    each one (the scripts print there, and save checkpoints).
    generators: {'batch', 'eval'} torch.Generators; by default two fresh ones seeded from `seed`, kept
    apart so that evaluation never changes which batches training sees.
    schedule: {'peak', 'min_lr', 'warmup'} lays warmup + cosine decay over the run: over max_iters, or over
    time_budget when there is one, so that a budgeted run ends at min_lr whenever it stops.
    time_spent: seconds of the budget a resumed run already used.
    amp_dtype: run forward passes under autocast to this dtype (bf16 on a GPU).
    eval_first: evaluate before the first step (a search's trials skip it to spend their budget training).
    """
    autocast = (lambda: torch.autocast(device_type=device.split(":")[0], dtype=amp_dtype)) if amp_dtype else nullcontext
    if generators is None:
        generators = {"batch": torch.Generator().manual_seed(seed), "eval": torch.Generator().manual_seed(seed + 1)}
    splits = {"train": train_data, "val": val_data}
    history = []
    start = time.perf_counter() - time_spent

    def evaluate(it):
        with autocast():
            losses = estimate_loss(model, splits, batch_size, block_size, eval_iters, generators["eval"], device)
        record = {"iter": it, "train": losses["train"], "val": losses["val"], "time": time.perf_counter() - start}
        history.append(record)
        if on_eval is not None:
            on_eval(record)

    model.train()
    show = sys.stderr.isatty() if progress is None else progress
    total = None if time_budget else max_iters
    with tqdm(total=total, initial=start_iter, file=sys.stderr, unit="it", leave=False, disable=not show) as bar:
        for it in range(start_iter, max_iters):
            elapsed = time.perf_counter() - start
            out_of_time = time_budget is not None and elapsed >= time_budget
            # a resumed run was evaluated at its first step before it was saved
            skip = it == start_iter and (start_iter > 0 or not eval_first)
            if (it % eval_interval == 0 and not skip) or it == max_iters - 1 or out_of_time:
                evaluate(it)
                if out_of_time:
                    break
            if schedule is not None:
                done = elapsed / time_budget if time_budget else it / max_iters
                for group in optimizer.param_groups:
                    group["lr"] = lr_at(done, schedule["peak"], schedule["min_lr"], schedule["warmup"])
            x, y = get_batch(train_data, batch_size, block_size, generators["batch"])  # (B, T), (B, T)
            with autocast():
                _, loss = model(x.to(device, non_blocking=True), y.to(device, non_blocking=True))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            bar.update(1)
    return history
