import pytest
import torch

from gpt.data import get_batch
from gpt.model import GPT
from gpt.modern import wsd_schedule
from gpt.train import cosine_schedule, estimate_loss, make_optimizer, train

V, T, C = 20, 8, 16


def tiny_model(dropout=0.0):
    return GPT(V, T, C, 2, 1, dropout=dropout)


def test_estimate_loss_uses_eval_mode_and_restores_train_mode():
    model = tiny_model(dropout=0.5)
    data = torch.randint(V, (2000,))
    model.train()
    a = estimate_loss(model, {"val": data}, 4, T, 5, torch.Generator().manual_seed(0))
    b = estimate_loss(model, {"val": data}, 4, T, 5, torch.Generator().manual_seed(0))
    assert a == b, "with dropout on, two estimates from the same batches would differ"
    assert model.training


def test_estimate_loss_equals_the_mean_of_separate_batches_with_a_short_last_chunk():
    """The course's evaluation, 200 batches of 32 windows of 8 tokens: 6,400 windows scored in chunks of
    512 (4,096 tokens), 12 full chunks and a short one of 256, give the mean of the 200 separate batches."""
    torch.manual_seed(0)
    model = tiny_model().eval()
    data = torch.randint(V, (5000,))
    batch_size, eval_iters = 32, 200
    assert (batch_size * eval_iters) % (4096 // T) == 256, "the last chunk must be short"
    big = estimate_loss(model, {"val": data}, batch_size, T, eval_iters, torch.Generator().manual_seed(1))
    x, y = get_batch(data, batch_size * eval_iters, T, torch.Generator().manual_seed(1))
    with torch.no_grad():
        separate = [model(x[i:i + batch_size], y[i:i + batch_size])[1].item() for i in range(0, len(x), batch_size)]
    assert abs(big["val"] - sum(separate) / len(separate)) < 1e-5


def test_train_evaluates_every_interval_and_at_the_last_step():
    torch.manual_seed(0)
    model = tiny_model()
    data = torch.arange(3000) % V  # a predictable sequence, so a few steps are enough to learn something
    history = train(model, make_optimizer(model, 1e-2), data, data, batch_size=4, block_size=T, max_iters=25,
                    eval_interval=10, eval_iters=2, seed=0)
    assert [r["iter"] for r in history] == [0, 10, 20, 24]
    assert history[-1]["train"] < history[0]["train"]


def test_final_evaluation_comes_after_the_last_step_with_its_own_batch_count():
    torch.manual_seed(0)
    model = tiny_model()
    data = torch.arange(3000) % V
    seen = []
    history = train(model, make_optimizer(model, 1e-2), data, data, batch_size=4, block_size=T, max_iters=25,
                    eval_interval=10, eval_iters=2, final_eval_iters=7, seed=0,
                    on_eval=lambda r, s: seen.append(model.lm_head.weight.detach().clone()))
    assert [(r["iter"], r["eval_iters"]) for r in history] == [(0, 2), (10, 2), (20, 2), (25, 7)]
    assert history[-1]["final"] is True
    assert torch.equal(seen[-1], model.lm_head.weight), "the final number is the model as it ends"


def test_same_seed_same_losses():
    runs = []
    for _ in range(2):
        torch.manual_seed(5)
        model = tiny_model(dropout=0.1)
        data = torch.randint(V, (3000,))
        runs.append(train(model, make_optimizer(model, 1e-3), data, data, batch_size=4, block_size=T,
                          max_iters=12, eval_interval=5, eval_iters=2, seed=5))
    assert [(r["train"], r["val"]) for r in runs[0]] == [(r["train"], r["val"]) for r in runs[1]]


def test_schedule_follows_the_steps_and_reaches_min_lr_at_the_last_one():
    torch.manual_seed(0)
    model = tiny_model()
    data = torch.arange(2000) % V
    optimizer = make_optimizer(model, 1e-2)
    lrs = []
    real_step = optimizer.step

    def step():
        lrs.append(optimizer.param_groups[0]["lr"])
        real_step()

    optimizer.step = step
    train(model, optimizer, data, data, batch_size=2, block_size=T, max_iters=40, eval_interval=100, eval_iters=1,
          seed=0, lr_schedule=cosine_schedule(1e-2, 1e-4, warmup=0.1))
    assert len(lrs) == 40
    assert lrs[0] < 1e-6 and max(lrs) == pytest.approx(1e-2, rel=1e-6) and lrs.index(max(lrs)) == 4
    assert lrs[-1] == pytest.approx(cosine_schedule(1e-2, 1e-4, 0.1)(39 / 40))
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:])), "after the warmup the rate only goes down"


def test_cosine_schedule_warms_up_then_decays_to_min_lr():
    peak, low = 1e-3, 1e-4
    lr_at = cosine_schedule(peak, low, warmup=0.1)
    assert lr_at(0.0) < 1e-9
    assert abs(lr_at(0.05) - peak / 2) < 1e-9
    assert abs(lr_at(0.1) - peak) < 1e-9
    assert abs(lr_at(1.0) - low) < 1e-12
    assert abs(lr_at(1.7) - low) < 1e-12  # past the end it stays at the minimum
    lrs = [lr_at(p / 100) for p in range(10, 101)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:])), "decay must be monotone"


def test_wsd_schedule_holds_the_peak_then_decays_linearly():
    lr_at = wsd_schedule(1e-3, 1e-5, warmup=0.1, decay=0.2)
    assert lr_at(0.05) == pytest.approx(5e-4)
    assert lr_at(0.1) == lr_at(0.5) == lr_at(0.79) == 1e-3
    assert lr_at(0.9) == pytest.approx((1e-3 + 1e-5) / 2)
    assert lr_at(1.0) == pytest.approx(1e-5)


def test_a_group_with_an_lr_scale_follows_the_schedule_at_its_multiple():
    torch.manual_seed(0)
    model = tiny_model()
    optimizer = make_optimizer(model, 1.0)
    optimizer.param_groups[0]["lr_scale"] = 10.0
    data = torch.arange(2000) % V
    train(model, optimizer, data, data, batch_size=2, block_size=T, max_iters=3, eval_interval=100, eval_iters=1,
          seed=0, lr_schedule=lambda progress: 0.5)
    assert optimizer.param_groups[0]["lr"] == 5.0


def test_time_budget_stops_the_run_lays_the_schedule_over_it_and_still_ends_its_table():
    torch.manual_seed(0)
    model = tiny_model()
    data = torch.arange(2000) % V
    optimizer = make_optimizer(model, 1e-2)
    history = train(model, optimizer, data, data, batch_size=2, block_size=T, max_iters=10**9,
                    eval_interval=10**9, eval_iters=1, seed=0, time_budget=0.5,
                    lr_schedule=cosine_schedule(1e-2, 1e-4, warmup=0.1))
    assert history[-1]["time"] >= 0.5 and 5 < history[-1]["iter"] < 10**9
    # the last update ran within one step of the budget's end, where the schedule is at its minimum
    assert abs(optimizer.param_groups[0]["lr"] - 1e-4) < 0.02 * 1e-2
