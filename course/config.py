"""The settings of a run, and a command line generated from them.

One dataclass per step that adds settings, each extending the one before, so that a task offers
(and prints) exactly the settings its model uses: task 00 has no n_embd, task 01 no n_head, tasks
02-03 no n_layer. Every field is a flag named like it (`--max-iters 200`), with its default and its
one line of help in `--help`. A value out of range, or a choice that isn't one, fails when the
config is made, with a message that says what is allowed.
"""

import argparse
import dataclasses
import difflib
import math
import textwrap
from dataclasses import dataclass, field

from gpt.data import DEFAULT_NAME
from .device import DEVICES, PRECISIONS
from .distributed import BACKENDS
from gpt.errors import UserError
from gpt.schedules import SCHEDULES


def option(default, help: str, valid=None, choices: tuple | None = None):
    """A config field with a default, the line of help that `--help` shows for it, and optionally a
    check of its value: valid(value) returns what is wrong with it, or None; or a tuple of choices."""
    return field(default=default, metadata={"help": help, "valid": valid, "choices": choices})


def at_least(low):
    return lambda v: None if v >= low else f"must be at least {low}"


def positive(v):
    return None if v > 0 else "must be greater than 0"  # also false for nan


def fraction(v):
    return None if 0 <= v < 1 else "must be at least 0 and below 1"


def probability(v):
    return None if 0 < v <= 1 else "must be greater than 0 and at most 1"


def finite_at_least(low):
    return lambda v: None if math.isfinite(v) and v >= low else f"must be a number of at least {low}"


def problem_with(value, valid=None, choices=None) -> str | None:
    if choices is not None and value not in choices:
        return f"unknown choice {value!r}; choose one of {', '.join(map(str, choices))}"
    return valid(value) if valid is not None else None


def checked(kind, valid=None, choices=None):
    """An argparse type for any flag: parse the text with kind, then refuse what valid or choices
    object to, so that argparse exits with status 2 and a message naming the flag."""
    def parse(text):
        value = kind(text)
        problem = problem_with(value, valid, choices)
        if problem:
            raise argparse.ArgumentTypeError(f"{problem} (got {text})")
        return value
    parse.__name__ = kind.__name__  # argparse names the type in "invalid int value: 'x'"
    return parse


@dataclass
class TrainConfig:
    """What every task sets: the data, the training run and the sample (task 00's bigram needs no more)."""
    data: str = option(DEFAULT_NAME, "training text; the default is Tiny Shakespeare, downloaded if missing")
    block_size: int = option(8, "context length: the most tokens the model sees at once", at_least(1))
    batch_size: int = option(32, "sequences per training step", at_least(1))
    learning_rate: float = option(1e-3, "AdamW learning rate (the peak, when a schedule is used)", positive)
    max_iters: int = option(5000, "training steps", at_least(1))
    grad_accum: int = option(1, "micro-steps per training step: each takes a 1/grad_accum share of the batch, and "
                                "their gradients add up before the update (the same update, in less memory)",
                             at_least(1))
    eval_interval: int = option(500, "evaluate every this many steps", at_least(1))
    eval_iters: int = option(200, "batches per split averaged by each evaluation", at_least(1))
    seed: int = option(1337, "random seed: the same seed gives the same run")
    device: str = option("auto", "where to train: auto picks cuda, then mps, then cpu", choices=DEVICES)
    precision: str = option("auto", "auto: what the device runs natively (bf16 on Ampere+ GPUs, fp16 with a "
                                    "gradient scaler on older ones, fp32 on MPS and CPUs); or fp32, bf16, fp16",
                            choices=PRECISIONS)
    sample_tokens: int = option(500, "characters to sample from the trained model", at_least(0))
    runs: str = option("runs", "folder for the run's history, loss curve and attention map ('' for none)")

    def __post_init__(self):
        for f in dataclasses.fields(self):
            problem = problem_with(getattr(self, f.name), f.metadata.get("valid"), f.metadata.get("choices"))
            if problem:
                raise UserError(f"{f.name}: {problem}")
        if self.batch_size % self.grad_accum:
            raise UserError(f"batch_size: {self.batch_size} does not split into {self.grad_accum} equal micro-steps "
                            f"(--grad-accum); give a batch size that is a multiple of {self.grad_accum}")


@dataclass
class HeadConfig(TrainConfig):
    """Task 01 adds the embedding: each token becomes a vector of n_embd channels."""
    n_embd: int = option(32, "embedding size (channels per token)", at_least(1))


@dataclass
class MultiHeadConfig(HeadConfig):
    """Tasks 02-03 split attention into heads."""
    n_head: int = option(4, "attention heads, each of size n_embd // n_head", at_least(1))


@dataclass
class StackConfig(MultiHeadConfig):
    """Tasks 04-06 stack blocks."""
    n_layer: int = option(3, "blocks stacked one on top of the other", at_least(1))


@dataclass
class GPTConfig(StackConfig):
    """Task 07 (and 09): the GPT at scale, with dropout, a schedule, checkpoints and a subword tokenizer."""
    dropout: float = option(0.0, "dropout probability during training", fraction)
    weight_decay: float = option(0.01, "AdamW weight decay", finite_at_least(0))
    schedule: str = option("cosine", "learning rate over the run: constant; cosine (linear warmup, cosine decay); "
                                     "sgdr (warmup, cosine cycles restarting at the peak); wsd (warmup, stable, "
                                     "then a linear decay over the last --decay of the run)", choices=SCHEDULES)
    warmup: float = option(0.05, "fraction of the run spent warming up the learning rate", fraction)
    min_lr: float = option(1e-4, "the learning rate at the end of the schedule (and of each sgdr cycle)",
                           finite_at_least(0))
    cycles: int = option(3, "with --schedule sgdr: cosine cycles after the warmup", at_least(1))
    cycle_mult: float = option(2.0, "with --schedule sgdr: each cycle this many times longer than the one before",
                               finite_at_least(1))
    decay: float = option(0.2, "with --schedule wsd: the fraction of the run spent decaying", probability)
    final_eval_iters: int = option(200, "batches per split for the final evaluation, after the last step", at_least(1))
    time_budget: float = option(0.0, "stop after this many seconds of training, 0 for none; the schedule is then "
                                     "laid over the time instead of the steps (the table then depends on the machine)",
                                finite_at_least(0))
    checkpoint: str = option("checkpoints/task07.pt", "where the model is saved at each evaluation and at the end ('' for nowhere)")
    compile: bool = option(False, "torch.compile the model (pays off on a GPU for long runs)")
    backend: str = option("auto", "under torchrun: how the processes exchange gradients; auto: nccl on CUDA GPUs, "
                                  "gloo on CPUs", choices=BACKENDS)
    tokenizer: str = option("char", "char: one token per character; bpe: byte-level BPE trained on the training split",
                            choices=("char", "bpe"))
    vocab_size: int = option(512, "with --tokenizer bpe: tokens in the vocabulary (the bytes the text holds, then "
                                  "merges); at least the number of different bytes in the text", at_least(1))


class Parser(argparse.ArgumentParser):
    """argparse with a short error: what is wrong and where every setting is listed, instead of the
    usage of every flag; the description (a script's docstring) shown as it is written."""

    def __init__(self, *args, formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs):
        super().__init__(*args, formatter_class=formatter_class, **kwargs)

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n(python {self.prog} --help lists every setting, with its default)\n")


# Where the settings a task lacks come in: the first config that has them, its script, and its step.
STEPS = (("HeadConfig", "task01.py", "self-attention and the embedding come in task 01"),
         ("MultiHeadConfig", "task02.py", "multi-head attention comes in task 02"),
         ("StackConfig", "task04.py", "blocks stacked n_layer deep come in task 04"),
         ("GPTConfig", "task07.py", "dropout, a schedule, checkpoints and subword tokens come in task 07"),
         ("ModernGPTConfig", "task09_rope.py", "rotary positions and the changes from recent papers come in task 09"))
SCRIPT_FLAGS = {"--preset": "GPTConfig", "--resume": "GPTConfig", "--overwrite": "GPTConfig", "--search": "GPTConfig",
                "--csv": "GPTConfig", "--compare": "ModernGPTConfig", "--seeds": "ModernGPTConfig"}  # task scripts' own
WITHOUT = {"n_embd": "its model is a table of next-character logits, with no embedding",
           "n_head": "it has one head of attention", "n_layer": "it has one block", "dropout": "it trains without dropout"}


def where_flags_are(parser, defaults, unknown: list[str]) -> str:
    """For each flag in unknown: the later task that has it (`task01.py has no --n-head: it has one head
    ...: python task02.py --n-head 4`), or the flag of this task it may be a misspelling of."""
    lines = []
    known = [option for action in parser._actions for option in action.option_strings]
    for i, token in enumerate(unknown):
        if not token.startswith("--"):
            continue
        flag, _, value = token.partition("=")
        if not value and i + 1 < len(unknown) and not unknown[i + 1].startswith("--"):
            value = unknown[i + 1]
        step = later_step(flag, defaults)
        if step is not None:
            script, adds = step
            instead = WITHOUT.get(flag[2:].replace("-", "_"))
            example = " ".join(["python", script, flag] + ([value] if value else []))
            lines.append(f"{parser.prog} has no {flag}: {instead + '. ' if instead else ''}{adds[0].upper()}{adds[1:]}: "
                         f"{example}")
        else:
            close = difflib.get_close_matches(flag, known, n=1, cutoff=0.8)
            lines.append(f"{parser.prog} has no {flag}" + (f"; did you mean {close[0]}?" if close else ""))
    return "\n".join(lines)


def later_step(flag: str, defaults) -> tuple[str, str] | None:
    """(script, what it adds) of the first step that has flag, if that step comes after defaults' own."""
    name = flag[2:].replace("-", "_")
    for config_name, script, adds in STEPS:
        config = globals()[config_name]  # by name: ModernGPTConfig is defined below
        if SCRIPT_FLAGS.get(flag) == config_name or name in {f.name for f in dataclasses.fields(config)}:
            return (script, adds) if issubclass(config, type(defaults)) and config is not type(defaults) else None
    return None


def parse_config(defaults, argv=None, description: str | None = None, extra=None, multi: tuple = ()):
    """Command-line overrides of `defaults`: every field is a flag named like it (`--max-iters 200`).

    `extra(parser)` may add the script's own flags; they come back in the namespace. Fields named in
    `multi` take one or more values (a grid to run); the config then holds the first of each, and the
    namespace all of them.
    """
    parser = Parser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    for f in dataclasses.fields(defaults):
        default = getattr(defaults, f.name)
        flag = "--" + f.name.replace("_", "-")
        help_text = f"{f.metadata.get('help', '')} (default: {default})"
        if isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=help_text)
            continue
        kind = f.type if isinstance(f.type, type) else type(default)
        valid, choices = f.metadata.get("valid"), f.metadata.get("choices")
        many = f.name in multi
        parser.add_argument(flag, type=checked(kind, valid, choices), default=[default] if many else default,
                            nargs="+" if many else None, metavar=kind.__name__.upper() if choices is None else
                            "{" + ",".join(choices) + "}", help=help_text)
    if extra is not None:
        extra(parser)
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}\n{where_flags_are(parser, defaults, unknown)}")
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(defaults)}
    cfg = dataclasses.replace(defaults, **{k: v[0] if k in multi else v for k, v in values.items()})
    return cfg, args


# Settings that do nothing in a run configured like this one: the line a run starts with leaves them out.
UNUSED = {
    "vocab_size": lambda cfg: cfg.tokenizer == "char",
    "grad_accum": lambda cfg: cfg.grad_accum == 1,
    "backend": lambda cfg: cfg.backend == "auto",  # a character model's vocabulary is the text's characters
    "time_budget": lambda cfg: cfg.time_budget == 0,
    "warmup": lambda cfg: cfg.schedule == "constant",
    "min_lr": lambda cfg: cfg.schedule == "constant",
    "decay": lambda cfg: cfg.schedule != "wsd",
    "cycles": lambda cfg: cfg.schedule != "sgdr",
    "cycle_mult": lambda cfg: cfg.schedule != "sgdr",
    "muon_lr": lambda cfg: cfg.optimizer != "muon",
}


def describe(cfg) -> str:
    """The resolved config, as a run prints it first: every setting the run uses, in lines that fit a
    100-column terminal."""
    used = [f.name for f in dataclasses.fields(cfg) if not (f.name in UNUSED and UNUSED[f.name](cfg))]
    return textwrap.fill(" ".join(f"{name}={getattr(cfg, name)}" for name in used), width=100,
                         initial_indent="config: ", subsequent_indent="        ", break_long_words=False)


@dataclass
class ModernGPTConfig(GPTConfig):
    """Task 09: rotary positions, and the changes from recent papers a run may compose in."""
    positions: str = option("rope", "rope: rotary, in attention (RotaryGPT); learned: task 07's GPT, with its "
                                    "position table (the A/B's other arm)", choices=("rope", "learned"))  # gpt.modern.POSITIONS
    mlp: str = option("relu", "the MLP: relu (task 05's), relu2 (squared ReLU) or swiglu (gated)",
                      choices=("relu", "relu2", "swiglu"))  # gpt.modern.MLPS
    tie_weights: bool = option(False, "use the token embedding table as the output layer too")
    optimizer: str = option("adamw", "adamw for every parameter, or muon for the matrices in the blocks (AdamW for the rest)",
                            choices=("adamw", "muon"))
    muon_lr: float = option(0.02, "with --optimizer muon: its learning rate (the schedule scales it like the other)", positive)
