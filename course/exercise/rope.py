"""Step 09's rotary positions: apply_rope a rotation of each channel pair, Rotary from any start position
(past its table too), and RotaryAttention turning queries and keys, not values, by their own positions.

This repository pairs channel i with channel i + hs/2 (GPT-NeoX's half split); RoFormer's interleaved
pairs (2i, 2i+1) are the other convention in the literature, and pass too: the one is the other with
each head's channels in another order, which the weights' copy (weights.py) takes into account.
"""

import torch

from .attention import explain_qkv, lesson_attention
from .diagnosis import learner_error
from .differences import close, largest_difference
from .lesson import Lesson, call, diagnose, distinct, layers_finding
from .results import CheckFailed, Finding
from .weights import Mismatch, interleaving, plans


ROTATION = ("a rotation by an angle a sends (1, 0) to (cos a, sin a) and (0, 1) to (-sin a, cos a): it turns each "
            "pair, and keeps its length")


def interleaved_rope(x, cos, sin):
    """RoFormer's convention: pair i is channels (2i, 2i+1)."""
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2)


def check_apply_rope(ls: Lesson):
    from gpt.modern import apply_rope, rope_angles

    mine = ls.names["apply_rope"]
    torch.manual_seed(1)
    x = torch.randn(2, 3, 5, 8)
    note = ""
    for start in (0, 7):
        cos, sin = rope_angles(start, 5, 8)
        got = call(ls, lambda: mine(x, cos, sin))
        want = apply_rope(x, cos, sin)
        if close(got, want):
            continue
        if close(got, interleaved_rope(x, cos, sin)):
            note = "RoFormer's interleaved pairs (2i, 2i+1): accepted, the lesson pairs i with i + hs/2"
            continue
        raise CheckFailed("each channel pair turned by its angle (the lesson's pairs: i with i + hs/2; or "
                          "RoFormer's: 2i with 2i+1)", f"a difference of {largest_difference(got, want):.3g}",
                          rope_finding(got, x, cos, sin))
    return note


def rope_finding(got, x, cos, sin) -> Finding:
    from gpt.modern import apply_rope

    solution = "apply_rope"
    if got.shape != x.shape:
        return Finding("shape", f"apply_rope returns {tuple(got.shape)} for an input of {tuple(x.shape)}",
                       "each pair is turned in place: the output has the input's shape", "", solution)
    if close(got, x):
        return Finding("rope-none", "apply_rope returns its input unchanged", "each channel pair is turned by its "
                       "position's angle", "", solution)
    for backwards in (apply_rope(x, cos, -sin), interleaved_rope(x, cos, -sin)):
        if close(got, backwards):
            return Finding("sign", "apply_rope turns each pair the other way (by -angle): a sign of sin", ROTATION,
                           "look at the signs of the sin terms", solution)
    if not close(got.norm(dim=-1), x.norm(dim=-1)):
        return Finding("rope-rotation", "apply_rope changes the length of the vectors: it isn't a rotation", ROTATION,
                       "write the rotation of one pair (x1, x2) on paper, and check each of your four terms against "
                       "it", solution)
    return Finding("rope-pairs", "apply_rope turns other channel pairs than the lesson's", "this repository pairs "
                   "channel i with channel i + hs/2 (GPT-NeoX's half split); RoFormer's interleaved pairs (2i, 2i+1) "
                   "are accepted too", "look at how you split x into x1 and x2, and how you put them back", solution)


def check_rotary_start(ls: Lesson):
    from gpt.modern import Rotary as LessonRotary, rope_angles

    hs, block = 6, 10
    ref = LessonRotary(hs, block)
    mine = call(ls, lambda: ls.names["Rotary"](hs, block))
    torch.manual_seed(4)
    x = torch.randn(2, 3, 4, hs)
    T = x.size(-2)
    note = ""
    for start in (0, 5, block - 2):
        want = ref(x, start)
        cos, sin = rope_angles(start, T, hs)
        past = start + T > block
        try:
            got = mine(x, start)
        except NotImplementedError:
            raise
        except Exception as e:
            error = learner_error(e, ls.file)
            raise CheckFailed(f"x turned by the angles of positions {start}..{start + T - 1}", error,
                              table_finding(start, block) if past else None) from None
        if close(got, want):
            continue
        if close(got, interleaved_rope(x, cos, sin)):
            note = "RoFormer's interleaved pairs"
            continue
        finding = None
        if close(got, ref(x, 0)) or close(got, interleaved_rope(x, *rope_angles(0, T, hs))):
            finding = Finding("rope-start", f"Rotary(x, start={start}) turns x by the angles of positions 0..{T - 1}, "
                                            f"not {start}..{start + T - 1}", "a token is turned by the angle of its own "
                              "position: x holds positions start..start+T-1", "look at which rows of the angle table "
                                                                              "you take", "Rotary.forward")
        elif past:
            finding = table_finding(start, block)
        raise CheckFailed(f"x turned by the angles of positions {start}..{start + T - 1}",
                          f"a difference of {largest_difference(got, want):.3g}",
                          finding or rope_finding(got, x, cos, sin))
    return note


def table_finding(start: int, block: int) -> Finding:
    return Finding("rope-table", f"Rotary(x, start={start}) goes past the table of {block} positions it keeps, and "
                                 "fails there", "a stream that slides its window goes on past block_size: past the "
                                                "table, the angles of the positions asked for are computed afresh",
                   "look at what happens when start + T passes the table's length, and at what rope_angles takes",
                   "Rotary.forward")


class Start:
    """A stand-in for a cache whose new tokens start at a position: attend records q, k, v and returns
    causal attention over the new tokens alone."""

    def __init__(self, start):
        self.start, self.seen = start, []

    def attend(self, q, k, v):
        from gpt.model import causal_attention

        self.seen.append((q.detach().clone(), k.detach().clone(), v.detach().clone()))
        return causal_attention(q, k, v)


def check_rotary_attention(ls: Lesson):
    from gpt.modern import RotaryAttention as LessonAttention

    torch.manual_seed(0)
    ref = distinct(LessonAttention(32, 4, 16, 0.0)).eval()
    torch.manual_seed(0)
    mine = call(ls, lambda: ls.names["RotaryAttention"](32, 4, 16, 0.0)).eval()
    try:
        found = plans(ref, mine, ls.conventions)
    except Mismatch as e:
        raise CheckFailed("the lesson's weights, held by your layers", "layers that can't hold them",
                          layers_finding(str(e))) from None
    x = torch.randn(1, 6, 32, generator=torch.Generator().manual_seed(9))
    start = 5
    L = lesson_attention(ref, x, start)
    first_problem = None
    for plan in found:
        plan.apply()
        stand_in = Start(start)
        with torch.no_grad():
            call(ls, lambda: mine(x, stand_in), f"(with a cache whose tokens start at {start})")
        if not stand_in.seen:
            raise CheckFailed("q, k and v given to the cache (cache.attend) when there is one", "none given", Finding(
                "cache-ignored", "RotaryAttention never gives its queries, keys and values to the cache",
                "given a cache, attention stores the new keys and values in it and reads every key it holds "
                "(cache.attend)", "", "RotaryAttention.forward"))
        q, k, v = stand_in.seen[0]
        perm = interleaving(q.size(-1)) if plan.convention == "interleaved" else None
        want = {n: (t[..., perm] if perm is not None and n != "values" else t)
                for n, t in (("queries", L["q"]), ("keys", L["k"]), ("values", L["v"]))}
        if all(close(a, want[n]) for n, a in (("queries", q), ("keys", k), ("values", v))):
            return plan.note
        if first_problem is None:  # the likeliest way of matching: the lesson's convention, the roles as named
            for name, got in (("queries", q), ("keys", k), ("values", v)):
                if not close(got, want[name]):
                    problem = diagnose(explain_qkv, name, got, L, ref, "RotaryAttention", "RotaryAttention.forward", 4,
                                       start)
                    first_problem = (name, got, want[name], problem)
                    break
    name, got, wanted, problem = first_problem or ("queries", q, want["queries"], None)
    raise CheckFailed(f"queries and keys turned by the angles of their positions ({start}..{start + 5}), values as "
                      "they are", f"{name} that differ by up to {largest_difference(got, wanted):.3g}", problem)
