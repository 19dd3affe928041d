"""The lecture's straightforward code for tasks 01-06, kept only as the yardstick for `python -m course.bench`.

Written the way the lecture writes it: a Python list of separate heads, each with its own key, query
and value Linear and the attention math spelled out; batches gathered with a Python loop; the loss
estimated from 200 separate batches per split; AdamW with PyTorch's defaults; PyTorch's default
thread count; the whole context recomputed for every sampled character. The models are the same
as the `gpt/` parts compose (same layers and sizes); the two use the random numbers in a different
order, so their final losses differ by up to about 0.02.

    python -m course.baseline task05        # one full run, printing the course's table
"""

import sys
import time

import torch
import torch.nn as nn
from torch.nn import functional as F

from gpt.data import load_dataset

from .download import ensure_text
from .reference import LECTURE_SIZED


class Head(nn.Module):
    def __init__(self, n_embd, head_size, block_size):
        super().__init__()
        self.key = nn.Linear(n_embd, head_size, bias=False)
        self.query = nn.Linear(n_embd, head_size, bias=False)
        self.value = nn.Linear(n_embd, head_size, bias=False)
        self.register_buffer("tril", torch.tril(torch.ones(block_size, block_size)))

    def forward(self, x):
        B, T, C = x.shape
        k = self.key(x)  # (B, T, hs)
        q = self.query(x)  # (B, T, hs)
        wei = q @ k.transpose(-2, -1) * k.shape[-1] ** -0.5  # (B, T, T)
        wei = wei.masked_fill(self.tril[:T, :T] == 0, float("-inf"))
        wei = F.softmax(wei, dim=-1)
        return wei @ self.value(x)  # (B, T, hs)


class MultiHead(nn.Module):
    def __init__(self, n_embd, n_head, block_size, proj):
        super().__init__()
        self.heads = nn.ModuleList([Head(n_embd, n_embd // n_head, block_size) for _ in range(n_head)])
        self.proj = nn.Linear(n_embd, n_embd) if proj else nn.Identity()

    def forward(self, x):
        return self.proj(torch.cat([h(x) for h in self.heads], dim=-1))


class Block(nn.Module):
    def __init__(self, n_embd, n_head, block_size, layout):
        super().__init__()
        self.layout = layout
        modern = layout != "plain"
        self.sa = MultiHead(n_embd, n_head, block_size, proj=modern)
        if modern:
            self.ffwd = nn.Sequential(nn.Linear(n_embd, 4 * n_embd), nn.ReLU(), nn.Linear(4 * n_embd, n_embd))
        else:
            self.ffwd = nn.Sequential(nn.Linear(n_embd, n_embd), nn.ReLU())
        self.ln1 = nn.LayerNorm(n_embd) if layout == "pre_ln" else nn.Identity()
        self.ln2 = nn.LayerNorm(n_embd) if layout == "pre_ln" else nn.Identity()

    def forward(self, x):
        if self.layout == "plain":
            return self.ffwd(self.sa(x))
        x = x + self.sa(self.ln1(x))
        return x + self.ffwd(self.ln2(x))


class BigramLanguageModel(nn.Module):
    def __init__(self, vocab_size, block_size, n_embd, body, final_norm):
        super().__init__()
        self.block_size = block_size
        self.token_embedding_table = nn.Embedding(vocab_size, n_embd)
        self.position_embedding_table = nn.Embedding(block_size, n_embd)
        self.body = body
        self.ln_f = nn.LayerNorm(n_embd) if final_norm else nn.Identity()
        self.lm_head = nn.Linear(n_embd, vocab_size)

    def forward(self, idx, targets=None):
        B, T = idx.shape
        x = self.token_embedding_table(idx) + self.position_embedding_table(torch.arange(T))
        logits = self.lm_head(self.ln_f(self.body(x)))
        if targets is None:
            return logits, None
        B, T, C = logits.shape
        return logits, F.cross_entropy(logits.view(B * T, C), targets.view(B * T))

    def generate(self, idx, max_new_tokens):
        for _ in range(max_new_tokens):
            logits, _ = self(idx[:, -self.block_size:])
            probs = F.softmax(logits[:, -1, :], dim=-1)
            idx = torch.cat((idx, torch.multinomial(probs, num_samples=1)), dim=1)
        return idx


def build(task, vocab_size, block_size=8, n_embd=32, n_head=4, n_layer=3):
    if task == "task01":
        body = Head(n_embd, n_embd, block_size)
    elif task == "task02":
        body = MultiHead(n_embd, n_head, block_size, proj=False)
    elif task == "task03":
        body = nn.Sequential(MultiHead(n_embd, n_head, block_size, proj=False),
                             nn.Sequential(nn.Linear(n_embd, n_embd), nn.ReLU()))
    else:
        layout = {"task04": "plain", "task05": "residual", "task06": "pre_ln"}[task]
        body = nn.Sequential(*[Block(n_embd, n_head, block_size, layout) for _ in range(n_layer)])
    return BigramLanguageModel(vocab_size, block_size, n_embd, body, final_norm=task == "task06")


TASKS = LECTURE_SIZED[1:]  # tasks 01-06: task 00 has no lecture code to compare with


def main(task, batch_size=32, block_size=8, max_iters=5000, eval_interval=500, eval_iters=200,
         learning_rate=1e-3, seed=1337):
    torch.manual_seed(seed)
    ensure_text()
    data = load_dataset()
    tokenizer, train_data, val_data = data.tokenizer, data.train, data.val

    def get_batch(split):
        data = train_data if split == "train" else val_data
        ix = torch.randint(len(data) - block_size, (batch_size,))
        x = torch.stack([data[i:i + block_size] for i in ix])
        y = torch.stack([data[i + 1:i + block_size + 1] for i in ix])
        return x, y

    @torch.no_grad()
    def estimate_loss():
        out = {}
        model.eval()
        for split in ["train", "val"]:
            losses = torch.zeros(eval_iters)
            for k in range(eval_iters):
                X, Y = get_batch(split)
                _, loss = model(X, Y)
                losses[k] = loss.item()
            out[split] = losses.mean()
        model.train()
        return out

    model = build(task, tokenizer.vocab_size, block_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate)
    start = time.perf_counter()
    for it in range(max_iters):
        if it % eval_interval == 0 or it == max_iters - 1:
            losses = estimate_loss()
            print(f"Epoch {it}: avg train loss {losses['train']:.4f} | avg val loss {losses['val']:.4f}"
                  f" | {time.perf_counter() - start:.1f}s", flush=True)
        xb, yb = get_batch("train")
        _, loss = model(xb, yb)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    context = torch.zeros((1, 1), dtype=torch.long)
    print("\nSampling 500 tokens from a trained model: ")
    print(tokenizer.decode(model.generate(context, max_new_tokens=500)[0, 1:].tolist()))


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in TASKS:
        sys.exit(f"usage: python -m course.baseline {{{','.join(TASKS)}}}")
    main(sys.argv[1])
