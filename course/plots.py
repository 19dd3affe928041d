"""Pictures of a run: its loss curve, and what its attention heads read. Drawn headless (no display
needed), as PNG files beside the run's history."""

import torch

from gpt.model import eval_mode

from .reference import normal_width

# A line of Shakespeare from the validation split (the model never trained on it), for attention maps.
ATTENTION_TEXT = "BAPTISTA:\nGood morrow, neighbour Gremio."


def pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display: write files only
    import matplotlib.pyplot as plt

    return plt


def plot_loss(history: list[dict], path, title: str, course: tuple[int, float] | None = None,
              band: dict | None = None, course_note: str = "", band_elsewhere: str = ""):
    """Train and val loss against the step: the whole run on the left, its second half enlarged on the
    right, with the course's number (a star at the epoch it was printed) and this repository's
    reference band to check the run against: the range a normal run's final val loss lands in (the
    mean over 3 seeds, give or take course/reference.py's normal_width), measured on the run's kind of
    hardware, or on band_elsewhere's, which the label then names. A run
    that ends before the course's epoch gets the course's number as a dotted line instead, so that
    both panels keep the run's own steps. The legend sits under the panels, over no curve or tick.
    Returns the figure (closed), whose axes a test can read."""
    from .files import atomic_write

    plt = pyplot()
    steps = [r["iter"] for r in history]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.8), layout="constrained")
    for ax, start in zip(axes, (0, steps[-1] // 2)):
        shown = [r for r in history if r["iter"] >= start]
        ax.plot([r["iter"] for r in shown], [r["train"] for r in shown], "o-", ms=3, label="train")
        ax.plot([r["iter"] for r in shown], [r["val"] for r in shown], "o-", ms=3, label="val")
        if band is not None:
            width = normal_width(band)
            where = f", measured on {band_elsewhere}" if band_elsewhere else ""
            ax.axhspan(band["mean"] - width, band["mean"] + width, color="tab:green", alpha=0.25,
                       label=f"normal: final val {band['mean']:.4f} ± {width:.4f} (3 std over {band['seeds']} seeds, "
                             f"or 0.01{where})")
        if course is not None:
            note = f" ({course_note})" if course_note else ""
            label = f"course: {course[1]:.4f} at epoch {course[0]}{note}"
            if course[0] <= steps[-1]:
                ax.plot([course[0]], [course[1]], "*", color="black", ms=12, label=label)
            else:  # the axis would stretch to the course's epoch and squeeze the run to its left edge
                ax.axhline(course[1], color="black", ls=":", lw=1.5, label=f"{label}, after this run's last step")
        ax.set_xlabel("step")
        ax.set_ylabel("loss (nats per token)")
        ax.grid(alpha=0.3)
    axes[0].set_title(f"{title}: the whole run")
    axes[1].set_title("the second half, enlarged")
    fig.legend(*axes[1].get_legend_handles_labels(), loc="outside lower center", ncol=2, fontsize=9, frameon=False)
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)
    return fig


def plot_loss_by_position(curves: dict, path, title: str):
    """The val loss at each position of the window, one curve per model ({label: (mean, std)}, lists
    over positions; std None for one seed, else shaded): how much each model gets out of more context.
    On the right, each model's curve minus the first one's, over the positions both have (windows may
    differ in length: task 07's 64 against task 09's 128): the characters at each position are the
    same for every model, so what is hard about them cancels and the difference shows where each model
    is better. Returns the figure (closed)."""
    from .files import atomic_write

    plt = pyplot()
    fig, (ax, diff_ax) = plt.subplots(1, 2, figsize=(12, 4.8), layout="constrained")
    (first_label, (first, _)), colors = next(iter(curves.items())), {}
    for label, (mean, std) in curves.items():
        positions = range(len(mean))
        line, = ax.plot(positions, mean, lw=1.6, label=label)
        colors[label] = line.get_color()
        if std is not None:
            ax.fill_between(positions, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)],
                            color=line.get_color(), alpha=0.2)
    diff_ax.axhline(0.0, color=colors[first_label], lw=1.2, label=first_label)
    for label, (mean, _) in list(curves.items())[1:]:
        both = min(len(mean), len(first))  # zip stops there too
        diff_ax.plot(range(both), [m - f for m, f in zip(mean, first)], lw=1.4, color=colors[label],
                     label=f"{label} − {first_label}")
    longest = max(len(mean) for mean, _ in curves.values())
    ticks = sorted({t for t in (0, 1, 2, 4, 8, 16, 32, 64, 128, 256) if t < longest} | {longest - 1})
    for a in (ax, diff_ax):
        a.set_xscale("symlog", linthresh=1)
        a.set_xticks(ticks, [str(t) for t in ticks])
        a.set_xlabel("characters of context (position in the window)")
        a.grid(alpha=0.3)
        a.legend(frameon=False)
    ax.set_ylabel("val loss (nats per character)")
    ax.set_title(title)
    diff_ax.set_ylabel("difference in val loss (below 0: lower)")
    diff_ax.set_title(f"against {first_label}, position by position")
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)
    return fig


def attention_modules(model) -> list[tuple[str, torch.nn.Module]]:
    """The model's attention layers, in the order its forward runs them (none nested in another)."""
    found = []
    for name, module in model.named_modules():
        if hasattr(module, "attention_weights") and not any(name.startswith(f + ".") for f, _ in found):
            found.append((name, module))
    return found


@torch.no_grad()
def attention_maps(model, idx: torch.Tensor) -> list[torch.Tensor]:
    """For each attention layer: weights (nh, T, T) over the tokens idx (1, T). Row t holds what the
    token at t reads from each token before it, computed with the model's own weights as it runs when
    t is the newest token of its window: a text longer than block_size is read in sliding windows, so
    row t covers at most the block_size tokens up to t."""
    layers = attention_modules(model)
    inputs = {}
    hooks = [m.register_forward_hook(lambda m, args, out, name=name: inputs.__setitem__(name, args[0]))
             for name, m in layers]
    T, bs = idx.size(1), model.block_size
    maps = None
    with eval_mode(model):
        try:
            for end in range(min(T, bs), T + 1):
                model(idx[:, end - min(T, bs):end])  # one window; the hooks keep each layer's input
                for i, (name, m) in enumerate(layers):
                    w = m.attention_weights(inputs[name])[0]  # (nh, W, W)
                    if maps is None:
                        maps = [torch.zeros(w.size(0), T, T) for _ in layers]
                    W = w.size(-1)
                    if end == min(T, bs):  # the first window: every row of it
                        maps[i][:, :W, :W] = w
                    else:  # a later window: its last row only, placed at its columns
                        maps[i][:, end - 1, end - W:end] = w[:, -1]
        finally:
            for h in hooks:
                h.remove()
    return maps


def show_token(text: str) -> str:
    return text.replace("\n", "↵").replace(" ", "␣")


MAX_WIDTH = 15.0  # inches at 100 dpi: 1500 px, about what a screen shows of a picture without shrinking it
MAX_PITCH = 0.18  # inches per token: a one-head picture's labels as large as running text


def plot_attention(maps: list[torch.Tensor], tokens: list[str], path, title: str):
    """One panel per layer and head: the attention weights, the tokens labelled on both axes
    (row: the token reading; column: the token read). The panels share the width of a screen, and
    the labels are as large as one token's cell allows: a character written upright is narrower than
    it is tall, so the bottom row's can be larger than the left column's. Returns the figure (closed).

    Longer than the other functions here: one figure's layout, whose sizes depend on each other
    (panel size, label size, margins), reads best in one place."""
    import textwrap

    from .files import atomic_write

    plt = pyplot()
    n_layer, n_head = len(maps), maps[0].size(0)
    T = len(tokens)
    pitch = min(MAX_PITCH, (MAX_WIDTH - 1.2 - 0.2 * (n_head - 1)) / (n_head * T))  # inches per token
    labels = [show_token(t) for t in tokens]
    upright = all(len(label) == 1 for label in labels)  # single characters fit side by side; longer tokens turn
    row_font = min(12.0, 1.2 * pitch * 72)  # points: one cell's height (a glyph is shorter than its font size)
    column_font = min(12.0, 1.5 * pitch * 72) if upright else row_font
    panel = pitch * T
    fig, axes = plt.subplots(n_layer, n_head, figsize=(panel * n_head + 1.2 + 0.2 * (n_head - 1),
                                                       (panel + 0.4) * n_layer + 1.4),
                             squeeze=False, layout="constrained")
    for layer, heads in enumerate(maps):
        for h in range(n_head):
            ax = axes[layer][h]
            ax.imshow(heads[h].numpy(), cmap="Blues", vmin=0, vmax=1)
            # the tokens along the bottom row and the left column: every panel has the same axes
            if layer == n_layer - 1:
                ax.set_xticks(range(T), labels, fontsize=column_font, rotation=0 if upright else 90,
                              family="monospace")
            else:
                ax.set_xticks([])
            if h == 0:
                ax.set_yticks(range(T), labels, fontsize=row_font, family="monospace")
            else:
                ax.set_yticks([])
            ax.tick_params(length=0, pad=1)
            name = f"head {h + 1}" if n_layer == 1 else f"layer {layer + 1}, head {h + 1}"
            ax.set_title(name, fontsize=11)
    width = int(fig.get_figwidth() * 72 / (12 * 0.6))  # characters of 12-point text across the figure
    key = ["row: the token reading"]
    for phrase in ("column: the token it reads", "darker: more weight", "↵ a new line, ␣ a space"):
        if len(key[-1]) + 2 + len(phrase) <= width:  # whole phrases, on as few lines as fit
            key[-1] += "; " + phrase
        else:
            key.append(phrase)
    fig.suptitle("\n".join(textwrap.wrap(title, width) + key), fontsize=12)
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)
    return fig


def draw_attention(model, tokenizer, text: str, path, title: str) -> list[torch.Tensor]:
    """Encode text, compute the maps, draw them; returns the maps."""
    device = next(model.parameters()).device
    ids = tokenizer.encode(text)
    maps = attention_maps(model, torch.tensor([ids], device=device))
    plot_attention([m.cpu() for m in maps], tokenizer.token_texts(ids), path, title)
    return maps
