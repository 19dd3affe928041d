"""Task 05: skip connections, an attention output projection, and a 4x wider MLP.

Each sub-layer now adds its output to a residual stream (x = x + attn(x); x = x + mlp(x)), so the
gradient flows straight from the loss to the embeddings and deep stacks train well (He et al. 2015,
https://arxiv.org/abs/1512.03385, as used in Vaswani et al. 2017, https://arxiv.org/abs/1706.03762).
The heads' concatenated output is projected back into the stream, and the feed-forward network
grows to n_embd -> 4 n_embd -> n_embd, as in the paper.

    python task05.py
"""

from course.config import StackConfig
from course.run import run_task
from gpt.model import MLP, LanguageModel, ProjectedAttention, ResidualBlock
from torch import nn

CONFIG = StackConfig(batch_size=32, block_size=8, n_embd=32, n_head=4, n_layer=3, learning_rate=1e-3,
                     max_iters=5000, seed=1337)


def build_model(cfg: StackConfig, vocab_size: int) -> LanguageModel:
    body = nn.Sequential(*[
        ResidualBlock(ProjectedAttention(cfg.n_embd, cfg.n_head), MLP(cfg.n_embd))
        for _ in range(cfg.n_layer)
    ])
    return LanguageModel(vocab_size, cfg.block_size, cfg.n_embd, body=body)


def main(argv=None):
    return run_task("task05", build_model, CONFIG, argv, description=__doc__)


if __name__ == "__main__":
    main()
