"""Training the full GPT (tasks 07 and 09): presets, time budget, checkpoints, resume, GPU speed-ups.

Tasks 01-06 go through `gpt.run.run_task`; this is the same loop with what a long run needs on top.
"""

import dataclasses
import math
import sys
from contextlib import nullcontext
from pathlib import Path

import torch

from .checkpoint import load_checkpoint, save_checkpoint
from .config import ScaleConfig
from .data import load_dataset
from .errors import UserError
from .model import count_parameters, gpt_model
from .run import describe, format_eval, sample_text, setup
from .tokenizer import CharTokenizer
from .train import make_optimizer, train

MODEL_FIELDS = ("block_size", "n_embd", "n_head", "n_layer", "dropout", "positions")


def speed_settings(cfg: ScaleConfig, device: str) -> dict:
    """What makes a small GPT fast on a CUDA GPU; on other devices the plain fp32 path."""
    on_gpu = device == "cuda" and cfg.fast
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = on_gpu
        torch.backends.cudnn.allow_tf32 = on_gpu
    return {
        "amp_dtype": torch.bfloat16 if on_gpu and torch.cuda.is_bf16_supported() else None,
        # Without the speed-ups, attention runs the unfused math path: the comparison the task asks for.
        "attention": nullcontext() if on_gpu or device != "cuda" else torch.nn.attention.sdpa_kernel(
            torch.nn.attention.SDPBackend.MATH),
    }


def model_from_checkpoint(ckpt: dict, device: str = "cpu") -> tuple[torch.nn.Module, CharTokenizer]:
    """The model (in eval mode) and tokenizer a checkpoint holds."""
    tokenizer = CharTokenizer(ckpt["vocab"])
    model = gpt_model(tokenizer.vocab_size, **ckpt["model_config"]).to(device)
    model.load_state_dict(ckpt["model"])
    return model.eval(), tokenizer


def say(line: str) -> None:
    print(line, flush=True)  # flushed, so that a log piped to a file keeps up with training


def train_gpt(cfg: ScaleConfig, resume: bool = False, log=say, progress: bool | None = None,
              eval_first: bool = True, overwrite: bool = False) -> dict:
    """Train (or resume) the GPT that cfg describes, saving the best model to cfg.checkpoint.

    A new run does not replace a model already saved there unless overwrite is set: that file may be
    the one task 08 streams from, and ten minutes of training are easy to lose to a quick experiment."""
    if cfg.checkpoint and not resume and not overwrite and Path(cfg.checkpoint).exists():
        raise UserError(f"{cfg.checkpoint} already holds a model. Continue training it with --resume, replace it "
                        f"with --overwrite, or save this run elsewhere with --checkpoint PATH ('' for nowhere).")
    device = setup(cfg)
    tokenizer, train_ids, val_ids = load_dataset(cfg.data)
    model_config = {k: getattr(cfg, k) for k in MODEL_FIELDS}
    ckpt = None
    if resume:
        if not cfg.checkpoint:
            raise UserError("--resume needs a --checkpoint to resume from")
        ckpt = load_checkpoint(cfg.checkpoint, how_to_make_one="Start a run without --resume to make one.")
        if ckpt["vocab"] != tokenizer.vocab:
            raise UserError(f"{cfg.checkpoint} was trained on another text (its vocabulary differs from {cfg.data})")
        model_config = ckpt["model_config"]
    model = gpt_model(tokenizer.vocab_size, **model_config).to(device)
    optimizer = make_optimizer(model, cfg.learning_rate)
    generators = {"batch": torch.Generator().manual_seed(cfg.seed), "eval": torch.Generator().manual_seed(cfg.seed + 1)}
    start_iter, time_spent, best = 0, 0.0, {"val": math.inf, "iter": None}
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        for name, state in ckpt["rng"].items():
            generators[name].set_state(state)
        start_iter, time_spent = ckpt["iter"], ckpt["time"]
        best = {"val": ckpt["val_loss"], "iter": ckpt["iter"]}
    log(describe(cfg, device, model))
    if ckpt is not None:
        log(f"resumed from {cfg.checkpoint} at iteration {start_iter} (val loss {best['val']:.4f}, {time_spent:.0f}s in)")

    def on_eval(record):
        log(format_eval(record))
        if record["val"] < best["val"]:
            best.update(val=record["val"], iter=record["iter"])
            if cfg.checkpoint:
                save_checkpoint(cfg.checkpoint, {
                    "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "model_config": model_config, "vocab": tokenizer.vocab, "config": dataclasses.asdict(cfg),
                    "iter": record["iter"], "val_loss": record["val"], "train_loss": record["train"],
                    "time": record["time"], "rng": {k: g.get_state() for k, g in generators.items()},
                })

    speed = speed_settings(cfg, device)
    forward_model = torch.compile(model) if cfg.compile else model
    schedule = None
    if cfg.schedule == "cosine":
        schedule = {"peak": cfg.learning_rate, "min_lr": cfg.min_lr, "warmup": cfg.warmup}
    elif cfg.schedule != "constant":
        raise UserError(f"unknown --schedule {cfg.schedule!r}; choose constant or cosine")
    try:
        with speed["attention"]:
            history = train(forward_model, optimizer, train_ids, val_ids, batch_size=cfg.batch_size,
                            block_size=model_config["block_size"], max_iters=cfg.max_iters,
                            eval_interval=cfg.eval_interval, eval_iters=cfg.eval_iters, seed=cfg.seed, device=device,
                            on_eval=on_eval, start_iter=start_iter, generators=generators,
                            time_budget=cfg.time_budget or None, time_spent=time_spent, schedule=schedule,
                            amp_dtype=speed["amp_dtype"], eval_first=eval_first, progress=progress)
    except KeyboardInterrupt:
        where = (f"the best model so far (val loss {best['val']:.4f} at iteration {best['iter']}) is in {cfg.checkpoint}; "
                 f"continue with --resume" if cfg.checkpoint and best["iter"] is not None else "nothing was saved")
        print(f"\ninterrupted: {where}", file=sys.stderr)
        raise SystemExit(130) from None
    if cfg.checkpoint and best["iter"] is not None and Path(cfg.checkpoint).exists():
        model.load_state_dict(load_checkpoint(cfg.checkpoint)["model"])  # sample from the best model
    return {"model": model, "tokenizer": tokenizer, "history": history, "best": best, "device": device,
            "parameters": count_parameters(model)}


def print_sample(result: dict, cfg: ScaleConfig) -> str:
    """Where the best model went (if it was saved), then a sample from it in the course's format."""
    best = result["best"]
    if cfg.checkpoint and best["iter"] is not None:
        print(f"best val loss {best['val']:.4f} at iteration {best['iter']}, saved to {cfg.checkpoint}")
    sample = sample_text(result["model"], result["tokenizer"], cfg.sample_tokens, result["device"], cfg.seed)
    print(f"\nSampling {cfg.sample_tokens} tokens from a trained model: ")
    print(sample)
    return sample
