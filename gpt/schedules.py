"""Learning-rate schedules: each a plain function of the run's progress in [0, 1] (the fraction of
its steps done, or of its time budget), made by a function of the schedule's settings. A run picks
one by name (`--schedule`, `SCHEDULES`); `None` keeps the rate constant.

    cosine   linear warmup, then a cosine down to min_lr (Loshchilov & Hutter 2016,
             https://arxiv.org/abs/1608.03983, one cycle)
    sgdr     warmup, then cosine cycles that restart at the peak, each `cycle_mult` times longer than
             the one before (the same paper's "SGDR: stochastic gradient descent with warm restarts")
    wsd      warmup, a long stable phase at the peak, then a linear decay over the last `decay` of the
             run (Hu et al. 2024, MiniCPM, https://arxiv.org/abs/2404.06395)
"""

import math


def warmed_up(peak: float, warmup: float, then):
    """Linear warmup over the first `warmup` fraction of the run, then then(progress after warmup,
    rescaled to [0, 1])."""
    def lr_at(progress: float) -> float:
        if progress < warmup:
            return peak * (progress + 1e-9) / warmup
        return then(min(1.0, (progress - warmup) / max(1e-9, 1.0 - warmup)))
    return lr_at


def cosine_schedule(peak: float, min_lr: float, warmup: float):
    """Warmup, then one cosine from peak down to min_lr at the end of the run."""
    return warmed_up(peak, warmup, lambda t: min_lr + 0.5 * (1.0 + math.cos(math.pi * t)) * (peak - min_lr))


def sgdr_schedule(peak: float, min_lr: float, warmup: float, cycles: int = 3, cycle_mult: float = 2.0):
    """Warmup, then `cycles` cosine cycles from peak to min_lr, each restarting at the peak and lasting
    cycle_mult times as long as the one before; the last one ends with the run."""
    lengths = [cycle_mult ** i for i in range(cycles)]
    total = sum(lengths)

    def after_warmup(t: float) -> float:
        position = t * total  # in units of the first cycle's length
        for i, length in enumerate(lengths):
            if position < length or i == len(lengths) - 1:  # in this cycle, or past the end of the last
                return min_lr + 0.5 * (1.0 + math.cos(math.pi * min(1.0, position / length))) * (peak - min_lr)
            position -= length
    return warmed_up(peak, warmup, after_warmup)


def wsd_schedule(peak: float, min_lr: float, warmup: float, decay: float):
    """Warmup, the peak rate until the last `decay` fraction of the run, then a linear decay to min_lr."""
    def lr_at(progress: float) -> float:
        if progress < warmup:
            return peak * (progress + 1e-9) / warmup
        if progress < 1 - decay:
            return peak
        return peak - (peak - min_lr) * min(1.0, (progress - (1 - decay)) / decay)
    return lr_at


SCHEDULES = ("constant", "cosine", "sgdr", "wsd")


def schedule_for(cfg):
    """The schedule cfg.schedule names, with cfg's settings; None for a constant rate."""
    return {
        "constant": lambda: None,
        "cosine": lambda: cosine_schedule(cfg.learning_rate, cfg.min_lr, cfg.warmup),
        "sgdr": lambda: sgdr_schedule(cfg.learning_rate, cfg.min_lr, cfg.warmup, cfg.cycles, cfg.cycle_mult),
        "wsd": lambda: wsd_schedule(cfg.learning_rate, cfg.min_lr, cfg.warmup, cfg.decay),
    }[cfg.schedule]()


class LearningRateSchedule:
    """A hook for the training loop (gpt/train.py): before each step, set the learning rate to
    lr_at(progress), progress being the fraction of the run done. A parameter group may run at a
    multiple of it (Muon's lr_scale)."""

    order = 20  # after a hook that lays the progress over something else (a time budget: course/hooks.py)

    def __init__(self, lr_at):
        self.lr_at = lr_at

    def before_step(self, trainer):
        lr = self.lr_at(trainer.progress)
        for group in trainer.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
