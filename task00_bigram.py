"""Task 00: the bigram model, where the course starts and what every later step is measured against.

Each character predicts the next from itself alone: the model is a table with one row of logits
per character, trained to give the characters that follow it in the text. It has no context and no
notion of position, so whatever task 01's attention gains on it is what looking back buys.
Paper: Shannon 1948, "A Mathematical Theory of Communication" (section 3, the digram approximation
of English), https://doi.org/10.1002/j.1538-7305.1948.tb01338.x

    python task00_bigram.py           # the course's shared settings: 5000 steps, a few seconds on a laptop
    python task00_bigram.py --help    # every setting, with its default
"""

from course.config import TrainConfig
from course.run import run_task
from gpt.model import Bigram

CONFIG = TrainConfig(batch_size=32, block_size=8, learning_rate=1e-2, max_iters=5000, seed=1337)


def build_model(cfg: TrainConfig, vocab_size: int) -> Bigram:
    return Bigram(vocab_size)


def main(argv=None):
    return run_task("task00", build_model, CONFIG, argv, description=__doc__)


if __name__ == "__main__":
    main()
