"""Task 09: rotary position embeddings (RoPE) instead of a learned position table.

Tasks 01-07 add a learned vector for each absolute position 0..block_size-1 to the token embedding.
RoPE instead rotates every query and key inside attention by an angle proportional to its position
(each channel pair at its own frequency), so that the score q_m . k_n depends only on the offset
m - n: attention sees relative positions, and the model has no position table to learn.

Papers and write-ups:
- Su et al. 2021, "RoFormer: Enhanced Transformer with Rotary Position Embedding",
  https://arxiv.org/abs/2104.09864
- Biderman et al. 2021, "Rotary Embeddings: A Relative Revolution" (EleutherAI),
  https://blog.eleuther.ai/rotary-embeddings/
- Black et al. 2022, "GPT-NeoX-20B", https://arxiv.org/abs/2204.06745 (the half-split rotation used here)
- Touvron et al. 2023, "LLaMA", https://arxiv.org/abs/2302.13971 (RoPE in a modern LLM)

This trains task 07's CPU-preset model with RoPE under the same time budget and saves
checkpoints/task09.pt (stream from it: python task08_infinite.py --checkpoint checkpoints/task09.pt).

    python task09_rope.py                       # the RoPE model, about 10 minutes on a CPU
    python task09_rope.py --compare --seeds 3   # RoPE vs learned positions, 3 seeds each (an hour)
"""

import dataclasses
import statistics
import sys

from gpt.config import at_least, checked, parse_config
from gpt.run import friendly_errors
from gpt.scale import print_sample, train_gpt
from task07 import PRESETS

CONFIG = dataclasses.replace(PRESETS["cpu"], positions="rope", checkpoint="checkpoints/task09.pt")


def extra_flags(parser):
    parser.add_argument("--compare", action="store_true", help="also train learned positions, same seed and budget")
    parser.add_argument("--seeds", type=checked(int, at_least(1)), default=1, help="with --compare: seeds per arm (default: 1)")
    parser.add_argument("--overwrite", action="store_true", help="replace the model already saved at --checkpoint")


def compare(cfg, seeds: int, overwrite: bool = False) -> dict:
    """Both arms for each seed, one after the other; the RoPE arm of the first seed keeps the checkpoint."""
    finals = {"learned": [], "rope": []}
    for i in range(seeds):
        seed = cfg.seed + i
        for arm in ("learned", "rope"):
            print(f"\n=== positions={arm}, seed {seed} ===", flush=True)
            run_cfg = dataclasses.replace(cfg, seed=seed, positions=arm,
                                          checkpoint=cfg.checkpoint if arm == "rope" and i == 0 else "")
            result = train_gpt(run_cfg, overwrite=overwrite)
            finals[arm].append(result["history"][-1]["val"])
    print("\n| seed | learned | rope | rope - learned |\n|---|---|---|---|")
    for i in range(seeds):
        learned, rope = finals["learned"][i], finals["rope"][i]
        print(f"| {cfg.seed + i} | {learned:.4f} | {rope:.4f} | {rope - learned:+.4f} |")
    if seeds > 1:
        mean = {arm: statistics.mean(v) for arm, v in finals.items()}
        spread = {arm: statistics.stdev(v) for arm, v in finals.items()}
        print(f"| mean ± std | {mean['learned']:.4f} ± {spread['learned']:.4f} | {mean['rope']:.4f} ± "
              f"{spread['rope']:.4f} | {mean['rope'] - mean['learned']:+.4f} |")
    return finals


def main(argv=None):
    cfg, args = parse_config(CONFIG, argv, description=__doc__, extra=extra_flags)
    with friendly_errors():
        if args.compare:
            return compare(cfg, args.seeds, args.overwrite)
        result = train_gpt(cfg, overwrite=args.overwrite)
        result["sample"] = print_sample(result, cfg)
        return result


if __name__ == "__main__":
    sys.exit(0 if main() is not None else 1)
