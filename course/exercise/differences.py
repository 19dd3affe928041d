"""How a learner's tensor differs from the lesson's: the kind of difference, and the first place it shows.

The kinds, in the order they are looked for:

    shape        another shape
    nan          NaN where the lesson has a number (a softmax over a row of -inf, say)
    inf          -inf or inf where the lesson has a number
    sign         the lesson's values with the opposite sign
    scale        the lesson's values times one number (a scale factor)
    transposed   the lesson's values with the last two axes swapped
    positions    the lesson's values, all of them, at other positions (a reshape without its transpose)
    values       other values
"""

from dataclasses import dataclass

import torch

ATOL, RTOL = 1e-5, 1e-4


@dataclass
class Difference:
    kind: str
    where: tuple  # the index of the first place it shows (by the axes' priority), () for the whole tensor
    detail: str  # in words, e.g. "times 0.5" or "NaN"
    factor: float | None = None
    largest: float = float("inf")  # the largest difference


def close(a: torch.Tensor, b: torch.Tensor, atol: float = ATOL, rtol: float = RTOL) -> bool:
    """The same shape and values; NaN and inf only where the other has the same."""
    if a.shape != b.shape:
        return False
    return bool(torch.allclose(a.double(), b.double(), atol=atol, rtol=rtol, equal_nan=True))


def largest_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    """The largest difference; NaN or inf on one side only counts as infinitely far."""
    if a.shape != b.shape:
        return float("inf")
    both_same = (a == b) | (a.isnan() & b.isnan())  # the same inf on both sides is no difference
    diff = (a.double() - b.double()).abs().masked_fill(both_same, 0.0)
    return torch.nan_to_num(diff, nan=float("inf")).max().item() if diff.numel() else 0.0


def first(mask: torch.Tensor, priority: tuple = ()) -> tuple:
    """The first index where mask is True, comparing the axes in the order priority gives (the axes it
    leaves out follow in their own order): e.g. priority (1,) finds the earliest position of (B, T, C)."""
    order = list(priority) + [d for d in range(mask.dim()) if d not in priority]
    hits = mask.nonzero()
    if not len(hits):
        return ()
    best = min(hits.tolist(), key=lambda ix: [ix[d] for d in order])
    return tuple(best)


def differ(mine: torch.Tensor, ref: torch.Tensor, priority: tuple = (), atol: float = ATOL) -> Difference | None:
    """How mine differs from ref, or None if it doesn't."""
    mine, ref = mine.detach().double(), ref.detach().double()
    if mine.shape != ref.shape:
        return Difference("shape", (), f"shape {tuple(mine.shape)} where the lesson's is {tuple(ref.shape)}")
    if close(mine, ref, atol):
        return None
    largest = largest_difference(mine, ref)
    finite = ref.isfinite()
    if (mine.isnan() & finite).any():
        return Difference("nan", first(mine.isnan() & finite, priority), "NaN", largest=largest)
    if (mine.isinf() & finite).any():
        return Difference("inf", first(mine.isinf() & finite, priority), "inf", largest=largest)
    both = finite & mine.isfinite()
    if both.any() and (mine.isfinite() == finite).all():
        r, m = ref[both], mine[both]
        if r.abs().max() > 0:
            c = (r * m).sum().item() / (r * r).sum().item()
            if c != 0 and torch.allclose(m, c * r, atol=atol * 10, rtol=1e-3):
                if abs(c + 1) < 1e-3:
                    return Difference("sign", first((mine - ref).abs() > atol, priority), "the opposite sign",
                                      factor=-1.0, largest=largest)
                return Difference("scale", (), f"times {c:.4g}", factor=c, largest=largest)
    if mine.dim() >= 2 and mine.size(-1) == mine.size(-2) and close(mine, ref.transpose(-1, -2), atol):
        return Difference("transposed", first((mine - ref).abs() > atol, priority),
                          "its last two axes swapped", largest=largest)
    if mine.numel() == ref.numel() and close(mine.flatten().sort().values, ref.flatten().sort().values, atol):
        return Difference("positions", first(~torch.isclose(mine, ref, atol=atol, rtol=RTOL), priority),
                          "the same values at other positions", largest=largest)
    bad = ~torch.isclose(mine, ref, atol=atol, rtol=RTOL, equal_nan=True)
    return Difference("values", first(bad, priority), f"a difference of up to {largest:.3g}", largest=largest)


def named_match(mine: torch.Tensor, named: dict, atol: float = ATOL) -> str | None:
    """The name of the first tensor in named (name -> tensor) that mine equals."""
    for name, t in named.items():
        if t is not None and close(mine, t, atol):
            return name
    return None
