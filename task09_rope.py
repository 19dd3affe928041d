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

from course.compare import compare, setting_of
from course.config import ModernGPTConfig, at_least, checked, parse_config
from course.exits import friendly_errors
from course.presets import TASK09
from course.run import LongRun
from gpt.data import load_dataset
from gpt.errors import UserError
from gpt.modern import MLPS, POSITIONS, muon_optimizer, tie_weights
from gpt.train import make_optimizer


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


def train_gpt(cfg: ModernGPTConfig, resume: bool = False, overwrite: bool = False, quiet: bool = False) -> dict:
    """One run, in the lesson's order: settings, data, model, optimizer, train, report. Under torchrun,
    one of several processes that train it together (course/distributed.py). quiet: print nothing."""
    with LongRun("task09", cfg, build_model, resume, overwrite, quiet=quiet) as run:
        data = load_dataset(cfg.data, cfg.tokenizer, cfg.vocab_size)
        model = build_model(cfg, data.tokenizer.vocab_size).to(run.device)
        optimizer = build_optimizer(cfg, model)
        history = run.train(model, optimizer, data)
        return run.report(model, data, history)


def extra_flags(parser):
    parser.add_argument("--compare", metavar="SETTING=VALUE", type=setting_of(ModernGPTConfig),
                        help="also train this configuration with one setting changed, at the same step count, "
                             "and print the A/B table (e.g. positions=learned)")
    parser.add_argument("--seeds", type=checked(int, at_least(1)), default=1, help="with --compare: seeds per arm (default: 1)")
    parser.add_argument("--resume", action="store_true", help="continue the run saved at --checkpoint")
    parser.add_argument("--overwrite", action="store_true", help="replace the model already saved at --checkpoint")


def main(argv=None):
    cfg, args = parse_config(TASK09, argv, description=__doc__, extra=extra_flags)
    with friendly_errors(checkpoint="" if args.compare else cfg.checkpoint):
        if args.compare:
            return compare(cfg, args.compare, args.seeds, build_model, train_gpt)
        return train_gpt(cfg, args.resume, args.overwrite)


if __name__ == "__main__":
    raise SystemExit(0 if main() is not None else 1)
