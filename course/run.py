"""A training run, in the lesson's order: settings checked, data, model, optimizer, train, report.

Tasks 00-06 run whole through `run_task`: their scripts say only how their model is built. Tasks 07
and 09 (and compare_rnn.py) write the order out themselves around a `LongRun`:

    with LongRun("task07", cfg, build_model, resume=False, overwrite=False) as run:
        data = load_dataset(cfg.data, cfg.tokenizer, cfg.vocab_size)
        model = build_model(cfg, data.tokenizer.vocab_size).to(run.device)
        optimizer = make_optimizer(model.parameters(), cfg.learning_rate, cfg.weight_decay)
        history = run.train(model, optimizer, data)
        return run.report(model, data, history)

A run holds what it carries from its start to its report: its task, settings, device and precision,
the log it prints to, its files; a long run also its processes (torchrun) and its checkpoint. Making
one checks everything that could fail later (settings the model refuses, paths that can't be written,
a saved model a new run would replace) before the data is read, seeds the run and picks its device.
`train` prints the run's first lines, attaches what the run adds to the lesson's loop (hooks, and a
step for mixed precision, micro-steps or processes) and trains; `report` measures the whole
validation split, writes the run's files and samples.
"""

from pathlib import Path

import torch

from gpt.errors import UserError
from gpt.generate import generate
from gpt.measures import measure_val
from gpt.model import count_parameters
from gpt.schedules import LearningRateSchedule, schedule_for
from gpt.train import TrainingState, device_of, make_optimizer, random_windows, train

from .checkpoint import SaveCheckpoints, load_checkpoint, resume
from .config import describe, parse_config
from .device import Autocast, choose_precision, describe_device, pinned, resolve_device
from .distributed import DataParallel, launched_by_torchrun
from .download import ensure_text
from .exits import friendly_errors
from .files import check_writable
from .hooks import FinalEvaluation, PrintTable, ProgressBar, TimeBudget, print_flushed
from .measures import format_measures
from .reference import hardware
from .run_files import RunFiles, encode_or_none
from .steps import step_for
from .timing import BusyWatch, expected_seconds, how_long, seconds_per_step


def run_task(task: str, build_model, defaults, argv=None, description: str | None = None) -> dict:
    """Tasks 00-06 whole: the command line, then the lesson's path: the data, the model build_model(cfg,
    vocab_size) makes, AdamW, the lecture's loop printing the course's table, the report."""
    from gpt.data import load_dataset

    cfg, _ = parse_config(defaults, argv, description)
    with friendly_errors(), Run(task, cfg, build_model) as run:
        data = load_dataset(cfg.data)
        model = build_model(cfg, data.tokenizer.vocab_size).to(run.device)
        optimizer = make_optimizer(model.parameters(), cfg.learning_rate)
        history = run.train(model, optimizer, data)
        return run.report(model, data, history)


def print_nothing(*lines) -> None:
    pass  # the log of torchrun's other processes: process 0 prints for all


class Run:
    """One run of task with the settings cfg: checked, seeded and on its device once made (see the
    module's docstring). quiet: print nothing (a grid's trials); files: its folder under cfg.runs
    (default: the task's name)."""

    def __init__(self, task: str, cfg, build_model, quiet: bool = False, files: str = ""):
        self.task, self.cfg = task, cfg
        self.log, self.progress = (print_nothing, False) if quiet else (print_flushed, None)  # None: bar on a terminal
        self.check(build_model)
        ensure_text(cfg.data)  # Tiny Shakespeare downloaded once, and checked
        torch.manual_seed(cfg.seed)
        self.device = resolve_device(cfg.device)
        if self.device == "cuda":  # matmuls in TF32, which a GPU's tensor cores run fast
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        self.precision = choose_precision(self.device, cfg.precision)
        self.hardware = hardware(self.device, self.precision.name)  # whose reference band the run is drawn against
        self.files = RunFiles(cfg.runs, task, files or task, self.log)
        self.busy = BusyWatch(self.log, self.command())  # says so when the machine gets busy

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def check(self, build_model) -> None:
        """Refuse, before the data is read or a step is trained, what would fail or lose something later."""
        if launched_by_torchrun():
            raise UserError(f"{self.task} trains in one process, in seconds; torchrun is for tasks 07 and 09: "
                            f"torchrun --standalone --nproc_per_node 2 task07.py")
        check_model(build_model, self.cfg)
        if self.cfg.runs:
            check_writable(self.cfg.runs, "--runs", folder=True)

    def train(self, model, optimizer, data, batches=None, hooks=(), trains=None) -> list[dict]:
        """Print the run's first lines, then train model with the lecture's loop and what this run
        attaches to it: its hooks (and any more given, e.g. compare_rnn's step times), and where it is
        needed a step for mixed precision, micro-steps or processes. batches: as train() takes them;
        trains: what the loop trains, if not model itself (a stateful RNN's wrapper, gpt/rnn.py)."""
        state, scaler_state = self.start(model, optimizer, data)
        trained = self.wrap(trains or model)
        hooks = [*hooks, *self.hooks(model, data)]
        step = step_for(self.precision, self.cfg.grad_accum, self.world_size, scaler_state)
        batches = pinned(batches or random_windows(data, self.cfg), self.device)  # to a GPU asynchronously
        return train(trained, optimizer, data, self.cfg, hooks, state, batches, step)

    def start(self, model, optimizer, data) -> tuple[TrainingState, dict | None]:
        """The run's first lines; where it starts from (a fresh state), and its saved loss scale (none)."""
        self.print_start(model)
        return TrainingState(self.cfg.seed), None

    world_size = 1  # processes training the model together

    def wrap(self, model):
        """What the loop trains: model, its forward passes in the run's precision (the model itself is
        what is measured, sampled and saved)."""
        return model if self.precision.dtype is None else Autocast(model, self.precision)

    def hooks(self, model, data) -> list:
        """What every run attaches to the loop: its files, the printed table, a progress bar, a note
        when the machine gets busy (course/hooks.py says in which order they act)."""
        return [self.files, PrintTable(self.log), ProgressBar(self.progress), self.busy]

    def print_start(self, model, parallel: str = "") -> None:
        """The lines a run starts with: its settings; where it runs, in what precision, and its size;
        how its batch is split (course/distributed.py), if it is."""
        self.log(describe(self.cfg))
        self.log(f"device: {describe_device(self.device)} | precision: {self.precision.name} ({self.precision.why}) | "
                 f"parameters: {count_parameters(model):,}")
        if parallel:
            self.log(parallel)

    def command(self) -> str:
        return f"python {self.task}.py" if self.task.startswith("task0") else "python ..."

    def report(self, model, data, history: list[dict], checkpoint: str = "") -> dict:
        """After training: the measures over the whole validation split (in the run's precision, as the
        table's evaluations ran, so that the last line and this one agree), the run's files, a sample."""
        cfg = self.cfg
        with self.precision.autocast():
            measures = measure_val(model, data, cfg.block_size)
        self.log(format_measures("val", measures))
        if checkpoint:
            self.log(f"saved the final model to {checkpoint}")
        sample = sample_text(model, data.tokenizer, cfg.sample_tokens, cfg.seed)
        written = self.files.finish(history, model, data.tokenizer, measures, cfg, self.hardware)
        if written:
            self.log(f"run files: {', '.join(written)}")
        if cfg.sample_tokens:
            self.log(f"\nSampling {cfg.sample_tokens} tokens from a trained model: ")
            self.log(sample)
        return {"config": cfg, "history": history, "measures": measures, "sample": sample, "model": model,
                "tokenizer": data.tokenizer, "device": self.device, "files": written, "busy": self.busy.busy}


class LongRun(Run):
    """A run of task 07, 09 or compare_rnn.py: a Run with what a long run adds. The learning-rate
    schedule, checkpoints at every evaluation (--resume continues the run exactly), a time budget, the
    final evaluation of final_eval_iters batches after the last step, the time it will take said
    before it starts; under torchrun, one of several processes that train it together (process 0 alone
    prints and saves). resume: continue the run saved at cfg.checkpoint; overwrite: replace it."""

    def __init__(self, task: str, cfg, build_model, resume: bool = False, overwrite: bool = False,
                 quiet: bool = False, files: str = ""):
        self.resume, self.overwrite = resume, overwrite
        super().__init__(task, cfg, build_model, quiet,
                         files or (task if cfg.tokenizer == "char" else f"{task}-{cfg.tokenizer}"))  # BPE: beside
        self.processes = DataParallel(cfg, self.device)  # torchrun's processes, or this one alone
        if not self.processes.main:  # process 0 speaks for all
            self.log, self.progress, self.files, self.busy = print_nothing, False, RunFiles("", task), BusyWatch(print_nothing)

    def __exit__(self, *exc):
        self.processes.__exit__(*exc)  # leave torchrun's process group, however the run ends

    def check(self, build_model) -> None:
        check_model(build_model, self.cfg)
        check_writable_outputs(self.cfg, self.cfg.checkpoint, self.resume, self.overwrite)

    def command(self) -> str:
        return f"python {self.task}.py"

    @property
    def world_size(self) -> int:
        return self.processes.world_size

    def start(self, model, optimizer, data) -> tuple[TrainingState, dict | None]:
        """The run's first lines and how long it will take; where it starts from: a fresh state, or with
        --resume the checkpoint's, and an fp16 run's saved loss scale."""
        cfg, state = self.cfg, TrainingState(self.cfg.seed)
        resumed, scaler_state = resume(cfg.checkpoint, model, optimizer, data.tokenizer, state) if self.resume \
            else ("", None)
        self.print_start(model, self.processes.describe(cfg.batch_size, cfg.grad_accum))
        if resumed:
            self.log(resumed)
        if cfg.time_budget:
            self.log(f"trains for {cfg.time_budget:.0f} s (--time-budget), and as many steps as fit, at most "
                     f"{cfg.max_iters - state.iter:,}")
            return state, scaler_state
        step_time = seconds_per_step(model, optimizer, cfg.batch_size, cfg.block_size, data.tokenizer.vocab_size,
                                     self.precision)
        steps = cfg.max_iters - state.iter
        total = expected_seconds(step_time, steps, cfg.eval_interval, cfg.eval_iters, cfg.final_eval_iters)
        self.log(how_long(step_time, total, steps, self.device))
        return state, scaler_state

    def wrap(self, model):
        """What the loop trains: model compiled (--compile), in the run's precision, and under torchrun
        in DistributedDataParallel, which averages the gradients across the processes."""
        return self.processes.wrap(super().wrap(torch.compile(model) if self.cfg.compile else model))

    def hooks(self, model, data) -> list:
        """What a long run attaches to the loop (course/hooks.py says in which order they act)."""
        cfg = self.cfg
        lr_at = schedule_for(cfg)
        return ([TimeBudget(cfg.time_budget)] if cfg.time_budget else []) + \
               ([LearningRateSchedule(lr_at)] if lr_at is not None else []) + \
               ([SaveCheckpoints(cfg.checkpoint, self.task, cfg, model, data.tokenizer)] if cfg.checkpoint else []) + \
               [self.files, PrintTable(self.log, show_bits=cfg.tokenizer != "char"),
                FinalEvaluation(cfg.final_eval_iters), ProgressBar(self.progress, time_budget=bool(cfg.time_budget)),
                self.busy]

    def report(self, model, data, history: list[dict], checkpoint: str = "") -> dict:
        if not self.processes.main:
            return {"history": history, "busy": self.busy.busy}
        return super().report(model, data, history, checkpoint or self.cfg.checkpoint)


def check_model(build_model, cfg) -> None:
    """Make cfg's model once and throw it away, so that settings the model refuses (n_embd not
    divisible by n_head...) fail before anything is read or trained. On the CPU, with the random
    state put back after, although runs are seeded after this."""
    with torch.random.fork_rng(devices=[]):
        build_model(cfg, 2)  # any vocabulary: the model's own checks don't depend on it


def check_models(build_model, runs: list) -> None:
    """check_model for each (label, config) of several runs (a grid's trials, an A/B's arms) before
    any of them trains; the message names the run that fails."""
    for label, cfg in runs:
        try:
            check_model(build_model, cfg)
        except UserError as e:
            raise UserError(f"{label} can't be trained: {e}") from None


def check_writable_outputs(cfg, checkpoint: str = "", resume: bool = False, overwrite: bool = False) -> None:
    """Refuse, before the data is read or a step is trained, a run that would fail or lose something
    later: an output path that can't be written, or a saved model a new run would replace."""
    if resume and not checkpoint:
        raise UserError("--resume needs a --checkpoint to resume from")
    if checkpoint:
        check_writable(checkpoint, "--checkpoint")
    if checkpoint and not resume and not overwrite and Path(checkpoint).exists():
        try:
            load_checkpoint(checkpoint, mmap=True)
        except UserError as e:  # not a checkpoint (notes.txt?): still the user's, and a save would replace it
            raise UserError(f"{e}\nThis run would replace it: save it elsewhere with --checkpoint PATH ('' for "
                            f"nowhere), or replace the file with --overwrite.") from None
        raise UserError(f"{checkpoint} already holds a model. Continue training it with --resume, replace it "
                        f"with --overwrite, or save this run elsewhere with --checkpoint PATH ('' for nowhere).")
    if cfg.runs:
        check_writable(cfg.runs, "--runs", folder=True)


def sample_text(model, tokenizer, n_tokens: int, seed: int) -> str:
    """n_tokens tokens generated from a single newline (or token 0 if the text has no newline)."""
    if n_tokens == 0:
        return ""
    context = torch.tensor([encode_or_none(tokenizer, "\n") or [0]], dtype=torch.long, device=device_of(model))
    generator = torch.Generator().manual_seed(seed)
    out = generate(model, context, n_tokens, generator=generator)  # (1, 1 + n_tokens)
    return tokenizer.decode(out[0, 1:].tolist())
