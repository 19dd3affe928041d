"""Task 09: rotary position embeddings (RoPE) instead of a learned position table.

Tasks 01-07 add a learned vector for each absolute position 0..block_size-1 to the token embedding.
RoPE instead turns every query and key inside attention by an angle proportional to its position
(each channel pair at its own frequency), so that the score q_m . k_n depends only on the offset
m - n: attention sees relative positions, and the model has no position table to learn.

Papers and write-ups:
- Su et al. 2021, "RoFormer: Enhanced Transformer with Rotary Position Embedding",
  https://arxiv.org/abs/2104.09864
- Biderman et al. 2021, "Rotary Embeddings: A Relative Revolution" (EleutherAI),
  https://blog.eleuther.ai/rotary-embeddings/
- Black et al. 2022, "GPT-NeoX-20B", https://arxiv.org/abs/2204.06745 (the half-split rotation used here)
- Touvron et al. 2023, "LLaMA", https://arxiv.org/abs/2302.13971 (RoPE in a modern LLM)

Other changes from recent papers, each a class in gpt/modern.py, can be composed in: --mlp
relu2|swiglu (the MLP class each block gets), --tie-weights, --optimizer muon, --schedule wsd|sgdr.
`--compare SETTING=VALUE` runs an A/B: this run's configuration against the same with one setting
changed, at the same step count, seed by seed; `--compare positions=learned` trains task 07's GPT
(its learned position table) as the other arm. RESEARCH_LOG.md (its "task 09" entries) has the A/Bs and the
one-seed screens that set the defaults, with the settings they ran at.

This trains task 07's CPU preset with RoPE, in windows twice as long (block 128, batch 8: the same
tokens per step), for 7000 steps, and saves checkpoints/task09.pt (stream from it: python
task08_infinite.py --checkpoint checkpoints/task09.pt).

    python task09_rope.py                                  # the RoPE model, minutes on a CPU
    python task09_rope.py --compare positions=learned --seeds 3   # RoPE vs task 07's learned table
    python task09_rope.py --compare mlp=relu2 --seeds 3    # any other setting the same way
"""

import argparse
import dataclasses
import statistics
import sys

from gpt.checkpoint import resume
from gpt.config import ModernGPTConfig, at_least, checked, parse_config
from gpt.data import load_dataset
from gpt.distributed import DataParallel, launched_by_torchrun
from gpt.errors import UserError
from gpt.modern import MLPS, POSITIONS, muon_optimizer, tie_weights
from gpt.presets import TASK09
from gpt.exits import friendly_errors
from gpt.run import (check_model, check_models, check_writable_outputs, long_run_files, long_run_hooks,
                     print_duration, print_flushed, print_nothing, print_start, report,
                     seed_and_pick_device)
from gpt.train import TrainingState, make_optimizer, train

import torch  # after gpt, which picks torch's CPU kernels before torch loads

def build_model(cfg: ModernGPTConfig, vocab_size: int):
    if cfg.tie_weights and cfg.positions == "learned":
        raise UserError("--tie-weights is task 09's RotaryGPT's; the learned-positions arm is task 07's GPT as it is")
    model = POSITIONS[cfg.positions](vocab_size, cfg.block_size, cfg.n_embd, cfg.n_head, cfg.n_layer, cfg.dropout,
                                  mlp=MLPS[cfg.mlp])
    return tie_weights(model) if cfg.tie_weights else model


def build_optimizer(cfg: ModernGPTConfig, model):
    if cfg.optimizer == "muon":
        return muon_optimizer(model, cfg.learning_rate, cfg.muon_lr, cfg.weight_decay)
    return make_optimizer(model.parameters(), cfg.learning_rate, cfg.weight_decay)  # AdamW, as every task before


def train_gpt(cfg: ModernGPTConfig, resume_run: bool = False, overwrite: bool = False, log=print_flushed,
              progress=None) -> dict:
    """One run, in the lesson's order: settings checked, data, model, optimizer, train, report. Under
    torchrun, one of several processes that train it together (gpt/distributed.py)."""
    check_model(build_model, cfg)
    check_writable_outputs(cfg, cfg.checkpoint, resume_run, overwrite)
    device = seed_and_pick_device(cfg)
    with DataParallel(cfg, device) as processes:  # torchrun's processes, or this one alone
        log, progress = (log, progress) if processes.main else (print_nothing, False)  # process 0 speaks
        data = load_dataset(cfg.data, cfg.tokenizer, cfg.vocab_size)
        model = build_model(cfg, data.tokenizer.vocab_size).to(device)
        optimizer = build_optimizer(cfg, model)
        state = TrainingState(cfg.seed)
        resumed = resume(cfg.checkpoint, model, optimizer, data.tokenizer, state) if resume_run else ""
        files = long_run_files("task09", cfg, log)
        print_start(cfg, model, log, processes.describe(cfg.batch_size, cfg.grad_accum))
        if resumed:
            log(resumed)
        print_duration(cfg, model, data.tokenizer.vocab_size, state, log)
        trained = processes.wrap(torch.compile(model) if cfg.compile else model)  # saved and measured: model
        hooks = long_run_hooks("task09", cfg, model, data.tokenizer, files, log, progress)
        history = train(trained, optimizer, data, cfg, hooks, state)
        if not processes.main:
            return {"history": history}
        return report("task09", cfg, model, data, history, files, cfg.checkpoint, log)


def extra_flags(parser):
    parser.add_argument("--compare", metavar="SETTING=VALUE", type=setting,
                        help="also train this configuration with one setting changed, at the same step count, "
                             "and print the A/B table (e.g. positions=learned)")
    parser.add_argument("--seeds", type=checked(int, at_least(1)), default=1, help="with --compare: seeds per arm (default: 1)")
    parser.add_argument("--resume", action="store_true", help="continue the run saved at --checkpoint")
    parser.add_argument("--overwrite", action="store_true", help="replace the model already saved at --checkpoint")


def setting(text: str) -> tuple[str, object]:
    """SETTING=VALUE for --compare: a field of this script's config, and a value of its type."""
    name, sep, value = text.partition("=")
    name = name.replace("-", "_")
    defaults = {f.name: f.default for f in dataclasses.fields(ModernGPTConfig)}
    if not sep or name not in defaults:
        raise argparse.ArgumentTypeError(f"give SETTING=VALUE with a setting of this script, e.g. positions=learned "
                                         f"(got {text})")
    kind = type(defaults[name])
    if kind is bool:
        if value.lower() not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            raise argparse.ArgumentTypeError(f"{name} is true or false (got {value})")
        return name, value.lower() in ("1", "true", "yes", "on")
    try:
        return name, kind(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{name} takes a {kind.__name__} (got {value})") from None


def compare(cfg: ModernGPTConfig, change: tuple[str, object], seeds: int) -> dict:
    """Arm A is cfg, arm B is cfg with one setting changed; both per seed, one after the other. Nothing
    is saved: the arms are experiments, and the model task 08 streams from stays as it is."""
    name, value = change
    field = next(f for f in dataclasses.fields(cfg) if f.name == name)
    if getattr(cfg, name) == value:
        raise UserError(f"--compare {name}={value}: this run has {name}={value} already, so B would be A; "
                        f"compare another value")
    arms = {"A": cfg, "B": dataclasses.replace(cfg, **{name: value})}  # B's settings checked when it is made
    check_models(build_model, [(f"arm {arm} of --compare {name}={value}", c) for arm, c in arms.items()])  # before A trains
    print(f"A/B at {cfg.max_iters} steps: A has {name}={getattr(cfg, name)}, B has {name}={value} ({field.metadata['help']})")
    results = {arm: [] for arm in arms}
    for i in range(seeds):
        for arm, arm_cfg in arms.items():
            run_cfg = dataclasses.replace(arm_cfg, seed=cfg.seed + i, checkpoint="", runs="", sample_tokens=0)
            print(f"\n=== arm {arm} ({name}={getattr(run_cfg, name)}), seed {run_cfg.seed} ===", flush=True)
            history = train_gpt(run_cfg)["history"]
            steps = [r for r in history if not r.get("final")]
            ms = 1000 * (steps[-1]["time"] - steps[0]["time"]) / max(1, steps[-1]["iter"] - steps[0]["iter"])
            results[arm].append({"seed": run_cfg.seed, "val": history[-1]["val"], "ms_per_step": ms})
    a, b = results["A"], results["B"]
    print(f"\n| seed | A: {name}={getattr(cfg, name)} | B: {name}={value} | B - A | ms/step A | ms/step B |")
    print("|---|---|---|---|---|---|")
    for ra, rb in zip(a, b):
        print(f"| {ra['seed']} | {ra['val']:.4f} | {rb['val']:.4f} | {rb['val'] - ra['val']:+.4f} | "
              f"{ra['ms_per_step']:.1f} | {rb['ms_per_step']:.1f} |")
    if seeds > 1:
        mean = {arm: statistics.mean(r["val"] for r in rs) for arm, rs in results.items()}
        std = {arm: statistics.stdev(r["val"] for r in rs) for arm, rs in results.items()}
        ms = {arm: statistics.median(r["ms_per_step"] for r in rs) for arm, rs in results.items()}
        print(f"| mean ± std | {mean['A']:.4f} ± {std['A']:.4f} | {mean['B']:.4f} ± {std['B']:.4f} | "
              f"{mean['B'] - mean['A']:+.4f} | {ms['A']:.1f} | {ms['B']:.1f} |")
    print(f"(final evaluation: {cfg.final_eval_iters} batches per split after step {cfg.max_iters}; "
          f"ms/step: the median of each arm's training time per step, evaluations included)")
    return results


def main(argv=None):
    cfg, args = parse_config(TASK09, argv, description=__doc__, extra=extra_flags)
    with friendly_errors(checkpoint="" if args.compare else cfg.checkpoint):
        if args.compare:
            if launched_by_torchrun():
                raise UserError("--compare trains its arms one after the other in one process: run it with python")
            return compare(cfg, args.compare, args.seeds)
        return train_gpt(cfg, args.resume, args.overwrite)


if __name__ == "__main__":
    sys.exit(0 if main() is not None else 1)
