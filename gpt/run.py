"""What a task script does around its model, in the order a run does it: check what it will write,
seed and pick the device, (the script makes its data, model and optimizer, and trains,) then report:
the measures over the whole validation split, the run's files, a sample.

Tasks 00-06 run it all through `run_task`, their scripts saying only how their model is built.
Tasks 07 and 09 write the same path out in their scripts, with what a long run adds (checkpoints,
resume, a schedule, a time budget, a progress bar) attached to the loop as hooks (`long_run_hooks`).
Ctrl-C, a full disk or a mistake end a run through `friendly_errors`, with a message.
"""

from pathlib import Path

import torch
from tqdm import tqdm

from .checkpoint import SaveCheckpoints, load_checkpoint
from .config import describe, parse_config
from .data import load_dataset
from .device import choose_precision, describe_device, resolve_device
from .distributed import launched_by_torchrun
from .errors import UserError
from .files import check_writable
from .generate import generate
from .hooks import FinalEvaluation, LearningRateSchedule, ProgressBar, TimeBudget
from .exits import friendly_errors
from .measures import bits_per_char, format_measures, measure_val
from .model import count_parameters
from .run_files import RunFiles, encode_or_none
from .schedules import schedule_for
from .train import device_of, expected_seconds, make_optimizer, seconds_per_step, train


def run_task(task: str, build_model, defaults, argv=None, description: str | None = None) -> dict:
    """Tasks 00-06 whole: the command line, then the lesson's path: the data, the model
    build_model(cfg, vocab_size) makes, AdamW, the lecture's loop printing the course's table, the report."""
    cfg, _ = parse_config(defaults, argv, description)
    with friendly_errors():
        if launched_by_torchrun():
            raise UserError(f"{task} trains in one process, in seconds; torchrun is for tasks 07 and 09: "
                            f"torchrun --standalone --nproc_per_node 2 task07.py")
        check_model(build_model, cfg)
        check_writable_outputs(cfg)
        device = seed_and_pick_device(cfg)
        data = load_dataset(cfg.data)
        model = build_model(cfg, data.tokenizer.vocab_size).to(device)
        optimizer = make_optimizer(model.parameters(), cfg.learning_rate)
        files = RunFiles(cfg.runs, task)
        print_start(cfg, model)
        history = train(model, optimizer, data, cfg, hooks=[files, PrintTable(), ProgressBar()])
        return report(task, cfg, model, data, history, files)


def print_flushed(line: str = "") -> None:
    print(line, flush=True)  # flushed, so that a log piped to a file keeps up with training


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


def seed_and_pick_device(cfg) -> str:
    """Seed every generator (the CPU's, CUDA's and MPS's) with cfg.seed; return the device cfg.device
    names (auto: cuda, then mps, then cpu). On a CUDA GPU, matmuls in TF32, which its tensor cores run
    fast; the fused attention kernel picks flash attention by itself."""
    torch.manual_seed(cfg.seed)
    device = resolve_device(cfg.device)
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return device


def print_nothing(*lines) -> None:
    pass  # the log of torchrun's other processes: process 0 prints for all


def print_start(cfg, model, log=print_flushed, parallel: str = "") -> None:
    """The lines a run starts with: its settings, where it runs, and its size; how its batch is
    split (gpt/distributed.py), if it is."""
    device = device_of(model)
    precision = choose_precision(device, cfg.precision)
    log(describe(cfg))
    log(f"device: {describe_device(device)} | precision: {precision.name} ({precision.why}) | "
        f"parameters: {count_parameters(model):,}")
    if parallel:
        log(parallel)


def print_duration(cfg, model, vocab_size: int, state, log=print_flushed) -> None:
    """About how long the rest of a long run takes here, from a timed step."""
    precision = choose_precision(device_of(model), cfg.precision)
    step = seconds_per_step(model, cfg.batch_size, cfg.block_size, vocab_size, precision)
    steps = cfg.max_iters - state.iter
    log(how_long(step, expected_seconds(step, steps, cfg.eval_interval, cfg.eval_iters, cfg.final_eval_iters),
                 steps, device_of(model)))


def how_long(step_seconds: float, total_seconds: float, steps: int, device: str) -> str:
    """What a run will take here, from a timed step; a warning when it is hours."""
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


def long_run_hooks(task: str, cfg, model, tokenizer, files, log=print_flushed, progress: bool | None = None) -> list:
    """What tasks 07 and 09 attach to the loop, in the order it calls them: a time budget and the
    learning-rate schedule before each step; at each evaluation the checkpoint, then the history
    file, then the printed line (a line on the screen means its model is saved); the final
    evaluation after the last step; a progress bar."""
    hooks = [TimeBudget(cfg.time_budget)] if cfg.time_budget else []
    lr_at = schedule_for(cfg)
    hooks += [LearningRateSchedule(lr_at)] if lr_at is not None else []
    hooks += [SaveCheckpoints(cfg.checkpoint, task, cfg, model, tokenizer)] if cfg.checkpoint else []
    show_bits = cfg.tokenizer != "char"  # a subword model's loss per token, also per character
    return hooks + [files, PrintTable(log, show_bits), FinalEvaluation(cfg.final_eval_iters),
                    ProgressBar(progress, time_budget=bool(cfg.time_budget))]


def long_run_files(task: str, cfg, log=print_flushed) -> "RunFiles":
    """A long run's files: a BPE run's go to runs/<task>-bpe/, beside the character run's."""
    return RunFiles(cfg.runs, task, task if cfg.tokenizer == "char" else f"{task}-{cfg.tokenizer}", log)


class PrintTable:
    """A hook for the training loop: the course's line for each evaluation, printed as it happens
    (the progress bar, if any, steps aside for it)."""

    def __init__(self, log=print_flushed, show_bits: bool = False):
        self.log, self.show_bits = log, show_bits

    def on_eval(self, trainer, record):
        with tqdm.external_write_mode():  # the bar steps aside while the line is printed, then comes back
            self.log(format_eval(record, trainer.data if self.show_bits else None))


def report(task: str, cfg, model, data, history: list[dict], files, checkpoint: str = "", log=print_flushed) -> dict:
    """After training: the measures over the whole validation split (in the run's precision, as the
    table's evaluations ran, so that the last line and this one agree), the run's files, a sample."""
    with choose_precision(device_of(model), cfg.precision).autocast():
        measures = measure_val(model, data, cfg.block_size)
    log(format_measures("val", measures))
    if checkpoint:
        log(f"saved the final model to {checkpoint}")
    sample = sample_text(model, data.tokenizer, cfg.sample_tokens, cfg.seed)
    written = files.finish(history, model, data.tokenizer, measures, cfg)
    if written:
        log(f"run files: {', '.join(written)}")
    log(f"\nSampling {cfg.sample_tokens} tokens from a trained model: ")
    log(sample)
    return {"config": cfg, "history": history, "measures": measures, "sample": sample, "model": model,
            "tokenizer": data.tokenizer, "device": device_of(model), "files": written}


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


def sample_text(model, tokenizer, n_tokens: int, seed: int) -> str:
    """n_tokens tokens generated from a single newline (or token 0 if the text has no newline)."""
    context = torch.tensor([encode_or_none(tokenizer, "\n") or [0]], dtype=torch.long, device=device_of(model))
    generator = torch.Generator().manual_seed(seed)
    out = generate(model, context, n_tokens, generator=generator)  # (1, 1 + n_tokens)
    return tokenizer.decode(out[0, 1:].tolist())
