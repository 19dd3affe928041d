"""Do the course yourself: every step as an exercise that this repository grades.

    python -m course.exercise start 05      # writes mine/step05.py: step 05's classes, their bodies to write
    python -m course.exercise check 05      # runs step 05's checks against your classes
    python -m course.exercise check 05 --train    # and trains your model as task05.py does (seconds to minutes)
    python -m course.exercise check 05 --solution # the repository's own classes, which pass every check

The skeleton is made from the solution itself (gpt/model.py, gpt/kv_cache.py, gpt/modern.py): the
classes the step introduces, with their signatures, docstrings and shape comments, and the bodies a
learner writes replaced by `raise NotImplementedError` and a hint. Everything else (the earlier steps,
the embeddings, the loop) is the solution's, imported at the top of the file, so step 05 needs only
step 05's classes.

The checks are the properties the lessons claim, the same ones the repository's tests prove of its
own classes: shapes; causality (changing later tokens changes no earlier output); the same outputs as
the solution when given the same weights (copied across, compared to 1e-5); the loss at
initialisation near ln(vocabulary) (as the untrained solution's); step 00's loss estimate and
`generate` (a mean per split, the context cropped to block_size, the model's mode put back); gradients reach every parameter; dropout off in eval; the cached
stream equal to a full forward (08); scores that depend only on the offset (09). A check that fails
says what it expected, what came out, and the mistake that usually causes it. --train then trains
your model with the step's own settings and compares its final val loss with the repository's band
(assets/bands.json): within 3 standard deviations of the mean over 3 seeds, or 0.01, whichever is
wider. What the checks don't prove: that your code is fast, or right on inputs unlike these.
"""

import argparse
import ast
import contextlib
import dataclasses
import importlib
import importlib.util
import inspect
import io
import math
import re
import signal
import sys
import textwrap
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from gpt.errors import UserError
from .interrupts import in_main_thread
from .reference import ROOT, band, hardware, normal_width, script


@dataclass
class Step:
    """What a learner writes in one step: for each class, the methods to write (the others, such as
    an __init__ that only names the layers, are given), and the functions to write."""
    task: str
    module: str  # where the solution lives
    classes: dict  # class name -> methods the learner writes
    functions: tuple = ()
    hints: dict = field(default_factory=dict)  # "Class.method" -> the one-line hint in the skeleton
    patch: tuple = ()  # modules (besides the task script) whose names the learner's classes replace in a check
    extras: tuple = ()  # (module, function names) to write from other modules: the loop's pieces


STEPS = {
    "00": Step("task00", "gpt.model", {"Bigram": ("forward",)},
               hints={"Bigram.forward": "look up each token's row of logits; the loss is F.cross_entropy of the logits",
                      "estimate_loss": "in eval mode, without gradients: the mean loss over eval_iters batches of "
                                       "each split (get_batch), the model's mode put back after",
                      "generate": "eval mode; for each new token: crop idx to the last block_size tokens, take the "
                                  "last position's logits, sample (sample_next), append"},
               extras=(("gpt.train", ("estimate_loss",)), ("gpt.generate", ("generate",)))),
    "01": Step("task01", "gpt.model", {"AttentionHead": ("forward",)},
               hints={"AttentionHead.forward": "q k^T scaled by head_size**-0.5, the future masked with -inf, "
                                               "softmax over the keys, times v"}),
    "02": Step("task02", "gpt.model", {"MultiHeadAttention": ("queries_keys_values", "forward")},
               hints={"MultiHeadAttention.queries_keys_values": "split qkv(x) into q, k, v and view each as "
                                                                "(B, nh, T, hs)",
                      "MultiHeadAttention.forward": "attend within each head, then put the heads side by side"}),
    "03": Step("task03", "gpt.model", {"FeedForward": ("__init__", "forward")},
               hints={"FeedForward.__init__": "super().__init__(), then self.net = nn.Sequential(nn.Linear(n_embd, "
                                             "n_embd), nn.ReLU())",
                      "FeedForward.forward": "the same Linear + ReLU for every token"}),
    "04": Step("task04", "gpt.model", {"Block": ("forward",)},
               hints={"Block.forward": "communication, then computation: ffwd(sa(x))"}),
    "05": Step("task05", "gpt.model", {"ProjectedAttention": ("forward",), "MLP": ("__init__", "forward"),
                                       "ResidualBlock": ("forward",)},
               hints={"ProjectedAttention.forward": "the heads' output through self.proj",
                      "MLP.__init__": "super().__init__(), then self.net = nn.Sequential(Linear(n_embd, 4 n_embd), "
                                      "ReLU, Linear(4 n_embd, n_embd))",
                      "MLP.forward": "self.net(x)",
                      "ResidualBlock.forward": "add each sub-layer's output to x: x = x + self.sa(x), then the same for ffwd"}),
    "06": Step("task06", "gpt.model", {"PreLNBlock": ("forward",)},
               hints={"PreLNBlock.forward": "each sub-layer reads a LayerNorm of x: x = x + self.sa(self.ln1(x))"}),
    "07": Step("task07", "gpt.model", {"CausalSelfAttention": ("forward",), "DropoutBlock": ("forward",),
                                       "GPT": ("forward",)},
               hints={"CausalSelfAttention.forward": "task 05's attention, with dropout_p=self.dropout while "
                                                     "training (and, with a cache, cache.attend(q, k, v))",
                      "DropoutBlock.forward": "pre-LN, with self.dropout on what each sub-layer adds",
                      "GPT.forward": "token + position embeddings, the blocks, ln_f, lm_head, the loss"}),
    "08": Step("task08", "gpt.kv_cache", {"KVCache": ("store",)}, ("attention_to_window",),
               hints={"KVCache.store": "write k, v at positions length..length+T-1 of the layer, return all up to there",
                      "attention_to_window": "query i may read keys up to Tk - Tq + i"},
               patch=("gpt.model", "gpt.kv_cache")),
    "09": Step("task09", "gpt.modern", {"Rotary": ("forward",), "RotaryAttention": ("forward",)}, ("apply_rope",),
               hints={"Rotary.forward": "the angles of positions start..start+T-1, then apply_rope",
                      "RotaryAttention.forward": "turn q and k by their positions (start from the cache, if any) "
                                                 "before they meet",
                      "apply_rope": "turn each pair (x1, x2) by its angle: (x1 cos - x2 sin, x1 sin + x2 cos)"},
               patch=("gpt.modern",)),
}


# --- the skeleton -----------------------------------------------------------------------------------

SHAPE = re.compile(r"#\s*(\(.*)$")  # a trailing comment that gives a shape, "# (B, T, C) -> (B, T, hs)"


def skeleton(number: str) -> str:
    """The file `start` writes: the step's classes and functions from the solution's source, with the
    bodies to write replaced by their docstring, their shape comments and a NotImplementedError."""
    step = STEPS[number]
    module = importlib.import_module(step.module)
    source = Path(module.__file__).read_text()
    lines = source.splitlines()
    tree = ast.parse(source)
    mine = set(step.classes) | set(step.functions) | {f for _, fs in step.extras for f in fs}
    given = sorted(name for name, value in vars(module).items()  # what the solution's code can refer to
                   if not name.startswith("_") and name not in mine and not inspect.ismodule(value))
    parts = [f'"""Step {number} of the course, for you to write: {", ".join(sorted(mine))}.\n\n'
             f"Write the bodies that raise NotImplementedError (the hints say what the lesson does), then:\n\n"
             f"    python -m course.exercise check {number}\n\n"
             f"Everything else is the repository's own code, imported below; keep the names, arguments and\n"
             f"layer names as they are: the checks copy the solution's weights into your classes.\n"
             f'"""\n',
             "import math  # noqa: F401\n\nimport torch  # noqa: F401\nimport torch.nn as nn  # noqa: F401\n"
             "import torch.nn.functional as F  # noqa: F401\n",
             f"from {step.module} import (  # noqa: F401\n" + textwrap.fill(", ".join(given), 96, initial_indent="    ",
                                                                   subsequent_indent="    ") + ")\n"]
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name in step.classes:
            parts.append(class_skeleton(node, lines, step.classes[node.name], step.hints))
        elif isinstance(node, ast.FunctionDef) and node.name in step.functions:
            parts.append(function_skeleton(node, lines, step.hints.get(node.name, "")))
    for name, functions in step.extras:  # the loop's pieces the step is about, from their own modules
        extra = importlib.import_module(name)
        extra_lines = Path(extra.__file__).read_text().splitlines()
        names = sorted(n for n, v in vars(extra).items() if not n.startswith("_") and n not in mine
                       and n not in functions and not inspect.ismodule(v))
        parts.insert(3, f"from {name} import (  # noqa: F401\n" + textwrap.fill(", ".join(names), 96,
                        initial_indent="    ", subsequent_indent="    ") + ")\n")
        for node in ast.parse("\n".join(extra_lines)).body:
            if isinstance(node, ast.FunctionDef) and node.name in functions:
                parts.append(function_skeleton(node, extra_lines, step.hints.get(node.name, "")))
    imports = 3 + len(step.extras)
    return "\n\n".join(parts[:imports]) + "\n\n" + "\n\n\n".join(parts[imports:]) + "\n"


def class_skeleton(node: ast.ClassDef, lines: list[str], to_write: tuple, hints: dict) -> str:
    out, cursor = [], node.lineno - 1
    for item in node.body:
        if isinstance(item, ast.FunctionDef) and item.name in to_write:
            out += lines[cursor:item.lineno - 1]
            out.append(function_skeleton(item, lines, hints.get(f"{node.name}.{item.name}", ""), f"{node.name}."))
            cursor = item.end_lineno
    out += lines[cursor:node.end_lineno]
    return "\n".join(out)


def function_skeleton(node: ast.FunctionDef, lines: list[str], hint: str, owner: str = "") -> str:
    body = node.body
    has_doc = isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant)
    head_end = body[0].end_lineno if has_doc else body[0].lineno - 1
    head = lines[node.lineno - 1 - len(node.decorator_list):head_end]
    indent = " " * (body[0].col_offset)
    shapes = [f"{indent}# {m.group(1)}" for line in lines[head_end:node.end_lineno] if (m := SHAPE.search(line))]
    return "\n".join(head + shapes + [f'{indent}raise NotImplementedError("write {owner}{node.name}: {hint}")'])


# --- loading the learner's file ------------------------------------------------------------------------

def learner_file(folder: Path, number: str) -> Path:
    return folder / f"step{number}.py"


def load_learner(path: Path):
    """The learner's module, or a UserError that says what is wrong with the file (with its line)."""
    if not path.is_file():
        raise UserError(f"no {path}: start the step first: python -m course.exercise start {path.stem[4:]}")
    try:
        source = path.read_text(encoding="utf-8")
        compile(source, str(path), "exec")
    except UnicodeDecodeError as e:
        raise UserError(f"{path} is not UTF-8 text (byte {e.start}): save it as UTF-8") from None
    except SyntaxError as e:
        line = (e.text or "").rstrip("\n")
        raise UserError(f"{path}, line {e.lineno}: {e.msg}\n    {line}\n    {' ' * max(0, (e.offset or 1) - 1)}^") from None
    spec = importlib.util.spec_from_file_location(f"learner_step_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        with time_limit(TIME_LIMIT):
            spec.loader.exec_module(module)
    except Exception as e:
        frames = [f for f in traceback.extract_tb(e.__traceback__) if f.filename == str(path)]
        where = f", line {frames[-1].lineno}" if frames else ""
        raise UserError(f"{path} fails when it is imported{where}: {type(e).__name__}: {e}") from None
    return module


def check_signatures(step: Step, learner, solution) -> None:
    """Each class and function is there, and takes the arguments the solution's takes."""
    for name in [*step.classes, *step.functions, *(f for _, fs in step.extras for f in fs)]:
        if not hasattr(learner, name):
            raise UserError(f"your file has no {name}: keep the skeleton's names (python -m course.exercise start "
                            f"{step.task[4:]} writes a fresh one elsewhere with --folder)")
        theirs = next((getattr(importlib.import_module(m), name) for m, fs in step.extras if name in fs), None)
        targets = [(name, getattr(learner, name), theirs or getattr(solution, name))]
        if inspect.isclass(targets[0][1]):
            targets = [(f"{name}.{m}", getattr(targets[0][1], m), getattr(targets[0][2], m))
                       for m in ("__init__", *step.classes[name]) if hasattr(targets[0][2], m)]
        for label, mine, theirs in targets:
            ours, want = list(inspect.signature(mine).parameters), list(inspect.signature(theirs).parameters)
            if ours != want:
                missing = [p for p in want if p not in ours]
                extra = [p for p in ours if p not in want]
                what = (f"add {', '.join(missing)}" if missing else "") + ("; " if missing and extra else "") + \
                       (f"remove {', '.join(extra)}" if extra else "") or "keep the order"
                raise UserError(f"{label} takes ({', '.join(ours)}); the lesson's takes ({', '.join(want)}): {what}")


# --- the checks ----------------------------------------------------------------------------------------

class CheckFailed(Exception):
    def __init__(self, expected: str, got: str, hint: str):
        super().__init__(hint)
        self.expected, self.got, self.hint = expected, got, hint


def expect(condition: bool, expected: str, got: str, hint: str) -> None:
    if not condition:
        raise CheckFailed(expected, got, hint)


@contextlib.contextmanager
def replaced(modules, names: dict):
    """The learner's classes in place of the solution's in these modules, for the length of a check."""
    saved = [(m, n, getattr(m, n)) for m in modules for n in names if hasattr(m, n)]
    for m, n, _ in saved:
        setattr(m, n, names[n])
    try:
        yield
    finally:
        for m, n, value in saved:
            setattr(m, n, value)


V, B = 17, 3  # a small vocabulary and batch for the checks


class Context:
    """The step's model built twice with the task's own build_model: from the solution's classes and
    from the learner's, the same seed, small sizes."""

    def __init__(self, number: str, learner):
        self.number, self.step, self.learner = number, STEPS[number], learner
        self.names = {n: getattr(learner, n) for n in [*self.step.classes, *self.step.functions]}
        self.extras = {n: getattr(learner, n, None) or getattr(importlib.import_module(m), n)  # --solution: their own
                       for m, fs in self.step.extras for n in fs}
        task = self.step.task if number != "08" else "task07"  # task 08 streams from task 07's model
        self.task = importlib.import_module(Path(script(task)).stem)
        self.modules = [self.task] + [importlib.import_module(m) for m in self.step.patch]
        self.cfg = small_config(self.task)
        self.T = self.cfg.block_size

    def build(self, learners: bool, **changes):
        cfg = dataclasses.replace(self.cfg, **changes)
        torch.manual_seed(0)
        with replaced(self.modules, self.names) if learners else contextlib.nullcontext():
            return self.task.build_model(cfg, V)

    def models(self, **changes):
        """(solution's, learner's) models, the learner's with the solution's weights copied in."""
        ref, mine = self.build(False, **changes), self.build(True, **changes)
        mine.load_state_dict(ref.state_dict())
        return ref.eval(), mine.eval()

    def tokens(self, T=None, seed=1):
        return torch.randint(V, (B, T or self.T), generator=torch.Generator().manual_seed(seed))

    def patched(self):
        return replaced(self.modules, self.names)


def small_config(task):
    cfg = task.CONFIG if hasattr(task, "CONFIG") else None
    if cfg is None:  # tasks 07 and 09 start from a preset
        from .presets import TASK07, TASK09
        cfg = TASK09 if task.__name__.startswith("task09") else TASK07["cpu"]
        cfg = dataclasses.replace(cfg, n_embd=32, n_head=4, n_layer=2, block_size=16, dropout=0.0)
    return cfg


def max_diff(a, b) -> float:
    """The largest difference; NaN (a row of scores all -inf, say) counts as infinitely far."""
    return torch.nan_to_num((a - b).abs(), nan=float("inf")).max().item()


def check_parameters(ctx: Context):
    ref, mine = ctx.build(False), ctx.build(True)
    a = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    b = {k: tuple(v.shape) for k, v in mine.state_dict().items()}
    expect(a == b, f"parameters {sorted(a.items())}", f"{sorted(b.items())}",
           "name and size the layers as the skeleton does: the checks copy the solution's weights into yours")


def check_shapes(ctx: Context):
    _, mine = ctx.models()
    idx = ctx.tokens()
    logits, loss = mine(idx, idx)
    expect(tuple(logits.shape) == (B, ctx.T, V), f"logits of shape {(B, ctx.T, V)}", f"{tuple(logits.shape)}",
           "logits are (B, T, vocab_size): one row of next-token scores per position")
    expect(loss is not None and loss.dim() == 0 and torch.isfinite(loss), "a finite scalar loss with targets",
           f"{loss!r}", "the loss is F.cross_entropy(logits.view(B*T, V), targets.view(B*T))")
    expect(mine(idx)[1] is None, "no loss without targets", "a loss", "return None for the loss when targets is None")


def check_initial_loss(ctx: Context):
    """Untrained, a model should be about as unsure as a uniform guess, ln(V): as unsure as the
    solution's own untrained model (the same seed, so the same weights), whose residual streams
    (tasks 05 on) make it somewhat surer than uniform."""
    ref, mine = ctx.build(False).eval(), ctx.build(True).eval()
    idx = ctx.tokens()
    theirs, loss = ref(idx, idx)[1].item(), mine(idx, idx)[1].item()
    expect(abs(loss - theirs) < 0.1, f"about {theirs:.3f}, the untrained solution's (ln({V}) = {math.log(V):.2f} for a "
           f"uniform guess)", f"{loss:.3f}", "a loss far from the untrained solution's means the logits are scaled "
           "wrong, or the loss is not the cross-entropy of the logits")


def check_same_as_solution(ctx: Context):
    ref, mine = ctx.models()
    idx = ctx.tokens()
    with torch.no_grad():
        (a, la), (b, lb) = ref(idx, idx), mine(idx, idx)
    diff = max_diff(a, b)
    if diff >= 1e-5:
        raise CheckFailed("the solution's logits to 1e-5, given its weights", f"a difference of {diff:.3g}",
                          diagnose(ctx, ref, mine, idx) or "compare your forward with the lesson line by line")
    expect(abs(la.item() - lb.item()) < 1e-5, f"the solution's loss {la.item():.6f}", f"{lb.item():.6f}",
           softmax_before_loss(b, lb, idx) or "the loss is F.cross_entropy of the logits and the targets")


def softmax_before_loss(logits, loss, targets) -> str | None:
    wrong = F.cross_entropy(F.softmax(logits, -1).flatten(0, 1), targets.flatten())
    if abs(wrong.item() - loss.item()) < 1e-5:
        return "you applied softmax before F.cross_entropy, which takes the logits (it applies log-softmax itself)"
    return None


def diagnose(ctx: Context, ref, mine, idx) -> str | None:
    """The mistake the learner's outputs match, if one of the well-known ones of this step (the
    steps whose model is a LanguageModel: embeddings, then a body, the step's idea)."""
    if ctx.number not in MISTAKES:
        return None
    x = ref.token_embedding(idx) + ref.position_embedding(torch.arange(idx.size(1)))  # (B, T, C)
    with torch.no_grad():
        mine_body = mine.body(x)
        for hint, variant in MISTAKES[ctx.number](ref.body, ctx.cfg):
            if max_diff(variant(x), mine_body) < 1e-5:
                return hint
    return None


def attention(q, k, v, scale, softmax_dim=-1, masked=True):
    """The lesson's attention written out, with the knobs its classic mistakes turn."""
    T = q.size(-2)
    scores = q @ k.transpose(-2, -1) * scale  # (..., T, T)
    if masked:
        scores = scores.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf"))
    return F.softmax(scores, dim=softmax_dim) @ v  # (..., T, hs)


def head_mistakes(qkv, head_size: int, n_embd: int, finish):
    """What attention computes with each classic mistake: qkv(x) -> q, k, v; finish(out) -> the body's output."""
    cases = (("scale the scores by head_size ** -0.5, not C ** -0.5 (n_embd): each head's dot products are sums "
              "over head_size channels", dict(scale=n_embd ** -0.5)),
             ("softmax over the last dimension, the keys (dim=-1): each query's weights must add up to 1",
              dict(scale=head_size ** -0.5, softmax_dim=-2)),
             ("mask the future: scores of keys after the query set to -inf before the softmax",
              dict(scale=head_size ** -0.5, masked=False)))
    return [(hint, lambda x, kw=kw: finish(attention(*qkv(x), **kw))) for hint, kw in cases]


def one_head_mistakes(head, cfg):
    return head_mistakes(lambda x: (head.query(x), head.key(x), head.value(x)), head.key.out_features,
                         cfg.n_embd, lambda out: out)


def multi_head_mistakes(attn, cfg):
    from gpt.model import concat_heads

    return head_mistakes(attn.queries_keys_values, attn.head_size, cfg.n_embd, concat_heads)


def through_blocks(body, n_layer: int, block_forward):
    """The body (its n_layer blocks, then what follows them) with each block's forward replaced."""
    def run(x):
        for i, m in enumerate(body):
            x = block_forward(m, x) if i < n_layer else m(x)
        return x
    return run


def residual_mistakes(body, cfg):
    return [("add each sub-layer's output to its input (x = x + self.sa(x)): without the residual stream the "
             "block replaces x", through_blocks(body, cfg.n_layer, lambda m, x: m.ffwd(m.sa(x))))]


def post_ln(m, x):
    x = m.ln1(x + m.sa(x))
    return m.ln2(x + m.ffwd(x))


def pre_ln_mistakes(body, cfg):
    return [("pre-LN: each sub-layer reads self.ln1(x) and adds to x (x = x + self.sa(self.ln1(x))); you "
             "normalised after the addition (post-LN)", through_blocks(body, cfg.n_layer, post_ln))]


# The steps whose classic mistakes the checks name, and how to compute what each mistake gives.
MISTAKES = {"01": one_head_mistakes, "02": multi_head_mistakes, "05": residual_mistakes, "06": pre_ln_mistakes}


def check_causal(ctx: Context):
    _, mine = ctx.models()
    idx = ctx.tokens()
    t = ctx.T // 2
    changed = idx.clone()
    changed[:, t + 1:] = (changed[:, t + 1:] + 1) % V
    with torch.no_grad():
        diff = max_diff(mine(idx)[0][:, :t + 1], mine(changed)[0][:, :t + 1])
    expect(diff < 1e-6, f"the outputs up to position {t} unchanged when later tokens change",
           f"a change of {diff:.3g}", "mask the future: scores of keys after the query set to -inf before the "
           "softmax, and the softmax over the keys (dim=-1)")


def check_gradients(ctx: Context):
    mine = ctx.build(True).train()
    idx = ctx.tokens()
    mine(idx, idx)[1].backward()
    dead = [n for n, p in mine.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    expect(not dead, "a gradient for every parameter", f"none for {', '.join(dead[:5])}",
           "every layer the model makes must be used in forward (a layer made but never called gets no gradient)")


def check_dropout_off_in_eval(ctx: Context):
    ref, mine = ctx.models(dropout=0.5)
    idx = ctx.tokens()
    with torch.no_grad():
        a, b, c = mine(idx)[0], mine(idx)[0], ref(idx)[0]
    expect(max_diff(a, b) == 0 and max_diff(a, c) < 1e-5, "in eval mode, no dropout: the solution's logits",
           f"a difference of {max_diff(a, c):.3g}", "dropout only while training: nn.Dropout, or dropout_p="
           "self.dropout if self.training else 0.0, which model.eval() switches off")
    mine.train()
    with torch.no_grad():
        expect(max_diff(mine(idx)[0], mine(idx)[0]) > 0, "in training mode, dropout: two forwards differ",
               "the same logits", "apply dropout while training (self.dropout, dropout_p)")


def check_cache(ctx: Context):
    from gpt.model import GPT

    torch.manual_seed(0)
    with ctx.patched():
        model = GPT(V, 16, 32, 4, 2).eval()
        idx = ctx.tokens(16)[:1]
        with torch.no_grad():
            full = model(idx)[0]
            cache = model.new_cache()
            parts = [model(idx[:, :5], cache=cache)[0]] + [model(idx[:, t:t + 1], cache=cache)[0] for t in range(5, 16)]
    diff = max_diff(torch.cat(parts, 1), full)
    expect(diff < 1e-5, "the logits of a 5-token prompt, then one token at a time, equal a full forward",
           f"a difference of {diff:.3g}", "keep each new token's key and value at its own position "
           "(cache.length onwards) and return every one stored so far: a cache that forgets positions "
           "makes later tokens read the wrong keys")


def check_rope_relative(ctx: Context):
    class Start:  # a stand-in for a cache: tokens start at this position, nothing stored before them
        def __init__(self, start):
            self.start = start

        def attend(self, q, k, v):
            from gpt.model import causal_attention
            return causal_attention(q, k, v)

    with ctx.patched():
        from gpt import modern
        torch.manual_seed(0)
        sa = modern.RotaryAttention(32, 4, 16, 0.0).eval()
        x = torch.randn(1, 8, 32)
        with torch.no_grad():
            at0, at5 = sa(x, Start(0)), sa(x, Start(5))
    diff = max_diff(at0, at5)
    expect(diff < 1e-4, "the same output when the whole window starts 5 positions later (scores depend only on "
           "the offset)", f"a difference of {diff:.3g}", "turn both q and k, each by its own position "
           "(start..start+T-1): a rotation by absolute position in one of them only breaks the relative scores")


def check_estimate_loss(ctx: Context):
    from gpt.model import Bigram
    from gpt.train import estimate_loss

    torch.manual_seed(0)
    model = Bigram(V).train()
    data = torch.randint(V, (2000,), generator=torch.Generator().manual_seed(2))
    splits = {"train": data[:1500], "val": data[1500:]}
    with contextlib.redirect_stdout(io.StringIO()):
        got = ctx.extras["estimate_loss"](model, splits, 8, 8, 50, torch.Generator().manual_seed(3))
    expect(isinstance(got, dict) and set(got) == {"train", "val"}, "a dict {'train': loss, 'val': loss}",
           f"{got!r}", "return one mean loss per split, keyed by the split's name")
    want = estimate_loss(model, splits, 8, 8, 50, torch.Generator().manual_seed(3))
    for split in want:
        value = float(got[split])
        expect(abs(value - want[split]) < 0.05, f"{split} about {want[split]:.3f} (the mean loss over 50 batches)",
               f"{value:.3f}", "the mean of the batches' losses (not their sum), in eval mode")
    expect(model.training, "the model back in training mode after", "eval mode",
           "put the model back in the mode it was in: model.train() after model.eval()")


class AlwaysThree(torch.nn.Module):
    """A model that is sure the next token is 3, and notes the longest context it was given."""

    def __init__(self):
        super().__init__()
        self.block_size, self.longest = 4, 0
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def forward(self, idx, targets=None):
        self.longest = max(self.longest, idx.size(1))
        logits = torch.full((*idx.shape, V), -1e4) + self.weight
        logits[..., 3] = 1e4
        return logits, None


def check_generate(ctx: Context):
    model = AlwaysThree().train()
    idx = torch.tensor([[1, 2]])
    with contextlib.redirect_stdout(io.StringIO()):
        out = ctx.extras["generate"](model, idx, 10, generator=torch.Generator().manual_seed(0))
    expect(tuple(out.shape) == (1, 12), "shape (1, 2 + 10): the context, then the new tokens", f"{tuple(out.shape)}",
           "append each new token to idx (torch.cat along dim 1) and return the whole sequence")
    expect(out[0, :2].tolist() == [1, 2] and out[0, 2:].tolist() == [3] * 10,
           "the context kept, then the model's sure choice, 3, every time", f"{out[0].tolist()}",
           "sample from the logits of the last position, logits[:, -1, :]")
    expect(model.longest <= model.block_size, f"at most block_size = {model.block_size} tokens of context per call",
           f"{model.longest}", "crop the context to the last block_size tokens: idx[:, -model.block_size:]")
    expect(model.training, "the model back in training mode after", "eval mode",
           "generate in eval mode, then put the model back in the mode it was in")


CHECKS = {
    "parameters": check_parameters, "shapes": check_shapes, "initial loss": check_initial_loss,
    "same as the solution": check_same_as_solution, "causal": check_causal, "gradients": check_gradients,
    "dropout off in eval": check_dropout_off_in_eval, "cached stream equals a full forward": check_cache,
    "scores depend only on the offset": check_rope_relative, "estimate_loss": check_estimate_loss,
    "generate": check_generate,
}
MODEL_CHECKS = ("parameters", "shapes", "initial loss", "same as the solution", "gradients")
STEP_CHECKS = {"00": (*MODEL_CHECKS, "estimate_loss", "generate"), **{f"0{i}": (*MODEL_CHECKS, "causal") for i in range(1, 7)},
               "07": (*MODEL_CHECKS, "causal", "dropout off in eval"),
               "08": ("cached stream equals a full forward",),
               "09": (*MODEL_CHECKS, "causal", "scores depend only on the offset")}
TIME_LIMIT = 60  # seconds a check may take: code that hangs fails instead of waiting forever


@contextlib.contextmanager
def time_limit(seconds: int):
    """Raise TimeoutError after seconds; without SIGALRM (Windows) or off the main thread, no limit."""
    if not hasattr(signal, "SIGALRM") or not in_main_thread():
        yield
        return

    def stop(*_):
        raise TimeoutError(f"took longer than {seconds} s")
    previous = signal.signal(signal.SIGALRM, stop)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def run_check(name: str, ctx: Context) -> tuple[bool, str]:
    try:
        with time_limit(TIME_LIMIT), contextlib.redirect_stdout(io.StringIO()):
            CHECKS[name](ctx)
        return True, f"pass  {name}"
    except CheckFailed as e:
        return False, f"FAIL  {name}: expected {e.expected}; got {e.got}\n      hint: {e.hint}"
    except NotImplementedError as e:
        return False, f"FAIL  {name}: not written yet ({e})"
    except TimeoutError as e:
        return False, f"FAIL  {name}: {e}: an endless loop, or far too much work for these sizes"
    except MemoryError:
        return False, f"FAIL  {name}: ran out of memory at these small sizes: something grows without bound"
    except Exception as e:  # the learner's code raised: say where, in their file
        if "allocate" in str(e):  # PyTorch's out-of-memory error
            return False, f"FAIL  {name}: ran out of memory at these small sizes: something grows without bound"
        frames = [f for f in traceback.extract_tb(e.__traceback__) if f.filename == ctx.learner.__file__]
        where = f" (your line {frames[-1].lineno}: {frames[-1].line})" if frames else ""
        return False, f"FAIL  {name}: {type(e).__name__}: {e}{where}"


def train_check(ctx: Context) -> tuple[bool, str]:
    """The learner's model trained as the task trains it; its final val loss against the band."""
    from .device import choose_precision, resolve_device

    device = resolve_device("auto")
    where = hardware(device, choose_precision(device).name)
    reference, measured_on = band(ctx.step.task, where)
    if ctx.number == "08" or reference is None:
        return True, "pass  training: nothing to train in this step (task 08 streams from task 07's model)"
    out = io.StringIO()
    args = ["--runs", "", "--sample-tokens", "0"] + (["--checkpoint", ""] if ctx.number in ("07", "09") else [])
    if ctx.number == "07":
        args += ["--preset", "cpu"]
    with ctx.patched(), contextlib.redirect_stdout(out):
        ctx.task.main(args)
    lines = [line for line in out.getvalue().splitlines() if line.startswith("Epoch ")]
    final = float(re.search(r"avg val loss (\S+)", lines[-1]).group(1))
    width = normal_width(reference)
    table = "\n".join(f"      {line}" for line in lines)
    ok = abs(final - reference["mean"]) <= width
    elsewhere = "" if measured_on == where else f"; measured on {measured_on}, not on this {where}, whose " \
                                                 f"numbers differ a little"
    verdict = (f"{'pass' if ok else 'FAIL'}  training: final val {final:.4f}, the band {reference['mean']:.4f} ± "
               f"{width:.4f} (3 standard deviations over {reference['seeds']} seeds, or 0.01{elsewhere})\n{table}")
    if not ok:
        verdict += "\n      hint: the checks above pass but it trains differently: compare how the loss falls"
    return ok, verdict


def check(number: str, folder: Path, solution: bool = False, train: bool = False) -> int:
    step = STEPS[number]
    reference = importlib.import_module(step.module)
    learner = reference if solution else load_learner(learner_file(folder, number))
    if not solution:
        check_signatures(step, learner, reference)
    ctx = Context(number, learner)
    results = [run_check(name, ctx) for name in STEP_CHECKS[number]]
    if train:
        results.append(train_check(ctx))
    for _, line in results:
        print(line)
    passed = sum(ok for ok, _ in results)
    whose = "the solution" if solution else str(learner_file(folder, number))
    print(f"\nstep {number} ({whose}): {passed} of {len(results)} checks pass" +
          ("" if passed < len(results) or train else "; --train trains it as the task does"))
    return 0 if passed == len(results) else 1


def start(number: str, folder: Path) -> int:
    path = learner_file(folder, number)
    if path.exists():
        print(f"{path} already exists, and holds your work: it was left as it is. Check it with: python -m "
              f"course.exercise check {number} (or start afresh elsewhere with --folder DIR)")
        return 0
    from .files import atomic_write

    with atomic_write(path, "w", encoding="utf-8") as f:
        f.write(skeleton(number))
    print(f"wrote {path}: write the bodies that raise NotImplementedError, then: python -m course.exercise check {number}")
    return 0


def main(argv=None) -> int:
    from .config import Parser
    from .exits import friendly_errors

    parser = Parser(prog="python -m course.exercise", description=__doc__,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=("start", "check"))
    parser.add_argument("step", help=f"the step: {', '.join(STEPS)}")
    parser.add_argument("--folder", default="mine", help="where your files are (default: %(default)s)")
    parser.add_argument("--solution", action="store_true", help="check: the repository's own classes")
    parser.add_argument("--train", action="store_true", help="check: also train your model as the task does")
    args = parser.parse_args(argv)
    number = args.step.zfill(2)
    if number not in STEPS:
        parser.error(f"there is no step {args.step}; the steps are {', '.join(STEPS)}")
    sys.path.insert(0, str(ROOT))  # the task scripts, whose build_model composes each step's model
    with friendly_errors():
        if args.action == "start":
            return start(number, Path(args.folder))
        return check(number, Path(args.folder), args.solution, args.train)


if __name__ == "__main__":
    raise SystemExit(main())
