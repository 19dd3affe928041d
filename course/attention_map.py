"""Draw what a trained model's attention heads read, for any checkpoint and any text.

    python -m course.attention_map checkpoints/task07.pt      # writes runs/attention/task07.png
    python -m course.attention_map checkpoints/task09.pt --text "ROMEO:\\nBut soft, what light" --out romeo.png

One panel per layer and head: row t shows how much the token at t reads from each token up to it,
computed with the model's own weights (a text longer than block_size is read in sliding windows).
Tasks 01-07 and 09 also draw this for their trained model at the end of a run (runs/<task>/attention.png).
"""

import argparse
import sys
from pathlib import Path

from .checkpoint import load_checkpoint, model_from_checkpoint
from .plots import ATTENTION_TEXT, draw_attention
from .exits import friendly_errors


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course.attention_map", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a model saved by task 07 or 09")
    parser.add_argument("--text", default=ATTENTION_TEXT, help="the text to read; \\n is a newline (default: %(default)r)")
    parser.add_argument("--out", default=None, help="the PNG to write (default: runs/attention/<checkpoint's name>.png)")
    args = parser.parse_args(argv)
    text = args.text.replace("\\n", "\n")
    out = args.out or str(Path("runs") / "attention" / f"{Path(args.checkpoint).stem}.png")  # runs/: not committed
    with friendly_errors():
        model, tokenizer = model_from_checkpoint(load_checkpoint(args.checkpoint))
        draw_attention(model, tokenizer, text, out, f"{args.checkpoint}: attention")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
