"""Where a learner's computation first departs from the lesson's, and what kind of difference it is.

Both models run the same input with every module and the functions inside them recorded (trace.py).
The walk goes through the lesson's module calls in the order they return (a module after the calls
inside it) and, for each, looks at the learner's module that does the same job (weights.py paired
them): never called (an unused layer); called with another input (the wiring between sub-layers: a
residual, a LayerNorm, the order, the positions); or returning another output from the same input
(the module's own arithmetic: attention, attention.py; a feed-forward layer's non-linearity; what a
block adds up). The first such place is the finding: which tensor, which position and head, and the
kind of difference (differences.py).

Without the lesson's weights (a learner's own model), `first_nonfinite` finds where NaN first appears
and `causal_leak` where a position first hears of a later token.
"""

import torch
import torch.nn.functional as F
from torch import nn

from gpt.model import Block, FeedForward, MLP

from .attention import (MASK_IDEA, explain_attention, mask_problem, softmax_axis, tensor_of,
                        who)
from .differences import close, differ, named_match
from .results import Finding
from .trace import record
from .weights import is_attention


def last(path: str) -> str:
    return path.rsplit(".", 1)[-1]


def parent_of(path: str) -> str:
    return path.rsplit(".", 1)[0] if "." in path else ""


def module_at(model: nn.Module, path: str) -> nn.Module:
    return model.get_submodule(path) if path else model


def class_of(model: nn.Module, path: str) -> str:
    return type(module_at(model, path)).__name__


# --- the walk -------------------------------------------------------------------------------------------

def departure(ref: nn.Module, mine: nn.Module, pairs: list, run_ref, run_mine, start: int = 0) -> Finding | None:
    """The first place the learner's forward departs from the lesson's (both models holding the same
    weights), or None. run_ref() and run_mine() call the models. A learner's forward that raises is
    walked as far as it got."""
    _, tr = record(ref, run_ref)
    try:
        _, tm = record(mine, run_mine)
    except Exception as e:
        tm = getattr(e, "trace", None)
        if tm is None:
            return None
    to_mine = dict(pairs)
    mine_modules = dict(mine.named_modules())
    whole = [p for p, m in ref.named_modules() if is_attention(m) or isinstance(m, (FeedForward, MLP))]
    inside = lambda path: any(path != w and (not w or path.startswith(w + ".")) for w in whole)  # noqa: E731
    for c in tr.calls:
        if c.fn is not None or c.path not in to_mine or inside(c.path):
            continue  # the inside of attention and feed-forward layers is explained by their own arithmetic
        mp = to_mine[c.path]
        calls = tm.modules(mp)
        if c.index >= len(calls):
            if mp in tm.started:  # it was called, and raised: the error says where
                return None
            if not calls and mp in mine_modules and any(True for _ in mine_modules[mp].parameters()):
                return unused(mine, mp)
            continue
        m = calls[c.index]
        ri, mi = tensor_of(c.args), tensor_of(m.args)
        if ri is not None and mi is not None and differ(mi, ri) is not None:
            return explain_wiring(mine, c.path, mp, ri, mi, tr, tm)
        ro, mo = tensor_of(c.out), tensor_of(m.out)
        if ro is not None and mo is not None and differ(mo, ro) is not None:
            return explain_module(module_at(ref, c.path), mine_modules[mp], c, m, mp, tr, tm, mine, start)
    return None


def unused(mine: nn.Module, path: str) -> Finding:
    parent = parent_of(path) if "." in path else ""
    cls = class_of(mine, parent)
    return Finding("unused", f"{path} is never called: a layer that is made but not used",
                   f"every layer the lesson's {cls} makes is used in its forward: a layer that isn't does nothing, and "
                   "learns nothing", f"look for self.{last(path)} in {cls}.forward", f"{cls}.forward")


def explain_module(ref_mod, mine_mod, ref_call, mine_call, mp, tr, tm, mine, start) -> Finding:
    """A module whose input was the lesson's and whose output isn't: its own arithmetic."""
    x = tensor_of(ref_call.args)
    if is_attention(ref_mod):
        return explain_attention(ref_mod, mine_mod, x, mp, tm, mine_call.out, start)
    if isinstance(ref_mod, (FeedForward, MLP)):
        return explain_feed_forward(ref_mod, mine_mod, x, mp, tm, mine_call.out)
    if isinstance(ref_mod, Block):
        return explain_block_output(mine, mp, mine_call.index, ref_call.out, mine_call.out, ref_call.path, tr, tm)
    if mp == "":
        return explain_model_output(mine_mod, ref_call.out, mine_call.out)
    d = differ(tensor_of(mine_call.out), tensor_of(ref_call.out), priority=(1,))
    t = (d.where + (0, 0))[1]
    return Finding("values", f"{who(mine_mod, mp)}'s output at position {t}: {d.detail}", "each layer computes "
                   "what the lesson's does from the same input", f"compare {type(mine_mod).__name__}.forward with its "
                                                                 "docstring", f"{type(mine_mod).__name__}.forward")


# --- feed-forward layers ----------------------------------------------------------------------------------

ACTIVATIONS = {"no non-linearity at all": lambda h: h, "GELU": F.gelu, "tanh": torch.tanh, "a sigmoid": torch.sigmoid,
               "SiLU": F.silu, "a squared ReLU": lambda h: F.relu(h) ** 2, "a leaky ReLU": F.leaky_relu}
RELU_IDEA = "the lesson's feed-forward layer applies a ReLU, max(0, x), to its first Linear's output"


def explain_feed_forward(ref, mine, x, path, trace, mine_out) -> Finding:
    """FeedForward (one Linear and a ReLU) and MLP (Linear, ReLU, Linear): the layers' order and the
    non-linearity."""
    name = who(mine, path)
    solution = f"{type(ref).__name__}.forward"
    lesson_layers = [m for m in ref.modules() if isinstance(m, nn.Linear)]
    with torch.no_grad():
        h = lesson_layers[0](x)
    linears = [c for c in trace.calls if c.fn is None and (c.path.startswith(path + ".") if path else c.path)
               and isinstance(module_at(mine, c.path[len(path) + 1:] if path else c.path), nn.Linear)]
    if len(linears) < len(lesson_layers):
        return Finding("unused", f"{name} applies {len(linears)} Linear where the lesson's applies "
                                 f"{len(lesson_layers)}", "every layer the class makes is used in its forward",
                       "look at which layers your forward calls", solution)
    if not close(linears[0].input, x):
        what = "the ReLU of its input" if close(linears[0].input, F.relu(x)) else "another tensor than its input"
        return Finding("order", f"{name}'s first Linear reads {what}", "each token goes through a Linear first, then "
                                                                        "the non-linearity", "look at the order of the "
                                                                                             "layers", solution)
    two = len(lesson_layers) > 1
    target = linears[1].input if two else tensor_of(mine_out)
    what = "what goes into its second Linear" if two else "its output"
    for act, f in ACTIVATIONS.items():
        with torch.no_grad():
            if target.shape == h.shape and close(target, f(h)):
                if act == "no non-linearity at all":
                    return Finding("no-activation", f"{name}: {what} is its first Linear's output as it is, with no "
                                                    "ReLU", "without a non-linearity, Linears in a row are one linear "
                                   "map: the ReLU is what lets each token compute something new", "look at what "
                                   "happens between the Linear and what follows", solution)
                more = ("GELU is the smooth ReLU of GPT-2; this lesson, and the numbers of its tables, use ReLU"
                        if act == "GELU" else "look at the non-linearity after the first Linear")
                return Finding("activation", f"{name}: {what} is {act} of its first Linear's output, where the "
                                             "lesson's is the ReLU", RELU_IDEA, more, solution)
    d = differ(tensor_of(mine_out), ref(x), priority=(1,))
    t = (d.where + (0, 0))[1] if d else 0
    return Finding("values", f"{name}'s output at position {t}: {d.detail if d else 'differs'}", RELU_IDEA,
                   "compare your forward with the class's docstring", solution)


# --- blocks: which tensor each sub-layer reads, and what the block returns ------------------------------

def scope(trace, parent: str, index: int, leave_out: str = "") -> dict:
    """The tensors a block's code can name, from a trace: its input x, each child's input and output,
    and the sums of two of them (a residual); leave_out: a name not to use (the tensor being named)."""
    named = {}
    calls = [c for c in trace.modules(parent) if c.index == index]
    if calls:
        named["x, the block's input"] = tensor_of(calls[0].input)
    for c in trace.calls:
        if c.fn is None and c.path != parent and parent_of(c.path) == parent and c.index == 0:
            named[f"self.{last(c.path)}'s output"] = tensor_of(c.out)
            named[f"self.{last(c.path)}'s input"] = tensor_of(c.input)
    named.pop(leave_out, None)
    singles = [(n.split(",")[0], t) for n, t in named.items() if t is not None and t.is_floating_point()]
    for i, (a, ta) in enumerate(singles):
        for b, tb in singles[i + 1:]:
            if ta.shape == tb.shape:
                named.setdefault(f"{a} + {b}", ta + tb)
    return named


RESIDUAL_IDEA = ("each sub-layer adds its output to the stream it read, instead of replacing it, so that the "
                 "stream carries everything computed so far")


def wiring_kind(module: str, mine_name: str | None, ref_name: str | None) -> tuple[str, str]:
    """The kind of a sub-layer that reads (or a block that returns) the wrong tensor, and the idea that fits."""
    if mine_name and ref_name:
        if " + " in ref_name and mine_name.split(",")[0] in ref_name.split(" + "):
            return "residual", RESIDUAL_IDEA
        if "ln" in mine_name and "ln" not in ref_name:
            return "layernorm", ("each sub-layer reads a LayerNorm of the stream, and adds its output to the stream "
                                 "itself: the stream is never replaced by its normalised copy")
        if " + " in mine_name and ref_name.split(",")[0] in mine_name.split(" + "):
            if module.startswith("ln"):
                return "post-ln", ("pre-LN: each sub-layer reads a LayerNorm of the stream and adds its output to the "
                                   "stream itself; normalising after the addition is the original Transformer's post-LN")
            return "extra-residual", ("this step's block has no residual stream yet (step 05 adds it): each layer "
                                      "reads what the layer before it returned")
        if module.startswith("ln") and " + " in mine_name:
            return "post-ln", ("pre-LN: each sub-layer reads a LayerNorm of the stream and adds its output to the "
                               "stream itself; normalising after the addition is the original Transformer's post-LN")
        if module == "sa" and "ffwd" in mine_name:
            return "order", ("communication, then computation: attention reads the block's input, and the "
                             "feed-forward layer reads what attention produced")
        if module == "ffwd" and mine_name.startswith("x,"):
            return "order", ("communication, then computation: the feed-forward layer reads what attention "
                             "produced, not the block's input")
        if "ln" in mine_name + ref_name:
            return "layernorm", ("each sub-layer reads its own LayerNorm of the stream (ln1 before attention, ln2 "
                                 "before the feed-forward layer), and adds its output to the stream itself")
    return "wiring", "each sub-layer reads what the lesson's block gives it: compare the order of your forward's lines"


def explain_wiring(mine, rp, mp, ref_in, mine_in, tr, tm) -> Finding:
    """A sub-layer (mp) that reads another tensor than the lesson's."""
    if not ref_in.is_floating_point():  # indices: the tokens, or the positions of a position table
        return explain_indices(mp, ref_in, mine_in)
    parent = parent_of(mp)
    own = f"self.{last(mp)}'s input"
    mine_name = named_match(mine_in, scope(tm, parent, 0, own))
    ref_name = named_match(ref_in, scope(tr, parent_of(rp), 0, own))
    kind, idea = wiring_kind(last(mp), mine_name, ref_name)
    cls = class_of(mine, parent)
    if mine_name:
        where = f"{mp} reads {mine_name}, where the lesson's reads {ref_name or 'another tensor'}"
    else:
        d = differ(mine_in, ref_in, priority=(1,))
        where = f"{mp} reads another tensor than the lesson's ({d.detail} at position {(d.where + (0, 0))[1]})"
    return Finding(kind, where, idea, f"follow x through your {cls}.forward line by line: what does each sub-layer "
                                      "read, and what is added to what?", f"{cls}.forward")


def explain_indices(mp, ref_in, mine_in) -> Finding:
    """A table (a position embedding) looked up at other indices."""
    if mine_in.shape != ref_in.shape:
        return Finding("length", f"{mp} reads {mine_in.shape[-1]} positions for an input of {ref_in.shape[-1]} tokens",
                       "the input can be shorter than block_size (generate starts from one token): take the length "
                       "from the input", f"look at what you give {mp}", "GPT.forward")

    def listed(t):
        return ", ".join(str(v) for v in t.flatten()[:4].tolist()) + (", ..." if t.numel() > 4 else "")
    return Finding("positions", f"{mp} reads positions [{listed(mine_in)}] where the lesson's reads [{listed(ref_in)}]",
                   "with a cache, the new tokens come after the tokens the cache holds: their positions start at "
                   "cache.length", f"look at the positions you give {mp}", "GPT.forward")


def explain_block_output(mine, mp, index, ref_out, mine_out, rp, tr, tm) -> Finding:
    """A block whose sub-layers all read and returned the lesson's tensors, and whose output isn't."""
    mine_name = named_match(tensor_of(mine_out), scope(tm, mp, index))
    ref_name = named_match(tensor_of(ref_out), scope(tr, rp, index))
    kind, idea = wiring_kind("", mine_name, ref_name)
    cls = class_of(mine, mp)
    return Finding(kind, f"{who(module_at(mine, mp), mp)} returns {mine_name or 'another tensor'}, where the lesson's "
                         f"returns {ref_name or 'another'}", idea, "follow x through your forward: what is added to "
                                                                   "what, and what is returned?", f"{cls}.forward")


def explain_model_output(mine_mod, ref_out, mine_out) -> Finding:
    cls = type(mine_mod).__name__
    ref_logits, logits = tensor_of(ref_out), tensor_of(mine_out)
    if logits.shape == ref_logits.shape and close(logits, F.softmax(ref_logits, -1)):
        return Finding("logits-softmax", f"{cls} returns probabilities (the softmax of the logits) as its logits",
                       "the model returns logits, scores that are not yet probabilities; F.cross_entropy and "
                       "sampling apply the softmax themselves", f"look at what {cls}.forward returns", f"{cls}.forward")
    d = differ(logits, ref_logits, priority=(1,))
    t = (d.where + (0, 0))[1] if d else 0
    return Finding("values", f"{cls}'s logits at position {t}: {d.detail if d else 'differ'}", "the logits are the "
                   "last layer's output, one row of next-token scores per position", f"compare {cls}.forward with "
                                                                                     "its docstring", f"{cls}.forward")


# --- without the lesson's weights: NaN, a future that leaks ----------------------------------------------

def solution_of(model: nn.Module, path: str) -> str:
    return f"{class_of(model, path)}.forward"


def first_nonfinite(model: nn.Module, run) -> Finding | None:
    """Where NaN or inf first appears in a forward of the learner's own model."""
    try:
        _, trace = record(model, run)
    except Exception as e:
        trace = getattr(e, "trace", None)
        if trace is None:
            return None
    for c in trace.calls:
        out = tensor_of(c.out)
        if out is None or not out.is_floating_point() or out.isfinite().all():
            continue
        name = who(module_at(model, c.path), c.path)
        if c.fn == "softmax":
            found = mask_problem(c.args[0], out, name, solution_of(model, c.path))
            if found:
                return found
        if c.fn is None:
            return Finding("nan", f"{name} returns NaN or inf", "a NaN comes from 0/0, inf - inf, or a softmax over a "
                           "row of -inf: look where it first appears", "print the tensors of that forward one by one",
                           solution_of(model, c.path))
    return None


def causal_leak(model: nn.Module, idx: torch.Tensor, changed: torch.Tensor, t: int) -> Finding:
    """Where, in the learner's own model, a position up to t first hears of a change after t."""
    _, a = record(model, lambda: model(idx))
    _, b = record(model, lambda: model(changed))
    weights_seen = set()
    for ca, cb in zip(a.calls, b.calls):
        oa, ob = tensor_of(ca.out), tensor_of(cb.out)
        name = who(module_at(model, ca.path), ca.path)
        solution = solution_of(model, ca.path)
        if ca.fn == "softmax" and oa.dim() >= 2 and oa.size(-1) == oa.size(-2):
            weights_seen.add(ca.path)
            if softmax_axis(ca) not in (None, -1):
                return Finding("softmax-dim", f"{name}: its softmax runs over axis {ca.arg(1, 'dim')}, the queries: each "
                                              "query's weights then depend on the later queries", "each query spreads "
                               "a weight of 1 over the keys it may read: the softmax runs over the last axis, the keys",
                               "look at the dim you give the softmax", solution)
            found = mask_problem(ca.args[0], oa, name, solution)
            if found:
                return found
        if ca.fn == "scaled_dot_product_attention":
            weights_seen.add(ca.path)
            if not ca.arg(5, "is_causal", False) and ca.arg(3, "attn_mask") is None:
                return Finding("mask", f"{name} calls scaled_dot_product_attention with no mask: query t reads the "
                                       "keys after it", MASK_IDEA, "scaled_dot_product_attention masks the future only "
                                                                   "when asked to (is_causal, or attn_mask)", solution)
        if ca.fn is None and oa is not None and ob is not None and oa.dim() >= 2 and oa.shape == ob.shape and \
                oa.is_floating_point() and not close(oa[:, :t + 1], ob[:, :t + 1]):
            if is_attention(module_at(model, ca.path)) or any(p.startswith(ca.path) for p in weights_seen):
                return Finding("heads-mixed", f"{name}: its attention weights read no later key, yet its output at "
                                              f"position {t} changes with a later token: positions are mixed after "
                                              "the weights, where the heads are put side by side",
                               "the heads' outputs go side by side position by position: the positions come back in "
                               "front of the heads before the heads' channels are merged into one axis",
                               "a view of (B, nh, T, hs) as (B, T, C) without moving the positions in front of the heads "
                               "first mixes them", solution)
            return Finding("causal", f"{name}'s output at position {t} changes when a token after it changes",
                           MASK_IDEA, "find the line where a position first reads a later one", solution)
    return Finding("causal", f"the outputs up to position {t} change when a later token changes", MASK_IDEA, "", "")


# --- errors ------------------------------------------------------------------------------------------------

def learner_error(e: BaseException, filename: str) -> str:
    from .learner import your_line

    return f"{type(e).__name__}: {str(e).strip()}{your_line(e, filename)}"


def length_finding(T: int, block_size: int | None) -> Finding:
    other = f"block_size = {block_size}" if block_size else "a longer input"
    return Finding("length", f"your code fails at length {T} but not at {other}",
                   "the input can be shorter than block_size (generate starts from one token): take every size from "
                   "the input (T = x.size(1)), and crop anything made for the whole block to T",
                   "look at what in your forward has block_size entries where it should have T (a mask of "
                   "(block_size, block_size), positions 0..block_size - 1)", "")
