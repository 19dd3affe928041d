"""The baseline before attention: a recurrent language model (char-rnn: Karpathy 2015, "The
Unreasonable Effectiveness of Recurrent Neural Networks", https://karpathy.github.io/2015/05/21/rnn-effectiveness/).

A GPT reads its whole window at every position; a recurrent network reads one character at a time and
carries what it keeps of the past in a hidden state of fixed size. `compare_rnn.py` trains both at
task 07's budget.

Shapes: B batch, T time, E embedding size, H hidden size, V vocabulary.
"""

import torch
import torch.nn as nn

from .errors import UserError
from .model import eval_mode, language_model_loss

# The recurrent cells, and how many gated matrices each has per layer: a GRU's update and reset gates
# and its candidate state (Cho et al. 2014, https://arxiv.org/abs/1406.1078); an LSTM's input, forget
# and output gates and its candidate cell (Hochreiter & Schmidhuber 1997).
CELLS = {"gru": nn.GRU, "lstm": nn.LSTM}
GATES = {"gru": 3, "lstm": 4}


class RecurrentState:
    """What a recurrent model carries from one call to the next: its hidden state (an LSTM's is the
    pair (h, c)), None before the first call, which starts from zeros. The recurrent counterpart of
    a GPT's key/value cache, passed to the model's forward in the same place; it never fills, so a
    stream from it never has to start again (gpt/generate.py)."""

    def __init__(self, hidden=None):
        self.hidden = hidden

    def full(self) -> bool:
        return False

    def detached(self) -> "RecurrentState":
        """The same state, cut off from the graph that computed it: gradients stop here."""
        if self.hidden is None:
            return RecurrentState()
        if isinstance(self.hidden, tuple):  # an LSTM's (h, c)
            return RecurrentState(tuple(h.detach() for h in self.hidden))
        return RecurrentState(self.hidden.detach())


class RNNLanguageModel(nn.Module):
    """Token embedding, then n_layer layers of a GRU or an LSTM of n_hidden units, then a linear head:
    at each position, the next character's logits from the hidden state.

    The hidden state is an argument (`cache`, a RecurrentState), not kept on the module: without one,
    every call starts from zeros, as a GPT starts every window from no context. block_size is the
    window it trains on, which the lecture's `generate` crops its context to; it sets no limit on what
    the network can read. dropout applies between layers, where nn.GRU and nn.LSTM put it.
    """

    def __init__(self, vocab_size: int, block_size: int, n_embd: int, n_hidden: int, n_layer: int,
                 dropout: float = 0.0, cell: str = "gru"):
        super().__init__()
        self.args = dict(vocab_size=vocab_size, block_size=block_size, n_embd=n_embd, n_hidden=n_hidden,
                         n_layer=n_layer, dropout=dropout, cell=cell)  # what a checkpoint needs to rebuild it
        self.block_size = block_size
        self.token_embedding = nn.Embedding(vocab_size, n_embd)
        self.rnn = CELLS[cell](n_embd, n_hidden, n_layer, dropout=dropout if n_layer > 1 else 0.0, batch_first=True)
        self.lm_head = nn.Linear(n_hidden, vocab_size)

    def forward(self, idx, targets=None, cache: RecurrentState | None = None):
        """idx (B, T) -> logits (B, T, V), and the loss if targets are given. With a cache, the network
        starts from its state and leaves there the state after idx's last token."""
        x = self.token_embedding(idx)  # (B, T, E)
        out, hidden = self.rnn(x, None if cache is None else cache.hidden)  # (B, T, H)
        if cache is not None:
            cache.hidden = hidden
        logits = self.lm_head(out)  # (B, T, V)
        return logits, language_model_loss(logits, targets)

    def new_cache(self, batch: int = 1) -> RecurrentState:
        """The state a stream starts from: zeros (task 08)."""
        return RecurrentState()


def count_rnn_parameters(cell: str, vocab_size: int, n_embd: int, n_hidden: int, n_layer: int) -> int:
    """RNNLanguageModel's parameter count: the embedding; per layer, each gate's input and recurrent
    weights and their two biases; the head."""
    gates = GATES[cell]
    layers = sum(gates * (n_in * n_hidden + n_hidden * n_hidden + 2 * n_hidden)
                 for n_in in [n_embd] + [n_hidden] * (n_layer - 1))
    return vocab_size * n_embd + layers + n_hidden * vocab_size + vocab_size


def hidden_size_for(parameters: int, cell: str, vocab_size: int, n_embd: int, n_layer: int) -> int:
    """The hidden size that gives an RNNLanguageModel the number of parameters closest to parameters."""
    size = lambda h: count_rnn_parameters(cell, vocab_size, n_embd, h, n_layer)  # noqa: E731
    h = 1
    while size(h + 1) <= parameters:
        h += 1
    return h if parameters - size(h) <= size(h + 1) - parameters else h + 1


def check_stateful_length(n_tokens: int, batch_size: int, block_size: int) -> None:
    """Stateful training cuts the training text into batch_size streams of at least one window each."""
    if (n_tokens - 1) // batch_size < block_size:
        raise UserError(f"--stateful cuts the training text into --batch-size {batch_size} streams of at least one "
                        f"window of --block-size {block_size}: {n_tokens:,} tokens are too few; give a longer text "
                        f"or a smaller batch or block size")


class StatefulTraining(nn.Module):
    """Stateful training (truncated backpropagation through time across windows): the training text
    cut into batch_size streams side by side, each step the next block_size characters of every
    stream, each window starting from the state the window before it left, detached, so that the
    gradient stops at the window's start but the context does not. Every pass over the text starts
    from zeros again.

    Train this module with its `batches` (train's batches=): each step's windows must continue the
    step before's, row by row. In eval mode it is the model alone, every window from zeros, as the
    other runs are evaluated.
    """

    def __init__(self, model: RNNLanguageModel, train_ids: torch.Tensor, batch_size: int, block_size: int):
        super().__init__()
        check_stateful_length(len(train_ids), batch_size, block_size)
        self.model, self.batch_size, self.block_size = model, batch_size, block_size
        self.per_stream = (len(train_ids) - 1) // batch_size  # characters in each stream
        self.text = train_ids[:batch_size * self.per_stream + 1]
        self.steps_per_pass = self.per_stream // block_size
        self.carried = RecurrentState()

    def batches(self, state) -> tuple[torch.Tensor, torch.Tensor]:
        """Step state.iter's windows (B, T): in row b, the next block_size characters of stream b."""
        step = state.iter % self.steps_per_pass
        if step == 0:
            self.carried = RecurrentState()  # a new pass over the text: the state from before means nothing
        starts = torch.arange(self.batch_size) * self.per_stream + step * self.block_size  # (B,)
        offsets = starts[:, None] + torch.arange(self.block_size)  # (B, T)
        return self.text[offsets], self.text[offsets + 1]

    def forward(self, idx, targets=None):
        if not self.training:
            return self.model(idx, targets)
        cache = self.carried
        logits, loss = self.model(idx, targets, cache=cache)
        self.carried = cache.detached()
        return logits, loss


@torch.inference_mode()
def loss_as_one_stream(model: RNNLanguageModel, ids: torch.Tensor, chunk: int = 4096) -> float:
    """The total loss (nats) of ids[1:], read by the network as one stream from zeros, its state
    carried through all of it: each character predicted from everything before it."""
    device = next(model.parameters()).device
    cache, total = model.new_cache(), 0.0
    with eval_mode(model):
        for i in range(0, len(ids) - 1, chunk):
            y = ids[i + 1:i + 1 + chunk][None].to(device)  # (1, T)
            x = ids[i:i + y.size(1)][None].to(device)  # (1, T): the characters before them
            _, loss = model(x, y, cache=cache)
            total += loss.item() * y.size(1)
    return total
