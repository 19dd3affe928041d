"""Task 01: one head of self-attention.

Each token now looks at the tokens before it: it emits a query ("what am I looking for?") and a key
("what do I contain?"), and gathers the values of earlier tokens weighted by softmax(q . k / sqrt(hs)),
with the future masked out so that the model can't peek at the token it has to predict.
One head of size n_embd sits between the embeddings (token + position) and the linear head.
Paper: Vaswani et al. 2017, "Attention Is All You Need", https://arxiv.org/abs/1706.03762

    python task01.py                  # the course's run: 5000 steps, seconds on a laptop CPU
    python task01.py --help           # every setting, with its default
"""

from course.config import HeadConfig
from course.run import run_task
from gpt.model import AttentionHead, LanguageModel

CONFIG = HeadConfig(batch_size=32, block_size=8, n_embd=32, learning_rate=1e-3, max_iters=5000, seed=1337)


def build_model(cfg: HeadConfig, vocab_size: int) -> LanguageModel:
    head = AttentionHead(cfg.n_embd, head_size=cfg.n_embd)
    return LanguageModel(vocab_size, cfg.block_size, cfg.n_embd, body=head)


def main(argv=None):
    return run_task("task01", build_model, CONFIG, argv, description=__doc__)


if __name__ == "__main__":
    main()
