"""What a longer run attaches to the lesson's loop (gpt/train.py's Trainer calls them at their moments):
a time budget, the final evaluation, step times, a progress bar, the printed table. The learning-rate
schedule is the lesson's (gpt/schedules.py); saving checkpoints is course/checkpoint.py's, the run's
files course/run_files.py's.

Each hook's `order` says where it acts among the others at the same moment (the loop sorts by it):

    5   StepTimes        its clock starts before anything else acts at a step, and stops before the final evaluation
    10  TimeBudget       sets the run's progress, which the schedule (20) then reads
    30  SaveCheckpoints  at an evaluation: the model saved first,
    40  RunFiles         then the history file,
    50  PrintTable       then the line, so that a line on the screen means its model is saved
    80  FinalEvaluation  after the last step, once the others are done with it
    90  ProgressBar      last: it steps aside for every line printed before it
"""

import sys
import time

from tqdm import tqdm

from gpt.measures import bits_per_char

from .device import synchronize


class TimeBudget:
    """End the run after this many seconds of training, and lay its progress (which the schedule
    follows) over the time instead of the steps, so that the schedule ends whenever the run stops."""

    order = 10

    def __init__(self, seconds: float):
        self.seconds = seconds

    def before_step(self, trainer):
        elapsed = time.perf_counter() - trainer.started
        trainer.progress = elapsed / self.seconds
        trainer.stop = elapsed >= self.seconds


class FinalEvaluation:
    """The honest final number: after the last update, an evaluation of n_batches per split, on the
    model as it ends, instead of the lecture's evaluation before the last step's update."""

    order = 80

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
    time up to the last step, evaluations included, without the final evaluation."""

    order = 5

    def __init__(self):
        self.steps, self.seconds, self.began = [], 0.0, 0.0

    def before_step(self, trainer):
        self.began = time.perf_counter()

    def after_step(self, trainer):
        synchronize(trainer.device)  # a GPU's step ends when its queued work does
        self.steps.append(time.perf_counter() - self.began)

    def on_end(self, trainer):
        self.seconds = time.perf_counter() - trainer.started

    def median(self, last: int | None = None) -> float:
        """The median step time (of the last `last` steps only, if given)."""
        ordered = sorted(self.steps[-last:] if last else self.steps)
        return ordered[len(ordered) // 2] if ordered else float("nan")


class ProgressBar:
    """A bar on standard error while the run trains (only when it is a terminal, unless show says
    otherwise); it steps aside for every line printed, and goes when the run ends, however it ends."""

    order = 90

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


def print_flushed(line: str = "") -> None:
    print(line, flush=True)  # flushed, so that a log piped to a file keeps up with training


class PrintTable:
    """The course's line for each evaluation, printed as it happens (the progress bar, if any, steps
    aside for it)."""

    order = 50

    def __init__(self, log=print_flushed, show_bits: bool = False):
        self.log, self.show_bits = log, show_bits

    def on_eval(self, trainer, record):
        with tqdm.external_write_mode():  # the bar steps aside while the line is printed, then comes back
            self.log(format_eval(record, trainer.data if self.show_bits else None))


def format_eval(record: dict, data=None) -> str:
    """The course's line for one evaluation, then the wall time since training started; given the
    data (a BPE model's), the val loss in bits per character too; the final evaluation says how many
    batches it used."""
    line = f"Epoch {record['iter']}: avg train loss {record['train']:.4f} | avg val loss {record['val']:.4f}"
    if data is not None:
        line += f" | val {bits_per_char(record['val'] * len(data.val), data.val_chars):.3f} bits/char"
    line += f" | {record['time']:.1f}s"
    if record.get("final"):
        line += f" (final: {record['eval_iters']} batches per split, after the last step)"
    return line
