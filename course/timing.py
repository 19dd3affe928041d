"""How long a run will take here, said before it starts; and a note when the machine gets busy.

The estimate times a few whole training steps (forward, backward and the optimizer's update) on a
copy of the model and its optimizer, so that neither the run's weights nor any random state change,
and takes their median, so that one step slowed by something else does not set it.
"""

import copy
import statistics
import time

import torch

from gpt.train import device_of, lecture_step

from .device import synchronize


def seconds_per_step(model, optimizer, batch_size: int, block_size: int, vocab_size: int, precision,
                     steps: int = 5, budget: float = 3.0) -> float:
    """The median time of up to `steps` training steps after a first one (which pays for warming up),
    stopping early once `budget` seconds are spent (a model far too big for this machine); on copies
    of model and optimizer, in train mode, under the run's precision, with every random state put back."""
    device = device_of(model)
    x = torch.randint(vocab_size, (batch_size, block_size), generator=torch.Generator().manual_seed(0)).to(device)
    twin, twin_optimizer = copy.deepcopy((model, optimizer))  # one copy: the optimizer keeps the copy's parameters
    twin.train()
    times = []
    with torch.random.fork_rng(devices=[] if device == "cpu" else None, device_type=device):
        spent = time.perf_counter()
        for i in range(steps + 1):
            start = time.perf_counter()
            with precision.autocast():
                lecture_step(twin, twin_optimizer, x, x)
            synchronize(device)
            times.append(time.perf_counter() - start)
            if i >= 2 and time.perf_counter() - spent > budget:
                break
    return statistics.median(times[1:])


def expected_seconds(step_seconds: float, steps: int, eval_interval: int, eval_iters: int,
                     final_eval_iters: int = 0) -> float:
    """A whole run at step_seconds a training step: the steps and the evaluations (two splits of
    eval_iters batches each, a forward pass costing about a third of a training step)."""
    evaluations = steps // eval_interval + 1
    eval_batches = 2 * (evaluations * eval_iters + final_eval_iters)
    return step_seconds * (steps + eval_batches / 3)


def how_long(step_seconds: float, total_seconds: float, steps: int, device: str) -> str:
    """What a run will take here, from its timed steps; a warning when it is hours."""
    line = (f"about {duration(total_seconds)} here for {steps:,} steps and their evaluations "
            f"({1000 * step_seconds:.0f} ms a step on {device})")
    if total_seconds < 3600:
        return line
    return (f"warning: {line}. This configuration is made for a faster device; Ctrl-C stops it (with "
            f"--checkpoint, --resume continues later). On a laptop, task 07's --preset cpu takes minutes.")


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} seconds"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} minutes"
    return f"{seconds / 3600:.1f} hours"


class BusyWatch:
    """A hook for the training loop: once the run's steps have settled, the median of each window of
    recent steps against the median of its first ones; when two windows in a row take `slower` times
    as long or more, it says once that the machine looks busy, and how to ask for fewer threads.
    `busy` tells a caller (task 09's --compare) that the run's times were taken under load."""

    order = 6  # course/hooks.py: its clock around the same moments as StepTimes'

    def __init__(self, log, command: str = "python ...", slower: float = 3.0, window: int = 100):
        self.log, self.command, self.slower, self.window = log, command, slower, window
        self.steps, self.began, self.first, self.slow_windows, self.busy = [], 0.0, None, 0, False

    def before_step(self, trainer):
        self.began = time.perf_counter()

    def after_step(self, trainer):
        self.steps.append(time.perf_counter() - self.began)
        n = len(self.steps)
        if n % self.window:
            return
        recent = statistics.median(self.steps[-self.window:])
        if n == 2 * self.window:  # the first steps after warming up: the machine's speed for this run
            self.first = recent
        elif self.first:
            self.slow_windows = self.slow_windows + 1 if recent >= self.slower * self.first else 0
            if self.slow_windows == 2 and not self.busy:
                self.busy = True
                self.log(f"note: the last {2 * self.window} steps took {recent / self.first:.1f}x as long as this run's "
                         f"first ones ({1000 * recent:.0f} against {1000 * self.first:.0f} ms a step): the machine looks "
                         f"busy. Its other work slows this run, and threads competing for the cores make it worse: "
                         f"with fewer threads it may go faster, e.g. OMP_NUM_THREADS=1 {self.command} (another thread "
                         f"count may round differently, and the table then differs a little: docs/devices.md)")
