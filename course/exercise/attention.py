"""Inside a learner's attention: what it gave the score product and the softmax, read from a recorded
forward (trace.py), against the lesson's arithmetic on the same input.

In the order the lesson computes them, the first that differs is the finding: the queries, keys and
values (heads mixed with positions, one head where there are several, RoPE on the wrong tensors or
positions), the mask (missing, filled with 0, the wrong way round, hiding a token from itself, applied
after the softmax), the softmax's axis, the scale (by n_embd, by head_size, none, a sign), then the
heads put side by side (positions mixed) and the output projection.
"""

import torch
import torch.nn.functional as F
from torch import nn

from gpt.model import AttentionHead, concat_heads

from .differences import close, differ
from .results import Finding


def tensor_of(value):
    """The first tensor in a value (a tensor, or a tuple such as (logits, loss))."""
    if torch.is_tensor(value):
        return value
    if isinstance(value, (tuple, list)):
        return next((v for v in value if torch.is_tensor(v)), None)
    return None


def who(module: nn.Module, path: str) -> str:
    """How a message names a learner's module: its class, and where it sits in the model."""
    name = type(module).__name__
    return f"{name} at {path}" if path else name


MASK_IDEA = ("a token may read itself and the tokens before it, never a later one: the scores of later keys are "
             "set to -inf before the softmax, so that their weights are exactly 0")
SCALE_IDEA = ("the scores are divided by the square root of the length of the vectors that meet in the dot "
              "product (a query and a key, head_size channels each), so that the softmax stays soft at any size")
HEADS_IDEA = ("splitting channels into heads keeps each position's channels together: the last axis splits into "
              "(nh, hs), and then the heads axis moves in front of the positions")
CONCAT_IDEA = ("the heads' outputs go side by side position by position: the positions come back in front of the "
               "heads before the heads' channels are merged into one axis")
NAN_IDEA = ("every query may read at least itself: the mask hides only the keys after it (s > t), so that no row "
            "of scores is all -inf")


def lesson_attention(ref: nn.Module, x: torch.Tensor, start: int = 0) -> dict:
    """Every intermediate tensor of the lesson's attention on x: q, k, v (B, nh, T, hs) (with RoPE, turned;
    q_plain and k_plain before), scores (scaled, unmasked), masked, weights, heads, concat, out."""
    with torch.no_grad():
        if isinstance(ref, AttentionHead):
            q, k, v = (layer(x).unsqueeze(1) for layer in (ref.query, ref.key, ref.value))
        else:
            q, k, v = ref.queries_keys_values(x)
        out = {"q_plain": q, "k_plain": k, "v": v}
        if hasattr(ref, "rotary"):
            q, k = ref.rotary(q, start), ref.rotary(k, start)
        T, hs = q.size(-2), q.size(-1)
        scores = q @ k.transpose(-2, -1) * hs ** -0.5  # (B, nh, T, T)
        future = ~torch.ones(T, T, dtype=torch.bool).tril()
        masked = scores.masked_fill(future, float("-inf"))
        weights = F.softmax(masked, dim=-1)
        heads = weights @ v  # (B, nh, T, hs)
        concat = heads[:, 0] if isinstance(ref, AttentionHead) else concat_heads(heads)
        final = ref.proj(concat) if hasattr(ref, "proj") else concat
    out.update(q=q, k=k, scores=scores, masked=masked, weights=weights, heads=heads, concat=concat, out=final,
               future=future)
    return out


def as_heads(tensors: list, B: int, nh: int) -> torch.Tensor | None:
    """The learner's per-head tensors as (B, nh, T, X): one batched tensor, or one call per head."""
    if not tensors or any(t is None for t in tensors):
        return None
    if len(tensors) == 1:
        t = tensors[0]
        if t.dim() == 3 and nh == 1:
            return t.unsqueeze(1)
        if t.dim() == 3 and t.size(0) == B * nh:
            return t.reshape(B, nh, *t.shape[1:])
        return t
    if len(tensors) == nh and all(t.dim() == 3 for t in tensors):
        return torch.stack(tensors, dim=1)
    return None


SCALES = (  # (factor, how it reads, what it means), for a head of hs channels in a model of C
    (lambda hs, C: hs ** -0.5, "1/sqrt(head_size) = 1/sqrt({hs})", ""),
    (lambda hs, C: C ** -0.5, "1/sqrt(n_embd) = 1/sqrt({C})", ": the size of x, not of the vectors in the dot product"),
    (lambda hs, C: 1 / hs, "1/head_size = 1/{hs}", ": divided by head_size, not by its square root"),
    (lambda hs, C: 1.0, "1", ": not scaled at all"),
    (lambda hs, C: hs ** 0.5, "sqrt(head_size) = sqrt({hs})", ": multiplied where the lesson divides"),
    (lambda hs, C: 1 / C, "1/n_embd = 1/{C}", ""),
)


def scale_words(factor: float, hs: int, C: int) -> str:
    """What a learner's scale factor is, in the lesson's terms: "1/sqrt(n_embd) = 1/sqrt(32): ..."."""
    for value, words, meaning in SCALES:
        v = value(hs, C)
        if abs(factor - v) <= 1e-3 * abs(v):
            return words.format(hs=hs, C=C) + meaning
    return f"{factor:.4g}"


def explain_attention(ref: nn.Module, mine: nn.Module, x: torch.Tensor, path: str, trace, mine_out,
                      start: int = 0) -> Finding:
    """Inside one attention module whose input matched the lesson's and whose output didn't."""
    L = lesson_attention(ref, x, start)
    B, nh, T, hs = L["q"].shape
    C = x.size(-1)
    name = who(mine, path)
    solution = f"{type(ref).__name__}.forward"
    fused = trace.functions("scaled_dot_product_attention", path)
    softmaxes = trace.functions("softmax", path)
    if fused:
        q, k, v = (as_heads([c.arg(i, n) for c in fused], B, nh) for i, n in enumerate(("query", "key", "value")))
    else:  # written out: each softmax, the product that made its scores, and the one that used its weights
        made, used = [], []
        for sm in softmaxes:
            i = trace.calls.index(sm)
            same = [c for c in trace.calls if c.fn == "matmul" and c.path == sm.path]
            made.append(next((c for c in reversed(same) if trace.calls.index(c) < i
                              and tensor_of(c.out).shape[-2:] == (T, T)), None))
            used.append(next((c for c in same if trace.calls.index(c) > i), None))
        whole = bool(made) and all(made) and all(used)
        q = as_heads([c.args[0] for c in made], B, nh) if whole else None
        k = as_heads([c.args[1].transpose(-2, -1) for c in made], B, nh) if whole else None
        v = as_heads([c.args[1] for c in used], B, nh) if whole else None
    for role, mine_t in (("queries", q), ("keys", k), ("values", v)):
        if mine_t is not None:
            found = explain_qkv(role, mine_t, L, ref, name, solution, nh, start)
            if found:
                return found
    if fused:
        found = explain_fused(fused, name, solution, T, hs, C, mine.training)
    elif softmaxes:
        found = explain_softmax(softmaxes, trace, L, B, nh, name, solution, hs, C)
    else:
        found = None
    return found or explain_output(ref, mine_out, L, name, solution)


def explain_qkv(role: str, mine_t, L: dict, ref, name: str, solution: str, nh: int, start: int = 0) -> Finding | None:
    """The queries, keys or values that met in the learner's attention, against the lesson's."""
    lesson_t = L[role[0] if role != "queries" else "q"]
    d = differ(mine_t, lesson_t, priority=(2, 1))
    if d is None:
        return None
    if d.kind == "shape":
        if mine_t.dim() == 4 and mine_t.size(1) == 1 and nh > 1:
            return Finding("heads", f"{name} attends with one head of {mine_t.size(-1)} channels: its {role} are "
                                    f"{tuple(mine_t.shape)} where the lesson's are {tuple(lesson_t.shape)} (B, nh, T, hs)",
                           "each head attends on its own, with its own hs = n_embd // n_head channels: one softmax "
                           "per head", f"look at how the {role} are split into heads before the scores are made",
                           solution)
        return Finding("heads", f"{name}: the {role} that meet in attention are {tuple(mine_t.shape)} where the "
                                f"lesson's are {tuple(lesson_t.shape)} (B, nh, T, hs)", HEADS_IDEA,
                       "print the shapes of q, k and v just before they meet: (B, nh, T, hs) each", solution)
    b, h, t = (d.where + (0, 0, 0))[:3]
    if d.kind == "positions":
        return Finding("heads-mixed", f"{name}: the {role} of head {h} at position {t} are the lesson's values at "
                                      "other positions: heads mixed with positions", HEADS_IDEA,
                       "viewing a (B, T, C) tensor as (B, nh, T, hs) directly gives head 0 the channels of the first "
                       "positions; compare your shapes and the order of the axes step by step", solution)
    for other, key in (("queries", "q"), ("keys", "k"), ("values", "v")):
        if other != role and close(mine_t, L[key]):
            return Finding("qkv", f"{name}: the {role} that meet in attention are the lesson's {other}: one Linear used "
                                  f"for both", "each token makes three different vectors, each with its own Linear: a "
                                               "query, a key and a value", f"look at which layer makes your {role}",
                           solution)
    if hasattr(ref, "rotary"):
        found = explain_rope(role, mine_t, L, ref, name, solution, start)
        if found:
            return found
    return Finding("values", f"{name}: the {role} of head {h} at position {t}: {d.detail}",
                   f"the {role} of each head are what its Linear gives for that head's channels",
                   f"compare your {role} with what the Linear returns, head by head", solution)


def explain_rope(role, mine_t, L, ref, name, solution, start) -> Finding | None:
    """RoPE on the wrong tensors, or from the wrong positions."""
    if role == "values":
        if close(mine_t, ref.rotary(L["v"], start)):
            return Finding("rope-v", f"{name} turns its values by their positions, as its queries and keys",
                           "RoPE turns only queries and keys, whose dot product it makes depend on the offset; "
                           "values are what is read, and stay as they are", "look at which of q, k and v you pass "
                           "through self.rotary", solution)
        return None
    plain = L[f"{role[0]}_plain"]
    if close(mine_t, plain):
        return Finding("rope-qk", f"{name} doesn't turn its {role} by their positions", "both queries and keys are "
                       "turned, each by its own position, so that their dot product depends only on the offset",
                       f"look at what happens to the {role} before they meet", solution)
    for other in range(0, start + 40):
        if other != start and close(mine_t, ref.rotary(plain, other)):
            return Finding("rope-start", f"{name} turns its {role} by the angles of positions {other}.., where they "
                                         f"are at {start}..", "a token is turned by the angle of its own position: "
                           "with a cache, the new tokens' positions start at cache.start", "look at the start you "
                           "give self.rotary", solution)
    return None


def explain_fused(calls, name, solution, T, hs, C, training) -> Finding | None:
    for c in calls:
        causal, mask = bool(c.arg(5, "is_causal", False)), c.arg(3, "attn_mask")
        scale, p = c.arg(6, "scale"), c.arg(4, "dropout_p", 0.0)
        if not causal and mask is None and T > 1:
            return Finding("mask", f"{name} calls scaled_dot_product_attention with no mask: query t reads the keys "
                                   "after it", MASK_IDEA, "scaled_dot_product_attention masks the future only when "
                                                          "asked to (is_causal, or attn_mask)", solution)
        if scale is not None and abs(scale - hs ** -0.5) > 1e-6:
            return Finding("scale", f"{name} scales its scores by {scale_words(scale, hs, C)}, where the lesson's "
                                    f"are scaled by 1/sqrt(head_size) = 1/sqrt({hs})", SCALE_IDEA,
                           "look at the scale you give scaled_dot_product_attention (its default is the lesson's)",
                           solution)
        if p and not training:
            return Finding("dropout-eval", f"{name} drops attention weights in eval mode (dropout_p = {p})",
                           "dropout is for training only: model.eval() must switch it off", "a dropout_p given to "
                           "scaled_dot_product_attention applies whatever the mode: give it only while "
                           "self.training", solution)
    return None


def mask_problem(given: torch.Tensor, weights: torch.Tensor, name: str, solution: str) -> Finding | None:
    """What a learner's mask does wrong, read from the softmax's input given (..., T, T) and its output."""
    if given.dim() < 2 or given.size(-1) != given.size(-2):
        return None
    T = given.size(-1)
    g = given if given.dim() == 4 else given.unsqueeze(1) if given.dim() == 3 else given.reshape(-1, 1, T, T)  # (B, nh, T, T)
    w = weights.reshape(g.shape)
    future = ~torch.ones(T, T, dtype=torch.bool).tril()
    hidden = g <= -1e4  # -inf, or a large negative number that does the same after the softmax
    hides_past = (hidden & ~future).any()
    keeps_future = (~hidden & future).any()
    heads = g.size(1) > 1
    at = lambda h, t: (f"head {h}, " if heads else "") + f"query {t}"  # noqa: E731
    full = hidden.all(-1)
    if full.any():
        b, h, t = full.nonzero()[0].tolist()
        if hides_past and keeps_future:
            why = "; your mask is the wrong way round: it hides the past and keeps the future"
        elif hidden[b, h, t, t]:
            why = f"; your mask hides key {t} from query {t}, itself"
        else:
            why = ""
        return Finding("nan", f"{name}: the attention weights of {at(h, t)} are NaN, because every score in that row "
                              f"was -inf before the softmax{why}", NAN_IDEA, f"print which entries of row {t} your mask "
                       "sets to -inf: the lesson's keeps s <= t, the diagonal included", solution)
    if hides_past:
        b, h, t, s = (hidden & ~future).nonzero()[0].tolist()
        if keeps_future:
            return Finding("mask", f"{name}'s mask is the wrong way round: {at(h, t)} may not read key {s}, before "
                                   "it, and may read the keys after it", MASK_IDEA, "the lesson keeps the lower "
                                                                                     "triangle (s <= t)", solution)
        return Finding("mask", f"{name}'s mask hides key {s} from {at(h, t)}" + (", itself" if s == t else "")
                       + ", which the lesson's lets it read", MASK_IDEA, "the lesson hides only s > t", solution)
    if keeps_future:
        b, h, t, s = (~hidden & future).nonzero()[0].tolist()
        if (g[~hidden & future.expand_as(g)] == 0).all():
            return Finding("mask", f"{name} fills the scores of later keys with 0, not -inf: {at(h, t)} still gives "
                                   f"weight {w[b, h, t, s].item():.3g} to key {s}", "a score of 0 is an ordinary score, "
                           "and gets weight after the softmax: only -inf gets none", "look at the value your mask "
                                                                                     "fills in", solution)
        return Finding("mask", f"{name} doesn't mask the future: {at(h, t)} gives weight {w[b, h, t, s].item():.3g} "
                               f"to key {s}, after it", MASK_IDEA, "the mask is a (T, T) lower triangle for the "
                                                                   "input's length T", solution)
    return None


def softmax_axis(call) -> int | None:
    """The axis a recorded softmax ran over, counted from the end (-1 is the last), or None if unknown."""
    t, dim = call.args[0], call.arg(1, "dim")
    if dim is None:
        return None
    return dim % t.dim() - t.dim()


def explain_softmax(calls, trace, L, B, nh, name, solution, hs, C) -> Finding | None:
    """The learner's softmax: its axis, its input (the scores, masked) and its output (the weights)."""
    for c in calls:
        axis = softmax_axis(c)
        if axis is not None and axis != -1:
            return Finding("softmax-dim", f"{name}: its softmax runs over axis {c.arg(1, 'dim')} of the "
                                          f"{tuple(c.args[0].shape)} scores, the queries: each column of weights sums "
                                          "to 1, not each row", "each query spreads a weight of 1 over the keys it "
                                                                 "may read: the softmax runs over the last axis, the "
                                                                 "keys", "look at the dim you give the softmax", solution)
        later = [f for f in trace.calls[trace.calls.index(c) + 1:] if f.fn in ("masked_fill", "masked_fill_")
                 and f.path == c.path and f.args[0].shape == c.out.shape and close(f.args[0], c.out)]
        if later:
            return Finding("mask", f"{name} masks the weights after the softmax: each row of weights no longer sums "
                                   "to 1", "mask the scores before the softmax, so that each row of weights still sums "
                                           "to 1 over the keys a query may read", "look at the order of the mask and "
                                                                                   "the softmax", solution)
    weights = as_heads([c.out for c in calls], B, nh)
    given = as_heads([c.args[0] for c in calls], B, nh)
    if weights is None or weights.shape != L["weights"].shape:
        shape = tuple(weights.shape) if weights is not None else f"{len(calls)} softmaxes"
        return Finding("heads", f"{name}'s attention weights are {shape} where the lesson's are "
                                f"{tuple(L['weights'].shape)}, one (T, T) per head", "each head attends on its own: "
                       "one softmax per head, over that head's scores", "look at the shapes of your scores and weights: "
                                                                       "(B, nh, T, T)", solution)
    found = mask_problem(given, weights, name, solution)
    if found:
        return found
    future = L["future"]
    d = differ(given.masked_fill(future, 0.0), L["masked"].masked_fill(future, 0.0), priority=(2, 1))
    if d is not None:
        b, h, t = (d.where + (0, 0, 0))[:3]
        head = f" of head {h}" if nh > 1 else ""
        if d.kind == "sign":
            return Finding("sign", f"{name}: the scores{head} are the lesson's with the opposite sign", "a larger dot "
                           "product means a better match between query and key, and so a larger weight",
                           "look at the signs in the line that makes the scores", solution)
        if d.kind == "scale":
            return Finding("scale", f"{name}: the scores{head} (the softmax's input) are the lesson's times "
                                    f"{d.factor:.4g}: yours are scaled by {scale_words(d.factor * hs ** -0.5, hs, C)}; "
                                    f"the lesson's by 1/sqrt(head_size) = 1/sqrt({hs})", SCALE_IDEA,
                           f"here head_size = {hs} and n_embd = {C}: which of them is the length of the vectors in the "
                           "dot product?", solution)
        if d.kind == "transposed":
            return Finding("transpose", f"{name}: the scores{head} are the lesson's transposed, queries and keys "
                                        "swapped", "row t of the scores is query t against every key: the queries "
                                                   "times the keys transposed", "look at the order of the product that "
                                                                                "makes the scores", solution)
        return Finding("values", f"{name}: the scores{head} of query {t}: {d.detail}", "a score is a query's dot "
                       "product with a key, scaled by 1/sqrt(head_size)", "print your scores next to q @ k^T for one "
                                                                         "head", solution)
    d = differ(weights, L["weights"], priority=(2, 1))
    if d is not None:
        b, h, t = (d.where + (0, 0, 0))[:3]
        return Finding("values", f"{name}: the attention weights of head {h}, query {t}: {d.detail}", "the weights "
                       "are the softmax, over the keys, of the masked scores", "print your weights next to the softmax "
                                                                               "of your scores", solution)
    return None


def explain_output(ref, mine_out, L, name, solution) -> Finding:
    """The weights were the lesson's: what follows them (the values, the heads side by side, the projection)."""
    out = tensor_of(mine_out)
    if out.shape != L["out"].shape:
        if out.shape[-2:] == L["weights"].shape[-2:]:
            return Finding("shape", f"{name} returns {tuple(out.shape)}, the attention weights' shape, where the "
                                    f"lesson's returns {tuple(L['out'].shape)}", "the weights say how much of each "
                           "value to take: the output is the weights times the values", "look at the last line of your "
                                                                                        "forward", solution)
        return Finding("shape", f"{name} returns {tuple(out.shape)} where the lesson's returns {tuple(L['out'].shape)}",
                       CONCAT_IDEA, "print the shape of each tensor in your forward", solution)
    if hasattr(ref, "proj") and close(out, L["concat"]):
        return Finding("unused", f"{name} returns the heads side by side without its output projection (self.proj "
                                 "is never applied)", "the heads' outputs go through one more Linear, which mixes what "
                                                      "they found", "look at the last line of your forward", solution)
    d = differ(out, L["out"], priority=(1,))
    t = (d.where + (0, 0))[1]
    inner = differ(unproject(ref, out), L["concat"], priority=(1,)) if hasattr(ref, "proj") else d
    if d.kind == "positions" or (inner is not None and inner.kind == "positions"):
        return Finding("heads-mixed", f"{name}'s output at position {t} holds the lesson's values of other positions: "
                                      "heads and positions mixed where the heads are put side by side", CONCAT_IDEA,
                       "viewing (B, nh, T, hs) as (B, T, C) without first moving the positions in front of the heads "
                       "puts head 0's positions where position 0's heads belong", solution)
    return Finding("values", f"{name}'s output at position {t}: {d.detail}", CONCAT_IDEA, "the queries, keys, scores "
                   "and weights are the lesson's: look at what follows the weights", solution)


def unproject(ref, out):
    """What went into the lesson's output projection, given what came out of it."""
    with torch.no_grad():
        w, b = ref.proj.weight.double(), ref.proj.bias.double()
        return torch.linalg.solve(w, (out.double() - b).unsqueeze(-1)).squeeze(-1).float()
