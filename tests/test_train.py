import torch
import torch.nn as nn

from gpt.data import get_batch
from gpt.model import MLP, Block, LanguageModel, MultiHeadAttention
from gpt.train import estimate_loss, lr_at, make_optimizer, train

V, T, C = 20, 8, 16


def tiny_model(dropout=0.0):
    body = nn.Sequential(Block(C, MultiHeadAttention(C, 2, T, dropout=dropout), MLP(C, dropout=dropout)))
    return LanguageModel(V, T, C, body, final_norm=True, dropout=dropout)


def test_estimate_loss_uses_eval_mode_and_restores_train_mode():
    model = tiny_model(dropout=0.5)
    data = torch.randint(V, (2000,))
    model.train()
    a = estimate_loss(model, {"val": data}, 4, T, 5, torch.Generator().manual_seed(0))
    b = estimate_loss(model, {"val": data}, 4, T, 5, torch.Generator().manual_seed(0))
    assert a == b, "with dropout on, two estimates from the same batches would differ"
    assert model.training


def test_estimate_loss_equals_the_mean_of_separate_batches():
    """One big batch gives the same estimate as eval_iters separate batches of the same windows."""
    model = tiny_model().eval()
    data = torch.randint(V, (5000,))
    batch_size, eval_iters = 4, 6
    big = estimate_loss(model, {"val": data}, batch_size, T, eval_iters, torch.Generator().manual_seed(1),
                        max_tokens_per_forward=3 * T)  # several chunks, one of them short
    x, y = get_batch(data, batch_size * eval_iters, T, torch.Generator().manual_seed(1))
    with torch.no_grad():
        separate = [model(x[i:i + batch_size], y[i:i + batch_size])[1].item()
                    for i in range(0, len(x), batch_size)]
    assert abs(big["val"] - sum(separate) / len(separate)) < 1e-5


def test_train_evaluates_every_interval_and_at_the_last_step():
    torch.manual_seed(0)
    model = tiny_model()
    data = torch.arange(3000) % V  # a predictable sequence, so a few steps are enough to learn something
    history = train(model, make_optimizer(model, 1e-2), data, data, batch_size=4, block_size=T, max_iters=25,
                    eval_interval=10, eval_iters=2, seed=0)
    assert [r["iter"] for r in history] == [0, 10, 20, 24]
    assert history[-1]["train"] < history[0]["train"]


def test_same_seed_same_losses():
    runs = []
    for _ in range(2):
        torch.manual_seed(5)
        model = tiny_model(dropout=0.1)
        data = torch.randint(V, (3000,))
        runs.append(train(model, make_optimizer(model, 1e-3), data, data, batch_size=4, block_size=T,
                          max_iters=12, eval_interval=5, eval_iters=2, seed=5))
    assert [(r["train"], r["val"]) for r in runs[0]] == [(r["train"], r["val"]) for r in runs[1]]


def test_schedule_warms_up_then_decays_to_min_lr():
    peak, low = 1e-3, 1e-4
    assert lr_at(0.0, peak, low, warmup=0.1) < 1e-9
    assert abs(lr_at(0.05, peak, low, warmup=0.1) - peak / 2) < 1e-9
    assert abs(lr_at(0.1, peak, low, warmup=0.1) - peak) < 1e-9
    assert abs(lr_at(1.0, peak, low, warmup=0.1) - low) < 1e-12
    assert abs(lr_at(1.7, peak, low, warmup=0.1) - low) < 1e-12  # past the end it stays at the minimum
    lrs = [lr_at(p / 100, peak, low, 0.1) for p in range(10, 101)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:])), "decay must be monotone"
