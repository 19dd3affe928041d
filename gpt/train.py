"""Training: the one loop every task uses, loss estimation, and the small pieces around them
(optimizer, learning-rate schedules; the device and precision are gpt/device.py's).

Nothing here knows which model it trains, and nothing here prints: the loop reports through
callbacks, and the scripts decide what to show and what to save.
"""

import math
import sys
import time
from contextlib import nullcontext

import torch
from tqdm import tqdm

from .data import get_batch
from .device import Precision, to_device

def make_optimizer(params, learning_rate: float, weight_decay: float = 0.01, fused: bool | None = None):
    """AdamW with PyTorch's default hyperparameters (the course's optimizer), for a model or a list of
    parameters.

    fused=True (the default on a CPU or a CUDA GPU) updates every parameter in one kernel instead of a
    dozen small ops per parameter: for models this small the optimizer step is mostly per-op overhead.
    """
    params = list(params.parameters() if isinstance(params, torch.nn.Module) else params)
    if fused is None:
        fused = params[0].device.type in ("cpu", "cuda")
    return torch.optim.AdamW(params, lr=learning_rate, weight_decay=weight_decay, fused=fused,
                             foreach=None if fused else True)


# Windows scored per forward pass when estimating the loss, in tokens. On a CPU, chunks of about 4k
# tokens keep the activations in cache (measured fastest); a GPU wants bigger ones.
EVAL_TOKENS = {"cpu": 1 << 12, "default": 1 << 16}


@torch.inference_mode()
def estimate_loss(model, splits: dict, batch_size: int, block_size: int, eval_iters: int,
                  generator: torch.Generator | None = None, device: str = "cpu") -> dict:
    """Mean loss over eval_iters batches per split, in eval mode; the model's mode is restored after.

    All eval_iters * batch_size windows are scored in as few forward passes as memory allows: the mean
    of equal-sized batch means is the mean over all windows, so this is the same estimate as
    eval_iters separate batches, with a fraction of the per-call overhead.
    """
    was_training = model.training
    model.eval()
    out = {}
    chunk = max(1, EVAL_TOKENS.get(device, EVAL_TOKENS["default"]) // block_size)
    for name, data in splits.items():
        x, y = get_batch(data, eval_iters * batch_size, block_size, generator)  # (N, T), (N, T)
        total = 0.0
        for i in range(0, len(x), chunk):
            _, loss = model(to_device(x[i:i + chunk], device), to_device(y[i:i + chunk], device))
            total += loss.item() * len(x[i:i + chunk])  # summed in double precision on the host
        out[name] = total / len(x)
    model.train(was_training)
    return out


def cosine_schedule(peak: float, min_lr: float, warmup: float):
    """Linear warmup over the first `warmup` fraction of the run, then cosine decay to min_lr at the end
    (Loshchilov & Hutter 2016, https://arxiv.org/abs/1608.03983): lr as a function of progress in [0, 1]."""
    def lr_at(progress: float) -> float:
        if progress < warmup:
            return peak * (progress + 1e-9) / warmup
        decay = min(1.0, (progress - warmup) / max(1e-9, 1.0 - warmup))
        return min_lr + 0.5 * (1.0 + math.cos(math.pi * decay)) * (peak - min_lr)
    return lr_at


def train(model, optimizer, train_data, val_data, *, batch_size: int, block_size: int, max_iters: int,
          eval_interval: int, eval_iters: int, final_eval_iters: int | None = None, seed: int = 0,
          device: str = "cpu", on_eval=None, state: dict | None = None, lr_schedule=None,
          time_budget: float | None = None, precision: Precision | None = None,
          progress: bool | None = None) -> list[dict]:
    """Train up to max_iters steps (or until time_budget seconds), evaluating every eval_interval steps.

    Returns the evaluations: [{'iter', 'train', 'val', 'time', 'eval_iters'}, ...]; on_eval(record,
    state) is called after each one (the scripts print there, and save checkpoints).

    The last evaluation: without final_eval_iters, at the last step before its update, as the
    lecture does ("Epoch 4999"); with it, after the last update, with that many batches per split:
    the honest final number, on the model as it ends.

    state: where the run stands, everything needed to continue it exactly: {'iter', 'time',
    'generators': {'batch', 'eval'}, 'scaler'}. By default a fresh run: iteration 0 and two generators seeded
    from `seed`, kept apart so that evaluation never changes which batches training sees. A run
    resumed from a checkpoint passes the state saved there. The loop updates it in place.
    lr_schedule(progress) -> learning rate, with progress the fraction of max_iters done (or of
    time_budget when there is one, so that a budgeted run ends at the schedule's end whenever it stops).
    precision: every forward pass runs under its autocast (fp32 when None); with fp16 the loss is
    scaled before the backward pass (gpt/device.py).
    """
    autocast = precision.autocast if precision is not None else nullcontext
    if state is None:
        state = {"iter": 0, "time": 0.0, "generators": {
            "batch": torch.Generator().manual_seed(seed), "eval": torch.Generator().manual_seed(seed + 1)}}
    scaler = precision.grad_scaler() if precision is not None else None
    if scaler is not None and state.get("scaler"):  # a resumed fp16 run goes on with its loss scale
        scaler.load_state_dict(state["scaler"])
    state["scaler"] = scaler
    generators = state["generators"]
    splits = {"train": train_data, "val": val_data}
    history = []
    start = time.perf_counter() - state["time"]
    resumed_at = state["iter"] if state["iter"] > 0 else None  # a resumed run was evaluated there before it was saved

    def evaluate(it, n_batches, final=False):
        with autocast():
            losses = estimate_loss(model, splits, batch_size, block_size, n_batches, generators["eval"], device)
        state.update(iter=it, time=time.perf_counter() - start)
        record = {"iter": it, "train": losses["train"], "val": losses["val"], "time": state["time"],
                  "eval_iters": n_batches, **({"final": True} if final else {})}
        history.append(record)
        if on_eval is not None:
            with tqdm.external_write_mode():  # the bar steps aside while the line is printed, then comes back
                on_eval(record, state)

    model.train()
    show = sys.stderr.isatty() if progress is None else progress
    total = None if time_budget else max_iters
    end = max_iters  # the number of updates done when the loop ends
    with tqdm(total=total, initial=state["iter"], file=sys.stderr, unit="it", leave=False, disable=not show) as bar:
        for it in range(state["iter"], max_iters):
            elapsed = time.perf_counter() - start
            if time_budget is not None and elapsed >= time_budget:
                end = it
                break
            last = it == max_iters - 1 and final_eval_iters is None
            if (it % eval_interval == 0 and it != resumed_at) or last:
                evaluate(it, eval_iters)
            if lr_schedule is not None:
                done = elapsed / time_budget if time_budget else it / max_iters
                lr = lr_schedule(done)
                for group in optimizer.param_groups:  # a group may run at a multiple of the schedule (Muon)
                    group["lr"] = lr * group.get("lr_scale", 1.0)
            x, y = get_batch(train_data, batch_size, block_size, generators["batch"])  # (B, T), (B, T)
            with autocast():
                _, loss = model(to_device(x, device), to_device(y, device))
            optimizer.zero_grad(set_to_none=True)
            if scaler is None:
                loss.backward()
                optimizer.step()
            else:  # fp16: scale the loss up so that small gradients survive, unscale before the step
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            bar.update(1)
        if final_eval_iters is not None:
            bar.set_description_str(f"final evaluation, {final_eval_iters} batches per split")
            evaluate(end, final_eval_iters, final=True)
        elif end < max_iters:  # stopped by the time budget: the table still ends with where it stopped
            evaluate(end, eval_iters)
    return history


def seconds_per_step(model, batch_size: int, block_size: int, vocab_size: int, device: str,
                     precision: Precision | None = None) -> float:
    """About how long one training step takes here: the faster of the last two of three timed forward
    and backward passes (the first pays for warming up), in eval mode and without an update, so that
    neither the model's weights nor any random state change."""
    was_training = model.training
    model.eval()
    x = torch.randint(vocab_size, (batch_size, block_size), generator=torch.Generator().manual_seed(0))  # (B, T)
    x = x.to(device)
    autocast = precision.autocast if precision is not None else nullcontext
    times = []
    for _ in range(3):
        start = time.perf_counter()
        with autocast():
            _, loss = model(x, x)
        loss.backward()
        loss.item()  # waits for the device
        times.append(time.perf_counter() - start)
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return min(times[1:])


def expected_seconds(step_seconds: float, steps: int, eval_interval: int, eval_iters: int,
                     final_eval_iters: int | None = None) -> float:
    """A whole run at step_seconds a training step: the steps and the evaluations (two splits of
    eval_iters batches each, a forward pass costing about a third of a training step)."""
    evaluations = steps // eval_interval + 1
    eval_batches = 2 * (evaluations * eval_iters + (final_eval_iters or 0))
    return step_seconds * (steps + eval_batches / 3)
