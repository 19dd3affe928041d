"""The cached path: steps 07 and 09 (the learner's model with the lesson's cache) and step 08 (the
lesson's GPT with the learner's cache). Each call's logits are compared with a full forward's, for a
one-token prompt, a prompt then one token at a time, a chunk of several tokens after a prompt, and past
a full window; where they differ, the finding says why: the positions the model gave, whether attention
read the cache, whether the cache moved on, what store returned, which keys each query of a window read.
"""

import torch
import torch.nn.functional as F

from gpt.kv_cache import attention_to_window as lesson_window

from .diagnosis import explain_indices, learner_error
from .differences import close, differ, largest_difference
from .lesson import V, Lesson, call, diagnose
from .results import CheckFailed, Finding, expect
from .trace import record


class Recording:
    """A cache, recorded: how often the model stores, attends and moves the cache on."""

    def __init__(self, cache):
        self.cache, self.attends, self.advances, self.layers_asked = cache, [], [], []

    def __getattr__(self, name):
        return getattr(self.cache, name)

    def layer(self, i):
        self.layers_asked.append(i)
        part = self.cache.layer(i)
        outer = self

        class Part:
            start = property(lambda _: part.start)

            def attend(self, q, k, v):
                outer.attends.append((i, q.detach().clone(), k.detach().clone(), v.detach().clone()))
                return part.attend(q, k, v)

        return Part()

    def advance(self, n):
        self.advances.append(n)
        self.cache.advance(n)


def chunks_for(N: int, plan: tuple) -> list[tuple[int, int]]:
    """(start, end) of each call: the chunk sizes of plan, then one token at a time up to N."""
    out, at = [], 0
    for size in plan:
        out.append((at, at + size))
        at += size
    out += [(t, t + 1) for t in range(at, N)]
    return out


def window_logits(model, idx, a, b, block):
    """What a full forward says for positions a..b-1, each reading at most block tokens."""
    out = []
    with torch.no_grad():
        for t in range(a, b):
            lo = max(0, t + 1 - block)
            out.append(model(idx[:, lo:t + 1])[0][:, -1:])
    return torch.cat(out, 1)


def check_cached_path(ls: Lesson):
    """Steps 07 and 09: the learner's model with the lesson's cache: the logits of each call equal a full
    forward's, for a one-token prompt and for a prompt, a chunk, then one token at a time. Step 09 goes on
    past block_size, where the ring's window slides and a full forward no longer says what the stream
    holds: there the lesson's own model, with the same weights and the same ring, does."""
    cfg = ls.cfg
    if ls.number == "07":
        mine, ref, N = ls.build(True).eval(), None, cfg.block_size
    else:
        m = ls.matched()
        mine, ref = m.mine, (m.ref if m.equal else None)  # past the window only once the forward is the lesson's
        N = 2 * cfg.block_size + 3 if ref is not None else cfg.block_size
    idx = ls.tokens(N, seed=4)[:1]
    for plan in ((1,), (5, 3)):
        parts = chunks_for(N, plan)
        cache, ref_cache = lesson_cache(ls), lesson_cache(ls)
        for i, (a, b) in enumerate(parts):
            with torch.no_grad():
                got = call(ls, lambda: mine(idx[:, a:b], cache=cache)[0], f"(the call for positions {a}..{b - 1})")
                lesson = ref(idx[:, a:b], cache=ref_cache)[0] if ref is not None else None
                want = window_logits(mine, idx, a, b, cfg.block_size) if b <= cfg.block_size else lesson
            if not close(got, want, atol=1e-4 if b > cfg.block_size else 1e-5):  # the ring's long sums round more
                what = (f"positions {a}..{b - 1}, a chunk after a prompt" if b - a > 1 and a else
                        f"position {a}" + (" (the prompt)" if a == 0 else "") +
                        (", past block_size" if b > cfg.block_size else ""))
                raise CheckFailed(f"the cached logits of each call equal a full forward's (prompt {plan[0]}"
                                  + (f", then a chunk of {plan[1]}" if len(plan) > 1 else "") + ", then one at a time"
                                  + (", on past block_size" if N > cfg.block_size else "") + ")",
                                  f"a difference of {largest_difference(got, want):.3g} at {what}",
                                  diagnose(explain_cached, ls, mine, idx, parts[:i], (a, b)))


def lesson_cache(ls: Lesson):
    """The lesson's cache for the step's model: task 08's, or task 09's ring."""
    from gpt.kv_cache import KVCache
    from gpt.modern import RingKVCache

    cfg = ls.cfg
    kind = RingKVCache if ls.number == "09" else KVCache
    return kind(cfg.n_layer, cfg.n_head, cfg.block_size, cfg.n_embd // cfg.n_head)


def explain_cached(ls, model, idx, before: list, failing: tuple) -> Finding | None:
    """Why a cached call differs: the calls before it replayed into a fresh cache, then it, recorded: the
    positions it gave, whether attention read the cache, whether the cache moved on."""
    cache = Recording(lesson_cache(ls))
    with torch.no_grad():
        for a, b in before:
            model(idx[:, a:b], cache=cache)
        start, (a, b) = cache.length, failing
        seen = len(cache.attends), len(cache.advances), len(cache.layers_asked)
        _, trace = record(model, lambda: model(idx[:, a:b], cache=cache))
    attends, advances = cache.attends[seen[0]:], cache.advances[seen[1]:]
    for c in trace.calls:
        if c.fn == "embedding" and c.path.endswith("position_embedding"):
            want = torch.arange(start, start + b - a)
            if not torch.equal(c.args[0].flatten(), want):
                return explain_indices(c.path, want, c.args[0])
    if not attends:
        sa = [c for c in trace.calls if c.fn is None and c.path.endswith(".sa")]
        if sa and not any(c.arg(1, "cache") is not None for c in sa):
            if len(cache.layers_asked) == seen[2]:
                return Finding("cache-not-passed", "the model never gives its blocks their part of the cache "
                                                   "(cache.layer(i))", "each block reads and writes its own part of "
                               "the cache: the model gives each block its layer's part", "look at how GPT.forward "
                                                                                        "calls the blocks",
                               "GPT.forward")
            return Finding("cache-not-passed", "the blocks don't give their attention its part of the cache "
                                               "(self.sa is called without it)", "with a cache, each block passes its "
                           "part of the cache on to its attention, which stores the new keys and values there",
                           "look at how DropoutBlock.forward calls self.sa", "DropoutBlock.forward")
        return Finding("cache-ignored", "attention never reads the cache: the new tokens read only each other",
                       "given a cache, attention stores the new tokens' keys and values in it and lets their queries "
                       "read every key it holds (cache.attend)", "look at what CausalSelfAttention.forward does with "
                                                                 "cache", "CausalSelfAttention.forward")
    if advances != [b - a]:
        return Finding("cache-advance", f"the cache moved on by {advances or 'nothing'} after a call of {b - a} "
                                        f"token{'s' if b - a > 1 else ''}", "once every layer has stored the new "
                       "tokens, the model moves the cache on by their number, once", "look at where cache.advance is "
                                                                                     "called", "GPT.forward")
    if ls.number == "09":
        return Finding("cache", f"the call whose tokens start at position {start} reads the cache, and differs",
                       "the new tokens are turned by the angles of their own positions (from cache.start on), and "
                       "their queries read every key the cache holds", "the check 'RotaryAttention turns q and k by "
                       "position' looks at the same thing from closer", "RotaryAttention.forward")
    return None


def lesson_gpt(ls: Lesson):
    from gpt.model import GPT

    torch.manual_seed(0)
    cfg = ls.cfg
    return GPT(V, cfg.block_size, cfg.n_embd, cfg.n_head, cfg.n_layer).eval()


def new_cache(ls: Lesson, lesson: bool):
    from gpt import kv_cache

    cls = kv_cache.KVCache if lesson else ls.names["KVCache"]
    cfg = ls.cfg
    return cls(cfg.n_layer, cfg.n_head, cfg.block_size, cfg.n_embd // cfg.n_head)


def stored(cache) -> list:
    """A cache whose store is recorded: (layer, length before, the new keys, what it returned)."""
    log, original = [], cache.store

    def store(layer, k, v):
        before = cache.length
        out = original(layer, k, v)
        log.append((layer, before, k.detach().clone(), tuple(t.detach().clone() for t in out)))
        return out
    cache.store = store
    return log


def cache_run(ls: Lesson, plan: tuple, N: int):
    """The lesson's GPT with the learner's cache, the calls of plan (chunks, then one token at a time):
    None if every call's logits are a full forward's, else ((start, end) of the first call that differs,
    how much, why)."""
    model = lesson_gpt(ls)
    idx = ls.tokens(N, seed=5)[:1]
    with torch.no_grad():
        full = model(idx)[0]
        with ls.patched():
            cache = new_cache(ls, lesson=False)
            log = stored(cache)
            for a, b in chunks_for(N, plan):
                got = call(ls, lambda: model(idx[:, a:b], cache=cache)[0], f"(the call for positions {a}..{b - 1})")
                if not close(got, full[:, a:b]):
                    return (a, b), largest_difference(got, full[:, a:b]), diagnose(explain_store, ls, log, (b - a, b))
    return None


def explain_store(ls, log, window: tuple) -> Finding | None:
    """What store returned, against what it was given: every key stored so far for the layer, in order;
    if that was right, how attention_to_window reads a window: first one of the failing call's sizes
    (its queries, and the keys it read)."""
    given = {}
    for layer, before, k_new, out in log:
        given.setdefault(layer, []).append(k_new)
        want = torch.cat(given[layer], dim=2)
        k, T, n_want = out[0], k_new.size(2), want.size(2)
        if k.shape != want.shape:
            n = k.size(2)
            if n == T:
                where = f"store returns only the {T} new tokens' keys and values, where the cache holds {n_want}"
            elif n == before:
                where = f"store returns the {n} keys held before the new tokens, without theirs"
            elif n == ls.cfg.block_size:
                where = f"store returns all {n} slots of the cache, the empty ones included, where {n_want} are filled"
            else:
                where = f"store returns {n} keys where the cache holds {n_want}"
            return Finding("cache-window", where, "attention needs every key and value stored so far, the new tokens' "
                           "included, oldest first, and none of the empty slots", "look at the slice store returns",
                           "KVCache.store")
        d = differ(k, want, priority=(2,))
        if d is not None:
            t = (d.where + (0, 0, 0))[2]
            return Finding("cache-positions", f"store returns, at position {t}, another key than the one stored for "
                                              "that position: the new tokens are written over older ones",
                           "each new token's key and value go at its own position, after the ones the cache holds "
                           "(from cache.length on)", "look at where store writes", "KVCache.store")
    return explain_window_calls(ls, window)


def explain_window_calls(ls, first: tuple) -> Finding | None:
    """The windows were right: attention_to_window, then, at the sizes of first, then of a chunk."""
    torch.manual_seed(3)
    for Tq, Tk in (first, (3, 7), (1, 6), (4, 4)):
        q, k, v = (torch.randn(1, 2, n, 8) for n in (Tq, Tk, Tk))
        found = window_finding(ls, q, k, v)
        if found:
            return found
    return None


def window_finding(ls, q, k, v) -> Finding | None:
    Tq, Tk = q.size(-2), k.size(-2)
    want = lesson_window(q, k, v)
    try:
        got = ls.names["attention_to_window"](q, k, v)
    except NotImplementedError:
        raise
    except Exception as e:
        return Finding("error", f"attention_to_window({Tq} queries, {Tk} keys) fails: {learner_error(e, ls.file)}",
                       "the window holds Tk keys, of which the queries are the last Tq", "", "attention_to_window")
    if close(got, want):
        return None
    solution = "attention_to_window"
    candidates = {
        "top-left": F.scaled_dot_product_attention(q, k, v, is_causal=True) if Tq > 0 else None,
        "none": F.scaled_dot_product_attention(q, k, v),
        "itself excluded": masked_attention(q, k, v, Tk - Tq - 1),
        "the offset's sign": masked_attention(q, k, v, Tq - Tk),
    }
    words = {
        "top-left": f"query i reads the keys up to i counted from the window's start: the mask is aligned to the "
                    "top left (as PyTorch's is_causal is), not to the window's end",
        "none": f"the {Tq} queries read every key, the chunk's later tokens included (no mask)",
        "itself excluded": "each query reads the keys before its own position, but not its own",
        "the offset's sign": "the mask's offset has the wrong sign",
    }
    for name, t in candidates.items():
        if t is not None and got.shape == t.shape and close(got, t):
            return Finding("window", f"attention_to_window with {Tq} quer{'ies' if Tq > 1 else 'y'} and {Tk} keys: "
                                     f"{words[name]}",
                           "the queries are the window's last Tq positions: query i sits at position Tk - Tq + i and "
                           "reads the keys up to there", "draw the (Tq, Tk) mask for 3 queries over 7 keys", solution)
    d = differ(got, want, priority=(2,))
    return Finding("window", f"attention_to_window with {Tq} queries and {Tk} keys: {d.detail}",
                   "the queries are the window's last Tq positions: query i reads the keys up to position Tk - Tq + i",
                   "draw the (Tq, Tk) mask for 3 queries over 7 keys", solution)


def masked_attention(q, k, v, diagonal):
    Tq, Tk = q.size(-2), k.size(-2)
    mask = torch.ones(Tq, Tk, dtype=torch.bool).tril(diagonal=diagonal)
    if not mask.any(-1).all():
        return None
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def check_prompt_then_tokens(ls: Lesson):
    failed = cache_run(ls, (5,), ls.T)
    if failed:
        (a, b), diff, finding = failed
        raise CheckFailed("the logits of a 5-token prompt, then one token at a time, equal a full forward's",
                          f"a difference of {diff:.3g} at position {a}", finding)
    failed = cache_run(ls, (1,), 6)
    if failed:
        (a, b), diff, finding = failed
        raise CheckFailed("the logits of a 1-token prompt, then one token at a time, equal a full forward's",
                          f"a difference of {diff:.3g} at position {a}", finding)


def check_chunk(ls: Lesson):
    failed = cache_run(ls, (4, 3, 2), ls.T)
    if failed:
        (a, b), diff, finding = failed
        raise CheckFailed("the logits of a 4-token prompt, then chunks of 3 and 2 tokens, equal a full forward's",
                          f"a difference of {diff:.3g} at positions {a}..{b - 1}", finding)


def check_full_cache(ls: Lesson):
    """A full cache refuses one more token, and so does a chunk that would pass its end: storing past
    block_size must fail, saying so, rather than write over older keys or past the window."""
    cfg = ls.cfg
    hs = cfg.n_embd // cfg.n_head
    torch.manual_seed(6)
    for filled, more in ((cfg.block_size, 1), (cfg.block_size - 2, 3)):
        cache = call(ls, lambda: new_cache(ls, lesson=False))
        for layer in range(cfg.n_layer):
            kv = torch.randn(1, cfg.n_head, filled, hs)
            call(ls, lambda: cache.store(layer, kv, kv))
        cache.advance(filled)
        extra = torch.randn(1, cfg.n_head, more, hs)
        try:
            cache.store(0, extra, extra)
        except NotImplementedError:
            raise
        except Exception:
            continue
        raise CheckFailed(f"an error when {more} more token{'s' if more > 1 else ''} go into a cache of "
                          f"{cfg.block_size} positions that holds {filled}", "no error", Finding(
                              "overflow", f"store took {more} more token{'s' if more > 1 else ''} into a cache holding "
                                          f"{filled} of its {cfg.block_size} positions without a word",
                              "a cache of block_size positions can't hold more: store refuses, saying so, instead of "
                              "writing over older keys or dropping some", "look at what store does when length + T "
                                                                          "passes the end", "KVCache.store"))


def check_stream(ls: Lesson):
    """gpt.generate.stream with the learner's cache, through the window filling up twice: the same tokens
    as with the lesson's cache (greedy, so that they can be compared)."""
    from gpt.generate import stream

    model = lesson_gpt(ls)
    prompt = ls.tokens(5, seed=7)[0].tolist()
    pick = lambda logits: int(logits.argmax())  # noqa: E731
    n = 3 * ls.T
    want = [t for _, t in zip(range(n), stream(model, prompt, pick))]
    with ls.patched():
        tokens = stream(model, prompt, pick)
        got = [t for _, t in zip(range(n), call(ls, lambda: tokens))]
    first = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), None)
    if first is None:
        return
    why = next((failed[2] for plan in ((5,), (4, 3, 2)) if (failed := cache_run(ls, plan, ls.T)) and failed[2]), None)
    filled = ls.T - len(prompt)
    raise CheckFailed(f"the same {n} tokens as the lesson's cache, through {n // ls.T - 1} refills of a full window",
                      f"another token at token {first}" + (" (after the window filled)" if first >= filled else ""),
                      why or Finding("stream", f"streaming with your cache departs from the lesson's at token {first}",
                                     "when the cache is full, stream starts a new one from the newest half of the "
                                     "window: a fresh cache must hold nothing, and store must fill it from position 0",
                                     "", "KVCache.store"))


def check_window(ls: Lesson):
    torch.manual_seed(2)
    for shape in ((1, 2, 1, 1, 8), (2, 3, 1, 5, 4), (2, 3, 3, 7, 6), (1, 2, 4, 4, 8), (1, 1, 2, 9, 4)):
        b, nh, Tq, Tk, hs = shape
        q, k, v = torch.randn(b, nh, Tq, hs), torch.randn(b, nh, Tk, hs), torch.randn(b, nh, Tk, hs)
        found = window_finding(ls, q, k, v)
        if found:
            raise CheckFailed(f"the lesson's output for {Tq} quer{'ies' if Tq > 1 else 'y'} over a window of {Tk} "
                              f"keys (heads of {hs})", "another", found)
