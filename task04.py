"""Task 04: blocks of communication and computation, stacked three deep.

A `Block` is task 03's attention + feed-forward pair; a Transformer repeats it. Stacked plainly like
this, the network gets deeper but not better: the signal and its gradient have to pass through every
layer, and optimisation struggles (compare the val loss with task 03's). Task 05 fixes that.

    python task04.py
"""

from course.config import StackConfig
from course.run import run_task
from gpt.model import Block, FeedForward, LanguageModel, MultiHeadAttention
from torch import nn

CONFIG = StackConfig(batch_size=32, block_size=8, n_embd=32, n_head=4, n_layer=3, learning_rate=1e-3,
                     max_iters=5000, seed=1337)


def build_model(cfg: StackConfig, vocab_size: int) -> LanguageModel:
    body = nn.Sequential(*[
        Block(MultiHeadAttention(cfg.n_embd, cfg.n_head), FeedForward(cfg.n_embd))
        for _ in range(cfg.n_layer)
    ])
    return LanguageModel(vocab_size, cfg.block_size, cfg.n_embd, body=body)


def main(argv=None):
    return run_task("task04", build_model, CONFIG, argv, description=__doc__)


if __name__ == "__main__":
    main()
