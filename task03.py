"""Task 03: a feed-forward layer after attention.

Attention is communication: tokens gather information from each other. The model then needs time to
think about what it gathered, each token on its own: a Linear(n_embd, n_embd) followed by a ReLU.

    python task03.py
"""

from course.config import MultiHeadConfig
from course.run import run_task
from gpt.model import FeedForward, LanguageModel, MultiHeadAttention
from torch import nn

CONFIG = MultiHeadConfig(batch_size=32, block_size=8, n_embd=32, n_head=4, learning_rate=1e-3, max_iters=5000,
                         seed=1337)


def build_model(cfg: MultiHeadConfig, vocab_size: int) -> LanguageModel:
    body = nn.Sequential(
        MultiHeadAttention(cfg.n_embd, cfg.n_head),  # communication
        FeedForward(cfg.n_embd),  # computation
    )
    return LanguageModel(vocab_size, cfg.block_size, cfg.n_embd, body=body)


def main(argv=None):
    return run_task("task03", build_model, CONFIG, argv, description=__doc__)


if __name__ == "__main__":
    main()
