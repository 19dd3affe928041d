from types import SimpleNamespace

import pytest
import torch

from course.config import GPTConfig, TrainConfig
from course.device import choose_precision
from course.hooks import FinalEvaluation, StepTimes, TimeBudget
from course.timing import seconds_per_step
from gpt.data import get_batch
from gpt.model import GPT
from gpt.schedules import SCHEDULES, LearningRateSchedule, cosine_schedule, schedule_for, sgdr_schedule, wsd_schedule
from gpt.train import Trainer, estimate_loss, make_optimizer, train

V, T, C = 20, 8, 16


def tiny_model(dropout=0.0):
    return GPT(V, T, C, 2, 1, dropout=dropout)


def both(data):
    """The same tokens as the training and the validation split."""
    return SimpleNamespace(train=data, val=data)


def run_cfg(**kw):
    """The loop's settings, in the course's precision (fp32)."""
    return TrainConfig(block_size=T, precision="fp32", **kw)


class OnEval:
    """A hook that calls fn(trainer, record) after each evaluation."""

    def __init__(self, fn):
        self.fn = fn

    def on_eval(self, trainer, record):
        self.fn(trainer, record)


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
    history = train(model, make_optimizer(model.parameters(), 1e-2), both(data),
                    run_cfg(batch_size=4, max_iters=25, eval_interval=10, eval_iters=2, seed=0))
    assert [r["iter"] for r in history] == [0, 10, 20, 24]
    assert history[-1]["train"] < history[0]["train"]


def test_final_evaluation_comes_after_the_last_step_with_its_own_batch_count():
    torch.manual_seed(0)
    model = tiny_model()
    data = torch.arange(3000) % V
    seen = []
    history = train(model, make_optimizer(model.parameters(), 1e-2), both(data),
                    run_cfg(batch_size=4, max_iters=25, eval_interval=10, eval_iters=2, seed=0),
                    hooks=[FinalEvaluation(7), OnEval(lambda trainer, r: seen.append(model.lm_head.weight.detach().clone()))])
    assert [(r["iter"], r["eval_iters"]) for r in history] == [(0, 2), (10, 2), (20, 2), (25, 7)]
    assert history[-1]["final"] is True
    assert torch.equal(seen[-1], model.lm_head.weight), "the final number is the model as it ends"


def test_same_seed_same_losses():
    runs = []
    for _ in range(2):
        torch.manual_seed(5)
        model = tiny_model(dropout=0.1)
        data = torch.randint(V, (3000,))
        runs.append(train(model, make_optimizer(model.parameters(), 1e-3), both(data),
                          run_cfg(batch_size=4, max_iters=12, eval_interval=5, eval_iters=2, seed=5)))
    assert [(r["train"], r["val"]) for r in runs[0]] == [(r["train"], r["val"]) for r in runs[1]]


def test_schedule_follows_the_steps_and_reaches_min_lr_at_the_last_one():
    torch.manual_seed(0)
    model = tiny_model()
    data = torch.arange(2000) % V
    optimizer = make_optimizer(model.parameters(), 1e-2)
    lrs = []
    real_step = optimizer.step

    def step():
        lrs.append(optimizer.param_groups[0]["lr"])
        real_step()

    optimizer.step = step
    train(model, optimizer, both(data), run_cfg(batch_size=2, max_iters=40, eval_interval=100, eval_iters=1, seed=0),
          hooks=[LearningRateSchedule(cosine_schedule(1e-2, 1e-4, warmup=0.1))])
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
    optimizer = make_optimizer(model.parameters(), 1.0)
    optimizer.param_groups[0]["lr_scale"] = 10.0
    data = torch.arange(2000) % V
    train(model, optimizer, both(data), run_cfg(batch_size=2, max_iters=3, eval_interval=100, eval_iters=1, seed=0),
          hooks=[LearningRateSchedule(lambda progress: 0.5)])
    assert optimizer.param_groups[0]["lr"] == 5.0


def test_time_budget_stops_the_run_lays_the_schedule_over_it_and_still_ends_its_table():
    torch.manual_seed(0)
    model = tiny_model()
    data = torch.arange(2000) % V
    optimizer = make_optimizer(model.parameters(), 1e-2)
    # the table's last line, where the budget stopped the run, is the final evaluation's (eval_iters batches)
    history = train(model, optimizer, both(data),
                    run_cfg(batch_size=2, max_iters=10**9, eval_interval=10**9, eval_iters=1, seed=0),
                    hooks=[TimeBudget(0.5), LearningRateSchedule(cosine_schedule(1e-2, 1e-4, warmup=0.1)),
                           FinalEvaluation(1)])
    assert history[-1]["time"] >= 0.5 and 5 < history[-1]["iter"] < 10**9
    # the last update ran within one step of the budget's end, where the schedule is at its minimum
    assert abs(optimizer.param_groups[0]["lr"] - 1e-4) < 0.02 * 1e-2


def test_sgdr_schedule_warms_up_then_restarts_at_the_peak_in_cycles_that_grow_by_cycle_mult():
    """Warmup over the first 10%, then cycles of 1, 2 and 4 units (7 in all) over the other 90%: each
    starts at the peak, is half-way down at its middle and ends at min_lr, as the run does."""
    peak, low, warmup = 1e-3, 1e-5, 0.1
    lr_at = sgdr_schedule(peak, low, warmup, cycles=3, cycle_mult=2.0)
    assert lr_at(0.0) < 1e-9
    assert lr_at(0.05) == pytest.approx(peak / 2)
    warming = [lr_at(p / 1000) for p in range(0, 100)]
    assert all(a < b for a, b in zip(warming, warming[1:])), "the warmup only goes up"
    starts, lengths = [], [0.9 * 1 / 7, 0.9 * 2 / 7, 0.9 * 4 / 7]
    for length in lengths:
        starts.append(warmup + sum(lengths[:len(starts)]))
    assert starts[-1] + lengths[-1] == pytest.approx(1.0)
    eps = 1e-9
    for start, length in zip(starts, lengths):
        assert lr_at(start + eps) == pytest.approx(peak, rel=1e-6), f"restart at the peak at {start:.4f}"
        assert lr_at(start + length / 2) == pytest.approx((peak + low) / 2, rel=1e-6), "half-way at the cycle's middle"
        assert lr_at(start + length / 4) == pytest.approx(low + 0.5 * (1 + 2 ** -0.5) * (peak - low), rel=1e-6)
        assert lr_at(start + length - eps) == pytest.approx(low, abs=1e-9), "min_lr at the cycle's end"
        inside = [lr_at(start + length * i / 50) for i in range(1, 50)]
        assert all(a > b for a, b in zip(inside, inside[1:])), "each cycle only goes down"
    for start in starts[1:]:
        assert lr_at(start - eps) < 1.01 * low and lr_at(start + eps) > 0.99 * peak, "a warm restart"
    assert lr_at(1.0) == pytest.approx(low) and lr_at(1.5) == pytest.approx(low), "min_lr at the end of the run"
    one = sgdr_schedule(peak, low, warmup, cycles=1)
    cosine = cosine_schedule(peak, low, warmup)
    assert all(one(p / 100) == pytest.approx(cosine(p / 100)) for p in range(101)), "one cycle is the cosine"


def test_schedule_for_returns_the_schedule_each_name_names():
    assert set(SCHEDULES) == {"constant", "cosine", "sgdr", "wsd"}
    settings = dict(learning_rate=2e-3, min_lr=3e-5, warmup=0.2, cycles=2, cycle_mult=3.0, decay=0.3)
    expected = {
        "cosine": cosine_schedule(2e-3, 3e-5, 0.2),
        "sgdr": sgdr_schedule(2e-3, 3e-5, 0.2, cycles=2, cycle_mult=3.0),
        "wsd": wsd_schedule(2e-3, 3e-5, 0.2, decay=0.3),
    }
    points = [p / 200 for p in range(201)]
    curves = {}
    for name in SCHEDULES:
        lr_at = schedule_for(GPTConfig(schedule=name, **settings))
        if name == "constant":
            assert lr_at is None, "a constant rate has no schedule: the optimizer's own rate stays"
            continue
        curves[name] = [lr_at(p) for p in points]
        assert curves[name] == pytest.approx([expected[name](p) for p in points], rel=1e-9, abs=1e-15), name
    assert len({tuple(c) for c in curves.values()}) == 3, "each name names a different schedule"


class Recorder:
    """A hook with every method, recording (name, event, step) as the loop calls it."""

    def __init__(self, name, events):
        self.name, self.events = name, events

    def on_start(self, trainer):
        self.events.append((self.name, "on_start", trainer.state.iter))

    def before_step(self, trainer):
        self.events.append((self.name, "before_step", trainer.state.iter))

    def after_step(self, trainer):
        self.events.append((self.name, "after_step", trainer.state.iter))

    def on_eval(self, trainer, record):
        assert record is trainer.state.history[-1]
        self.events.append((self.name, "on_eval", record["iter"]))

    def on_end(self, trainer):
        self.events.append((self.name, "on_end", trainer.state.iter))

    def on_close(self, trainer):
        self.events.append((self.name, "on_close", trainer.state.iter))


def test_hooks_act_in_the_order_they_declare_whatever_order_they_are_given_in():
    """A hook that reads what another sets comes after it: a schedule (order 20) after a time budget
    (10), the checkpoint (30) before the history file (40) before the printed line (50)."""
    from course.hooks import FinalEvaluation, PrintTable, ProgressBar, StepTimes, TimeBudget

    hooks = [ProgressBar(show=False), PrintTable(), FinalEvaluation(1), LearningRateSchedule(lambda p: 1e-3),
             TimeBudget(60.0), StepTimes()]
    trainer = Trainer(tiny_model(), None, None, run_cfg(seed=0), hooks)
    assert [type(h).__name__ for h in trainer.hooks] == ["StepTimes", "TimeBudget", "LearningRateSchedule",
                                                         "PrintTable", "FinalEvaluation", "ProgressBar"]
    from course.checkpoint import SaveCheckpoints
    from course.run_files import RunFiles
    assert SaveCheckpoints.order < RunFiles.order < PrintTable.order, "a line on the screen means its model is saved"


def test_hooks_are_called_in_the_documented_order():
    """on_start; per step before_step, the evaluation's on_eval (every eval_interval steps and at the last
    step, before its update), after_step; then on_end and on_close; each event hook by hook, in the
    order the hooks are given."""
    torch.manual_seed(0)
    model = tiny_model()
    data = torch.arange(2000) % V
    events = []
    trainer = Trainer(model, make_optimizer(model.parameters(), 1e-3), both(data),
                      run_cfg(batch_size=2, max_iters=5, eval_interval=2, eval_iters=1, seed=0),
                      [Recorder("a", events), Recorder("b", events)])
    history = trainer.run()
    expected = [("on_start", 0)]
    for it in range(5):
        expected += [("before_step", it)] + ([("on_eval", it)] if it in (0, 2, 4) else []) + [("after_step", it)]
    expected += [("on_end", 5), ("on_close", 5)]
    assert events == [(name, event, it) for event, it in expected for name in ("a", "b")]
    assert history is trainer.state.history and [r["iter"] for r in history] == [0, 2, 4]


def test_on_close_is_called_when_a_hook_interrupts_the_run():
    class CtrlC:
        def after_step(self, trainer):
            if trainer.state.iter == 2:
                raise KeyboardInterrupt

    torch.manual_seed(0)
    model = tiny_model()
    data = torch.arange(2000) % V
    events = []
    with pytest.raises(KeyboardInterrupt):
        train(model, make_optimizer(model.parameters(), 1e-3), both(data),
              run_cfg(batch_size=2, max_iters=10, eval_interval=100, eval_iters=1, seed=0),
              hooks=[Recorder("a", events), CtrlC()])
    assert [e[1:] for e in events[-3:]] == [("before_step", 2), ("after_step", 2), ("on_close", 2)]
    assert all(e[1] != "on_end" for e in events), "an interrupted loop does not end: it closes"


def test_the_loop_trains_on_the_batches_it_is_given_one_call_per_step_in_order():
    torch.manual_seed(0)
    model = tiny_model()
    data = torch.arange(2000) % V
    asked = []

    def batches(state):  # the same two windows every step, so that what was trained on is known
        asked.append(state.iter)
        return data[:2 * T].view(2, T), data[1:2 * T + 1].view(2, T)

    train(model, make_optimizer(model.parameters(), 1e-3), both(data),
          run_cfg(batch_size=2, max_iters=6, eval_interval=100, eval_iters=1, seed=0), batches=batches)
    assert asked == list(range(6))


def test_timing_a_step_changes_neither_the_weights_the_optimizer_any_random_state_nor_the_mode():
    torch.manual_seed(0)
    model = tiny_model(dropout=0.5).eval()
    optimizer = make_optimizer(model.parameters(), 1e-3)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    before = torch.get_rng_state()
    assert seconds_per_step(model, optimizer, 4, T, V, choose_precision("cpu")) > 0
    assert torch.equal(torch.get_rng_state(), before), "dropout's draws while timing must be undone"
    assert not model.training and all(torch.equal(v, weights[k]) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters()) and not optimizer.state, "the copy was updated, not these"


def test_the_time_estimate_is_the_median_so_one_slow_step_does_not_set_it(monkeypatch):
    import course.timing as timing

    torch.manual_seed(0)
    model = tiny_model()
    optimizer = make_optimizer(model.parameters(), 1e-3)
    now, durations = [0.0], iter([5.0, 0.1, 0.1, 9.0, 0.1, 0.1])  # a slow first step, and one slow one later

    def step(*args):  # each step takes the next duration on a fake clock
        now[0] += next(durations)
    monkeypatch.setattr(timing.time, "perf_counter", lambda: now[0])
    monkeypatch.setattr(timing, "lecture_step", step)
    assert seconds_per_step(model, optimizer, 4, T, V, choose_precision("cpu"), budget=1e9) == pytest.approx(0.1)


def test_a_busy_machine_is_named_once_when_recent_steps_are_far_slower_than_the_first(monkeypatch):
    import course.timing as timing

    said = []
    watch = timing.BusyWatch(said.append, "python task07.py", slower=3.0, window=10)
    durations = [0.01] * 40 + [0.04] * 10 + [0.01] * 10 + [0.04] * 30  # one slow burst, then slow for good
    clock = iter(t for d in durations for t in (0.0, d))
    monkeypatch.setattr(timing.time, "perf_counter", lambda: next(clock))

    def steps(n):
        for _ in range(n):
            watch.before_step(None)
            watch.after_step(None)
    steps(60)
    assert not watch.busy and not said, "steady steps, and one slow window, are not a busy machine"
    steps(20)
    assert watch.busy and len(said) == 1, said
    assert "4.0x as long" in said[0] and "OMP_NUM_THREADS=1 python task07.py" in said[0]
    steps(10)
    assert len(said) == 1, "said once"


def test_step_times_count_every_step_and_stop_before_the_final_evaluation():
    torch.manual_seed(0)
    model = tiny_model()
    data = torch.arange(2000) % V
    timer = StepTimes()
    history = train(model, make_optimizer(model.parameters(), 1e-3), both(data),
                    run_cfg(batch_size=2, max_iters=7, eval_interval=3, eval_iters=1, seed=0),
                    hooks=[timer, FinalEvaluation(50)])
    assert len(timer.steps) == 7 and 0 < timer.median() <= max(timer.steps)
    assert timer.seconds <= history[-1]["time"], "the final evaluation comes after the training time"


def test_with_no_options_the_loop_is_the_lectures_five_lines_exactly():
    """train() with no hooks, batches or step: the same weights, bit for bit, and the same evaluations as
    the lecture's loop written out here (batches and evaluations drawn from the run's two generators)."""
    cfg = run_cfg(batch_size=4, max_iters=9, eval_interval=4, eval_iters=2, seed=5)
    data = both(torch.arange(3000) % V)

    torch.manual_seed(0)
    model = tiny_model(dropout=0.1)
    history = train(model, make_optimizer(model.parameters(), 1e-3), data, cfg)

    torch.manual_seed(0)
    lecture = tiny_model(dropout=0.1)
    optimizer = make_optimizer(lecture.parameters(), 1e-3)
    batches, evaluations = torch.Generator().manual_seed(5), torch.Generator().manual_seed(6)
    losses = []
    for it in range(cfg.max_iters):
        if it % cfg.eval_interval == 0 or it == cfg.max_iters - 1:
            losses.append(estimate_loss(lecture, {"train": data.train, "val": data.val}, 4, T, 2, evaluations))
        xb, yb = get_batch(data.train, 4, T, batches)
        logits, loss = lecture(xb, yb)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    assert [(r["train"], r["val"]) for r in history] == [(l["train"], l["val"]) for l in losses]
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), lecture.parameters()))
