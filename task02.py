"""Task 02: multi-head attention.

Several smaller heads attend in parallel, each free to look for something different (one for the
previous vowel, one for the start of the word...), and their outputs are concatenated: 4 heads of
size 8 give the same 32 channels as task 01's single head.
Paper: Vaswani et al. 2017, section 3.2.2, https://arxiv.org/abs/1706.03762

    python task02.py
"""

from course.config import MultiHeadConfig
from course.run import run_task
from gpt.model import LanguageModel, MultiHeadAttention

CONFIG = MultiHeadConfig(batch_size=32, block_size=8, n_embd=32, n_head=4, learning_rate=1e-3, max_iters=5000,
                         seed=1337)


def build_model(cfg: MultiHeadConfig, vocab_size: int) -> LanguageModel:
    attention = MultiHeadAttention(cfg.n_embd, cfg.n_head)
    return LanguageModel(vocab_size, cfg.block_size, cfg.n_embd, body=attention)


def main(argv=None):
    return run_task("task02", build_model, CONFIG, argv, description=__doc__)


if __name__ == "__main__":
    main()
