import math

import pytest
import torch
import torch.nn as nn

from gpt.data import load_dataset
from course.measures import format_measures
from gpt.errors import UserError
from gpt.measures import loss_by_position, measure, measure_val
from gpt.model import GPT

V_SMALL = 12


class FixedLogits(nn.Module):
    """A model whose next-token logits depend only on the current token: row i of a fixed table."""

    def __init__(self, table):
        super().__init__()
        self.table = nn.Parameter(torch.tensor(table))
        self.block_size = 2

    def forward(self, idx, targets=None):
        return self.table[idx], None


def test_measures_of_a_hand_checkable_model():
    """Tokens 0 1 0 1 0 (4 predictions). After 0 the model says 1 with probability 3/4 (logits ln 3, 0);
    after 1 it says 0 and 1 equally. Predictions: 1|0 (p 3/4, top-1 right), 0|1 (p 1/2, tie: argmax
    picks 0, right), 1|0 (3/4, right), 0|1 (1/2, right)."""
    model = FixedLogits([[0.0, math.log(3)], [0.0, 0.0]])
    m = measure(model, torch.tensor([0, 1, 0, 1, 0]), n_chars=4, block_size=2)
    expected = -(2 * math.log(3 / 4) + 2 * math.log(1 / 2)) / 4
    assert m["tokens"] == 4 and m["chars"] == 4
    assert m["loss"] == pytest.approx(expected, abs=1e-6)
    assert m["perplexity"] == pytest.approx(math.exp(expected), abs=1e-6)
    assert m["bits_per_char"] == pytest.approx(expected / math.log(2), abs=1e-6)
    assert m["top1"] == 1.0 and m["top5"] == 1.0
    assert format_measures("val", m) == ("val (4 characters): loss 0.4904 | perplexity 1.63 | 0.708 bits/char | "
                                         "top-1 100.0% | top-5 100.0%")


def test_a_wrong_top1_guess_and_a_short_last_window_count_once():
    """Five predictions in windows of 2: two full windows and a short one; after 1 the model now
    prefers 1, which is wrong every time."""
    model = FixedLogits([[0.0, 1.0], [0.0, 2.0]])
    ids = torch.tensor([0, 1, 0, 1, 0, 1])
    m = measure(model, ids, n_chars=10, block_size=2)
    logp = torch.log_softmax(model.table, -1)
    expected = -(3 * logp[0, 1] + 2 * logp[1, 0]).item() / 5
    assert m["tokens"] == 5 and m["loss"] == pytest.approx(expected, abs=1e-6)
    assert m["top1"] == pytest.approx(3 / 5)
    assert m["bits_per_char"] == pytest.approx(expected * 5 / 10 / math.log(2), abs=1e-6), "per character, not per token"
    assert "(10 characters, 5 tokens)" in format_measures("val", m)


def test_bits_per_character_is_loss_over_ln2_for_the_character_tokenizer(corpus_text):
    data = load_dataset()
    torch.manual_seed(0)
    model = FixedLogits(torch.randn(65, 65).tolist())
    m = measure_val(model, data, block_size=8)
    assert m["tokens"] == m["chars"] == 111_540, "every character of the validation split is predicted once"
    assert m["bits_per_char"] == pytest.approx(m["loss"] / math.log(2), rel=1e-9)


class SurerWithContext(nn.Module):
    """Predicts token 0 with logit t at position t (against 0 for token 1): the more context, the surer."""

    def __init__(self):
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(1))  # measure() runs where the model's parameters are

    def forward(self, idx, targets=None):
        T = idx.size(1)
        logits = torch.zeros(*idx.shape, 2)
        logits[..., 0] = torch.arange(T, dtype=torch.float)  # (B, T, 2)
        return logits, None


def test_loss_by_position_is_the_loss_made_from_each_amount_of_context():
    ids = torch.zeros(1 + 3 * 4 + 2, dtype=torch.long)  # three full windows of 4 and a short one of 2
    m = measure(SurerWithContext(), ids, n_chars=14, block_size=4)
    expected = [math.log(1 + math.exp(-t)) for t in range(4)]  # -log p(token 0) at position t
    assert m["loss_by_position"] == pytest.approx(expected, abs=1e-6)
    assert m["loss"] == pytest.approx((3 * sum(expected) + expected[0] + expected[1]) / 14, abs=1e-6)


def by_hand(model, ids: torch.Tensor, block_size: int, starts=None) -> list[float]:
    """The loss at each position from every window start (or those given), one window at a time."""
    sums = [0.0] * block_size
    starts = starts if starts is not None else range(len(ids) - block_size)
    for s in starts:
        logits, _ = model(ids[None, s:s + block_size])
        nll = torch.nn.functional.cross_entropy(logits[0], ids[s + 1:s + block_size + 1], reduction="none")
        sums = [a + b for a, b in zip(sums, nll.tolist())]
    return [a / len(starts) for a in sums]


def test_loss_by_position_from_every_start_is_each_windows_loss_averaged_by_hand():
    torch.manual_seed(0)
    model = GPT(V_SMALL, 8, 16, 2, 1).eval()
    ids = torch.randint(V_SMALL, (700,))  # 692 windows: more than one forward's 512 (4,096 tokens of 8)
    assert loss_by_position(model, ids, 8) == pytest.approx(by_hand(model, ids, 8), abs=1e-5)
    runs = [s for s in range(692) if s // 32 % 3 == 0]  # every=3: runs of 4 * 8 starts, one in every 3
    assert loss_by_position(model, ids, 8, every=3) == pytest.approx(by_hand(model, ids, 8, runs), abs=1e-5)


def test_a_model_that_ignores_its_context_is_flat_from_every_start_and_jagged_from_consecutive_windows():
    """Its loss depends only on the character to predict, so whatever differs between positions is
    which characters each one averages over: from every start (nearly) the same ones, from
    consecutive windows a different 1/block_size of them."""
    torch.manual_seed(0)
    model = FixedLogits((3 * torch.randn(V_SMALL, V_SMALL)).tolist())
    model.table.data[:] = model.table.data[0]  # every row the same: the context changes nothing
    ids = torch.randint(V_SMALL, (2001,))
    smooth = loss_by_position(model, ids, 16)
    jagged = measure(model, ids, n_chars=2000, block_size=16)["loss_by_position"]
    assert max(smooth) - min(smooth) < 0.02, smooth
    assert max(jagged) - min(jagged) > 10 * (max(smooth) - min(smooth)), jagged


def test_loss_by_position_needs_a_whole_window():
    with pytest.raises(UserError, match="no window of 8 tokens"):
        loss_by_position(FixedLogits([[0.0]]), torch.zeros(8, dtype=torch.long), 8)
