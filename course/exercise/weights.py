"""The lesson's weights copied into a learner's model, matched by what they are, not by their names.

Two models built by the same build_model share their outer structure; inside a learner's own class
the layers may be named and arranged as the learner likes. The match goes down both models side by
side: children with the same name, or else the same number of weights, in order; within a module
whose structure differs, parameters of the same shape, in order. Attention is matched by role: the
lesson's one `qkv` Linear holds every head's query, key and value, and a learner's may be one fused
Linear (qkv, c_attn), three of n_embd each (query, key, value, or q_proj...), or a ModuleList of
heads with a key, query and value each (the lecture's); the roles are read from the names.

Where the roles can't be read, or where two conventions are both right (RoPE's channel pairs), there
is more than one way to copy: `plans` lists them all, the likeliest first, and a check accepts the
learner's model if one of them gives the lesson's outputs; each way is a relabelling of the same
weights, so a model that passes under one computes what the lesson's computes.
"""

import itertools
import re
from dataclasses import dataclass, field

import torch
from torch import nn

from gpt.model import AttentionHead, MultiHeadAttention

ROLES = ("q", "k", "v")
ROLE_NAMES = {"q": "query", "k": "key", "v": "value"}
ROLE_WORDS = {"q": {"q", "query", "queries", "wq", "toq"}, "k": {"k", "key", "keys", "wk", "tok"},
              "v": {"v", "value", "values", "wv", "tov"}}
FUSED_WORDS = {"qkv", "attn", "cattn", "inproj", "kqv", "c_attn"}


class Mismatch(Exception):
    """The learner's parameters can't hold the lesson's; the message says which differ."""


@dataclass
class Copy:
    param: torch.Tensor  # one of the learner's parameters
    rows: slice  # the rows of it that take source
    source: torch.Tensor  # the lesson's values


@dataclass
class Plan:
    copies: list = field(default_factory=list)
    pairs: list = field(default_factory=list)  # (the lesson's module path, the learner's) that do the same job
    note: str = ""  # how this way differs from reading the names as they are, if it does
    convention: str = "half"  # RoPE's channel pairs: the lesson's half split, or RoFormer's "interleaved"

    def apply(self) -> None:
        with torch.no_grad():
            for c in self.copies:
                c.param[c.rows] = c.source.to(c.param.dtype)


def shape_text(t) -> str:
    return " x ".join(str(s) for s in t.shape)


def words(path: str) -> list[str]:
    """The words of a parameter's path: 'heads.0.q_proj.weight' -> ['heads', '0', 'q', 'proj', 'weight']."""
    return [w for w in re.split(r"[._]", path.lower()) if w]


def role_of(path: str) -> str | None:
    parts = path.lower().split(".")[:-1]  # the module names, not 'weight' or 'bias'
    for part in reversed(parts):
        squeezed = part.replace("_", "")
        if squeezed in FUSED_WORDS or part in FUSED_WORDS:
            return "qkv"
        for role, names in ROLE_WORDS.items():
            if squeezed in names or any(w in names for w in part.split("_")):
                return role
    return None


def head_of(path: str) -> int | None:
    """The head a parameter belongs to, from its path: heads.3.key.weight, or head3.query.weight."""
    numbers = re.findall(r"\d+", ".".join(path.split(".")[:-2]) or path.split(".")[0])
    return int(numbers[-1]) if numbers else None


def is_attention(module: nn.Module) -> bool:
    return isinstance(module, (AttentionHead, MultiHeadAttention))


def attention_sizes(ref: nn.Module) -> tuple[int, int, int]:
    """(n_embd, n_head, head_size) of one of the lesson's attention modules."""
    if isinstance(ref, AttentionHead):
        return ref.key.in_features, 1, ref.key.out_features
    return ref.qkv.in_features, ref.n_head, ref.head_size


def interleaving(hs: int) -> torch.Tensor:
    """Rows of a head in RoFormer's order, from the lesson's (GPT-NeoX's): pair i is channels (2i, 2i+1)
    there and (i, i + hs/2) here."""
    half = torch.arange(hs // 2)
    return torch.stack((half, half + hs // 2), dim=1).flatten()


class Planner:
    """One way of copying: roles[r] is the lesson's role whose weights the learner's role r takes;
    interleaved: the learner's rotary pairs are RoFormer's (2i, 2i+1)."""

    def __init__(self, roles: dict, interleaved: bool = False):
        self.roles, self.interleaved = roles, interleaved
        self.plan = Plan()
        self.guessed = False  # some roles were read from the order of unnamed layers
        self.attended = False  # whether there was attention to match, and so roles to read

    def match(self, ref: nn.Module, mine: nn.Module, ref_path: str = "", mine_path: str = "") -> Plan:
        self.module(ref, mine, ref_path, mine_path)
        return self.plan

    def module(self, ref, mine, ref_path, mine_path):
        self.plan.pairs.append((ref_path, mine_path))
        if is_attention(ref):
            return self.attention(ref, mine, ref_path, mine_path)
        own_ref = list(ref.named_parameters(recurse=False))
        own_mine = list(mine.named_parameters(recurse=False))
        pairs = pair_children(ref, mine)
        if pairs is None or len(own_ref) != len(own_mine):  # arranged differently: match the weights themselves
            return self.by_shape(list(ref.named_parameters()), list(mine.named_parameters()), ref_path, mine_path)
        self.by_shape(own_ref, own_mine, ref_path, mine_path)
        for (rn, rc), (mn, mc) in pairs:
            self.module(rc, mc, join(ref_path, rn), join(mine_path, mn))

    def by_shape(self, ref_params, mine_params, ref_path, mine_path):
        """Parameters of the same shape, in the order each model made them."""
        left = list(mine_params)
        unmatched = []
        for rn, rp in ref_params:
            hit = next((i for i, (mn, mp) in enumerate(left) if mp.shape == rp.shape), None)
            if hit is None:
                unmatched.append((rn, rp))
                continue
            mn, mp = left.pop(hit)
            self.plan.copies.append(Copy(mp, slice(None), rp.detach()))
        if unmatched or left:
            raise Mismatch(describe(ref_params, mine_params, ref_path, mine_path))

    def attention(self, ref, mine, ref_path, mine_path):
        self.attended = True
        C, nh, hs = attention_sizes(ref)
        units = {}  # (role, head) -> the lesson's (hs, C) weights
        if isinstance(ref, AttentionHead):
            units = {("q", 0): ref.query.weight, ("k", 0): ref.key.weight, ("v", 0): ref.value.weight}
            rest = []
        else:
            w = ref.qkv.weight
            for i, role in enumerate(ROLES):
                for h in range(nh):
                    units[role, h] = w[i * C + h * hs:i * C + (h + 1) * hs]
            rest = [(n, p) for n, p in ref.named_parameters() if not n.startswith("qkv.")]
        taken, others = {}, []
        unnamed = []
        for name, p in mine.named_parameters():
            role = role_of(name)
            if p.dim() != 2 or p.size(1) != C or name.endswith("bias"):
                others.append((name, p))
            elif role == "qkv" or (role is None and p.size(0) == 3 * nh * hs and nh * hs != C):
                for i, r in enumerate(ROLES):  # a fused projection: queries, keys, values, as GPT-2's c_attn
                    for h in range(nh):
                        taken.setdefault((r, h), []).append((p, slice(i * nh * hs + h * hs, i * nh * hs + (h + 1) * hs)))
            elif role in ROLES and p.size(0) == hs and (head_of(name) is not None or nh == 1):
                taken.setdefault((role, head_of(name) or 0), []).append((p, slice(None)))
            elif role in ROLES and p.size(0) == nh * hs:
                for h in range(nh):
                    taken.setdefault((role, h), []).append((p, slice(h * hs, (h + 1) * hs)))
            elif role is None and p.size(0) in (hs, nh * hs):
                unnamed.append((name, p))
            else:
                others.append((name, p))
        if not taken and unnamed:  # unnamed projections: the lecture's order, key, query, value (per head)
            spare = rest_like(unnamed, rest)
            guess = [(n, p) for n, p in unnamed if all(p is not q for _, q in spare)]
            self.guessed = True
            for i, (name, p) in enumerate(guess):
                role = ("k", "q", "v")[i % 3]
                if p.size(0) == nh * hs:
                    for h in range(nh):
                        taken.setdefault((role, h), []).append((p, slice(h * hs, (h + 1) * hs)))
                else:
                    taken.setdefault((role, i // 3), []).append((p, slice(None)))
            others = spare + others
        else:
            others = unnamed + others
        if set(taken) != set(units) or any(len(v) != 1 for v in taken.values()):
            missing = sorted(set(units) - set(taken))
            raise Mismatch(f"{mine_path or 'your model'}: its query, key and value weights can't be told apart "
                           f"({len(taken)} of the {len(units)} head projections found"
                           + (f"; none for the {ROLE_NAMES[missing[0][0]]} of head {missing[0][1]}" if missing else "")
                           + "): name them key, query and value (or qkv for one Linear of all three)")
        for (role, h), [(p, rows)] in taken.items():
            source = units[self.roles[role], h].detach()
            if self.interleaved and self.roles[role] in ("q", "k"):
                source = source[interleaving(hs)]
            self.plan.copies.append(Copy(p, rows, source))
        self.by_shape(rest, others, ref_path, mine_path)


def rest_like(unnamed, rest):
    """The unnamed (C, C) weights that are the lesson's other layers (proj), taken from the end."""
    shapes = [tuple(p.shape) for _, p in rest if p.dim() == 2]
    spare = []
    for name, p in reversed(unnamed):
        if tuple(p.shape) in shapes:
            shapes.remove(tuple(p.shape))
            spare.insert(0, (name, p))
    return spare


def join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def size(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def pair_children(ref: nn.Module, mine: nn.Module):
    """The learner's child for each of the lesson's children that has weights: the one of the same name,
    else the next one with as many weights; children without weights (ReLU, Dropout) by name where they
    have one. None when they can't be paired one to one."""
    mine_children = dict(mine.named_children())
    pairs, used = [], set()
    for name, child in ref.named_children():
        if name in mine_children and (size(child) or not size(mine_children[name])):
            pairs.append(((name, child), (name, mine_children[name])))
            used.add(name)
    for name, child in ref.named_children():
        if name in used or size(child) == 0:
            continue
        hit = next((n for n, c in mine_children.items() if n not in used and size(c) == size(child)), None)
        if hit is None:
            return None
        pairs.append(((name, child), (hit, mine_children[hit])))
        used.add(hit)
    if any(size(c) and n not in used for n, c in mine_children.items()):
        return None
    return pairs


def describe(ref_params, mine_params, ref_path, mine_path) -> str:
    """What the learner's module holds against the lesson's, where they differ."""
    where = mine_path or "your model"
    listed = lambda params: ", ".join(f"{n} ({shape_text(p)})" for n, p in params) or "nothing"  # noqa: E731
    return f"{where} holds {listed(mine_params)} where the lesson's holds {listed(ref_params)}"


def plans(ref: nn.Module, mine: nn.Module, conventions: tuple = ("half",)) -> list[Plan]:
    """Every way of copying ref's weights into mine, the likeliest first (the roles as named, the
    lesson's convention); raises Mismatch, saying what differs, if there is none."""
    found, first_error = [], None
    for order in itertools.permutations(ROLES):
        roles = dict(zip(ROLES, order))
        for convention in conventions:
            planner = Planner(roles, interleaved=convention == "interleaved")
            try:
                plan = planner.match(ref, mine)
            except Mismatch as e:
                first_error = first_error or e
                continue
            swapped = [f"{ROLE_NAMES[r]} -> {ROLE_NAMES[order[i]]}" for i, r in enumerate(ROLES) if order[i] != r]
            notes = []
            if swapped:
                notes.append(("your unnamed projections taken as " if planner.guessed else "matched with your layers in "
                              "other roles than their names say, an equivalent model: ") + ", ".join(swapped))
            if convention == "interleaved":
                notes.append("RoFormer's interleaved pairs (2i, 2i+1), which the checks accept as well as the lesson's "
                             "(i, i + hs/2)")
            plan.note, plan.convention = "; ".join(notes), convention
            found.append(plan)
            if not planner.attended:
                return found  # no roles to read: one way only
    if not found:
        raise first_error
    return found
