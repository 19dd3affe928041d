"""What every task script does around its model, the one way to train: read the command line, load
the data, train while printing the course's table, then report, draw and sample. A task script
only says how its model is built.

What a long run needs (task 07 and 09: checkpoints, resume, a schedule, a time budget, the GPU's
speed-ups) comes in through the config it is given, around the same loop.
"""

import csv
import dataclasses
import io
import json
import os
import shlex
import sys
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch

from .checkpoint import load_checkpoint, model_payload, save_checkpoint, saved_iteration
from .config import GPTConfig, describe, parse_config
from .data import Dataset, load_dataset
from .errors import UserError, WriteFailed
from .files import atomic_write, check_writable
from .generate import generate
from .interrupts import CTRL_C, exit_status, interrupted, sigterm_raises, stopped_by
from .measures import format_measures, measure_val
from .model import count_parameters
from .reference import COURSE, COURSE_NOTES, band
from .tokenizer import CharTokenizer, tokenizer_from_dict
from .device import choose_precision, describe_device, device_rng_state, resolve_device, set_device_rng_state
from .train import cosine_schedule, expected_seconds, make_optimizer, seconds_per_step, train


@contextmanager
def friendly_errors(checkpoint: str = ""):
    """A mistake the user can fix, a file that can't be written, Ctrl-C or SIGTERM end the script with
    a message instead of a traceback (exit 2, 130 or 143); given the run's checkpoint, the message
    says what it holds. Standard output closed under the script (`| head`) ends it quietly (exit 0)."""
    def safe() -> str:  # read when the script stops: the checkpoint changes as the run goes
        return what_is_saved(checkpoint) if checkpoint else ""

    pressed = len(CTRL_C)  # Ctrl-C pressed before this block is not this block's
    with sigterm_raises():
        try:
            yield
        except WriteFailed as e:
            print(f"error: {e}." + (f"\n{capitalized(safe())}" if checkpoint else ""), file=sys.stderr)
            raise SystemExit(2) from None
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            raise SystemExit(2) from None
        except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM (Terminated)
            print(f"\n{stopped_by(e)}" + (f": {safe()}" if checkpoint else ""), file=sys.stderr)
            raise SystemExit(exit_status(e)) from None
        except BrokenPipeError:
            print(reader_gone() + (f": {safe()}" if checkpoint else ""), file=sys.stderr)
            raise SystemExit(0) from None
        except Exception:
            if not interrupted(since=pressed):
                raise
            print("\ninterrupted" + (f": {safe()}" if checkpoint else ""), file=sys.stderr)  # the error is its doing
            raise SystemExit(130) from None


def capitalized(text: str) -> str:
    return text[:1].upper() + text[1:]  # not ending in a full stop: it may end in a command to copy


def reader_gone() -> str:
    """After a write to a closed pipe: if it is standard output that is closed, point it at nowhere,
    so that nothing fails again when Python flushes it on the way out; and say what happened."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # closed, or None: nothing to flush
        pass
    return "stopped: the program reading the output (a pipe, such as | head) closed it"


def what_is_saved(checkpoint: str) -> str:
    """For a run that stops early: what its checkpoint holds, and the command that goes on from it."""
    if not checkpoint:
        return "this run keeps no checkpoint, so its model was not saved"
    iteration = saved_iteration(checkpoint)
    if iteration is None:
        return f"no model was saved in {checkpoint}"
    return f"the model as of iteration {iteration} is in {checkpoint}; continue with --resume: {resume_command()}"


def resume_command() -> str:
    """The command that started this script, with --resume instead of --overwrite."""
    script = Path(sys.argv[0]).name
    if not (script.startswith("task") and script.endswith(".py")):
        return "the same command with --resume"
    args = [a for a in sys.argv[1:] if a not in ("--resume", "--overwrite")]
    return shlex.join(["python", script, *args, "--resume"])


def run_task(task: str, build_model, defaults, argv=None, description: str | None = None) -> dict:
    """Tasks 00-06 whole: the command line, then `train_and_report`."""
    cfg, _ = parse_config(defaults, argv, description)
    with friendly_errors():
        return train_and_report(task, cfg, build_model)


def say(line: str = "") -> None:
    print(line, flush=True)  # flushed, so that a log piped to a file keeps up with training


def train_and_report(task: str, cfg, build_model, *, resume: bool = False, overwrite: bool = False,
                     make_opt=None, log=say, progress: bool | None = None, speedups: bool = True) -> dict:
    """Train the model build_model(cfg, vocab_size) makes, printing the course's table; then the
    measures over the whole validation split, the run's files, and a sample.

    With a GPTConfig: the learning rate follows cfg.schedule, the run ends with an evaluation of
    cfg.final_eval_iters batches after the last step, and cfg.checkpoint (if set) is written at every
    evaluation and at the end; resume continues from it exactly; overwrite allows replacing it.
    make_opt(cfg, model) builds the optimizer, or returns None for AdamW (the default).
    The precision is cfg.precision ('auto': what the device runs natively, gpt/device.py), the same for
    training, every evaluation and the measures. speedups=False runs fp32 with the GPU's other speed-ups
    off (TF32, flash attention, the fused optimizer), for a benchmark.
    """
    long_run = isinstance(cfg, GPTConfig)
    checkpoint = cfg.checkpoint if long_run else ""
    check_before_training(cfg, build_model, resume, overwrite)
    saved = load_checkpoint(checkpoint, how_to_make_one="Start a run without --resume to make one.", what_to_do=(
        "Start a new run there with --overwrite instead of --resume, or elsewhere with --checkpoint PATH.")) \
        if resume else None
    start_time = time.perf_counter()
    device = setup(cfg)
    data = load_dataset(cfg.data, cfg.tokenizer, cfg.vocab_size) if long_run else load_dataset(cfg.data)
    if saved is not None and saved["tokenizer"] != data.tokenizer.to_dict():
        raise UserError(f"{checkpoint} was trained with another tokenizer or text than {cfg.data}")
    model = build_model(cfg, data.tokenizer.vocab_size).to(device)
    speed = speed_settings(device, speedups)
    precision = choose_precision(device, cfg.precision if speedups else "fp32")
    optimizer = make_opt(cfg, model) if make_opt is not None else None
    if optimizer is None:
        optimizer = make_optimizer(model, cfg.learning_rate, getattr(cfg, "weight_decay", 0.01),
                                   fused=None if speed["fused"] else False)
    state = None
    if saved is not None:
        if saved["model_args"] != getattr(model, "args", None):
            raise UserError(other_settings(checkpoint, saved, model))
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        state = restore_state(saved["state"], device, log)
    log(describe(cfg))
    log(f"device: {describe_device(device)} | precision: {precision.name} ({precision.why}) | "
        f"parameters: {count_parameters(model):,}")
    if saved is not None:
        log(f"resumed from {checkpoint} at iteration {state['iter']} ({state['time']:.0f}s in)")
    if long_run:
        step = seconds_per_step(model, cfg.batch_size, cfg.block_size, data.tokenizer.vocab_size, device, precision)
        steps = cfg.max_iters - (state["iter"] if state else 0)
        log(how_long(step, expected_seconds(step, steps, cfg.eval_interval, cfg.eval_iters, cfg.final_eval_iters),
                     steps, device))
    history = list(saved["history"]) if saved is not None else []
    files = RunFiles(cfg, task, log)

    def on_eval(record, state):
        history.append(record)
        if checkpoint:  # before the line is printed: a line on the screen means its model is saved
            save_checkpoint(checkpoint, {**model_payload(model), "tokenizer": data.tokenizer.to_dict(),
                                         "optimizer": optimizer.state_dict(), "state": save_state(state, device),
                                         "history": history, "config": dataclasses.asdict(cfg), "task": task})
        files.write_history(history)
        log(format_eval(record, data))

    trained = torch.compile(model) if long_run and cfg.compile else model
    try:
        with speed["attention"]:
            train(trained, optimizer, data.train, data.val, batch_size=cfg.batch_size, block_size=cfg.block_size,
                  max_iters=cfg.max_iters, eval_interval=cfg.eval_interval, eval_iters=cfg.eval_iters,
                  final_eval_iters=cfg.final_eval_iters if long_run else None, seed=cfg.seed, device=device,
                  on_eval=on_eval, state=state, lr_schedule=schedule(cfg) if long_run else None,
                  time_budget=(cfg.time_budget or None) if long_run else None, precision=precision,
                  progress=progress)
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM (Terminated); the checkpoint says what is safe
        print(f"\n{stopped_by(e)}: {what_is_saved(checkpoint)}", file=sys.stderr)
        raise SystemExit(exit_status(e)) from None
    except BrokenPipeError:  # the reader of the table went away (| head)
        print(f"{reader_gone()}: {what_is_saved(checkpoint)}", file=sys.stderr)
        raise SystemExit(0) from None
    except WriteFailed as e:  # a full disk, say: the checkpoint is as it was
        elsewhere = "--checkpoint PATH or --runs DIR" if long_run else "--runs DIR, or --runs '' for none"
        raise UserError(f"{e}.\n{capitalized(what_is_saved(checkpoint))}\n"
                        f"Free some space first, or write elsewhere ({elsewhere}).") from None
    with precision.autocast():  # as the table's evaluations ran, so that the last line and this one agree
        measures = measure_val(model, data, cfg.block_size, device)
    log(format_measures("val", measures))
    if checkpoint:
        log(f"saved the final model to {checkpoint}")
    sample = sample_text(model, data.tokenizer, cfg.sample_tokens, device, cfg.seed)
    written = files.finish(history, model, data.tokenizer, measures, cfg, time.perf_counter() - start_time)
    if written:
        log(f"run files: {', '.join(written)}")
    log(f"\nSampling {cfg.sample_tokens} tokens from a trained model: ")
    log(sample)
    return {"config": cfg, "history": history, "measures": measures, "sample": sample, "model": model,
            "tokenizer": data.tokenizer, "device": device, "files": written}


def check_before_training(cfg, build_model, resume: bool, overwrite: bool) -> None:
    """Refuse, before the data is read or a step is trained, a run that would fail or lose something
    later: a model its settings can't make, an output path that can't be written, or a saved model a
    new run would replace."""
    check_model(build_model, cfg)
    checkpoint = cfg.checkpoint if isinstance(cfg, GPTConfig) else ""
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


def check_model(build_model, cfg) -> None:
    """Make cfg's model once and throw it away, so that settings the model refuses (n_embd not
    divisible by n_head...) fail before anything is trained. On the CPU, with the random state put
    back after: a run's random draws stay as they were (the meta device would cost no memory, but
    its initialisers load torch's compiler, seconds of start-up)."""
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


def other_settings(checkpoint: str, saved: dict, model) -> str:
    """Why this run can't continue the model saved in checkpoint, and what to pass that would."""
    if saved["model_class"] != type(model).__name__:
        from .report import script

        if "task" not in saved:
            return f"{checkpoint} holds a {saved['model_class']}, which this script can't continue"
        return (f"{checkpoint} holds {saved['task']}'s model (a {saved['model_class']}), which this script can't "
                f"continue: python {script(saved['task'])} --checkpoint {shlex.quote(checkpoint)} --resume")
    wrong = {k: v for k, v in saved["model_args"].items() if model.args.get(k) != v}
    if not wrong:  # the same values, but this version's model takes more of them
        return f"{checkpoint} holds a model this version of {saved.get('task', 'the task')} can't continue; train it again"
    flags = " ".join(flag_for(k, v) for k, v in wrong.items())
    asked = ", ".join(f"{k}={model.args.get(k)}" for k in wrong)
    return (f"{checkpoint} holds a model made with other settings than this run's ({asked} here). "
            f"To continue it, pass {flags}")


def flag_for(name: str, value) -> str:
    """The command-line flag that sets a config field to value: `--n-embd 128`, `--no-tie-weights`."""
    flag = name.replace("_", "-")
    if isinstance(value, bool):
        return f"--{flag}" if value else f"--no-{flag}"
    return f"--{flag} {shlex.quote(str(value))}"


def setup(cfg) -> str:
    """Seed and device for a run; returns the device."""
    torch.manual_seed(cfg.seed)  # every device's generator: the CPU's, CUDA's and MPS's
    return resolve_device(cfg.device)


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


def schedule(cfg: GPTConfig):
    """The learning rate as a function of the run's progress, for cfg.schedule (None: constant)."""
    if cfg.schedule == "wsd":
        from .modern import wsd_schedule

        return wsd_schedule(cfg.learning_rate, cfg.min_lr, cfg.warmup, cfg.decay)
    if cfg.schedule == "cosine":
        return cosine_schedule(cfg.learning_rate, cfg.min_lr, cfg.warmup)
    return None


def speed_settings(device: str, speedups: bool = True) -> dict:
    """What makes a small GPT fast on a CUDA GPU besides the precision: TF32 matmuls, flash attention
    (the fused kernel picks it), the fused optimizer. With speedups=False, PyTorch's unfused attention
    and optimizer and full fp32 matmuls, to measure what they buy."""
    on_gpu = device == "cuda"
    if on_gpu:
        torch.backends.cuda.matmul.allow_tf32 = speedups
        torch.backends.cudnn.allow_tf32 = speedups
    return {
        "attention": nullcontext() if speedups or not on_gpu else torch.nn.attention.sdpa_kernel(
            torch.nn.attention.SDPBackend.MATH),
        "fused": speedups,
    }


def save_state(state: dict, device: str) -> dict:
    """The loop's state as plain tensors and numbers, with the random state of the CPU and of the device
    (dropout on a GPU draws from the GPU's generator), and the fp16 gradient scaler's, if any."""
    scaler = state.get("scaler")
    return {"iter": state["iter"], "time": state["time"], "rng": torch.get_rng_state(),
            "device": device, "device_rng": device_rng_state(device),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "generators": {name: g.get_state() for name, g in state["generators"].items()}}


def restore_state(saved: dict, device: str, log=print) -> dict:
    """Undo save_state after setup() has seeded every generator, so that the run continues exactly."""
    torch.set_rng_state(saved["rng"])
    if saved.get("device_rng") is not None:
        if saved.get("device") == device:
            set_device_rng_state(device, saved["device_rng"])
        else:
            log(f"note: this run was saved on {saved.get('device')} and resumes on {device}: with dropout, "
                f"its random draws differ from an uninterrupted run's from here on")
    generators = {}
    for name, g_state in saved["generators"].items():
        generators[name] = torch.Generator()
        generators[name].set_state(g_state)
    return {"iter": saved["iter"], "time": saved["time"], "generators": generators, "scaler": saved.get("scaler")}


def format_eval(record: dict, data: Dataset | None = None) -> str:
    """The course's line for one evaluation, then the wall time since training started; for a BPE
    model the val loss in bits per character too; the final evaluation says how many batches it used."""
    line = f"Epoch {record['iter']}: avg train loss {record['train']:.4f} | avg val loss {record['val']:.4f}"
    if data is not None and not isinstance(data.tokenizer, CharTokenizer):
        line += f" | val {record['val'] * len(data.val) / data.val_chars / 0.6931471805599453:.3f} bits/char"
    line += f" | {record['time']:.1f}s"
    if record.get("final"):
        line += f" (final: {record['eval_iters']} batches per split, after the last step)"
    return line


def sample_text(model, tokenizer, n_tokens: int, device: str, seed: int) -> str:
    """n_tokens tokens generated from a single newline (or token 0 if the text has no newline)."""
    context = torch.tensor([encode_or_none(tokenizer, "\n") or [0]], dtype=torch.long, device=device)
    generator = torch.Generator().manual_seed(seed)
    out = generate(model, context, n_tokens, generator=generator)  # (1, 1 + n_tokens)
    return tokenizer.decode(out[0, 1:].tolist())


def encode_or_none(tokenizer, text: str) -> list[int] | None:
    try:
        return tokenizer.encode(text)
    except UserError:  # a character the vocabulary doesn't have
        return None


class RunFiles:
    """runs/<task>/: history.csv (every evaluation the run printed), loss.png, attention.png and
    summary.json (the config, the final numbers, the wall time). A BPE run has a folder of its own,
    runs/<task>-bpe/, beside the character run's; a run that replaces another run's files says so
    (a resumed run carries on its own)."""

    def __init__(self, cfg, task: str, log=say):
        tokenizer = getattr(cfg, "tokenizer", "char")  # tasks 00-06 have characters only
        self.dir = Path(cfg.runs) / (task if tokenizer == "char" else f"{task}-{tokenizer}") if cfg.runs else None
        self.task, self.log = task, log
        history = self.dir / "history.csv" if self.dir is not None else None
        self.earlier = history.read_text().splitlines() if history is not None and history.is_file() else []

    def write_history(self, history: list[dict]) -> None:
        if self.dir is None:
            return
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(["step", "train_loss", "val_loss", "seconds", "eval_batches"])
        for r in history:
            writer.writerow([r["iter"], f"{r['train']:.6f}", f"{r['val']:.6f}", f"{r['time']:.2f}", r["eval_iters"]])
        lines = buf.getvalue().splitlines()
        if self.earlier and lines[:len(self.earlier)] != self.earlier:  # not this run's own earlier evaluations
            self.log(f"note: {self.dir} holds another run's files; this run replaces them "
                     f"(--runs DIR keeps them apart)")
        self.earlier = []
        with atomic_write(self.dir / "history.csv", "w", newline="") as f:
            f.write(buf.getvalue())

    def finish(self, history, model, tokenizer, measures, cfg, wall: float) -> list[str]:
        """Write the pictures and the summary; returns the paths written."""
        if self.dir is None:
            return []
        from .data import DEFAULT_PATH
        from .plots import ATTENTION_TEXT, attention_modules, draw_attention, plot_loss

        task = self.task
        written = [self.dir / "history.csv"]
        # the course's numbers and the bands are per character of Tiny Shakespeare: for no other text or tokens
        reference = isinstance(tokenizer, CharTokenizer) and Path(cfg.data).resolve() == DEFAULT_PATH
        plot_loss(history, self.dir / "loss.png", self.dir.name, COURSE.get(task) if reference else None,
                  band(task) if reference else None, COURSE_NOTES.get(task, ""))
        written.append(self.dir / "loss.png")
        if attention_modules(model):
            missing = [ch for ch in sorted(set(ATTENTION_TEXT)) if encode_or_none(tokenizer, ch) is None]
            if missing:
                self.log(f"no attention picture: the line it reads, {ATTENTION_TEXT!r}, has characters this "
                         f"text lacks ({', '.join(map(repr, missing))})")
            else:
                draw_attention(model, tokenizer, ATTENTION_TEXT, self.dir / "attention.png",
                               f"{task}: attention of the trained model")
                written.append(self.dir / "attention.png")
        summary = {"task": task, "config": dataclasses.asdict(cfg), "parameters": count_parameters(model),
                   "final": history[-1], "measures": measures, "wall_seconds": round(wall, 2)}
        with atomic_write(self.dir / "summary.json", "w") as f:
            json.dump(summary, f, indent=1)
        written.append(self.dir / "summary.json")
        return [str(p) for p in written]
