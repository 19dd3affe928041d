"""Every number the explorer's page shows, computed by each model's own forward in PyTorch through the
functions the scripts use: the loss of each token, the next token's distribution under task 08's
sampling settings, every attention map (course/plots.py's `attention_maps`, the weights each layer's
forward applies), task 08's stream (app.py), the run's history, and the smooth loss by position
(gpt/measures.py). The page draws them and computes nothing of its own.

A text longer than the model's window is read as task 08 streams a task 07 model: in windows that
start every block_size // 2 tokens, each token in the one where it has the most context
(`window_start`).
"""

import base64
import copy
import threading
from pathlib import Path

import torch
import torch.nn.functional as F

from gpt.data import DEFAULT_PATH, load_dataset, load_text, train_val_split
from gpt.errors import UserError
from gpt.generate import next_token_probs
from gpt.measures import loss_by_position_val, measure_val, window_starts
from gpt.model import count_parameters, eval_mode
from gpt.rnn import RNNLanguageModel

from ..checkpoint import load_checkpoint, load_model
from ..config import at_least, probability, problem_with
from ..measures import model_label
from ..plots import ATTENTION_TEXT, attention_maps, attention_modules
from ..run_files import read_history

MAX_TOKENS = 1000  # a longer text is refused: its attention maps would be too large to send and draw
TOP = 10  # the next tokens shown, likeliest first
PASSAGE = 256  # characters of the validation split the page starts with
EVERY = 4  # the loss by position from runs of window starts, one in every 4 (gpt/measures.py): a minute at most


class Opened:
    """A checkpoint opened for the page: its model (in eval mode) and tokenizer, what it says about its
    run, and a lock, so that one forward at a time runs through the model (attention_maps' hooks would
    otherwise see another request's forward)."""

    def __init__(self, path, device: str = "cpu"):
        self.path = str(path)
        self.model, self.tokenizer = load_model(path, device, "python -m course.explore")
        saved = load_checkpoint(path, mmap=True)  # the tensors are read only if used: none of them here
        self.config = saved.get("config") or {}
        self.task = saved.get("task", "")
        self.history = saved.get("state", {}).get("history", [])
        self.label = model_label(self.model)
        self.lock = threading.Lock()
        self.positions, self.measuring = None, threading.Lock()  # the loss by position, once measured

    @property
    def device(self):
        return next(self.model.parameters()).device


def about(opened: Opened) -> dict:
    """What the page says about a model: what it is, its size, its settings and its run."""
    model, tokenizer = opened.model, opened.tokenizer
    layers = attention_modules(model)
    if tokenizer.to_dict()["kind"] == "bpe":
        tokens, unit = f"byte-level BPE, {tokenizer.vocab_size} tokens", "token"
    else:
        tokens, unit = f"characters, {tokenizer.vocab_size} of them", "character"
    run_folder = run_folder_of(opened)
    return {"path": opened.path, "label": opened.label, "kind": type(model).__name__, "task": opened.task,
            "parameters": count_parameters(model), "block_size": model.block_size, "tokens": tokens, "unit": unit,
            "attention": {"layers": len(layers), "heads": getattr(layers[0][1], "n_head", 1),  # task 01's one head
                          "positions": "rotary" if type(model).__name__ == "RotaryGPT" else "learned"} if layers else None,
            "no_attention": "" if layers else no_attention(model),
            "config": opened.config or dict(model.args),
            "history": [{"step": r["iter"], "train": r["train"], "val": r["val"]} for r in opened.history]
            or (read_history(run_folder / "history.csv") if run_folder else []),
            "run_folder": str(run_folder) if run_folder else ""}


def no_attention(model) -> str:
    """What the page says in place of attention maps for a model that has none."""
    if isinstance(model, RNNLanguageModel):
        a = model.args
        return (f"A {a['cell'].upper()} has no attention: it reads one character at a time and carries what it keeps "
                f"of the past in a hidden state ({a['n_layer']} layers of {a['n_hidden']} numbers), so there is no "
                f"map of what each character reads. Its surprise and its next character above come from the same "
                f"windows as a GPT's.")
    return f"A {type(model).__name__} has no attention layers: nothing to draw here."


def run_folder_of(opened: Opened) -> Path | None:
    """The folder the run that saved this checkpoint wrote its files to, if it is still there."""
    runs, task = opened.config.get("runs"), opened.task
    if not runs or not task:
        return None
    candidates = [Path(runs) / task]
    if task == "compare_rnn":  # compare_rnn.py's first seed, one folder per model
        candidates.append(Path(runs) / "compare_rnn" / f"seed{opened.config.get('seed')}" / Path(opened.path).stem)
    return next((c for c in reversed(candidates) if (c / "history.csv").is_file()), None)


def passage(opened: Opened, whole_lines: bool = True) -> str:
    """A passage of the validation split of the text the model trained on, from its first speaker on:
    PASSAGE characters, or the whole lines among them. The line the run's attention picture reads if
    that text is not here."""
    try:
        text = load_text(opened.config.get("data"))
    except UserError:
        return ATTENTION_TEXT
    val = train_val_split(text)[1]
    start = val.find("\n\n") + 2 if "\n\n" in val else 0
    text = val[start:start + PASSAGE]
    end = text.rfind("\n")
    return text[:end + 1] if whole_lines and end > 0 else text


SAMPLING = {"temperature": (float, at_least(0)), "top_k": (int, at_least(1)), "top_p": (float, probability)}


def sampling_settings(temperature=1.0, top_k=None, top_p=None) -> dict:
    """task 08's sampling flags, checked by the rules its flags are (course/config.py)."""
    given, settings = {"temperature": temperature, "top_k": top_k, "top_p": top_p}, {}
    for name, (kind, valid) in SAMPLING.items():
        if name != "temperature" and given[name] in (None, ""):  # top-k and top-p: off
            settings[name] = None
            continue
        try:
            settings[name] = kind(given[name])
        except (TypeError, ValueError):
            raise UserError("temperature, top-k and top-p are numbers") from None
        problem = problem_with(settings[name], valid)
        if problem:
            raise UserError(f"{name.replace('_', '-')} {problem} (got {settings[name]})")
    return settings


def window_start(t: int, block_size: int) -> int:
    """Where the window that token t is read in starts. The way task 08 streams a model with learned
    positions (gpt/generate.py's `stream`): the first block_size tokens in the first window, then
    windows that start every block_size // 2 tokens, each token read in the one where it has the most
    context, block_size // 2 to block_size - 1 tokens. (Sliding one token at a time would give every
    token a full window, at a forward pass of a whole window per token: 193 of them for 256 characters
    at block 64, too many to answer while you type.)"""
    half = max(1, block_size // 2)
    return 0 if t < block_size else ((t - block_size) // half + 1) * half


@torch.no_grad()
def read_in_windows(model, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """idx (1, T) -> the model's logits for the token after each t (T, V), and every attention layer's
    weights as a band (L, nh, T, W), W = min(T, block_size): row t holds the weights of the window t is
    read in, from its first column, window_start(t), on (past the text's end: 0). None for a model
    without attention. The logits come from one forward of the windows of each length; the weights from
    course/plots.py's attention_maps, one window at a time."""
    T, bs = idx.size(1), model.block_size
    starts = [window_start(t, bs) for t in range(T)]
    windows = {s: min(T, s + bs) for s in starts}  # start -> end, oldest first
    logits = [None] * T
    with eval_mode(model):
        for length in sorted({end - start for start, end in windows.items()}):
            group = [start for start, end in windows.items() if end - start == length]
            out, _ = model(torch.stack([idx[0, s:s + length] for s in group]))  # (N, length, V)
            for k, s in enumerate(group):
                for t in range(s, s + length):
                    if starts[t] == s:
                        logits[t] = out[k, t - s]
    if not attention_modules(model):
        return torch.stack(logits).float().cpu(), None
    W = min(T, bs)
    band = None
    for start, end in windows.items():
        maps = attention_maps(model, idx[:, start:end])  # per layer (nh, end - start, end - start)
        if band is None:
            band = torch.zeros(len(maps), maps[0].size(0), T, W)
        for t in range(start, end):
            if starts[t] == start:
                band[:, :, t, :end - start] = torch.stack([m[:, t - start] for m in maps]).float().cpu()
    return torch.stack(logits).float().cpu(), band


def read(opened: Opened, text: str, sampling: dict) -> dict:
    """What the page shows of text for one model: each token's loss and probability, the TOP likeliest
    next tokens after each position under the sampling settings, and every attention map (as a band,
    with each row's first column: see read_in_windows)."""
    model, tokenizer = opened.model, opened.tokenizer
    ids = tokenizer.encode(text)  # names the characters outside the vocabulary
    if not ids:
        raise UserError("type some text: there is nothing to read")
    if len(ids) > MAX_TOKENS:
        raise UserError(f"the text is {len(ids):,} tokens long; the page reads at most {MAX_TOKENS:,} at a time: "
                        f"shorten it")
    idx = torch.tensor([ids], device=opened.device)  # (1, T)
    with opened.lock:
        logits, band = read_in_windows(model, idx)  # (T, V), (L, nh, T, W)
    nll = F.cross_entropy(logits[:-1], idx[0, 1:].cpu(), reduction="none")  # (T-1,): token t+1, read at t
    probs = next_token_probs(logits, **sampling)  # (T, V), what is kept
    probs = probs / probs.sum(dim=-1, keepdim=True)  # as probabilities
    top = probs.topk(min(TOP, probs.size(-1)), dim=-1)  # (T, TOP) each
    names = tokenizer.token_texts(range(tokenizer.vocab_size))
    bs = model.block_size
    return {"tokens": tokenizer.token_texts(ids), "loss": [None, *nll.tolist()], "prob": [None, *nll.neg().exp().tolist()],
            "next": [[[names[i], p] for i, p in zip(row_ids, row_p) if p > 0]
                     for row_ids, row_p in zip(top.indices.tolist(), top.values.tolist())],
            "attention": None if band is None else {
                "layers": band.size(0), "heads": band.size(1), "window": band.size(3),
                "starts": [window_start(t, bs) for t in range(len(ids))], "band": as_base64(band)},
            "window": bs, "half": max(1, bs // 2), "longer": len(ids) > bs}


def as_base64(t: torch.Tensor) -> str:
    """A float32 tensor's values, little-endian, for the page's Float32Array (JSON would be 5x larger)."""
    return base64.b64encode(t.contiguous().numpy().astype("<f4").tobytes()).decode("ascii")


def differences(first: dict, other: dict) -> list | None:
    """other's loss minus first's, token by token (None for the first token); None where the two read
    different tokens (another tokenizer)."""
    if first["tokens"] != other["tokens"]:
        return None
    return [None if a is None else b - a for a, b in zip(first["loss"], other["loss"])]


def loss_by_position(opened: Opened) -> dict:
    """The validation loss at each position of the window, from consecutive windows (the run's
    measures) and from runs of window starts, one in EVERY (smooth), of the text the model trained on.
    Measured on a copy of the model, so that the page goes on answering for it meanwhile."""
    with opened.measuring:  # a second request waits for the first one's numbers
        if opened.positions is None:
            data = checked_dataset(opened)
            with opened.lock:
                model = copy.deepcopy(opened.model)
            bs = model.block_size
            opened.positions = {"consecutive": measure_val(model, data, bs)["loss_by_position"],
                                "smooth": loss_by_position_val(model, data, bs, EVERY),
                                "windows": len(window_starts(len(data.val) + 1 - bs, bs, EVERY))}
    return opened.positions


def checked_dataset(opened: Opened):
    """The text the model trained on, split as it was, in its own tokens: characters only (positions
    of BPE tokens are not positions of characters). Never downloads: the page works offline."""
    if opened.tokenizer.to_dict()["kind"] != "char":
        raise UserError("the loss by position is measured in characters; this model reads BPE tokens")
    path = opened.config.get("data")
    data = load_dataset(path)  # a missing file: says where it was looked for
    if data.tokenizer.to_dict() != opened.tokenizer.to_dict():
        where = path or DEFAULT_PATH
        raise UserError(f"{opened.path} was trained on another text than {where}: its validation split is not here")
    return data
