"""Training: the lecture's loop, and its loss estimate.

    for step in range(max_iters):
        if step % eval_interval == 0 or step == max_iters - 1:
            losses = estimate_loss(...)               # the mean loss on both splits
        xb, yb = get_batch(train, ...)                # sample a batch of data
        logits, loss = model(xb, yb)                  # forward
        optimizer.zero_grad(set_to_none=True)
        loss.backward()                               # backward
        optimizer.step()                              # update

`train` runs exactly that, and nothing here knows which model it trains or prints anything. What a
longer run adds attaches from outside, as minGPT's trainer takes callbacks: hooks, small objects whose
methods the loop calls at its moments (a learning-rate schedule, gpt/schedules.py; the printed table,
checkpoints, a time budget, a progress bar: course/hooks.py), and `step`, which does the last four
lines for a run that needs more than the lecture's update (mixed precision, micro-steps, several
processes: course/steps.py).
"""

import time

import torch

from .data import get_batch
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
# tokens keep the activations in cache; a GPU wants bigger ones (RESEARCH_LOG.md, "2026-11-23: tasks
# 01-06 speed work", idea 4).
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
                _, loss = model(x[i:i + chunk].to(device), y[i:i + chunk].to(device))
                total += loss.item() * len(x[i:i + chunk])  # summed in double precision on the host
            out[name] = total / len(x)
    return out


def random_windows(data, cfg):
    """The lecture's batches: batches(state) -> (x, y), cfg.batch_size windows of cfg.block_size tokens
    at random places in the training split, drawn from the run's batch generator."""
    return lambda state: get_batch(data.train, cfg.batch_size, cfg.block_size, state.batch_generator)


def lecture_step(model, optimizer, xb, yb) -> torch.Tensor:
    """One update, the lecture's way: forward, zero_grad, backward, step. Returns the loss."""
    logits, loss = model(xb, yb)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss


class TrainingState:
    """Where a run stands: the steps done, the training time so far, the evaluations so far, and the
    generators that draw the training batches and the evaluation batches, kept apart so that
    evaluating never changes which batches training sees. A checkpoint saves it (state_dict) and a
    resumed run continues from it (load_state_dict)."""

    def __init__(self, seed: int):
        self.iter = 0
        self.seconds = 0.0
        self.batch_generator = torch.Generator().manual_seed(seed)
        self.eval_generator = torch.Generator().manual_seed(seed + 1)
        self.history = []  # one record per evaluation: {'iter', 'train', 'val', 'time', 'eval_iters'}

    def state_dict(self) -> dict:
        return {"iter": self.iter, "time": self.seconds, "history": list(self.history),
                "generators": {"batch": self.batch_generator.get_state(), "eval": self.eval_generator.get_state()}}

    def load_state_dict(self, saved: dict) -> None:
        self.iter, self.seconds, self.history = saved["iter"], saved["time"], list(saved["history"])
        self.batch_generator.set_state(saved["generators"]["batch"])
        self.eval_generator.set_state(saved["generators"]["eval"])


class Trainer:
    """The loop, and what it shares with its hooks: the model, the optimizer, the data, the state.

    A hook is any object with some of these methods: on_start(trainer); before_step(trainer), which
    may set trainer.progress (the fraction of the run done, which a schedule follows) or trainer.stop
    (to end the run early); after_step(trainer); on_eval(trainer, record) after each evaluation;
    on_end(trainer) after the last step; on_close(trainer) when the loop is left, however it is left
    (Ctrl-C included). At each moment the hooks are called in the order of their `order` attribute,
    smallest first (0 if they have none), so that a hook that reads what another sets comes after it
    whatever order they are given in.
    """

    def __init__(self, model, optimizer, data, cfg, hooks=(), state=None, batches=None, step=lecture_step):
        self.model, self.optimizer, self.data, self.cfg = model, optimizer, data, cfg
        self.hooks = sorted(hooks, key=lambda hook: getattr(hook, "order", 0))  # stable: ties keep their order
        self.batches = batches or random_windows(data, cfg)  # batches(state) -> (x, y): each step's training batch
        self.step = step  # step(model, optimizer, xb, yb): forward, zero_grad, backward, update
        self.state = state if state is not None else TrainingState(cfg.seed)
        self.device = device_of(model)
        self.progress = 0.0
        self.stop = False
        self.last_step_evaluation = True  # the lecture evaluates at the last step, before its update
        self.resumed_at = self.state.iter if self.state.iter > 0 else None  # evaluated there before it was saved
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
        cfg, state = self.cfg, self.state
        self.model.train()
        for it in range(state.iter, cfg.max_iters):
            state.iter, self.progress = it, it / cfg.max_iters
            self.call("before_step")  # a schedule sets the learning rate; a time budget may stop the run
            if self.stop:
                break
            if self.evaluates_at(it):  # every once in a while, the loss on both splits
                self.evaluate(cfg.eval_iters)
            xb, yb = self.batches(state)  # sample a batch of data: (B, T), (B, T)
            self.step(self.model, self.optimizer, xb.to(self.device), yb.to(self.device))  # forward, backward, update
            self.call("after_step")
        else:
            state.iter = cfg.max_iters
        self.call("on_end")

    def evaluates_at(self, it: int) -> bool:
        last = it == self.cfg.max_iters - 1 and self.last_step_evaluation
        return (it % self.cfg.eval_interval == 0 and it != self.resumed_at) or last

    def evaluate(self, n_batches: int, final: bool = False) -> dict:
        """Estimate the loss on both splits with n_batches batches each, record it, and tell the hooks."""
        splits = {"train": self.data.train, "val": self.data.val}
        losses = estimate_loss(self.model, splits, self.cfg.batch_size, self.cfg.block_size, n_batches,
                               self.state.eval_generator)
        self.state.seconds = time.perf_counter() - self.started
        record = {"iter": self.state.iter, "train": losses["train"], "val": losses["val"],
                  "time": self.state.seconds, "eval_iters": n_batches, **({"final": True} if final else {})}
        self.state.history.append(record)
        self.call("on_eval", record)
        return record


def train(model, optimizer, data, cfg, hooks=(), state=None, batches=None, step=lecture_step) -> list[dict]:
    """Train model on data.train for cfg.max_iters steps of cfg.batch_size windows of cfg.block_size
    tokens, estimating the loss on both splits every cfg.eval_interval steps (cfg.eval_iters batches
    each) and at the last step, as the lecture does ("Epoch 4999"). Returns the evaluations.

    hooks: what a longer run attaches (see Trainer). state: where a resumed run stands (a fresh run
    starts from cfg.seed). batches(state) -> (x, y): each step's batch, if not the lecture's random
    windows (a stateful RNN's consecutive ones: gpt/rnn.py). step: the update, if not the lecture's.
    """
    return Trainer(model, optimizer, data, cfg, hooks, state, batches, step).run()
