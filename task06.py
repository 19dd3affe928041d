"""Task 06: layer normalisation, before each sub-layer (pre-LN) and once at the end.

Each token's vector is normalised to zero mean and unit variance (then scaled and shifted by learned
parameters) before it enters attention or the MLP, and once more before the linear head. Putting the
LayerNorm inside the residual branch, rather than after the addition as the original Transformer
did, keeps the residual stream clean and makes training stable without a careful warmup.
Papers: Ba et al. 2016, "Layer Normalization", https://arxiv.org/abs/1607.06450;
Xiong et al. 2020, "On Layer Normalization in the Transformer Architecture", https://arxiv.org/abs/2002.04745

    python task06.py
"""

from course.config import StackConfig
from course.run import run_task
from gpt.model import MLP, LanguageModel, PreLNBlock, ProjectedAttention
from torch import nn

CONFIG = StackConfig(batch_size=32, block_size=8, n_embd=32, n_head=4, n_layer=3, learning_rate=1e-3,
                     max_iters=5000, seed=1337)


def build_model(cfg: StackConfig, vocab_size: int) -> LanguageModel:
    body = nn.Sequential(*[
        PreLNBlock(ProjectedAttention(cfg.n_embd, cfg.n_head), MLP(cfg.n_embd), cfg.n_embd)
        for _ in range(cfg.n_layer)
    ], nn.LayerNorm(cfg.n_embd))  # and a final LayerNorm before the linear head
    return LanguageModel(vocab_size, cfg.block_size, cfg.n_embd, body=body)


def main(argv=None):
    return run_task("task06", build_model, CONFIG, argv, description=__doc__)


if __name__ == "__main__":
    main()
