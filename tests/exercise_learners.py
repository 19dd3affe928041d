"""The grader's mutation suite: learner files with one mistake each, as learners make them (the lecture's
code retyped, questions asked about it, the classic bugs), and learner files that are right but written
another way (the lecture's own structures among them).

Each wrong file names the check that must fail and the kind of finding it must give (and words its
"where" must contain); each right file must pass every check. `ISSUE_KINDS` maps the kinds of mistake
the grader is built to catch to the files that cover them.
"""

from learner_files import Learner

# --- step 01: one head ---------------------------------------------------------------------------------

HEAD = """
B, T, C = x.shape
k = self.key(x)
q = self.query(x)
wei = q @ k.transpose(-2, -1) * {scale}
wei = wei.masked_fill({mask}, {fill})
wei = F.softmax(wei, dim={dim})
v = self.value(x)
return wei @ v
"""


def head(scale="k.shape[-1] ** -0.5", mask="torch.tril(torch.ones(T, T)) == 0", fill='float("-inf")', dim=-1):
    return {"AttentionHead.forward": HEAD.format(scale=scale, mask=mask, fill=fill, dim=dim)}


LECTURE_HEAD = '''
class Head(nn.Module):
    """The lecture's head: its own tril, registered once and cropped to the input's length."""

    def __init__(self, n_embd, head_size, block_size=64):
        super().__init__()
        self.key = nn.Linear(n_embd, head_size, bias=False)
        self.query = nn.Linear(n_embd, head_size, bias=False)
        self.value = nn.Linear(n_embd, head_size, bias=False)
        self.register_buffer("tril", torch.tril(torch.ones(block_size, block_size)))

    def forward(self, x):
        B, T, C = x.shape
        k = self.key(x)
        q = self.query(x)
        wei = q @ k.transpose(-2, -1) * {scale}
        wei = wei.masked_fill(self.tril[:T, :T] == 0, float("-inf"))
        wei = F.softmax(wei, dim=-1)
        return wei @ self.value(x)
'''

MODULE_LIST = '''
class MultiHeadAttention(nn.Module):
    def __init__(self, n_embd: int, n_head: int):
        super().__init__()
        self.heads = nn.ModuleList([Head(n_embd, n_embd // n_head) for _ in range(n_head)])

    def forward(self, x):
        return torch.cat([h(x) for h in self.heads], dim=-1)
'''

# --- step 02: heads ------------------------------------------------------------------------------------

MHA_FORWARD = """
B, T, C = x.shape
q, k, v = self.queries_keys_values(x)
wei = q @ k.transpose(-2, -1) * {scale}
wei = wei.masked_fill(torch.tril(torch.ones(T, T)) == 0, float("-inf"))
wei = F.softmax(wei, dim=-1)
out = wei @ v
return {ret}
"""


def mha(scale="self.head_size ** -0.5", ret="out.transpose(1, 2).contiguous().view(B, T, C)"):
    return {"MultiHeadAttention.forward": MHA_FORWARD.format(scale=scale, ret=ret)}


# --- step 07: the GPT ----------------------------------------------------------------------------------

CSA = """
q, k, v = self.queries_keys_values(x)
if cache is None:
    out = causal_attention(q, k, v, {dropout})
else:
    out = cache.attend(q, k, v)
return self.proj(concat_heads(out))
"""

GPT_FORWARD = """
B, T = idx.shape
start = 0 if cache is None else cache.length
tok_emb = self.token_embedding(idx)
pos_emb = self.position_embedding({positions})
x = tok_emb + pos_emb
for i, block in enumerate(self.blocks):
    x = block(x, None if cache is None else cache.layer(i))
logits = self.lm_head({final})
if cache is not None:
    {advance}
loss = None if targets is None else F.cross_entropy(logits.view(B * T, -1), targets.view(B * T))
return logits, loss
"""


def gpt(positions="torch.arange(start, start + T)", final="self.ln_f(x)", advance="cache.advance(T)"):
    return {"GPT.forward": GPT_FORWARD.format(positions=positions, final=final, advance=advance)}


# --- step 08: the cache ----------------------------------------------------------------------------------

STORE = """
start, end = self.length, self.length + k.size(2)
if end > self.block_size:
    raise UserError(f"the cache holds {{self.block_size}} positions; {{end}} were asked for")
self.k[layer, :, :, {slot}] = k
self.v[layer, :, :, {slot}] = v
return self.k[layer, :, :, {window}], self.v[layer, :, :, {window}]
"""


def store(slot="start:end", window=":end"):
    return {"KVCache.store": STORE.format(slot=slot, window=window)}


def window(mask):
    return {"attention_to_window": f"""
Tq, Tk = q.size(-2), k.size(-2)
{mask}
"""}


# --- step 09: RoPE -------------------------------------------------------------------------------------

ROTARY_ATTENTION = """
q, k, v = self.queries_keys_values(x)
start = {start}
q, k = {turned}
{v}
if cache is None:
    out = causal_attention(q, k, v, self.dropout if self.training else 0.0)
else:
    out = cache.attend(q, k, v)
return self.proj(concat_heads(out))
"""


def rotary_attention(start="0 if cache is None else cache.start", turned="self.rotary(q, start), self.rotary(k, start)",
                     v="pass"):
    return {"RotaryAttention.forward": ROTARY_ATTENTION.format(start=start, turned=turned, v=v)}


WRONG = [
    # step 00: the bigram, and the loop's pieces
    Learner("00 softmax before the loss", "00", {"Bigram.forward": """
        logits = self.logits_table(idx)
        if targets is None:
            return logits, None
        B, T, C = logits.shape
        probs = F.softmax(logits, dim=-1)
        return logits, F.cross_entropy(probs.view(B * T, C), targets.view(B * T))
    """}, check="same as the lesson", kind="loss-softmax"),
    Learner("00 probabilities returned as logits", "00", {"Bigram.forward": """
        logits = F.softmax(self.logits_table(idx), dim=-1)
        loss = None if targets is None else F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        return logits, loss
    """}, check="same as the lesson", kind="logits-softmax"),
    Learner("00 generate takes the likeliest token (argmax)", "00", {"generate": """
        model.eval()
        for _ in range(max_new_tokens):
            logits, _ = model(idx[:, -model.block_size:])
            idx_next = logits[:, -1, :].argmax(dim=-1, keepdim=True)
            idx = torch.cat((idx, idx_next), dim=1)
        model.train()
        return idx
    """}, check="samples follow the probabilities", kind="argmax"),
    Learner("00 generate samples the first position", "00", {"generate": """
        model.eval()
        for _ in range(max_new_tokens):
            logits, _ = model(idx[:, -model.block_size:])
            probs = F.softmax(logits[:, 0, :], dim=-1)
            idx = torch.cat((idx, torch.multinomial(probs, 1, generator=generator)), dim=1)
        model.train()
        return idx
    """}, check="samples follow the probabilities", kind="sampling-position"),
    Learner("00 generate never crops the context", "00", {"generate": """
        model.eval()
        for _ in range(max_new_tokens):
            logits, _ = model(idx)
            probs = F.softmax(logits[:, -1, :], dim=-1)
            idx = torch.cat((idx, torch.multinomial(probs, 1, generator=generator)), dim=1)
        model.train()
        return idx
    """}, check="generate's context", kind="generate-crop"),
    Learner("00 estimate_loss sums the batches", "00", {"estimate_loss": """
        out = {}
        model.eval()
        for split, data in splits.items():
            total = 0.0
            for _ in range(eval_iters):
                X, Y = get_batch(data, batch_size, block_size, generator)
                total += model(X, Y)[1].item()
            out[split] = total
        model.train()
        return out
    """}, check="estimate_loss", kind="estimate_loss", words="mean"),
    Learner("00 estimate_loss leaves the model in eval mode", "00", {"estimate_loss": """
        out = {}
        model.eval()
        for split, data in splits.items():
            losses = [model(*get_batch(data, batch_size, block_size, generator))[1].item() for _ in range(eval_iters)]
            out[split] = sum(losses) / len(losses)
        return out
    """}, check="estimate_loss", kind="estimate_loss", words="eval mode"),

    # step 01: one head
    Learner("01 scaled by n_embd (the lecture's bug)", "01", head(scale="C ** -0.5"),
            check="at other sizes", kind="scale", words="1/sqrt(n_embd)"),
    Learner("01 divided by head_size, not its square root", "01", head(scale="1 / k.shape[-1]"),
            check="same as the lesson", kind="scale", words="not by its square root"),
    Learner("01 not scaled", "01", head(scale="1.0"), check="same as the lesson", kind="scale", words="not scaled"),
    Learner("01 the first row all masked", "01", head(mask="torch.tril(torch.ones(T, T), diagonal=-1) == 0"),
            check="shapes", kind="nan", words="query 0", also={"same as the lesson": "nan", "at other sizes": "nan"}),
    Learner("01 the mask the wrong way round", "01", head(mask="torch.tril(torch.ones(T, T)) == 1"),
            check="causal", kind="nan", words="wrong way round", also={"same as the lesson": "nan"}),
    Learner("01 the query layer used for the keys too", "01", {"AttentionHead.forward": """
        B, T, C = x.shape
        q, k, v = self.query(x), self.query(x), self.value(x)
        wei = (q @ k.transpose(-2, -1) * k.shape[-1] ** -0.5).masked_fill(torch.tril(torch.ones(T, T)) == 0,
                                                                            float("-inf"))
        return F.softmax(wei, dim=-1) @ v
    """}, check="same as the lesson", kind="qkv", words="the keys", also={"gradients": "unused"}),
    Learner("01 softmax over the queries", "01", head(dim=1), check="same as the lesson", kind="softmax-dim",
            also={"causal": "softmax-dim"}),
    Learner("01 the future filled with 0", "01", head(fill="0.0"), check="causal", kind="mask", words="0, not -inf",
            also={"same as the lesson": "mask"}),
    Learner("01 no mask", "01", head(mask="torch.zeros(T, T, dtype=torch.bool)"), check="causal", kind="mask",
            words="doesn't mask the future", also={"same as the lesson": "mask", "at other sizes": "mask"}),
    Learner("01 a mask for the whole block, not cropped", "01", head(mask="torch.tril(torch.ones(8, 8)) == 0"),
            check="shapes", kind="length", also={"same as the lesson": "length"}),
    Learner("01 the weights returned, not applied to v", "01",
            {"AttentionHead.forward": HEAD.format(scale="k.shape[-1] ** -0.5", mask="torch.tril(torch.ones(T, T)) == 0",
                                                  fill='float("-inf")', dim=-1).replace("return wei @ v", "return wei")},
            check="same as the lesson", kind="shape", words="weights' shape"),
    Learner("01 the mask applied after the softmax", "01", {"AttentionHead.forward": """
        B, T, C = x.shape
        k, q, v = self.key(x), self.query(x), self.value(x)
        wei = F.softmax(q @ k.transpose(-2, -1) * k.shape[-1] ** -0.5, dim=-1)
        wei = wei.masked_fill(torch.tril(torch.ones(T, T)) == 0, 0.0)
        return wei @ v
    """}, check="same as the lesson", kind="mask", words="after the softmax"),

    # step 02: heads
    Learner("02 heads mixed with positions (a reshape without the transpose)", "02", {
        "MultiHeadAttention.queries_keys_values": """
            B, T, C = x.shape
            q, k, v = self.qkv(x).split(C, dim=2)
            return [t.reshape(B, self.n_head, T, self.head_size) for t in (q, k, v)]
        """}, check="same as the lesson", kind="heads-mixed", words="heads mixed with positions"),
    Learner("02 heads put side by side without the transpose", "02", mha(ret="out.reshape(B, T, C)"),
            check="same as the lesson", kind="heads-mixed", words="side by side", also={"causal": "heads-mixed"}),
    Learner("02 scaled by n_embd", "02", mha(scale="C ** -0.5"), check="same as the lesson", kind="scale",
            words="1/sqrt(n_embd)"),
    Learner("02 one head of n_embd, not n_head heads", "02", {"MultiHeadAttention.queries_keys_values": """
            B, T, C = x.shape
            q, k, v = self.qkv(x).split(C, dim=2)
            return q.unsqueeze(1), k.unsqueeze(1), v.unsqueeze(1)
        """, "MultiHeadAttention.forward": MHA_FORWARD.format(scale="q.size(-1) ** -0.5",
                                                               ret="out.transpose(1, 2).reshape(B, T, C)")},
            check="same as the lesson", kind="heads"),
    Learner("02 scaled_dot_product_attention without is_causal", "02", {"MultiHeadAttention.forward": """
        B, T, C = x.shape
        q, k, v = self.queries_keys_values(x)
        out = F.scaled_dot_product_attention(q, k, v)
        return out.transpose(1, 2).reshape(B, T, C)
    """}, check="causal", kind="mask", also={"same as the lesson": "mask"}),
    Learner("02 the lecture's heads, scaled by their input's width", "02", classes={"MultiHeadAttention": MODULE_LIST},
            preamble=LECTURE_HEAD.format(scale="C ** -0.5"), check="same as the lesson", kind="scale",
            words="1/sqrt(n_embd)"),

    # step 03: feed-forward
    Learner("03 no ReLU", "03", {"FeedForward.__init__": """
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_embd, n_embd))
    """}, check="same as the lesson", kind="no-activation"),
    Learner("03 GELU for ReLU", "03", {"FeedForward.__init__": """
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_embd, n_embd), nn.GELU())
    """}, check="same as the lesson", kind="activation", words="GELU"),
    Learner("03 the ReLU before the Linear", "03", {"FeedForward.__init__": """
        super().__init__()
        self.net = nn.Sequential(nn.ReLU(), nn.Linear(n_embd, n_embd))
    """}, check="same as the lesson", kind="order"),
    Learner("03 a Linear without its bias", "03", {"FeedForward.__init__": """
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_embd, n_embd, bias=False), nn.ReLU())
    """}, check="layers", kind="layers", words="bias"),

    # step 04: blocks
    Learner("04 the feed-forward before attention", "04", {"Block.forward": "return self.sa(self.ffwd(x))"},
            check="same as the lesson", kind="order"),
    Learner("04 the block forgets its feed-forward", "04", {"Block.forward": "return self.sa(x)"},
            check="same as the lesson", kind="unused", words="ffwd", also={"gradients": "unused"}),
    Learner("04 a residual a step early", "04", {"Block.forward": """
        x = x + self.sa(x)
        return x + self.ffwd(x)
    """}, check="same as the lesson", kind="extra-residual"),

    # step 05: residuals, projection, MLP
    Learner("05 no residual around the MLP", "05", {"ResidualBlock.forward": """
        x = x + self.sa(x)
        x = self.ffwd(x)
        return x
    """}, check="same as the lesson", kind="residual"),
    Learner("05 no residual at all", "05", {"ResidualBlock.forward": "return self.ffwd(self.sa(x))"},
            check="same as the lesson", kind="residual"),
    Learner("05 the projection never applied", "05", {"ProjectedAttention.forward": "return super().forward(x)"},
            check="same as the lesson", kind="unused", words="proj"),
    Learner("05 an MLP that isn't 4x wider", "05", {"MLP.__init__": """
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_embd, n_embd), nn.ReLU(), nn.Linear(n_embd, n_embd))
    """}, check="layers", kind="layers"),
    Learner("05 GELU in the MLP", "05", {"MLP.__init__": """
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_embd, 4 * n_embd), nn.GELU(), nn.Linear(4 * n_embd, n_embd))
    """}, check="same as the lesson", kind="activation", words="GELU"),

    # step 06: pre-LN
    Learner("06 post-LN", "06", {"PreLNBlock.forward": """
        x = self.ln1(x + self.sa(x))
        x = self.ln2(x + self.ffwd(x))
        return x
    """}, check="same as the lesson", kind="post-ln"),
    Learner("06 one LayerNorm for both sub-layers", "06", {"PreLNBlock.forward": """
        x = x + self.sa(self.ln1(x))
        x = x + self.ffwd(self.ln1(x))
        return x
    """}, check="same as the lesson", kind="unused", words="ln2"),
    Learner("06 the LayerNorm replaces the stream", "06", {"PreLNBlock.forward": """
        x = self.ln1(x)
        x = x + self.sa(x)
        x = self.ln2(x)
        x = x + self.ffwd(x)
        return x
    """}, check="same as the lesson", kind="layernorm"),

    # step 07: the GPT
    Learner("07 no final LayerNorm", "07", gpt(final="x"), check="same as the lesson", kind="unused", words="ln_f"),
    Learner("07 dropout on in eval", "07", {"CausalSelfAttention.forward": CSA.format(dropout="self.dropout")},
            check="no dropout in eval", kind="dropout-eval"),
    Learner("07 no dropout on the attention weights", "07", {"CausalSelfAttention.forward": CSA.format(dropout="0.0")},
            check="dropout where the lesson puts it", kind="dropout-missing", words="attention weights"),
    Learner("07 dropout on each sub-layer's input", "07", {"DropoutBlock.forward": """
        x = x + self.sa(self.dropout(self.ln1(x)), cache)
        x = x + self.ffwd(self.dropout(self.ln2(x)))
        return x
    """}, check="dropout where the lesson puts it", kind="dropout-place"),
    Learner("07 dropout after the projection too, as the lecture's attention had it", "07", {
        "CausalSelfAttention.forward": """
            q, k, v = self.queries_keys_values(x)
            dropout = self.dropout if self.training else 0.0
            out = causal_attention(q, k, v, dropout) if cache is None else cache.attend(q, k, v)
            return F.dropout(self.proj(concat_heads(out)), dropout, self.training)
        """}, check="dropout where the lesson puts it", kind="dropout-twice"),
    Learner("07 the GPT ignores where the cache starts", "07", gpt(positions="torch.arange(T)"),
            check="the cached path", kind="positions"),
    Learner("07 attention ignores the cache", "07", {"CausalSelfAttention.forward": """
        q, k, v = self.queries_keys_values(x)
        out = causal_attention(q, k, v, self.dropout if self.training else 0.0)
        return self.proj(concat_heads(out))
    """}, check="the cached path", kind="cache-ignored"),
    Learner("07 the block keeps the cache to itself", "07", {"DropoutBlock.forward": """
        x = x + self.dropout(self.sa(self.ln1(x)))
        x = x + self.dropout(self.ffwd(self.ln2(x)))
        return x
    """}, check="the cached path", kind="cache-not-passed"),
    Learner("07 the cache never moves on", "07", gpt(advance="pass"), check="the cached path", kind="cache-advance"),
    Learner("07 positions for the whole block", "07", gpt(positions="torch.arange(self.block_size)"),
            check="shapes", kind="length"),
    Learner("07 attention written out, scaled by n_embd", "07", {"CausalSelfAttention.forward": """
        B, T, C = x.shape
        q, k, v = self.queries_keys_values(x)
        if cache is not None:
            return self.proj(concat_heads(cache.attend(q, k, v)))
        wei = q @ k.transpose(-2, -1) * C ** -0.5
        wei = wei.masked_fill(torch.tril(torch.ones(T, T)) == 0, float("-inf")).softmax(dim=-1)
        wei = F.dropout(wei, self.dropout, self.training)
        return self.proj(concat_heads(wei @ v))
    """}, check="same as the lesson", kind="scale", words="1/sqrt(n_embd)"),

    # step 08: the key/value cache
    Learner("08 the cache forgets positions (writes at 0)", "08", store(slot=":k.size(2)"),
            check="a prompt, then one token at a time", kind="cache-positions"),
    Learner("08 store returns only the new keys", "08", store(window="start:end"),
            check="a prompt, then one token at a time", kind="cache-window", words="only the"),
    Learner("08 store returns the empty slots too", "08", store(window=":"),
            check="a prompt, then one token at a time", kind="cache-window", words="empty"),
    Learner("08 the window's mask aligned to its start", "08", window(
        "return F.scaled_dot_product_attention(q, k, v, attn_mask=torch.ones(Tq, Tk, dtype=torch.bool).tril())"),
        check="a chunk after a prompt", kind="window", words="top left"),
    Learner("08 is_causal for every call", "08", window(
        "return F.scaled_dot_product_attention(q, k, v, is_causal=True)"),
        check="a prompt, then one token at a time", kind="window", words="top left"),
    Learner("08 no mask for a chunk", "08", window("return F.scaled_dot_product_attention(q, k, v, is_causal=Tq == Tk)"),
            check="a chunk after a prompt", kind="window", words="no mask"),
    Learner("08 a cache that wraps around instead of refusing", "08", {"KVCache.store": """
        T = k.size(2)
        slots = torch.arange(self.length, self.length + T) % self.block_size
        self.k[layer, :, :, slots] = k
        self.v[layer, :, :, slots] = v
        end = min(self.length + T, self.block_size)
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]
    """}, check="a full cache refuses more", kind="overflow"),

    # step 09: RoPE
    Learner("09 the rotation ignores its start", "09", {"Rotary.forward": """
        T = x.size(-2)
        return apply_rope(x, self.cos[:T], self.sin[:T])
    """}, check="Rotary from a start position", kind="rope-start"),
    Learner("09 RoPE on v as well", "09", rotary_attention(v="v = self.rotary(v, start)"),
            check="RotaryAttention turns q and k by position", kind="rope-v"),
    Learner("09 only q turned", "09", rotary_attention(turned="self.rotary(q, start), k"),
            check="RotaryAttention turns q and k by position", kind="rope-qk", words="keys"),
    Learner("09 attention ignores the cache's start", "09", rotary_attention(start="0"),
            check="RotaryAttention turns q and k by position", kind="rope-start"),
    Learner("09 apply_rope turns the wrong way", "09", {"apply_rope": """
        x1, x2 = x.chunk(2, dim=-1)
        return torch.cat((x1 * cos + x2 * sin, -x1 * sin + x2 * cos), dim=-1)
    """}, check="apply_rope turns each pair", kind="sign"),
    Learner("09 apply_rope is not a rotation", "09", {"apply_rope": """
        x1, x2 = x.chunk(2, dim=-1)
        return torch.cat((x1 * cos + x2 * sin, x1 * sin + x2 * cos), dim=-1)
    """}, check="apply_rope turns each pair", kind="rope-rotation"),
    Learner("09 no angles past the table", "09", {"Rotary.forward": """
        T = x.size(-2)
        return apply_rope(x, self.cos[start:start + T], self.sin[start:start + T])
    """}, check="Rotary from a start position", kind="rope-table"),
]

CORRECT = [
    Learner("00 the loss flattened with reshape, the lecture's generate", "00", {
        "Bigram.forward": """
            logits = self.logits_table(idx)
            loss = None
            if targets is not None:
                loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))
            return logits, loss
        """, "generate": """
            model.eval()
            for _ in range(max_new_tokens):
                logits, loss = model(idx[:, -model.block_size:])
                probs = logits[:, -1, :].softmax(dim=-1)
                idx = torch.cat([idx, torch.multinomial(probs, 1, generator=generator)], dim=1)
            model.train()
            return idx
        """}),
    Learner("01 the lecture's registered tril, cropped to T", "01", classes={"AttentionHead": '''
class AttentionHead(nn.Module):
    def __init__(self, n_embd: int, head_size: int):
        super().__init__()
        self.key = nn.Linear(n_embd, head_size, bias=False)
        self.query = nn.Linear(n_embd, head_size, bias=False)
        self.value = nn.Linear(n_embd, head_size, bias=False)
        self.register_buffer("tril", torch.tril(torch.ones(256, 256)))

    def forward(self, x):
        B, T, C = x.shape
        k = self.key(x)
        q = self.query(x)
        wei = q @ k.transpose(-2, -1) * k.shape[-1] ** -0.5
        wei = wei.masked_fill(self.tril[:T, :T] == 0, float("-inf"))
        wei = F.softmax(wei, dim=-1)
        return wei @ self.value(x)
'''}),
    Learner("01 einsum and a triu mask", "01", {"AttentionHead.forward": """
        T = x.size(1)
        q, k, v = self.query(x), self.key(x), self.value(x)
        scores = torch.einsum("btd,bsd->bts", q, k) / math.sqrt(q.size(-1))
        future = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
        return torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1) @ v
    """}),
    Learner("01 PyTorch's fused attention", "01", {"AttentionHead.forward": """
        return F.scaled_dot_product_attention(self.query(x), self.key(x), self.value(x), is_causal=True)
    """}),
    Learner("02 the lecture's ModuleList of heads", "02", classes={"MultiHeadAttention": MODULE_LIST},
            preamble=LECTURE_HEAD.format(scale="k.shape[-1] ** -0.5")),
    Learner("02 separate q_proj, k_proj, v_proj", "02", classes={"MultiHeadAttention": '''
class MultiHeadAttention(nn.Module):
    def __init__(self, n_embd: int, n_head: int):
        super().__init__()
        self.n_head = n_head
        self.q_proj = nn.Linear(n_embd, n_embd, bias=False)
        self.k_proj = nn.Linear(n_embd, n_embd, bias=False)
        self.v_proj = nn.Linear(n_embd, n_embd, bias=False)

    def forward(self, x):
        B, T, C = x.shape
        split = lambda t: t.view(B, T, self.n_head, C // self.n_head).permute(0, 2, 1, 3)
        q, k, v = split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x))
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return out.permute(0, 2, 1, 3).reshape(B, T, C)
'''}),
    Learner("02 GPT-2's c_attn, split key first, and einsum", "02", classes={"MultiHeadAttention": '''
class MultiHeadAttention(nn.Module):
    def __init__(self, n_embd: int, n_head: int):
        super().__init__()
        self.n_head = n_head
        self.c_attn = nn.Linear(n_embd, 3 * n_embd, bias=False)

    def forward(self, x):
        B, T, C = x.shape
        nh, hs = self.n_head, C // self.n_head
        k, q, v = (t.reshape(B, T, nh, hs).transpose(1, 2) for t in self.c_attn(x).chunk(3, dim=-1))
        att = torch.einsum("bhqd,bhkd->bhqk", q, k) * hs ** -0.5
        att = att.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf")).softmax(-1)
        return torch.einsum("bhqk,bhkd->bhqd", att, v).transpose(1, 2).reshape(B, T, C)
'''}, note="other roles than their names"),
    Learner("03 separately named fc and relu", "03", {"FeedForward.__init__": """
        super().__init__()
        self.fc = nn.Linear(n_embd, n_embd)
        self.relu = nn.ReLU()
    """, "FeedForward.forward": "return self.relu(self.fc(x))"}),
    Learner("05 GPT-2's c_fc and c_proj, F.relu", "05", {"MLP.__init__": """
        super().__init__()
        self.c_fc = nn.Linear(n_embd, 4 * n_embd)
        self.c_proj = nn.Linear(4 * n_embd, n_embd)
    """, "MLP.forward": "return self.c_proj(F.relu(self.c_fc(x)))"}),
    Learner("05 the lecture's heads with a projection, named blocks", "05", classes={"ProjectedAttention": '''
class ProjectedAttention(nn.Module):
    def __init__(self, n_embd: int, n_head: int):
        super().__init__()
        self.heads = nn.ModuleList([Head(n_embd, n_embd // n_head) for _ in range(n_head)])
        self.proj = nn.Linear(n_embd, n_embd)

    def forward(self, x):
        out = torch.cat([h(x) for h in self.heads], dim=-1)
        return self.proj(out)
'''}, preamble=LECTURE_HEAD.format(scale="k.shape[-1] ** -0.5"), bodies={"ResidualBlock.forward": """
        attended = x + self.sa(x)
        return attended + self.ffwd(attended)
    """}),
    Learner("06 pre-LN with names for each step", "06", {"PreLNBlock.forward": """
        h = self.ln1(x)
        x = x + self.sa(h)
        h = self.ln2(x)
        return x + self.ffwd(h)
    """}),
    Learner("07 attention written out with F.dropout, a device-aware GPT", "07", {
        "CausalSelfAttention.forward": """
            B, T, C = x.shape
            q, k, v = self.queries_keys_values(x)
            if cache is not None:
                out = cache.attend(q, k, v)
            else:
                wei = (q @ k.transpose(-2, -1)) / math.sqrt(k.size(-1))
                wei = wei.masked_fill(torch.ones(T, T, dtype=torch.bool, device=x.device).tril() == 0, float("-inf"))
                wei = F.dropout(F.softmax(wei, dim=-1), p=self.dropout, training=self.training)
                out = wei @ v
            return self.proj(out.transpose(1, 2).reshape(B, T, C))
        """, "DropoutBlock.forward": """
            attended = self.sa(self.ln1(x), cache=cache)
            x = x + self.dropout(attended)
            return x + self.dropout(self.ffwd(self.ln2(x)))
        """, "GPT.forward": """
            B, T = idx.shape
            start = cache.length if cache is not None else 0
            positions = torch.arange(start, start + T, device=idx.device)
            x = self.token_embedding(idx) + self.position_embedding(positions)
            for i in range(len(self.blocks)):
                x = self.blocks[i](x, cache.layer(i) if cache is not None else None)
            x = self.ln_f(x)
            logits = self.lm_head(x)
            if cache is not None:
                cache.advance(T)
            if targets is None:
                return logits, None
            return logits, F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        """}),
    Learner("08 store with index_copy_, a window mask written out", "08", {"KVCache.store": """
        T = k.size(2)
        if self.length + T > self.block_size:
            raise ValueError("the cache is full")
        positions = torch.arange(self.length, self.length + T)
        self.k[layer].index_copy_(2, positions, k)
        self.v[layer].index_copy_(2, positions, v)
        return self.k[layer][:, :, :self.length + T], self.v[layer][:, :, :self.length + T]
    """, "attention_to_window": """
        Tq, Tk = q.size(-2), k.size(-2)
        offset = Tk - Tq
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))
        allowed = torch.arange(Tk)[None, :] <= (torch.arange(Tq)[:, None] + offset)
        scores = scores.masked_fill(~allowed, float("-inf"))
        return scores.softmax(dim=-1) @ v
    """}),
    Learner("09 RoFormer's interleaved pairs", "09", {"apply_rope": """
        x1, x2 = x[..., 0::2], x[..., 1::2]
        turned = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
        return turned.flatten(-2)
    """}, note="interleaved"),
    Learner("09 rotate_half, the full-width way of writing the half split", "09", {"apply_rope": """
        def rotate_half(t):
            t1, t2 = t.chunk(2, dim=-1)
            return torch.cat((-t2, t1), dim=-1)
        return x * torch.cat((cos, cos), dim=-1) + rotate_half(x) * torch.cat((sin, sin), dim=-1)
    """}),
    Learner("01 a large negative number for the mask, and bmm", "01", {"AttentionHead.forward": """
        B, T, C = x.shape
        q, k, v = self.query(x), self.key(x), self.value(x)
        wei = torch.bmm(q, k.transpose(1, 2)) / k.size(-1) ** 0.5
        wei = wei.masked_fill(torch.tril(torch.ones(T, T)) == 0, -1e9)
        return torch.bmm(torch.softmax(wei, dim=-1), v)
    """}),
    Learner("09 angles computed every time", "09", {"Rotary.forward": """
        cos, sin = rope_angles(start, x.size(-2), self.head_size)
        return apply_rope(x, cos.to(x.device), sin.to(x.device))
    """, "RotaryAttention.forward": """
        q, k, v = self.queries_keys_values(x)
        start = getattr(cache, "start", 0)
        q = self.rotary(q, start)
        k = self.rotary(k, start)
        out = causal_attention(q, k, v, self.dropout if self.training else 0.0) if cache is None else \\
            cache.attend(q, k, v)
        return self.proj(concat_heads(out))
    """}),
]

# The kinds of mistake the grader is built to catch (the issue that asked for it lists them), and the
# files above that make each.
ISSUE_KINDS = {
    "a mask not cropped to the input's length": ["01 a mask for the whole block, not cropped"],
    "positions taken for the whole block": ["07 positions for the whole block"],
    "step 07's GPT ignores where the cache starts": ["07 the GPT ignores where the cache starts"],
    "step 07's attention ignores the cache": ["07 attention ignores the cache", "07 the block keeps the cache to itself"],
    "step 08: a multi-token chunk after a prompt": ["08 the window's mask aligned to its start", "08 no mask for a chunk"],
    "step 08: a cache that overflows": ["08 a cache that wraps around instead of refusing"],
    "step 08: a wrong window mask": ["08 is_causal for every call", "08 the window's mask aligned to its start"],
    "step 09: a rotation that ignores its start": ["09 the rotation ignores its start",
                                                   "09 attention ignores the cache's start"],
    "step 09: RoPE applied to v": ["09 RoPE on v as well"],
    "step 00: argmax for sampling": ["00 generate takes the likeliest token (argmax)"],
    "dropout left off the attention weights": ["07 no dropout on the attention weights"],
    "dropout on a sub-layer's input, not its output": ["07 dropout on each sub-layer's input"],
    "step 01: scaled by n_embd (needs head_size != n_embd)": ["01 scaled by n_embd (the lecture's bug)",
                                                               "02 scaled by n_embd"],
    "a first row all masked (NaN)": ["01 the first row all masked"],
    "heads mixed with positions (a reshape without the transpose)": [
        "02 heads mixed with positions (a reshape without the transpose)",
        "02 heads put side by side without the transpose"],
    "step 07: a missing final LayerNorm, not blamed on dropout": ["07 no final LayerNorm"],
    "step 07: a wrong scale, not blamed on dropout": ["07 attention written out, scaled by n_embd"],
    "a scale by head_size instead of its square root": ["01 divided by head_size, not its square root"],
    "GELU for ReLU": ["03 GELU for ReLU", "05 GELU in the MLP"],
    "the feed-forward before attention": ["04 the feed-forward before attention"],
    "a missing residual around the MLP": ["05 no residual around the MLP"],
    "correct: a ModuleList of heads": ["02 the lecture's ModuleList of heads",
                                       "05 the lecture's heads with a projection, named blocks"],
    "correct: a registered tril buffer cropped to [:T, :T]": ["01 the lecture's registered tril, cropped to T"],
    "correct: separately named layers": ["03 separately named fc and relu", "05 GPT-2's c_fc and c_proj, F.relu"],
    "correct: RoPE on interleaved pairs": ["09 RoFormer's interleaved pairs"],
}
