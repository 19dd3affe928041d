"""Why attention? Task 07's budget on a recurrent network (a GRU and an LSTM), side by side with the GPT.

Before transformers, learners trained an LSTM on Tiny Shakespeare (char-rnn). This trains task 07's
GPT at its cpu preset, then a GRU and an LSTM with about as many parameters (gpt/rnn.py), each
through the same loop, batches, optimizer, schedule and number of steps, printing each run's table,
its final evaluation and a sample; then one table of all of them: what attention buys over
recurrence at the same budget, and what it costs.

Every window starts the RNN from a zero state, as it starts the GPT from no context, so both predict
each character from the same 0 to block_size - 1 characters before it. --stateful adds a run per cell that carries
the state from one window to the next along consecutive windows of the text: unbounded context.
--equal-time adds a run per cell that trains for as long as the GPT took, instead of as many steps.

    python compare_rnn.py                    # GPT, GRU, LSTM at task 07's cpu preset, on the same batches
    python compare_rnn.py --cell gru         # the GPT and the GRU (--no-gpt: the GRU alone)
    python compare_rnn.py --seeds 3          # seeds 1337, 1338, 1339: mean ± std in every row
    python compare_rnn.py --stateful --equal-time       # and the state carried; and the GPT's time
    python task08_infinite.py --checkpoint checkpoints/gru.pt      # stream from the GRU it saved
"""

from course.config import at_least, checked, parse_config
from course.distributed import launched_by_torchrun
from course.exits import friendly_errors
from course.files import atomic_write, check_writable
from course.hooks import StepTimes
from course.measures import format_speed, stream_speed
from course.plots import plot_loss_by_position
from course.presets import TASK07
from course.run import LongRun, check_model
import dataclasses
from gpt.data import load_dataset
from gpt.errors import UserError
from gpt.measures import bits_per_char
from gpt.model import count_parameters
from gpt.rnn import RNNLanguageModel, StatefulTraining, check_stateful_length, hidden_size_for, loss_as_one_stream
from gpt.train import make_optimizer
import json
from pathlib import Path
import statistics
from task07 import build_model as build_gpt
from torch import cat

DEFAULTS = dataclasses.replace(TASK07["cpu"], checkpoint="")  # each model's checkpoint goes to --checkpoints


@dataclasses.dataclass
class Arm:
    """One row of the comparison: how its model is made, and how it trains."""
    label: str
    name: str  # its checkpoint and run folder: checkpoints/<name>.pt, runs/compare_rnn/<name>/
    cell: str = ""  # "" for the GPT
    stateful: bool = False  # the state carried across consecutive windows
    equal_time: bool = False  # trained for the GPT's training time instead of its number of steps


def build_rnn(cfg, vocab_size: int, cell: str, n_layer: int) -> RNNLanguageModel:
    """cell's RNN with task 07's embedding size, n_layer layers, and the hidden size that gives it as
    many parameters as task 07's GPT of cfg."""
    gpt_size = count_parameters(build_gpt(cfg, vocab_size))
    hidden = hidden_size_for(gpt_size, cell, vocab_size, cfg.n_embd, n_layer)
    return RNNLanguageModel(vocab_size, cfg.block_size, cfg.n_embd, hidden, n_layer, cfg.dropout, cell)


def arms_for(cells: list[str], stateful: bool, equal_time: bool, gpt: bool = True) -> list[Arm]:
    arms = [Arm("GPT (task 07)", "gpt")] if gpt else []
    arms += [Arm(cell.upper(), cell, cell) for cell in cells]
    arms += [Arm(f"{cell.upper()}, state carried", f"{cell}-stateful", cell, stateful=True) for cell in cells if stateful]
    arms += [Arm(f"{cell.upper()}, the GPT's time", f"{cell}-equal-time", cell, equal_time=True)
             for cell in cells if equal_time]
    return arms


def train_arm(arm: Arm, cfg, data, n_layer: int, gen_chars: int) -> dict:
    """One arm, as task 07 trains its GPT: seeded, AdamW, the loop with its schedule and its table, the
    final evaluation, the report (measures, sample); then what the summary compares."""
    print(f"\n=== {arm.label}, seed {cfg.seed} ===", flush=True)
    build = (lambda c, vocab_size: build_rnn(c, vocab_size, arm.cell, n_layer)) if arm.cell else build_gpt
    with LongRun("compare_rnn", cfg, build, overwrite=True, files=f"compare_rnn/seed{cfg.seed}/{arm.name}") as run:
        model = build(cfg, data.tokenizer.vocab_size).to(run.device)
        optimizer = make_optimizer(model.parameters(), cfg.learning_rate, cfg.weight_decay)
        if arm.cell:  # the config line is the GPT's; this is what the RNN made of it
            args = model.args
            run.log(f"{arm.cell.upper()}: embedding {args['n_embd']}, {args['n_layer']} layers of {args['n_hidden']} "
                    f"units, the hidden size that gives it the GPT's number of parameters (n_head and n_layer are "
                    f"the GPT's)")
        timer = StepTimes()
        stateful = StatefulTraining(model, data.train, cfg.batch_size, cfg.block_size) if arm.stateful else None
        history = run.train(model, optimizer, data, hooks=[timer], trains=stateful,
                            batches=stateful.batches if stateful else None)  # consecutive windows, or random ones
        measures = run.report(model, data, history)["measures"]
        return summary_row(arm, cfg, model, data, history, timer, measures, gen_chars, run)


def summary_row(arm: Arm, cfg, model, data, history, timer: StepTimes, measures: dict, gen_chars: int, run) -> dict:
    """What the summary table compares of a trained arm: its numbers, its times, how fast it streams,
    and for an RNN the validation split read as one stream."""
    speed = stream_speed(model, gen_chars, seed=cfg.seed)
    run.log(format_speed(speed))
    row = {"seed": cfg.seed, "parameters": count_parameters(model), "steps": len(timer.steps),
           "train": history[-1]["train"], "val": history[-1]["val"], "perplexity": measures["perplexity"],
           "bits_per_char": measures["bits_per_char"], "seconds": timer.seconds, "ms_per_step": 1000 * timer.median(),
           "chars_per_second": speed["all"], "first_chars_per_second": speed["first"],
           "last_chars_per_second": speed["last"], "loss_by_position": measures["loss_by_position"]}
    if arm.cell:  # the state carried through the whole split: each character read with everything before it
        with run.precision.autocast():  # as report measured the windows
            nats = loss_as_one_stream(model, cat([data.train[-1:], data.val]))
        row["one_stream_bits_per_char"] = bits_per_char(nats, data.val_chars)
        run.log(f"val read as one stream, the state carried through it: {row['one_stream_bits_per_char']:.3f} bits/char")
    return row


def train_seed(arms: list[Arm], cfg, data, n_layer: int, gen_chars: int, checkpoints: str | None):
    """Every arm at cfg.seed, the GPT first (the equal-time arms train for its time), yielding
    (arm's name, its row) as each ends. checkpoints: the folder each model is saved in, or None."""
    gpt_seconds = None
    for arm in arms:
        arm_cfg = dataclasses.replace(cfg, checkpoint=f"{checkpoints}/{arm.name}.pt" if checkpoints else "")
        if arm.equal_time:
            arm_cfg = dataclasses.replace(arm_cfg, time_budget=gpt_seconds, max_iters=100 * cfg.max_iters)
        row = train_arm(arm, arm_cfg, data, n_layer, gen_chars)
        if not arm.cell:
            gpt_seconds = row["seconds"]
        yield arm.name, row


COLUMNS = (("parameters", "parameters", "{:,.0f}"), ("steps", "steps", "{:,.0f}"), ("train", "final train", "{:.4f}"),
           ("val", "final val", "{:.4f}"), ("perplexity", "val perplexity", "{:.2f}"),
           ("bits_per_char", "val bits/char", "{:.3f}"), ("one_stream_bits_per_char", "bits/char, one stream", "{:.3f}"),
           ("seconds", "training time (s)", "{:.0f}"), ("ms_per_step", "ms/step", "{:.1f}"),
           ("chars_per_second", "generation chars/s", "{:,.0f}"))


def cell_text(values: list[float], fmt: str) -> str:
    """A table cell: the value, or over several seeds that differ their mean ± std."""
    if not values:
        return "—"
    if len(set(values)) == 1:  # one seed, or the same in every seed (parameters, steps)
        return fmt.format(values[0])
    return f"{fmt.format(statistics.mean(values))} ± {fmt.format(statistics.stdev(values))}"


def summary_table(arms: list[Arm], runs: list[dict]) -> str:
    """One row per arm, one column per measure (a markdown table): mean ± std over the seeds run."""
    lines = ["| model | " + " | ".join(title for _, title, _ in COLUMNS) + " |",
             "|---" * (len(COLUMNS) + 1) + "|"]
    for arm in arms:
        rows = [run[arm.name] for run in runs]
        cells = [cell_text([r[key] for r in rows if key in r], fmt) for key, _, fmt in COLUMNS]
        lines.append(f"| {arm.label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def mean_and_std(curves: list[list[float]]) -> tuple[list[float], list[float] | None]:
    if len(curves) == 1:
        return curves[0], None
    return [statistics.mean(v) for v in zip(*curves)], [statistics.stdev(v) for v in zip(*curves)]


def save_results(path, cfg, arms: list[Arm], runs: list[dict]) -> None:
    with atomic_write(path, "w") as f:
        json.dump({"config": dataclasses.asdict(cfg), "arms": [dataclasses.asdict(a) for a in arms], "runs": runs},
                  f, indent=1)


def extra_flags(parser):
    parser.add_argument("--cell", choices=("gru", "lstm", "both"), default="both",
                        help="the recurrent cell(s) to compare with the GPT (default: both)")
    parser.add_argument("--no-gpt", action="store_true",
                        help="leave out the GPT's row (trained first otherwise: a third of the default run)")
    parser.add_argument("--rnn-layers", type=checked(int, at_least(1)), default=2,
                        help="recurrent layers; the hidden size follows, to match the GPT's parameters (default: 2)")
    parser.add_argument("--seeds", type=checked(int, at_least(1)), default=1,
                        help="run every arm at this many seeds, from --seed on; the table gives mean ± std (default: 1)")
    parser.add_argument("--stateful", action="store_true",
                        help="also train each cell with its state carried across consecutive windows")
    parser.add_argument("--equal-time", action="store_true",
                        help="also train each cell for the GPT's training time instead of its number of steps")
    parser.add_argument("--gen-chars", type=checked(int, at_least(1)), default=2000,
                        help="characters streamed to time generation (default: %(default)s)")
    parser.add_argument("--checkpoints", default="checkpoints",
                        help="folder for each model's checkpoint, e.g. checkpoints/gru.pt ('' for none; default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true", help="replace the models an earlier comparison saved there")
    parser.add_argument("--figure", default="runs/compare_rnn/loss_by_position.png",
                        help="the loss-by-position figure (default: %(default)s)")


def check_arguments(cfg, args, arms: list[Arm]) -> None:
    """Refuse, before anything trains, what this comparison can't do or would lose."""
    if launched_by_torchrun():
        raise UserError("compare_rnn.py trains its models one after the other in one process: run it with python")
    if cfg.checkpoint:
        raise UserError("compare_rnn.py saves one checkpoint per model, into a folder: --checkpoints DIR, not --checkpoint")
    if args.no_gpt and args.equal_time:
        raise UserError("--equal-time gives each cell the GPT's training time: it needs the GPT's row (leave out --no-gpt)")
    if args.stateful and cfg.grad_accum > 1:
        raise UserError("--stateful carries each row's state to the next step, which micro-steps would split: "
                        "leave --grad-accum at 1")
    check_model(build_gpt, cfg)
    if args.checkpoints:
        for arm in arms:
            path = Path(args.checkpoints) / f"{arm.name}.pt"
            check_writable(path, "--checkpoints")
            if path.exists() and not args.overwrite:
                raise UserError(f"{path} already holds a model (an earlier comparison's?). Replace the models in "
                                f"{args.checkpoints} with --overwrite, or save them elsewhere with --checkpoints DIR "
                                f"('' for none).")
    check_writable(args.figure, "--figure")
    if cfg.runs:
        check_writable(cfg.runs, "--runs", folder=True)


def main(argv=None):
    cfg, args = parse_config(DEFAULTS, argv, description=__doc__, extra=extra_flags)
    cells = ["gru", "lstm"] if args.cell == "both" else [args.cell]
    arms = arms_for(cells, args.stateful, args.equal_time, gpt=not args.no_gpt)
    with friendly_errors():
        check_arguments(cfg, args, arms)
        data = load_dataset(cfg.data, cfg.tokenizer, cfg.vocab_size)
        if args.stateful:
            check_stateful_length(len(data.train), cfg.batch_size, cfg.block_size)
        results = Path(cfg.runs) / "compare_rnn" / "results.json" if cfg.runs else None
        runs = []  # per seed, {arm's name: its row}
        for i in range(args.seeds):
            seed_cfg = dataclasses.replace(cfg, seed=cfg.seed + i)
            runs.append({})
            for name, row in train_seed(arms, seed_cfg, data, args.rnn_layers, args.gen_chars,
                                        args.checkpoints if i == 0 else None):  # the first seed's models are saved
                runs[-1][name] = row
                if results is not None:  # after every arm: a stopped comparison keeps what it measured
                    save_results(results, cfg, arms, runs)
        seeds = ", ".join(str(cfg.seed + i) for i in range(args.seeds))
        print(f"\nThe comparison, seed{'s' if args.seeds > 1 else ''} {seeds}{' (mean ± std)' if args.seeds > 1 else ''}; "
              f"perplexity and bits/char over the whole validation split, each window from zero context; "
              f"'one stream': the split read in one go, the RNN's state carried through it:")
        print(summary_table(arms, runs))
        curves = {arm.label: mean_and_std([run[arm.name]["loss_by_position"] for run in runs]) for arm in arms
                  if not arm.equal_time}
        plot_loss_by_position(curves, args.figure, f"val loss by position, task 07's budget (seeds {seeds})")
        print(f"loss by position: {args.figure}")
        if results is not None:
            print(f"every number: {results}")
        return runs


if __name__ == "__main__":
    raise SystemExit(0 if main() is not None else 1)
