"""Sampling text from a trained model, one token at a time."""

import torch
import torch.nn.functional as F


@torch.no_grad()
def generate(model, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
             top_k: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Extend idx (B, T) by max_new_tokens tokens, each sampled from the model's next-token distribution.

    The context is cropped to the last block_size tokens, so generation can run past block_size. The
    whole context is recomputed for every new token: simple, and fast enough for 500 characters.
    """
    was_training = model.training
    model.eval()
    for _ in range(max_new_tokens):
        idx_cond = idx[:, -model.block_size:]  # (B, T) -> (B, <=block_size)
        logits, _ = model(idx_cond)  # (B, T, V)
        idx_next = sample_next(logits[:, -1, :], temperature, top_k, generator)  # (B, 1)
        idx = torch.cat((idx, idx_next), dim=1)  # (B, T+1)
    model.train(was_training)
    return idx


def sample_next(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """One token per row from logits (B, V): temperature 0 (or top_k 1) is greedy."""
    if temperature <= 0 or top_k == 1:
        return logits.argmax(dim=-1, keepdim=True)  # (B, 1)
    logits = logits / temperature
    if top_k is not None:
        kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, [-1]]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = F.softmax(logits, dim=-1)  # (B, V)
    if generator is not None and generator.device != probs.device:
        # torch.multinomial needs a generator on the probabilities' device: sample on the CPU instead
        return torch.multinomial(probs.cpu(), 1, generator=generator).to(probs.device)
    return torch.multinomial(probs, 1, generator=generator)  # (B, 1)
