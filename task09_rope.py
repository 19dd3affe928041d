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

Other changes from recent papers can be composed in (gpt/modern.py lists them with their papers):
--mlp relu2|swiglu, --tie-weights, --optimizer muon, --schedule wsd. The defaults are the ones an
A/B over 3 seeds kept (RESEARCH_LOG.md). `--compare SETTING=VALUE` runs that A/B: this run's
configuration against the same with one setting changed, at the same step count, seed by seed.

This trains task 07's CPU preset with RoPE, in windows twice as long (block 128, batch 8: the same
tokens per step), for 7000 steps, and saves checkpoints/task09.pt (stream from it: python
task08_infinite.py --checkpoint checkpoints/task09.pt). With no position table to learn, RoPE turns
the longer context into a lower loss; learned positions did not (RESEARCH_LOG.md).

    python task09_rope.py                                  # the RoPE model, under 10 minutes on a CPU
    python task09_rope.py --compare positions=learned --seeds 3   # RoPE vs the learned table (an hour)
    python task09_rope.py --compare mlp=relu2 --seeds 3    # any other setting the same way
"""

import argparse
import dataclasses
import statistics
import sys

from gpt.config import ModernGPTConfig, at_least, checked, parse_config
from gpt.errors import UserError
from gpt.modern import ModernGPT, muon_optimizer
from gpt.presets import TASK09
from gpt.run import check_models, friendly_errors, train_and_report


def build_model(cfg: ModernGPTConfig, vocab_size: int) -> ModernGPT:
    return ModernGPT(vocab_size, cfg.block_size, cfg.n_embd, cfg.n_head, cfg.n_layer, cfg.dropout,
                     positions=cfg.positions, mlp=cfg.mlp, tie_weights=cfg.tie_weights)


def build_optimizer(cfg: ModernGPTConfig, model):
    if cfg.optimizer == "muon":
        return muon_optimizer(model, cfg.learning_rate, cfg.muon_lr, cfg.weight_decay)
    return None  # AdamW, as every task before


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
            history = train_and_report("task09", run_cfg, build_model, make_opt=build_optimizer)["history"]
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
            return compare(cfg, args.compare, args.seeds)
        return train_and_report("task09", cfg, build_model, make_opt=build_optimizer, resume=args.resume,
                                overwrite=args.overwrite)


if __name__ == "__main__":
    sys.exit(0 if main() is not None else 1)
