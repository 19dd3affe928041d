"""What a run leaves in runs/<name>/ for a learner to look at: history.csv (every evaluation the run
printed), loss.png (the loss curves, against the course's number and the reference band),
attention.png (what the trained model's heads read) and summary.json (the config, the final
numbers, the wall time)."""

import csv
import dataclasses
import io
import json
import time
from pathlib import Path

from gpt.data import is_tiny_shakespeare
from .files import atomic_write
from gpt.model import count_parameters
from .reference import COURSE, COURSE_NOTES, band
from gpt.errors import UserError
from gpt.tokenizer import CharTokenizer


def encode_or_none(tokenizer, text: str) -> list[int] | None:
    try:
        return tokenizer.encode(text)
    except UserError:  # a character the vocabulary doesn't have
        return None


class RunFiles:
    """A hook for the training loop, and what it writes into runs/<name>/: history.csv (every
    evaluation the run printed, rewritten at each one), then loss.png, attention.png and summary.json
    (the config, the final numbers, the wall time). A run that replaces another run's files says so
    (a resumed run carries on its own). folder '' writes nothing."""

    order = 40  # course/hooks.py: after the checkpoint, before the printed line

    def __init__(self, folder: str, task: str, name: str = "", log=print):
        self.dir = Path(folder) / (name or task) if folder else None
        self.task, self.log = task, log
        self.started = time.perf_counter()
        history = self.dir / "history.csv" if self.dir is not None else None
        self.earlier = history.read_text().splitlines() if history is not None and history.is_file() else []

    def on_eval(self, trainer, record):
        self.write_history(trainer.state.history)

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

    def finish(self, history, model, tokenizer, measures, cfg, where: str) -> list[str]:
        """Write the pictures and the summary; returns the paths written. where: the kind of hardware the
        run ran on (course/reference.py), whose band its loss curve is drawn against."""
        if self.dir is None:
            return []
        from .plots import ATTENTION_TEXT, attention_modules, draw_attention, plot_loss

        task = self.task
        written = [self.dir / "history.csv"]
        # the course's numbers and the bands are per character of Tiny Shakespeare: for no other text or tokens
        reference = isinstance(tokenizer, CharTokenizer) and is_tiny_shakespeare(cfg.data)
        reference_band, measured_on = band(task, where) if reference else (None, "")
        plot_loss(history, self.dir / "loss.png", self.dir.name, COURSE.get(task) if reference else None,
                  reference_band, COURSE_NOTES.get(task, ""), "" if measured_on == where else measured_on)
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
        summary = {"task": task, "hardware": where, "config": dataclasses.asdict(cfg), "parameters": count_parameters(model),
                   "final": history[-1], "measures": measures,
                   "wall_seconds": round(time.perf_counter() - self.started, 2)}
        with atomic_write(self.dir / "summary.json", "w") as f:
            json.dump(summary, f, indent=1)
        written.append(self.dir / "summary.json")
        return [str(p) for p in written]


def read_history(path: Path) -> list[dict]:
    """The evaluations a run's history.csv holds (RunFiles writes it): [{'step', 'train', 'val'}]."""
    with open(path, newline="") as f:
        return [{"step": int(r["step"]), "train": float(r["train_loss"]), "val": float(r["val_loss"])}
                for r in csv.DictReader(f)]
