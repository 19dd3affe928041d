import math

import pytest
import torch
import torch.nn as nn

from gpt.data import load_dataset
from course.measures import format_measures
from gpt.measures import measure, measure_val


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
