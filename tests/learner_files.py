"""Learner files for the exercise grader's tests, made the way a learner makes one: `start`'s skeleton,
with the bodies that raise NotImplementedError written.

A body not given is written as a learner following the lecture writes it (LESSON, right), so that
a case changes only what it is about. A case may also replace a whole class (a learner who rebuilds __init__ the lecture's
way, with a ModuleList of heads or a registered tril) and add code of its own after the imports (a
Head class of their own)."""

import ast
import importlib
import re
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

from course.exercise.skeleton import skeleton
from course.exercise.steps import STEPS

NOT_WRITTEN = re.compile(r'^( *)raise NotImplementedError\(\s*"write ([\w.]+).*?"\)$', re.M | re.S)


@dataclass
class Learner:
    """One learner's file: name, step, what they wrote (bodies by "Class.method" or function name,
    whole classes by class name, code of their own), and what the grader must say of it: the check
    that fails and the kind of its finding (None: every check passes)."""
    name: str
    step: str
    bodies: dict = field(default_factory=dict)
    classes: dict = field(default_factory=dict)
    preamble: str = ""
    check: str | None = None
    kind: str | None = None
    words: str = ""  # what the finding's "where" must say, if anything
    also: dict = field(default_factory=dict)  # other checks that must fail, and the kind each must find
    note: str = ""  # on a pass: what the pass line must note

    @property
    def correct(self) -> bool:
        return self.kind is None


def solution_bodies(number: str) -> dict:
    """{"Class.method" or "function": the solution's body, docstring left out, dedented}."""
    step = STEPS[number]
    sources = [(step.module, None)] + [(m, set(fs)) for m, fs in step.extras]
    bodies = {}
    for module_name, only in sources:
        source = Path(importlib.import_module(module_name).__file__).read_text()
        lines = source.splitlines()
        for node in ast.parse(source).body:
            if isinstance(node, ast.ClassDef) and node.name in step.classes and only is None:
                for item in node.body:
                    if isinstance(item, ast.FunctionDef) and item.name in step.classes[node.name]:
                        bodies[f"{node.name}.{item.name}"] = body_of(item, lines)
            elif isinstance(node, ast.FunctionDef) and (node.name in step.functions if only is None else
                                                        node.name in only):
                bodies[node.name] = body_of(node, lines)
    return bodies


def body_of(fn: ast.FunctionDef, lines: list[str]) -> str:
    statements = fn.body
    if isinstance(statements[0], ast.Expr) and isinstance(statements[0].value, ast.Constant):
        statements = statements[1:]  # the docstring stays in the skeleton
    return textwrap.dedent("\n".join(lines[statements[0].lineno - 1:fn.end_lineno]))


def write_file(learner: Learner) -> str:
    """The text of the learner's file."""
    bodies = {k: textwrap.dedent(v).strip("\n") for k, v in {**LESSON[learner.step], **learner.bodies}.items()}
    text = skeleton(learner.step)
    text = NOT_WRITTEN.sub(lambda m: textwrap.indent(bodies[m.group(2)], m.group(1)), text)
    assert "raise NotImplementedError(" not in text, text
    for name, source in learner.classes.items():
        tree = ast.parse(text)
        node = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == name)
        lines = text.splitlines()
        text = "\n".join(lines[:node.lineno - 1] + textwrap.dedent(source).strip("\n").splitlines()
                         + lines[node.end_lineno:]) + "\n"
    if learner.preamble:
        tree = ast.parse(text)
        first_class = next(n for n in tree.body if isinstance(n, (ast.ClassDef, ast.FunctionDef)))
        lines = text.splitlines()
        at = first_class.lineno - 1 - len(getattr(first_class, "decorator_list", []))
        text = "\n".join(lines[:at] + textwrap.dedent(learner.preamble).strip("\n").splitlines() + ["", ""]
                         + lines[at:]) + "\n"
    return text


# Each step written as a learner following the lecture writes it: right, and not the repository's own
# code (which uses helpers a skeleton doesn't give).
LESSON = {
    "00": {
        "Bigram.forward": """
            logits = self.logits_table(idx)  # (B, T, V)
            if targets is None:
                loss = None
            else:
                B, T, C = logits.shape
                loss = F.cross_entropy(logits.view(B * T, C), targets.view(B * T))
            return logits, loss
        """,
        "estimate_loss": """
            out = {}
            was_training = model.training
            model.eval()
            for split, data in splits.items():
                losses = torch.zeros(eval_iters)
                for k in range(eval_iters):
                    X, Y = get_batch(data, batch_size, block_size, generator)
                    logits, loss = model(X, Y)
                    losses[k] = loss.item()
                out[split] = losses.mean().item()
            model.train(was_training)
            return out
        """,
        "generate": """
            was_training = model.training
            model.eval()
            for _ in range(max_new_tokens):
                idx_cond = idx[:, -model.block_size:]
                logits, _ = model(idx_cond)
                logits = logits[:, -1, :]  # (B, V)
                probs = F.softmax(logits, dim=-1)
                idx_next = torch.multinomial(probs, num_samples=1, generator=generator)  # (B, 1)
                idx = torch.cat((idx, idx_next), dim=1)
            model.train(was_training)
            return idx
        """,
    },
    "01": {
        "AttentionHead.forward": """
            B, T, C = x.shape
            k = self.key(x)  # (B, T, hs)
            q = self.query(x)  # (B, T, hs)
            wei = q @ k.transpose(-2, -1) * k.shape[-1] ** -0.5  # (B, T, T)
            wei = wei.masked_fill(torch.tril(torch.ones(T, T)) == 0, float("-inf"))
            wei = F.softmax(wei, dim=-1)
            v = self.value(x)
            return wei @ v
        """,
    },
    "02": {
        "MultiHeadAttention.queries_keys_values": """
            B, T, C = x.shape
            q, k, v = self.qkv(x).split(C, dim=2)
            q = q.view(B, T, self.n_head, self.head_size).transpose(1, 2)  # (B, nh, T, hs)
            k = k.view(B, T, self.n_head, self.head_size).transpose(1, 2)
            v = v.view(B, T, self.n_head, self.head_size).transpose(1, 2)
            return q, k, v
        """,
        "MultiHeadAttention.forward": """
            B, T, C = x.shape
            q, k, v = self.queries_keys_values(x)
            wei = q @ k.transpose(-2, -1) * self.head_size ** -0.5  # (B, nh, T, T)
            wei = wei.masked_fill(torch.tril(torch.ones(T, T)) == 0, float("-inf"))
            wei = F.softmax(wei, dim=-1)
            out = wei @ v  # (B, nh, T, hs)
            return out.transpose(1, 2).contiguous().view(B, T, C)
        """,
    },
    "03": {
        "FeedForward.__init__": """
            super().__init__()
            self.net = nn.Sequential(nn.Linear(n_embd, n_embd), nn.ReLU())
        """,
        "FeedForward.forward": "return self.net(x)",
    },
    "04": {
        "Block.forward": """
            x = self.sa(x)
            x = self.ffwd(x)
            return x
        """,
    },
    "05": {
        "ProjectedAttention.forward": "return self.proj(super().forward(x))",
        "MLP.__init__": """
            super().__init__()
            self.net = nn.Sequential(nn.Linear(n_embd, 4 * n_embd), nn.ReLU(), nn.Linear(4 * n_embd, n_embd))
        """,
        "MLP.forward": "return self.net(x)",
        "ResidualBlock.forward": """
            x = x + self.sa(x)
            x = x + self.ffwd(x)
            return x
        """,
    },
    "06": {
        "PreLNBlock.forward": """
            x = x + self.sa(self.ln1(x))
            x = x + self.ffwd(self.ln2(x))
            return x
        """,
    },
    "07": {
        "CausalSelfAttention.forward": """
            q, k, v = self.queries_keys_values(x)  # (B, nh, T, hs) each
            if cache is None:
                out = causal_attention(q, k, v, self.dropout if self.training else 0.0)
            else:
                out = cache.attend(q, k, v)
            return self.proj(concat_heads(out))
        """,
        "DropoutBlock.forward": """
            x = x + self.dropout(self.sa(self.ln1(x), cache))
            x = x + self.dropout(self.ffwd(self.ln2(x)))
            return x
        """,
        "GPT.forward": """
            B, T = idx.shape
            start = 0 if cache is None else cache.length
            check_length(idx, self.block_size, start)
            tok_emb = self.token_embedding(idx)  # (B, T, C)
            pos_emb = self.position_embedding(torch.arange(start, start + T))  # (T, C)
            x = tok_emb + pos_emb
            for i, block in enumerate(self.blocks):
                x = block(x, None if cache is None else cache.layer(i))
            logits = self.lm_head(self.ln_f(x))  # (B, T, V)
            if cache is not None:
                cache.advance(T)
            if targets is None:
                return logits, None
            return logits, F.cross_entropy(logits.view(B * T, -1), targets.view(B * T))
        """,
    },
    "08": {
        "KVCache.store": """
            start, end = self.length, self.length + k.size(2)
            if end > self.block_size:
                raise UserError(f"the cache holds {self.block_size} positions; {end} were asked for")
            self.k[layer, :, :, start:end] = k
            self.v[layer, :, :, start:end] = v
            return self.k[layer, :, :, :end], self.v[layer, :, :, :end]
        """,
        "attention_to_window": """
            Tq, Tk = q.size(-2), k.size(-2)
            mask = torch.ones(Tq, Tk, dtype=torch.bool).tril(diagonal=Tk - Tq)  # query i reads up to Tk - Tq + i
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        """,
    },
    "09": {
        "Rotary.forward": """
            T = x.size(-2)
            if start + T <= self.cos.size(0):
                cos, sin = self.cos[start:start + T], self.sin[start:start + T]
            else:
                cos, sin = rope_angles(start, T, self.head_size)
            return apply_rope(x, cos, sin)
        """,
        "RotaryAttention.forward": """
            q, k, v = self.queries_keys_values(x)
            start = 0 if cache is None else cache.start
            q, k = self.rotary(q, start), self.rotary(k, start)
            if cache is None:
                out = causal_attention(q, k, v, self.dropout if self.training else 0.0)
            else:
                out = cache.attend(q, k, v)
            return self.proj(concat_heads(out))
        """,
        "apply_rope": """
            x1, x2 = x.chunk(2, dim=-1)
            return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
        """,
    },
}
