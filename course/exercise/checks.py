"""The checks: the properties the lessons claim, each where it can break.

Every model check runs at several lengths (1, a few, block_size), because a mask or positions made
for the whole block break only on shorter inputs (generate starts from one token). The step's classes
are also checked alone at sizes other than the step's own (a head smaller than n_embd, other widths),
because a size that happens to be equal hides which one a line uses. The cached paths of steps 07, 08
and 09 are checked from a non-zero start: a prompt, a chunk of several tokens after it, then one token
at a time, and past a full window. Sampling is checked as a distribution, and dropout by where it is
applied, not only whether it is.

Comparisons with the lesson copy its weights into the learner's model matched by what they are
(weights.py); checks that need no copied weights (causality, gradients, the cache against the model's
own full forward) use the learner's model as it is built. A check passes, or raises CheckFailed with
what it expected, what came out and, where it can tell, a Finding: where the learner's computation
first departs from the lesson's (diagnosis.py).
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from .attention import tensor_of
from .cached import (check_cached_path, check_chunk, check_full_cache, check_prompt_then_tokens, check_stream,
                     check_window)
from .diagnosis import causal_leak, departure, first_nonfinite, learner_error, length_finding
from .differences import close, largest_difference
from .lesson import B, V, Lesson, call, diagnose, distinct, layers_finding, same_logits, same_output, works
from .loop import check_estimate_loss, check_generate_context, check_sampling
from .results import CheckFailed, Finding, expect
from .rope import check_apply_rope, check_rotary_attention, check_rotary_start
from .trace import record
from .weights import Mismatch, plans


def check_layers(ls: Lesson):
    ls.plans()


def check_shapes(ls: Lesson):
    mine = ls.build(True).eval()
    for T in ls.lengths():
        idx = ls.tokens(T)
        try:
            with torch.no_grad():
                logits, loss = mine(idx, idx)
                _, none = mine(idx)
        except (NotImplementedError, CheckFailed):
            raise
        except Exception as e:
            error = learner_error(e, ls.file)
            raise CheckFailed(f"logits of shape {(B, T, V)} at length {T}", error, ls.why(T, error)) from None
        expect(tuple(logits.shape) == (B, T, V), f"logits of shape {(B, T, V)} (B, T, vocab_size) at length {T}",
               f"{tuple(logits.shape)}", Finding("shape", f"your model returns logits of shape {tuple(logits.shape)}",
                                                 "one row of next-token scores per position: (B, T, vocab_size)",
                                                 "print the shape of each tensor in your forward", ""))
        if loss is None or loss.dim() != 0 or not torch.isfinite(loss):
            finding = diagnose(first_nonfinite, mine, lambda: mine(idx, idx)) if loss is not None and loss.dim() == 0 \
                else None
            raise CheckFailed(f"a finite scalar loss at length {T}", f"{loss!r}", finding or Finding(
                "loss", "the loss is not one finite number", "the loss is the cross-entropy of the logits and the "
                "targets, one number for the whole batch", "F.cross_entropy takes (N, V) logits and (N,) targets",
                ""))
        expect(none is None, "no loss without targets", "a loss", Finding(
            "loss", "your model returns a loss when it is given no targets", "without targets there is nothing to "
            "compare with: the loss is None", "", ""))


def check_causal(ls: Lesson):
    mine = ls.build(True).eval()
    idx = ls.tokens()
    for t in sorted({0, ls.T // 2, ls.T - 2}):
        changed = idx.clone()
        changed[:, t + 1:] = (changed[:, t + 1:] + 1) % V
        with torch.no_grad():
            a, b = call(ls, lambda: tensor_of(mine(idx)), T=ls.T), call(ls, lambda: tensor_of(mine(changed)), T=ls.T)
        diff = largest_difference(a[:, :t + 1], b[:, :t + 1])
        if not (diff < 1e-6):
            finding = diagnose(causal_leak, mine, idx, changed, t)
            if finding is None or finding.kind in ("heads-mixed", "causal"):  # the weights don't read ahead: the
                finding = ls.why(ls.T, "") or finding  # lesson's weights say where positions get mixed up
            raise CheckFailed(f"the outputs up to position {t} unchanged when the tokens after it change",
                              f"a change of {diff:.3g}", finding)


def check_same(ls: Lesson):
    m = ls.matched()
    if not m.equal:
        for T in ls.lengths():
            idx = ls.tokens(T)
            if same_logits(m.ref, m.mine, idx):
                continue
            with torch.no_grad():
                a = tensor_of(m.ref(idx))
                try:
                    b = tensor_of(m.mine(idx))
                    got = f"a difference of {largest_difference(a, b):.3g} at length {T}"
                    finding = diagnose(departure, m.ref, m.mine, m.plan.pairs, lambda: m.ref(idx), lambda: m.mine(idx))
                except NotImplementedError:
                    raise
                except Exception as e:
                    error = learner_error(e, ls.file)
                    got, finding = f"{error} at length {T}", ls.why(T, error)
            raise CheckFailed("the lesson's logits to 1e-5, given its weights", got, finding)
    idx = ls.tokens()
    with torch.no_grad():
        (_, la), (logits, lb) = m.ref(idx, idx), m.mine(idx, idx)
    expect(lb is not None and abs(la.item() - lb.item()) < 1e-5, f"the lesson's loss {la.item():.6f}",
           f"{lb.item() if lb is not None else None}", loss_finding(logits, lb, idx))
    return m.plan.note


def loss_finding(logits, loss, targets) -> Finding:
    if loss is not None:
        probs = F.softmax(logits, -1).flatten(0, 1)
        if abs(F.cross_entropy(probs, targets.flatten()).item() - loss.item()) < 1e-5:
            return Finding("loss-softmax", "your loss is the cross-entropy of the softmax of the logits",
                           "F.cross_entropy takes the logits: it applies the log-softmax itself", "look at what you "
                           "give F.cross_entropy", "Bigram.forward")
        right = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        if abs(loss.item() - right.item() * targets.numel()) < 1e-3 * targets.numel():
            return Finding("loss", "your loss is the sum over the tokens, not the mean", "the loss is the mean "
                           "cross-entropy over every position of every sequence", "F.cross_entropy averages by "
                           "default", "Bigram.forward")
    return Finding("loss", "the logits are the lesson's but the loss isn't", "the loss is the cross-entropy of "
                   "the logits (B*T, V) against the targets (B*T,)", "look at how the logits and targets are "
                   "flattened for F.cross_entropy", "Bigram.forward")


def check_initial_loss(ls: Lesson):
    """Untrained, a model is about as unsure as a uniform guess, ln(V), or as the lesson's own untrained
    model is: its residual streams (steps 05 on) make it surer than uniform, by an amount that changes
    from seed to seed. The learner's loss must fall where the lesson's falls over 8 seeds, give or take."""
    idx = ls.tokens()
    lesson = []
    with torch.no_grad():
        for seed in range(8):
            torch.manual_seed(seed)
            lesson.append(ls.task.build_model(ls.cfg, V).eval()(idx, idx)[1].item())
        mine = ls.build(True).eval()
        loss = call(ls, lambda: mine(idx, idx)[1], T=ls.T)
    loss = float("nan") if loss is None else loss.item()
    spread = max(lesson) - min(lesson)
    low, high = min(lesson) - 0.15 - spread / 2, max(lesson) + 0.15 + spread / 2
    finding = diagnose(first_nonfinite, mine, lambda: mine(idx, idx)) if not math.isfinite(loss) else None
    expect(low <= loss <= high, f"between {low:.2f} and {high:.2f}, where the untrained lesson's falls (ln({V}) = "
           f"{math.log(V):.2f} for a uniform guess)", f"{loss:.3f}", finding or Finding(
               "loss", f"your untrained model's loss is {loss:.3f}", "an untrained model should be about as unsure as "
               "a uniform guess: a loss far from it means the logits are scaled wrong, or the loss is not the "
               "cross-entropy of the logits", "look at what multiplies the logits, and at the loss", ""))


def check_gradients(ls: Lesson):
    mine = ls.build(True).train()
    idx = ls.tokens()
    loss = call(ls, lambda: mine(idx, idx)[1], T=ls.T)
    loss.backward()
    dead = [n for n, p in mine.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    expect(not dead, "a gradient for every parameter", f"none for {', '.join(dead[:5])}", Finding(
        "unused", f"no gradient reaches {', '.join(dead[:3])}", "every layer the model makes is used in its forward: a "
        "layer made but never called (or called on a detached tensor) gets no gradient and learns nothing",
        f"look for the layer of {dead[0]} in your forward" if dead else "", ""))


def other_sizes(number: str):
    """(what, build(names) -> module, the width of its input) per step: sizes other than the step's own."""
    if number == "01":
        return [("AttentionHead(n_embd=32, head_size=8)", lambda n: n.AttentionHead(32, 8), 32),
                ("AttentionHead(n_embd=24, head_size=12)", lambda n: n.AttentionHead(24, 12), 24)]
    if number == "02":
        return [("MultiHeadAttention(n_embd=24, n_head=3)", lambda n: n.MultiHeadAttention(24, 3), 24),
                ("MultiHeadAttention(n_embd=32, n_head=2)", lambda n: n.MultiHeadAttention(32, 2), 32)]
    if number == "03":
        return [("FeedForward(n_embd=16)", lambda n: n.FeedForward(16), 16),
                ("FeedForward(n_embd=48)", lambda n: n.FeedForward(48), 48)]
    if number == "04":
        return [("Block(MultiHeadAttention(24, 3), FeedForward(24))",
                 lambda n: n.Block(n.MultiHeadAttention(24, 3), n.FeedForward(24)), 24)]
    if number == "05":
        return [("ProjectedAttention(n_embd=24, n_head=3)", lambda n: n.ProjectedAttention(24, 3), 24),
                ("MLP(n_embd=16)", lambda n: n.MLP(16), 16),
                ("ResidualBlock(ProjectedAttention(24, 3), MLP(24))",
                 lambda n: n.ResidualBlock(n.ProjectedAttention(24, 3), n.MLP(24)), 24)]
    if number == "06":
        return [("PreLNBlock(ProjectedAttention(24, 3), MLP(24), 24)",
                 lambda n: n.PreLNBlock(n.ProjectedAttention(24, 3), n.MLP(24), 24), 24)]
    if number == "07":
        return [("CausalSelfAttention(n_embd=24, n_head=3, dropout=0)", lambda n: n.CausalSelfAttention(24, 3, 0.0), 24),
                ("GPT(vocab 17, block_size 12, n_embd 24, n_head 3, n_layer 1)", lambda n: n.GPT(V, 12, 24, 3, 1), 0)]
    if number == "09":
        return [("RotaryAttention(n_embd=24, n_head=2, block_size=12, dropout=0)",
                 lambda n: n.RotaryAttention(24, 2, 12, 0.0), 24)]
    return []


def check_other_sizes(ls: Lesson):
    notes = []
    for what, make, width in other_sizes(ls.number):
        torch.manual_seed(0)
        ref = distinct(make(ls.ns(False))).eval()
        torch.manual_seed(0)
        mine = call(ls, lambda: make(ls.ns(True))).eval()
        try:
            found = plans(ref, mine, ls.conventions)
        except Mismatch as e:
            raise CheckFailed(f"{what}: the lesson's weights, held by your layers", "layers that can't hold them",
                              layers_finding(str(e))) from None
        T_max = 12 if width == 0 else 7
        inputs = [torch.randint(V, (2, T), generator=torch.Generator().manual_seed(T)) if width == 0 else
                  torch.randn(2, T, width, generator=torch.Generator().manual_seed(T)) for T in (T_max, 3, 1)]
        for plan in found:
            plan.apply()
            if all(same_output(ref, mine, x) for x in inputs):
                notes.append(plan.note)
                break
        else:
            found[0].apply()
            x = next(x for x in inputs if not same_output(ref, mine, x))
            with torch.no_grad():
                try:
                    got = f"a difference of {largest_difference(tensor_of(ref(x)), tensor_of(mine(x))):.3g}"
                    finding = diagnose(departure, ref, mine, found[0].pairs, lambda: ref(x), lambda: mine(x))
                except NotImplementedError:
                    raise
                except Exception as e:
                    got = learner_error(e, ls.file)
                    finding = diagnose(departure, ref, mine, found[0].pairs, lambda: ref(x), lambda: mine(x))
                    if finding is None and x is not inputs[0] and works(mine, inputs[0]):
                        finding = length_finding(x.size(1), None)
            raise CheckFailed(f"{what}: the lesson's output at length {x.size(1)}, given its weights", got, finding)
    return next((n for n in notes if n), "")


def dropout_places(ls: Lesson, model: nn.Module, idx) -> list[tuple[str, float, str]]:
    """Where a training-mode forward applies dropout: (the module, p, what it drops), told apart by the
    value of what it drops (dropout is left out of the forward while it is recorded)."""
    _, trace = record(model, lambda: model(idx), replace_dropout=True)
    named = {}
    for c in trace.calls:
        if c.fn is None and c.path.endswith((".sa", ".ffwd")):
            named[c.path + ":out"] = tensor_of(c.out)
            named[c.path + ":in"] = tensor_of(c.input)
        if c.fn == "softmax":
            named[c.path + ":weights"] = c.out
    places = []
    for c in trace.calls:
        if c.fn == "scaled_dot_product_attention":
            p = c.arg(4, "dropout_p", 0.0)
            if p:
                places.append((c.path, p, "the attention weights"))
        elif c.fn == "dropout":
            p, training = c.arg(1, "p", 0.5), c.arg(2, "training", True)
            if not p or not training:
                continue
            x = c.args[0]
            what = "something else"
            for key, t in named.items():
                if t is not None and t.shape == x.shape and close(x, t):
                    path, part = key.rsplit(":", 1)
                    sub = "attention" if path.endswith(".sa") else "the MLP"
                    what = ("the attention weights" if part == "weights" else
                            f"{sub}'s output" if part == "out" else f"{sub}'s input")
                    break
            places.append((c.path, p, what))
    return places


def check_dropout_places(ls: Lesson):
    p = 0.5
    mine = ls.build(True, dropout=p).train()
    idx = ls.tokens()
    places = call(ls, lambda: dropout_places(ls, mine, idx))
    layers = ls.cfg.n_layer
    found = {}
    for path, q, what in places:
        found.setdefault(what, []).append((path, q))
    solution = "DropoutBlock.forward"
    for what, q in [(w, q) for w, hits in found.items() for _, q in hits]:
        expect(abs(q - p) < 1e-9, f"dropout with the model's probability {p}", f"{q}", Finding(
            "dropout-p", f"your model drops {what} with probability {q}, not the model's dropout {p}", "dropout's "
            "probability is the model's setting (self.dropout), the one the task's config gives", "", solution))
    for wrong in ("attention's input", "the MLP's input"):
        if wrong in found:
            raise CheckFailed("dropout on the attention weights and on each sub-layer's output", f"dropout on {wrong}",
                              Finding("dropout-place", f"{found[wrong][0][0]} drops {wrong}, not its output",
                                      "dropout goes on what each sub-layer adds to the stream (its output), so that "
                                      "the stream itself is never dropped", "look at what self.dropout is applied to",
                                      solution))
    for place, who in (("the attention weights", "CausalSelfAttention.forward"),
                       ("attention's output", solution), ("the MLP's output", solution)):
        n = len(found.get(place, []))
        expect(n <= layers, f"dropout on {place} once in each of the {layers} blocks", f"{n} times", Finding(
            "dropout-twice", f"{place} is dropped twice in a block", "dropout goes once on the attention weights and "
            "once on what each sub-layer adds to the stream", f"look at {who}, and at what calls it", who))
        expect(n == layers, f"dropout on {place} in each of the {layers} blocks", f"{n} of {layers}", Finding(
            "dropout-missing", f"no dropout on {place}" + (f" in {layers - n} of the blocks" if n else ""),
            "dropout goes on the attention weights (each token randomly ignores some of the tokens it reads) and on "
            "what each sub-layer adds to the stream", f"look at {who}", who))


def check_dropout_eval(ls: Lesson):
    mine = ls.build(True, dropout=0.5).eval()
    idx = ls.tokens()
    _, trace = call(ls, lambda: record(mine, lambda: mine(idx)))
    for c in trace.calls:
        p = c.arg(4, "dropout_p", 0.0) if c.fn == "scaled_dot_product_attention" else \
            (c.arg(1, "p", 0.5) if c.fn == "dropout" and c.arg(2, "training", True) else 0.0)
        expect(not p, "no dropout in eval mode", f"dropout {p} in {c.path}", Finding(
            "dropout-eval", f"{c.path} drops with probability {p} in eval mode", "dropout is for training only: "
            "model.eval() switches it off, and every dropout must follow the mode (nn.Dropout does; a probability "
            "given to a function must be 0 unless self.training)", "look at the dropout probability you pass, and "
            "whether it depends on self.training", "CausalSelfAttention.forward"))
    with torch.no_grad():
        a, b = tensor_of(mine(idx)), tensor_of(mine(idx))
    expect(close(a, b), "the same logits from two forwards in eval mode", "different ones", None)


CHECKS = {
    "layers": check_layers, "shapes": check_shapes, "causal": check_causal, "same as the lesson": check_same,
    "at other sizes": check_other_sizes, "loss at initialisation": check_initial_loss, "gradients": check_gradients,
    "estimate_loss": check_estimate_loss, "generate's context": check_generate_context,
    "samples follow the probabilities": check_sampling,
    "dropout where the lesson puts it": check_dropout_places, "no dropout in eval": check_dropout_eval,
    "the cached path": check_cached_path, "a prompt, then one token at a time": check_prompt_then_tokens,
    "a chunk after a prompt": check_chunk, "a full cache refuses more": check_full_cache,
    "streaming past block_size": check_stream, "attention_to_window at other sizes": check_window,
    "apply_rope turns each pair": check_apply_rope, "Rotary from a start position": check_rotary_start,
    "RotaryAttention turns q and k by position": check_rotary_attention,
}
