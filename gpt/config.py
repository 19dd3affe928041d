"""One config dataclass for every step, and a command line generated from it."""

import argparse
import dataclasses
from dataclasses import dataclass, field


def option(default, help: str, valid=None):
    """A config field with a default, the one line of help that `--help` shows for it, and optionally
    a check of its value: valid(value) returns what is wrong with it, or None."""
    return field(default=default, metadata={"help": help, "valid": valid})


def at_least(low):
    return lambda v: None if v >= low else f"must be at least {low}"


def positive(v):
    return None if v > 0 else "must be greater than 0"  # also false for nan


def fraction(v):
    return None if 0 <= v < 1 else "must be at least 0 and below 1"


def checked(kind, valid):
    """An argparse type for any flag: parse the text with kind, then refuse what valid objects to, so
    argparse exits with status 2 and a message naming the flag."""
    def parse(text):
        value = kind(text)
        problem = valid(value)
        if problem:
            raise argparse.ArgumentTypeError(f"{problem} (got {text})")
        return value
    parse.__name__ = kind.__name__  # argparse names the type in "invalid int value: 'x'"
    return parse


@dataclass
class Config:
    # data
    data: str = option("data/input.txt", "training text; the default is Tiny Shakespeare, downloaded if missing")
    # model
    block_size: int = option(8, "context length: the most tokens the model sees at once", at_least(1))
    n_embd: int = option(32, "embedding size (channels per token)", at_least(1))
    n_head: int = option(4, "attention heads per layer (tasks 02 on)", at_least(1))
    n_layer: int = option(3, "Transformer blocks (tasks 04 on)", at_least(1))
    # training
    batch_size: int = option(32, "sequences per training step", at_least(1))
    learning_rate: float = option(1e-3, "AdamW learning rate (the peak, when a schedule is used)", positive)
    max_iters: int = option(5000, "training steps", at_least(1))
    eval_interval: int = option(500, "evaluate every this many steps (and at the last one)", at_least(1))
    eval_iters: int = option(200, "batches per split averaged by each evaluation", at_least(1))
    seed: int = option(1337, "random seed: the same seed gives the same run")
    device: str = option("auto", "auto (cuda, then mps, then cpu), cuda, mps or cpu")
    threads: int = option(0, "CPU threads for PyTorch (0: PyTorch's default, one per core)", at_least(0))
    sample_tokens: int = option(500, "characters to sample from the trained model", at_least(0))


@dataclass
class ScaleConfig(Config):
    """Config for the scaled-up GPT (tasks 07 and 09): adds the time budget, the schedule, speed
    switches and the checkpoint."""
    dropout: float = option(0.0, "dropout probability during training", fraction)
    positions: str = option("learned", "position information: learned (a table, as in GPT-2) or rope (rotary, task 09)")
    time_budget: float = option(0.0, "stop training after this many seconds, 0 for none; the schedule is laid over it",
                               at_least(0))
    schedule: str = option("constant", "learning rate schedule: constant, or cosine (linear warmup, cosine decay)")
    warmup: float = option(0.05, "with --schedule cosine: fraction of the run spent warming up", fraction)
    min_lr: float = option(1e-4, "with --schedule cosine: the learning rate at the end of the run", at_least(0))
    fast: bool = option(True, "on CUDA: bf16 autocast, TF32, flash attention (--no-fast: plain fp32, for comparison)")
    compile: bool = option(False, "torch.compile the model (pays off on a GPU for long runs)")
    checkpoint: str = option("checkpoints/task07.pt", "where the best model so far is saved ('' to not save)")


def parse_config(defaults: Config, argv=None, description: str | None = None,
                 extra=None) -> tuple[Config, argparse.Namespace]:
    """Command-line overrides of `defaults`: every field is a flag named like it (`--max-iters 200`).

    `extra(parser)` may add script-specific flags; they come back in the namespace.
    """
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    for f in dataclasses.fields(defaults):
        default = getattr(defaults, f.name)
        flag = "--" + f.name.replace("_", "-")
        help_text = f"{f.metadata.get('help', '')} (default: {default})"
        if isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=help_text)
        else:
            kind = f.type if isinstance(f.type, type) else type(default)  # a float field may hold 570
            valid = f.metadata.get("valid")
            parser.add_argument(flag, type=checked(kind, valid) if valid else kind, default=default,
                                metavar=kind.__name__.upper(), help=help_text)
    if extra is not None:
        extra(parser)
    args = parser.parse_args(argv)
    cfg = dataclasses.replace(defaults, **{f.name: getattr(args, f.name) for f in dataclasses.fields(defaults)})
    return cfg, args
