"""An A/B of one setting (task 09's --compare SETTING=VALUE): this run's configuration against the
same with one setting changed, at the same step count, seed by seed, then the table of both arms' final
val losses and times per step.

    python task09_rope.py --compare positions=learned --seeds 3
"""

import argparse
import dataclasses
import statistics

from gpt.errors import UserError

from .distributed import launched_by_torchrun
from .run import check_models


def setting_of(config_class):
    """An argparse type for --compare SETTING=VALUE: (a field of config_class, a value of its type)."""
    return lambda text: setting(text, config_class)


def setting(text: str, config_class) -> tuple[str, object]:
    """SETTING=VALUE for --compare: a field of the script's config, and a value of its type."""
    name, sep, value = text.partition("=")
    name = name.replace("-", "_")
    defaults = {f.name: f.default for f in dataclasses.fields(config_class)}
    if not sep or name not in defaults:
        raise argparse.ArgumentTypeError(f"give SETTING=VALUE with a setting of this script, e.g. positions=learned "
                                         f"(got {text})")
    kind = type(defaults[name])
    if kind is bool:
        if value.lower() not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            raise argparse.ArgumentTypeError(f"{name} is true or false (got {value})")
        return name, value.lower() in ("1", "true", "yes", "on")
    try:
        return name, kind(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{name} takes a {kind.__name__} (got {value})") from None


def compare(cfg, change: tuple[str, object], seeds: int, build_model, train_one) -> dict:
    """Arm A is cfg, arm B is cfg with one setting changed; both per seed, one after the other, each
    through train_one(cfg) (the script's own run). Nothing is saved: the arms are experiments, and the
    model task 08 streams from stays as it is."""
    if launched_by_torchrun():
        raise UserError("--compare trains its arms one after the other in one process: run it with python")
    name, value = change
    field = next(f for f in dataclasses.fields(cfg) if f.name == name)
    if getattr(cfg, name) == value:
        raise UserError(f"--compare {name}={value}: this run has {name}={value} already, so B would be A; "
                        f"compare another value")
    arms = {"A": cfg, "B": dataclasses.replace(cfg, **{name: value})}  # B's settings checked when it is made
    check_models(build_model, [(f"arm {arm} of --compare {name}={value}", c) for arm, c in arms.items()])  # before A trains
    print(f"A/B at {cfg.max_iters} steps: A has {name}={getattr(cfg, name)}, B has {name}={value} ({field.metadata['help']})")
    results = {arm: [] for arm in arms}
    for i in range(seeds):
        for arm, arm_cfg in arms.items():
            run_cfg = dataclasses.replace(arm_cfg, seed=cfg.seed + i, checkpoint="", runs="", sample_tokens=0)
            print(f"\n=== arm {arm} ({name}={getattr(run_cfg, name)}), seed {run_cfg.seed} ===", flush=True)
            run = train_one(run_cfg)
            history = run["history"]
            steps = [r for r in history if not r.get("final")]
            ms = 1000 * (steps[-1]["time"] - steps[0]["time"]) / max(1, steps[-1]["iter"] - steps[0]["iter"])
            results[arm].append({"seed": run_cfg.seed, "val": history[-1]["val"], "ms_per_step": ms,
                                 "busy": run["busy"]})
    a, b = results["A"], results["B"]
    print(f"\n| seed | A: {name}={getattr(cfg, name)} | B: {name}={value} | B - A | ms/step A | ms/step B |")
    print("|---|---|---|---|---|---|")
    for ra, rb in zip(a, b):
        print(f"| {ra['seed']} | {ra['val']:.4f} | {rb['val']:.4f} | {rb['val'] - ra['val']:+.4f} | "
              f"{ra['ms_per_step']:.1f}{'*' if ra['busy'] else ''} | {rb['ms_per_step']:.1f}{'*' if rb['busy'] else ''} |")
    if seeds > 1:
        mean = {arm: statistics.mean(r["val"] for r in rs) for arm, rs in results.items()}
        std = {arm: statistics.stdev(r["val"] for r in rs) for arm, rs in results.items()}
        ms = {arm: statistics.median(r["ms_per_step"] for r in rs) for arm, rs in results.items()}
        print(f"| mean ± std | {mean['A']:.4f} ± {std['A']:.4f} | {mean['B']:.4f} ± {std['B']:.4f} | "
              f"{mean['B'] - mean['A']:+.4f} | {ms['A']:.1f} | {ms['B']:.1f} |")
    print(f"(final evaluation: {cfg.final_eval_iters} batches per split after step {cfg.max_iters}; "
          f"ms/step: the median of each arm's training time per step, evaluations included)")
    if any(r["busy"] for rs in results.values() for r in rs):
        print("* the machine was busy during this run (its steps slowed to half speed or worse): its ms/step says "
              "more about the machine than about the setting; compare times from a quiet machine")
    return results
