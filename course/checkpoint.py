"""Checkpoints: everything needed to use a model alone or to continue its training exactly, written
atomically and read safely (weights only: loading a checkpoint never runs code from it).

A checkpoint holds the model (its class, the values it was made with, its weights), the tokenizer,
the optimizer, the training state (gpt/train.py's TrainingState: steps, time, evaluations, batch
generators; and the CPU's and the device's random states, which dropout draws from, and an fp16
run's loss scale), the run's config and its task. `SaveCheckpoints` writes one at every evaluation of
a run; `resume` puts a run back where its checkpoint left it.
"""

import dataclasses
import shlex
from pathlib import Path

import torch

from gpt.errors import UserError
from gpt.tokenizer import tokenizer_from_dict
from gpt.train import device_of

from .device import device_rng_state, set_device_rng_state
from .files import atomic_write
from .steps import step_state

FORMAT = "gpt-curriculum-checkpoint/3"


def saveable():
    """What a checkpoint can rebuild, by class name: the models ({name: class}), and the MLPs inside
    them. Asked for when a model is saved or rebuilt, so that a run of task 00 loads no RoPE or RNN."""
    from gpt.modern import MLPS, POSITIONS
    from gpt.rnn import RNNLanguageModel

    models = {cls.__name__: cls for cls in (*POSITIONS.values(), RNNLanguageModel)}  # GPT, RotaryGPT, the RNN
    return models, {cls.__name__: cls for cls in MLPS.values()}


def save_checkpoint(path, payload: dict) -> None:
    """Write payload to path atomically: a crash or Ctrl-C mid-write leaves the previous checkpoint as it was."""
    with atomic_write(path) as f:
        torch.save({"format": FORMAT, **payload}, f)


def load_checkpoint(path, map_location="cpu", how_to_make_one: str = "", what_to_do: str = "",
                    mmap: bool = False) -> dict:
    """Read a checkpoint written by save_checkpoint; any other file gets a clear UserError, ending with
    how_to_make_one if there is no file, or what_to_do if there is one that isn't a checkpoint this
    version reads. mmap=True reads the tensors only when they are used (quick, for a look inside)."""
    path = Path(path)
    if path.is_dir():
        inside = sorted(p.name for p in path.glob("*.pt"))
        if inside:
            raise UserError(f"{path} is a folder, not a checkpoint file; it holds {', '.join(inside)}: "
                            f"give one of them, e.g. --checkpoint {path / inside[0]}")
        raise UserError(f"{path} is a folder, not a checkpoint file, and holds none (no .pt files).{hint(how_to_make_one)}")
    if not path.is_file():
        raise UserError(f"no checkpoint at {path}.{hint(how_to_make_one)}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception:  # the unpickler fails in many ways on a file it did not write; its advice is for other files
        raise UserError(f"{path} is not a readable checkpoint: it is not a file this project wrote, or it was cut "
                        f"short or damaged.{hint(what_to_do)}") from None
    if not isinstance(ckpt, dict) or not str(ckpt.get("format", "")).startswith("gpt-curriculum-checkpoint/"):
        raise UserError(f"{path} is not a checkpoint of this project (no {FORMAT!r} marker).{hint(what_to_do)}")
    if ckpt["format"] != FORMAT:
        raise UserError(f"{path} was written by an older version of this project ({ckpt['format']}); "
                        f"train it again to make one this version reads.{hint(what_to_do)}")
    return ckpt


def hint(text: str) -> str:
    return f"\n{text}" if text else ""


def saved_iteration(path) -> int | None:
    """The iteration of the model a run saved at path, or None if there is none: what a run that stops
    early says is safe."""
    try:
        return int(load_checkpoint(path, mmap=True)["state"]["iter"])
    except (ValueError, KeyError, TypeError, KeyboardInterrupt):  # none, not a run's, or Ctrl-C again
        return None


def model_payload(model) -> dict:
    """How to rebuild model: its class and the plain values it was made with, and its weights."""
    name, models = type(model).__name__, saveable()[0]
    if name not in models:
        raise UserError(f"a {name} can't be saved in a checkpoint; only {', '.join(models)} can")
    return {"model_class": name, "model_args": dict(model.args), "model": model.state_dict()}


def build_saved_model(model_class: str, model_args: dict):
    """The model a checkpoint's model_class and model_args describe, untrained."""
    from gpt.modern import tie_weights

    models, mlps = saveable()
    args = dict(model_args)
    tied = args.pop("tie_weights", False)
    if "mlp" in args:  # a GPT's MLP, saved by its class's name
        args["mlp"] = mlps[args["mlp"]]
    model = models[model_class](**args)
    return tie_weights(model) if tied else model


def model_from_checkpoint(ckpt: dict, device: str = "cpu"):
    """The model (in eval mode) and the tokenizer a checkpoint holds."""
    model = build_saved_model(ckpt["model_class"], ckpt["model_args"]).to(device)
    model.load_state_dict(ckpt["model"])
    return model.eval(), tokenizer_from_dict(ckpt["tokenizer"])


def load_model(path, device: str = "auto", script: str = "this"):
    """The model (in eval mode, on device: auto picks cuda, then mps, then cpu) and the tokenizer saved
    at path, for a script that uses a trained model (task 08, the measures, the explorer); a missing or
    foreign file gets a message that says how to make one."""
    from .device import resolve_device

    device = resolve_device(device)
    ckpt = load_checkpoint(path, how_to_make_one=(  # read on the CPU, moved below
        f"Train one first: python task07.py (minutes on a CPU), then run {script} again."), what_to_do=(
        f"Give a checkpoint that task07.py, task09_rope.py or compare_rnn.py saved (--checkpoint PATH), or train one "
        f"in its place: python task07.py --checkpoint {shlex.quote(str(path))} --overwrite"))
    return model_from_checkpoint(ckpt, device)


class SaveCheckpoints:
    """A hook for the training loop: after every evaluation, before its line is printed (so that a
    line on the screen means its model is saved), write the whole run to path. model is the model
    itself (the loop may train a wrapper of it: compiled, in autocast, data-parallel)."""

    order = 30  # course/hooks.py: before the run's files and the printed line

    def __init__(self, path, task: str, cfg, model, tokenizer):
        self.path, self.task, self.cfg, self.model, self.tokenizer = path, task, cfg, model, tokenizer

    def on_eval(self, trainer, record):
        save_checkpoint(self.path, {**model_payload(self.model), "tokenizer": self.tokenizer.to_dict(),
                                    "optimizer": trainer.optimizer.state_dict(), "state": run_state(trainer),
                                    "config": dataclasses.asdict(self.cfg), "task": self.task})


def run_state(trainer) -> dict:
    """Where the run stands (gpt/train.py's TrainingState), with what continuing it exactly also needs:
    the CPU's random state, the device's (dropout on a GPU draws from it), and an fp16 run's loss scale."""
    return {**trainer.state.state_dict(), "rng": torch.get_rng_state(), "device": trainer.device,
            "device_rng": device_rng_state(trainer.device), "scaler": step_state(trainer.step)}


def resume(path, model, optimizer, tokenizer, state) -> tuple[str, dict | None]:
    """Put a run back where the checkpoint at path left it: model, optimizer, training state and random
    states, after the run was seeded and its model made (which draw from the random state it
    restores). Refuses a checkpoint of another model, text or tokenizer, saying what would continue
    it. Returns the lines to print, and the saved loss scale of an fp16 run (None otherwise)."""
    saved = load_checkpoint(path, how_to_make_one="Start a run without --resume to make one.", what_to_do=(
        "Start a new run there with --overwrite instead of --resume, or elsewhere with --checkpoint PATH."))
    if saved["tokenizer"] != tokenizer.to_dict():
        raise UserError(f"{path} was trained with another tokenizer or text than this run's")
    if saved["model_class"] != type(model).__name__ or saved["model_args"] != model.args:
        raise UserError(other_settings(path, saved, model))
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    run = saved["state"]
    state.load_state_dict(run)
    torch.set_rng_state(run["rng"])
    device = device_of(model)
    lines = [f"resumed from {path} at iteration {state.iter} ({state.seconds:.0f}s in)"]
    if run["device"] != device:
        lines.insert(0, f"note: this run was saved on {run['device']} and resumes on {device}: its numbers differ "
                        f"from an uninterrupted run's from here on (another device rounds differently, and with "
                        f"dropout draws other random numbers)")
    elif run["device_rng"] is not None:
        set_device_rng_state(device, run["device_rng"])
    return "\n".join(lines), run["scaler"]


def other_settings(checkpoint, saved: dict, model) -> str:
    """Why this run can't continue the model saved in checkpoint, and what to pass that would."""
    from .reference import SCRIPTS, script

    if saved["model_class"] != type(model).__name__:
        if saved.get("task") not in SCRIPTS:  # compare_rnn.py's, which trains and compares, and resumes nothing
            return f"{checkpoint} holds a {saved['model_class']}, which this script can't continue"
        return (f"{checkpoint} holds {saved['task']}'s model (a {saved['model_class']}), which this script can't "
                f"continue: python {script(saved['task'])} --checkpoint {shlex.quote(str(checkpoint))} --resume")
    wrong = {k: v for k, v in saved["model_args"].items() if model.args.get(k) != v}
    if not wrong:  # the same values, but this version's model takes more of them
        return f"{checkpoint} holds a model this version of {saved.get('task', 'the task')} can't continue; train it again"
    flags = " ".join(flag_for(k, v) for k, v in wrong.items())
    asked = ", ".join(f"{k}={model.args.get(k)}" for k in wrong)
    return (f"{checkpoint} holds a model made with other settings than this run's ({asked} here). "
            f"To continue it, pass {flags}")


def flag_for(name: str, value) -> str:
    """The command-line flag that sets a config field to value: `--n-embd 128`, `--tie-weights`."""
    flag = name.replace("_", "-")
    if isinstance(value, bool):
        return f"--{flag}" if value else f"--no-{flag}"
    return f"--{flag} {shlex.quote(str(value))}"
