"""Checkpoints: everything needed to use a model alone or to continue its training exactly, written
atomically and read safely (weights only: loading a checkpoint never runs code from it)."""

from pathlib import Path

import torch

from .errors import UserError
from .files import atomic_write
from .model import GPT
from .modern import ModernGPT
from .tokenizer import tokenizer_from_dict

FORMAT = "gpt-curriculum-checkpoint/2"
MODELS = {"GPT": GPT, "ModernGPT": ModernGPT}  # the models a checkpoint can rebuild, by class name


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
    """How to rebuild model: its class and the plain values it was made with."""
    name = type(model).__name__
    if name not in MODELS:
        raise UserError(f"a {name} can't be saved in a checkpoint; only {', '.join(MODELS)} can")
    return {"model_class": name, "model_args": model.args, "model": model.state_dict()}


def model_from_checkpoint(ckpt: dict, device: str = "cpu"):
    """The model (in eval mode) and the tokenizer a checkpoint holds."""
    model = MODELS[ckpt["model_class"]](**ckpt["model_args"]).to(device)
    model.load_state_dict(ckpt["model"])
    return model.eval(), tokenizer_from_dict(ckpt["tokenizer"])
