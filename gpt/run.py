"""What every task script does around its model: read the command line, load the data, train while
printing the course's table, then sample. A task script only says how its model is built."""

import dataclasses
import sys
from contextlib import contextmanager

import torch

from .config import Config, parse_config
from .data import load_dataset
from .errors import UserError
from .generate import generate
from .model import count_parameters
from .train import make_optimizer, resolve_device, train


@contextmanager
def friendly_errors():
    """A mistake the user can fix, or Ctrl-C, ends the script with a message instead of a traceback."""
    try:
        yield
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        raise SystemExit(130) from None


def setup(cfg: Config) -> str:
    """Seed, thread count and device for a run; returns the device."""
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    return resolve_device(cfg.device)


def describe(cfg: Config, device: str, model) -> str:
    fields = " ".join(f"{k}={v}" for k, v in dataclasses.asdict(cfg).items())
    return f"config: {fields}\ndevice: {device} | parameters: {count_parameters(model):,}"


def format_eval(record: dict) -> str:
    """The course's line for one evaluation, with the wall time since training started appended."""
    return (f"Epoch {record['iter']}: avg train loss {record['train']:.4f} | avg val loss {record['val']:.4f}"
            f" | {record['time']:.1f}s")


def print_eval(record: dict) -> None:
    print(format_eval(record), flush=True)


def sample_text(model, tokenizer, n_tokens: int, device: str, seed: int) -> str:
    """n_tokens characters generated from a single newline (or token 0 if the text has no newline)."""
    start = tokenizer.stoi.get("\n", 0)
    context = torch.tensor([[start]], dtype=torch.long, device=device)
    generator = torch.Generator().manual_seed(seed)
    out = generate(model, context, n_tokens, generator=generator)  # (1, 1 + n_tokens)
    return tokenizer.decode(out[0, 1:].tolist())


def run_task(build_model, defaults: Config, argv=None, description: str | None = None) -> dict:
    """Train the model that build_model(cfg, vocab_size) makes, printing the course's output."""
    cfg, _ = parse_config(defaults, argv, description)
    with friendly_errors():
        device = setup(cfg)
        tokenizer, train_ids, val_ids = load_dataset(cfg.data)
        model = build_model(cfg, tokenizer.vocab_size).to(device)
        print(describe(cfg, device, model), flush=True)
        optimizer = make_optimizer(model, cfg.learning_rate)
        history = train(model, optimizer, train_ids, val_ids, batch_size=cfg.batch_size,
                        block_size=cfg.block_size, max_iters=cfg.max_iters, eval_interval=cfg.eval_interval,
                        eval_iters=cfg.eval_iters, seed=cfg.seed, device=device, on_eval=print_eval)
        sample = sample_text(model, tokenizer, cfg.sample_tokens, device, cfg.seed)
        print(f"\nSampling {cfg.sample_tokens} tokens from a trained model: ")
        print(sample)
    return {"config": cfg, "history": history, "sample": sample, "model": model, "tokenizer": tokenizer}
