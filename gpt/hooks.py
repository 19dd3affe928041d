"""What a long run attaches to the training loop (gpt/train.py's Trainer calls them): each a small
object with the methods of the moments it acts at. Saving checkpoints is gpt/checkpoint.py's
`SaveCheckpoints`; the run's files and the printed table are gpt/run.py's.
"""

import sys
import time

from tqdm import tqdm

from .device import synchronize


class LearningRateSchedule:
    """Before each step, set the learning rate to lr_at(progress), progress being the fraction of the
    run done (gpt/schedules.py). A parameter group may run at a multiple of it (Muon's lr_scale)."""

    def __init__(self, lr_at):
        self.lr_at = lr_at

    def before_step(self, trainer):
        lr = self.lr_at(trainer.progress)
        for group in trainer.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)


class TimeBudget:
    """End the run after this many seconds of training, and lay its progress (which the schedule
    follows) over the time instead of the steps, so that the schedule ends whenever the run stops.
    Put it before the schedule; FinalEvaluation then evaluates where the run stopped."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def before_step(self, trainer):
        elapsed = time.perf_counter() - trainer.started
        trainer.progress = elapsed / self.seconds
        trainer.stop = elapsed >= self.seconds


class FinalEvaluation:
    """The honest final number: after the last update, an evaluation of n_batches per split, on the
    model as it ends, instead of the lecture's evaluation before the last step's update."""

    def __init__(self, n_batches: int):
        self.n_batches = n_batches

    def on_start(self, trainer):
        trainer.last_step_evaluation = False

    def on_end(self, trainer):
        trainer.call("on_final_evaluation", self.n_batches)
        trainer.evaluate(self.n_batches, final=True)


class StepTimes:
    """How long the run's steps took: each step's time (its batch, forward, backward and update; an
    evaluation counts in the step it comes before, which the median leaves out), and the training
    time up to the last step, evaluations included. Put it before FinalEvaluation, so that `seconds`
    stops before the final evaluation."""

    def __init__(self):
        self.steps, self.seconds, self.began = [], 0.0, 0.0

    def before_step(self, trainer):
        self.began = time.perf_counter()

    def after_step(self, trainer):
        synchronize(trainer.device)  # a GPU's step ends when its queued work does
        self.steps.append(time.perf_counter() - self.began)

    def on_end(self, trainer):
        self.seconds = time.perf_counter() - trainer.started

    def median(self) -> float:
        ordered = sorted(self.steps)
        return ordered[len(ordered) // 2] if ordered else float("nan")


class ProgressBar:
    """A bar on standard error while the run trains (only when it is a terminal, unless show says
    otherwise); it steps aside for every line printed, and goes when the run ends, however it ends."""

    def __init__(self, show: bool | None = None, time_budget: bool = False):
        self.show = sys.stderr.isatty() if show is None else show
        self.open_ended = time_budget  # a budgeted run has no known number of steps
        self.bar = None

    def on_start(self, trainer):
        self.bar = tqdm(total=None if self.open_ended else trainer.cfg.max_iters, initial=trainer.state.iter,
                        file=sys.stderr, unit="it", leave=False, disable=not self.show)

    def after_step(self, trainer):
        self.bar.update(1)

    def on_final_evaluation(self, trainer, n_batches):
        self.bar.set_description_str(f"final evaluation, {n_batches} batches per split")

    def on_close(self, trainer):
        self.bar.close()
