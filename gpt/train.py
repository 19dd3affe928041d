"""Training: the one loop every task uses, and loss estimation.

`train` is the lecture's loop: every eval_interval steps estimate the loss, then sample a batch,
forward, zero_grad, backward, step. What a long run adds attaches to it as hooks (gpt/hooks.py: a
learning-rate schedule, a time budget, the final evaluation, a progress bar; gpt/checkpoint.py:
saving), each an object whose methods the loop calls at its moments, as minGPT's trainer calls its
callbacks. Nothing here knows which model it trains, and nothing here prints.
"""

import time

import torch

from .data import get_batch
from .device import choose_precision, device_rng_state, set_device_rng_state, to_device
from .distributed import rank_and_world_size, this_ranks_share
from .model import eval_mode


def make_optimizer(params, learning_rate: float, weight_decay: float = 0.01, fused: bool | None = None):
    """AdamW with PyTorch's default hyperparameters (the course's optimizer), for a model's parameters
    (model.parameters()) or a list of them.

    fused=True (the default on a CPU or a CUDA GPU) updates every parameter in one kernel instead of a
    dozen small ops per parameter: for models this small the optimizer step is mostly per-op overhead.
    """
    params = list(params)
    if fused is None:
        fused = params[0].device.type in ("cpu", "cuda")
    return torch.optim.AdamW(params, lr=learning_rate, weight_decay=weight_decay, fused=fused,
                             foreach=None if fused else True)


# Windows scored per forward pass when estimating the loss, in tokens. On a CPU, chunks of about 4k
# tokens keep the activations in cache; a GPU wants bigger ones (RESEARCH_LOG.md, "2026-11-23: tasks 01-06 speed
# work", idea 4).
EVAL_TOKENS = {"cpu": 1 << 12, "default": 1 << 16}


def device_of(model) -> str:
    return next(model.parameters()).device.type


@torch.inference_mode()
def estimate_loss(model, splits: dict, batch_size: int, block_size: int, eval_iters: int,
                  generator: torch.Generator | None = None) -> dict:
    """Mean loss over eval_iters batches per split, in eval mode; the model's mode is restored after.

    All eval_iters * batch_size windows are scored in as few forward passes as memory allows: the mean
    of equal-sized batch means is the mean over all windows, so this is the same estimate as
    eval_iters separate batches, with a fraction of the per-call overhead.
    """
    device = device_of(model)
    chunk = max(1, EVAL_TOKENS.get(device, EVAL_TOKENS["default"]) // block_size)
    out = {}
    with eval_mode(model):
        for name, data in splits.items():
            x, y = get_batch(data, eval_iters * batch_size, block_size, generator)  # (N, T), (N, T)
            total = 0.0
            for i in range(0, len(x), chunk):
                _, loss = model(to_device(x[i:i + chunk], device), to_device(y[i:i + chunk], device))
                total += loss.item() * len(x[i:i + chunk])  # summed in double precision on the host
            out[name] = total / len(x)
    return out


class TrainingState:
    """Where a run stands: everything needed to continue it exactly. The steps done, the training time
    so far, the generators that draw the training batches and the evaluation batches (kept apart, so
    that evaluating never changes which batches training sees), the evaluations so far, and (saved
    and restored with the rest) the random state of the CPU and of the device, which dropout draws
    from, and the fp16 gradient scaler's."""

    def __init__(self, seed: int):
        self.iter = 0
        self.seconds = 0.0
        self.batch_generator = torch.Generator().manual_seed(seed)
        self.eval_generator = torch.Generator().manual_seed(seed + 1)
        self.history = []  # one record per evaluation: {'iter', 'train', 'val', 'time', 'eval_iters'}
        self.scaler = None  # the gradient scaler's state, for a resumed fp16 run

    def state_dict(self, device: str, scaler=None) -> dict:
        return {"iter": self.iter, "time": self.seconds, "history": list(self.history),
                "rng": torch.get_rng_state(), "device": device, "device_rng": device_rng_state(device),
                "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
                "generators": {"batch": self.batch_generator.get_state(), "eval": self.eval_generator.get_state()}}

    def load_state_dict(self, saved: dict, device: str) -> str | None:
        """Continue from a state_dict. Call it after the run is seeded and its model made, which draw
        from the random state it restores. Returns a note when the run was saved on another device."""
        self.iter, self.seconds, self.history = saved["iter"], saved["time"], list(saved["history"])
        self.batch_generator.set_state(saved["generators"]["batch"])
        self.eval_generator.set_state(saved["generators"]["eval"])
        self.scaler = saved["scaler"]
        torch.set_rng_state(saved["rng"])
        if saved["device_rng"] is None:
            return None
        if saved["device"] != device:
            return (f"note: this run was saved on {saved['device']} and resumes on {device}: with dropout, "
                    f"its random draws differ from an uninterrupted run's from here on")
        set_device_rng_state(device, saved["device_rng"])
        return None


class Trainer:
    """The loop and what it shares with its hooks: the model, the optimizer, the state, the precision.

    A hook is any object with some of these methods, called in the order the hooks are given:
    on_start(trainer); before_step(trainer), which may set trainer.stop; after_step(trainer);
    on_eval(trainer, record) after each evaluation; on_end(trainer) after the last step; on_close(trainer)
    when the loop is left, however it is left (Ctrl-C included).
    """

    def __init__(self, model, optimizer, data, cfg, hooks=(), state=None, batches=None):
        self.model, self.optimizer, self.data, self.cfg = model, optimizer, data, cfg
        self.hooks = list(hooks)
        self.batches = batches or self.random_windows  # batches(state) -> (x, y): each step's training batch
        self.state = state if state is not None else TrainingState(cfg.seed)
        self.device = device_of(model)
        self.precision = choose_precision(self.device, cfg.precision)  # every forward pass runs under it
        self.scaler = self.precision.grad_scaler()  # fp16: scales the loss so that small gradients survive
        if self.state.scaler is not None:  # a resumed fp16 run goes on with its loss scale
            self.scaler.load_state_dict(self.state.scaler)
        self.progress = 0.0  # the fraction of the run done, which a schedule follows
        self.stop = False  # set by a hook to end the run before max_iters (a time budget)
        self.last_step_evaluation = True  # the lecture's last evaluation, before the last update
        self.started = time.perf_counter() - self.state.seconds

    def call(self, event: str, *args) -> None:
        for hook in self.hooks:
            method = getattr(hook, event, None)
            if method is not None:
                method(self, *args)

    def run(self) -> list[dict]:
        self.call("on_start")
        try:
            self.loop()
        finally:
            self.call("on_close")
        return self.state.history

    def loop(self) -> None:
        cfg, state, model, optimizer = self.cfg, self.state, self.model, self.optimizer
        resumed_at = state.iter if state.iter > 0 else None  # evaluated there before it was saved
        model.train()
        for it in range(state.iter, cfg.max_iters):
            state.iter, self.progress = it, it / cfg.max_iters
            self.call("before_step")  # a schedule sets the learning rate; a time budget may stop the run
            if self.stop:
                break
            last = it == cfg.max_iters - 1 and self.last_step_evaluation
            if (it % cfg.eval_interval == 0 and it != resumed_at) or last:
                self.evaluate(cfg.eval_iters)
            x, y = self.batches(state)  # (B, T), (B, T)
            optimizer.zero_grad(set_to_none=True)  # before the forward pass: micro-steps add up their gradients
            micro_batches = this_ranks_share(x, y, cfg.grad_accum)  # one (x, y) for one process and one step
            for i, (xm, ym) in enumerate(micro_batches):
                model.require_backward_grad_sync = i == len(micro_batches) - 1  # torchrun: average on the last
                with self.precision.autocast():
                    _, loss = model(to_device(xm, self.device), to_device(ym, self.device))
                self.scaler.scale(loss / len(micro_batches)).backward()  # one process, one step: loss.backward()
            self.scaler.step(optimizer)  # without fp16: optimizer.step()
            self.scaler.update()
            self.call("after_step")
        else:
            state.iter = cfg.max_iters
        self.call("on_end")

    def random_windows(self, state) -> tuple[torch.Tensor, torch.Tensor]:
        """The lecture's batch: batch_size windows of block_size tokens at random places in the training split."""
        return get_batch(self.data.train, self.cfg.batch_size, self.cfg.block_size, state.batch_generator)

    def evaluate(self, n_batches: int, final: bool = False) -> dict | None:
        """Estimate the loss on both splits with n_batches batches each, record it, and tell the hooks.
        Under torchrun, process 0 alone evaluates (the others go on to the next step and wait there)."""
        if rank_and_world_size()[0] != 0:
            return None
        splits = {"train": self.data.train, "val": self.data.val}
        with self.precision.autocast():
            losses = estimate_loss(self.model, splits, self.cfg.batch_size, self.cfg.block_size, n_batches,
                                   self.state.eval_generator)
        self.state.seconds = time.perf_counter() - self.started
        record = {"iter": self.state.iter, "train": losses["train"], "val": losses["val"],
                  "time": self.state.seconds, "eval_iters": n_batches, **({"final": True} if final else {})}
        self.state.history.append(record)
        self.call("on_eval", record)
        return record

    def state_dict(self) -> dict:
        return self.state.state_dict(self.device, self.scaler)


def train(model, optimizer, data, cfg, hooks=(), state=None, batches=None) -> list[dict]:
    """Train model on data.train for cfg.max_iters steps of cfg.batch_size windows of cfg.block_size
    tokens (in cfg.grad_accum micro-steps, and shared among torchrun's processes: gpt/distributed.py),
    estimating the loss on both splits every cfg.eval_interval steps (cfg.eval_iters batches
    each) and at the last step, as the lecture does ("Epoch 4999"). Returns the evaluations.

    hooks: what a longer run attaches (see Trainer). state: where a resumed run stands (a fresh run
    starts from cfg.seed). batches(state) -> (x, y): each step's batch, if not the lecture's random
    windows (a stateful RNN's consecutive ones: gpt/rnn.py). The precision is cfg.precision on the
    model's device (gpt/device.py).
    """
    return Trainer(model, optimizer, data, cfg, hooks, state, batches).run()


def seconds_per_step(model, batch_size: int, block_size: int, vocab_size: int, precision=None) -> float:
    """About how long one training step takes here: the faster of the last two of three timed forward
    and backward passes (the first pays for warming up), in train mode as training runs them (a GPU's
    RNN kernels run backward only in train mode), without an update, and with the random states that
    dropout drew from put back after: neither the model's weights nor any random state change."""
    device = device_of(model)
    precision = precision or choose_precision(device, "fp32")
    x = torch.randint(vocab_size, (batch_size, block_size), generator=torch.Generator().manual_seed(0))  # (B, T)
    x = x.to(device)
    cpu_rng, device_rng, was_training = torch.get_rng_state(), device_rng_state(device), model.training
    times = []
    model.train()
    try:
        for _ in range(3):
            start = time.perf_counter()
            with precision.autocast():
                _, loss = model(x, x)
            loss.backward()
            loss.item()  # waits for the device
            times.append(time.perf_counter() - start)
    finally:
        model.train(was_training)
        torch.set_rng_state(cpu_rng)
        if device_rng is not None:
            set_device_rng_state(device, device_rng)
        model.zero_grad(set_to_none=True)
    return min(times[1:])


def expected_seconds(step_seconds: float, steps: int, eval_interval: int, eval_iters: int,
                     final_eval_iters: int = 0) -> float:
    """A whole run at step_seconds a training step: the steps and the evaluations (two splits of
    eval_iters batches each, a forward pass costing about a third of a training step)."""
    evaluations = steps // eval_interval + 1
    eval_batches = 2 * (evaluations * eval_iters + final_eval_iters)
    return step_seconds * (steps + eval_batches / 3)
