"""Checkpoints: everything needed to use or resume a model, written atomically and read safely."""

from pathlib import Path

import torch

from .errors import UserError
from .files import atomic_write

FORMAT = "gpt-curriculum-checkpoint/1"


def save_checkpoint(path, payload: dict) -> None:
    """Write payload to path atomically: a crash or Ctrl-C mid-write leaves the previous checkpoint as it was."""
    with atomic_write(path) as f:
        torch.save({"format": FORMAT, **payload}, f)


def load_checkpoint(path, map_location="cpu", how_to_make_one: str = "") -> dict:
    """Read a checkpoint written by save_checkpoint; any other file gets a clear UserError."""
    path = Path(path)
    hint = f"\n{how_to_make_one}" if how_to_make_one else ""
    if not path.is_file():
        raise UserError(f"no checkpoint at {path}.{hint}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # the unpickler fails in many ways on a file it did not write
        raise UserError(f"{path} is not a readable checkpoint (truncated or corrupt?): {e}{hint}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise UserError(f"{path} is not a checkpoint of this project (no {FORMAT!r} marker).{hint}")
    return ckpt
