"""Task 04: blocks of communication and computation, stacked three deep.

A `Block` is task 03's attention + feed-forward pair; a Transformer repeats it. Stacked plainly like
this, the network gets deeper but not better: the signal and its gradient have to pass through every
layer, and optimisation struggles (compare the val loss with task 03's). Task 05 fixes that.

    python task04.py
"""

import torch.nn as nn

from gpt import Block, Config, FeedForward, LanguageModel, MultiHeadAttention, run_task

CONFIG = Config(batch_size=32, block_size=8, n_embd=32, n_head=4, n_layer=3, learning_rate=1e-3,
                max_iters=5000, seed=1337)


def build_model(cfg: Config, vocab_size: int) -> LanguageModel:
    body = nn.Sequential(*[
        Block(cfg.n_embd,
              MultiHeadAttention(cfg.n_embd, cfg.n_head, cfg.block_size, proj=False),
              FeedForward(cfg.n_embd),
              layout="plain")
        for _ in range(cfg.n_layer)
    ])
    return LanguageModel(vocab_size, cfg.block_size, cfg.n_embd, body=body)


def main(argv=None):
    return run_task(build_model, CONFIG, argv, description=__doc__)


if __name__ == "__main__":
    main()
