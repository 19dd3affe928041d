"""Step 00's pieces of the loop: estimate_loss (a mean per split, in eval mode, the mode put back) and
generate (the context kept and cropped to block_size, eval mode, the generator used, and samples that
follow the model's probabilities: argmax, or the first position's logits, don't)."""

import contextlib
import io

import torch
import torch.nn.functional as F
from torch import nn

from .lesson import V, Lesson, call
from .results import CheckFailed, Finding, expect


class Probe(nn.Module):
    """A model whose next-token distribution depends on the last token only, by a fixed table; it notes
    the longest context it was given and the mode it was called in."""

    def __init__(self, block_size: int = 4):
        super().__init__()
        self.block_size, self.longest, self.modes = block_size, 0, []
        table = torch.randn(V, V, generator=torch.Generator().manual_seed(11)) * 1.5
        self.table = nn.Parameter(table)

    def forward(self, idx, targets=None):
        self.longest = max(self.longest, idx.size(1))
        self.modes.append((self.training, torch.is_grad_enabled()))
        logits = self.table[idx]  # (B, T, V)
        loss = None if targets is None else F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        return logits, loss


def check_estimate_loss(ls: Lesson):
    from gpt.model import Bigram
    from gpt.train import estimate_loss

    torch.manual_seed(0)
    model = Bigram(V).train()
    data = torch.randint(V, (2000,), generator=torch.Generator().manual_seed(2))
    splits = {"train": data[:1500], "val": data[1500:]}
    probe = Probe(8).train()
    with contextlib.redirect_stdout(io.StringIO()):
        got = call(ls, lambda: ls.extras["estimate_loss"](model, splits, 8, 8, 50, torch.Generator().manual_seed(3)))
        call(ls, lambda: ls.extras["estimate_loss"](probe, splits, 8, 8, 5, torch.Generator().manual_seed(3)))
    solution = "estimate_loss"
    expect(isinstance(got, dict) and set(got) == {"train", "val"}, "a dict {'train': loss, 'val': loss}", f"{got!r}",
           Finding("estimate_loss", "estimate_loss doesn't return one loss per split", "one mean loss per split, keyed "
                   "by the split's name", "", solution))
    want = estimate_loss(model, splits, 8, 8, 50, torch.Generator().manual_seed(3))
    for split in want:
        value = float(got[split])
        expect(abs(value - want[split]) < 0.05, f"{split} about {want[split]:.3f} (the mean loss over 50 batches)",
               f"{value:.3f}", Finding("estimate_loss", f"the {split} loss is {value:.3f}, where the mean over the "
                                       f"batches is about {want[split]:.3f}", "the estimate is the mean of the "
                                       "batches' losses (not their sum), in eval mode", "", solution))
    expect(probe.modes and not any(training for training, _ in probe.modes), "the model in eval mode while it is "
           "estimated", "training mode", Finding("estimate_loss", "estimate_loss calls the model in training mode",
                                                 "the estimate is of the model as it will be used: in eval mode, "
                                                 "dropout off", "", solution))
    expect(model.training and probe.training, "the model back in training mode after", "eval mode", Finding(
        "estimate_loss", "estimate_loss leaves the model in eval mode", "put the model back in the mode it was in",
        "", solution))


def check_generate_context(ls: Lesson):
    generate = ls.extras["generate"]
    solution = "generate"
    model = Probe(4).train()
    idx = torch.tensor([[1, 2]])
    with contextlib.redirect_stdout(io.StringIO()):
        out = call(ls, lambda: generate(model, idx, 10, generator=torch.Generator().manual_seed(0)))
    expect(torch.is_tensor(out) and tuple(out.shape) == (1, 12), "shape (1, 2 + 10): the context, then the new tokens",
           f"{tuple(out.shape) if torch.is_tensor(out) else type(out).__name__}", Finding(
               "generate", "generate doesn't return the context followed by the new tokens", "each new token is "
               "appended to the sequence (along the time axis), and the whole sequence is returned", "", solution))
    expect(out[0, :2].tolist() == [1, 2], "the context kept at the front", f"{out[0].tolist()}", None)
    expect(model.longest <= model.block_size, f"at most block_size = {model.block_size} tokens of context per call",
           f"{model.longest}", Finding("generate-crop", f"generate gave the model {model.longest} tokens, more than "
                                                        f"its block_size {model.block_size}", "the model knows only "
                                       "block_size positions: it reads the last block_size tokens of the context",
                                       "", solution))
    expect(not any(training for training, _ in model.modes), "the model in eval mode while it generates",
           "training mode", Finding("generate", "generate calls the model in training mode", "generation uses the "
                                    "model as it is: eval mode, dropout off", "", solution))
    expect(model.training, "the model back in training mode after", "eval mode", Finding(
        "generate", "generate leaves the model in eval mode", "put the model back in the mode it was in", "", solution))
    one = call(ls, lambda: generate(model, torch.tensor([[5]]), 3, generator=torch.Generator().manual_seed(0)))
    expect(tuple(one.shape) == (1, 4), "from one token, (1, 4)", f"{tuple(one.shape)}", None)
    again = generate(model, idx, 10, generator=torch.Generator().manual_seed(0))
    expect(torch.equal(again, out), "the same tokens from a generator with the same seed", "other tokens", Finding(
        "generate", "two runs with generators of the same seed give different tokens", "the sampling draws from the "
        "generator it is given, so that a seed gives the same text", "", solution))


def check_sampling(ls: Lesson):
    """Samples follow the model's probabilities: the frequencies of 4000 draws after the same context."""
    generate = ls.extras["generate"]
    model = Probe(4)
    n = 4000
    idx = torch.tensor([[0, 1]]).repeat(n, 1)  # first token 0, last token 1
    with contextlib.redirect_stdout(io.StringIO()):
        out = call(ls, lambda: generate(model, idx, 1, generator=torch.Generator().manual_seed(5)))
    drawn = torch.bincount(out[:, -1], minlength=V).float() / n
    probs = F.softmax(model.table[1].detach(), -1)
    distance = 0.5 * (drawn - probs).abs().sum().item()
    if distance < 0.06:
        return
    solution = "generate"
    if drawn.max() == 1:
        token = int(drawn.argmax())
        finding = Finding("argmax", f"every one of {n} draws is token {token}, the likeliest (probability "
                                    f"{probs[token]:.2f})", "generation samples the next token from the model's "
                          "probabilities (the softmax of the logits), so that less likely tokens come up as often "
                          "as their probability says; always taking the likeliest repeats itself", "look at how the "
                          "next token is chosen: torch.multinomial draws from probabilities", solution)
    elif 0.5 * (drawn - F.softmax(model.table[0].detach(), -1)).abs().sum().item() < 0.06:
        finding = Finding("sampling-position", "the draws follow the probabilities after the first token of the "
                                               "context, not the last", "the next token follows the logits of the "
                          "last position", "look at which position's logits you sample from", solution)
    else:
        finding = Finding("sampling", f"the draws' frequencies are {distance:.2f} from the model's probabilities "
                                      "(total variation)", "the next token is drawn from the softmax of the last "
                          "position's logits", "print the probabilities you sample from next to the softmax of the "
                          "logits", solution)
    raise CheckFailed("draws whose frequencies follow the model's probabilities (within 0.06)",
                      f"a distance of {distance:.2f}", finding)
