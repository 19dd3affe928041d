"""Task 08: infinite Shakespeare, streamed from the best model until you press Ctrl-C.

Loads a checkpoint (task 07's by default) and prints one character at a time, as fast as the model
produces them, forever. Each new character costs one forward pass of one position: the attention
layers keep the keys and values of the characters before it (a key/value cache, gpt/kv_cache.py,
passed to the model's own forward), instead of recomputing the whole context for every character
as the lecture's `generate` does. From a rotary model (task 09) the window slides one character at
a time, so that once block_size characters are in, every character sees a full window; from a model
with learned positions it restarts from its newest half whenever it is full. From a recurrent
network (compare_rnn.py's GRU or LSTM) the hidden state is the whole context, from the prompt's last
block_size characters on: every character costs one step, and the context never ends.

    python task08_infinite.py                          # Ctrl-C to stop
    python task08_infinite.py --prompt "ROMEO:" --temperature 0.8 --top-p 0.9 --seed 7
    python task08_infinite.py --max-new-tokens 2000 > sonnet.txt
    python task08_infinite.py --checkpoint checkpoints/task09.pt
    python task08_infinite.py --checkpoint checkpoints/gru.pt   # compare_rnn.py's GRU
"""

import argparse
import itertools
import os
import shlex
import sys

from gpt.checkpoint import load_checkpoint, model_from_checkpoint
from gpt.config import Parser, at_least, checked, probability
from gpt.device import DEVICES, resolve_device
from gpt.errors import Terminated, UserError
from gpt.files import write_error
from gpt.generate import sampler, stream, stream_without_cache
from gpt.exits import friendly_errors

import torch  # after gpt, which picks torch's CPU kernels before torch loads


def parse_args(argv=None):
    p = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default="checkpoints/task07.pt", help="model to stream from (default: %(default)s)")
    p.add_argument("--prompt", default="\n", help="text to start from (default: a newline)")
    p.add_argument("--temperature", type=checked(float, at_least(0)), default=1.0,
                   help="below 1: safer, above 1: wilder, 0: greedy (default: 1.0)")
    p.add_argument("--top-k", type=checked(int, at_least(1)), default=None, help="sample only among the k likeliest tokens")
    p.add_argument("--top-p", type=checked(float, probability), default=None,
                   help="sample only among the likeliest tokens whose probabilities add up to p (0 < p <= 1)")
    p.add_argument("--seed", type=int, default=1337, help="the same seed gives the same stream (default: 1337)")
    p.add_argument("--max-new-tokens", type=checked(int, at_least(0)), default=None,
                   help="stop after this many tokens (default: never)")
    p.add_argument("--device", type=checked(str, choices=DEVICES), default="auto",
                   help="auto (cuda, then mps, then cpu), cuda, mps or cpu (default: auto)")
    p.add_argument("--no-cache", action="store_true", help="recompute the whole context for every token (slow)")
    return p.parse_args(argv)


def main(argv=None, out=None) -> int:
    args = parse_args(argv)
    out = out or sys.stdout
    if out is None:  # started with standard output closed (>&-): no one to stream to
        print("standard output is closed, so there is nowhere to stream to; nothing was done. Run it with the "
              "output on the screen, or into a file: python task08_infinite.py --max-new-tokens 2000 > sonnet.txt",
              file=sys.stderr)
        return 0
    with friendly_errors():
        device = resolve_device(args.device)
        ckpt = load_checkpoint(args.checkpoint, how_to_make_one=(  # read on the CPU, moved below
            "Train one first: python task07.py (minutes on a CPU), then run this again."), what_to_do=(
            f"Stream from a checkpoint that task07.py, task09_rope.py or compare_rnn.py saved (--checkpoint PATH), or train one "
            f"in its place: python task07.py --checkpoint {shlex.quote(args.checkpoint)} --overwrite"))
        model, tokenizer = model_from_checkpoint(ckpt, device)
        prompt = tokenizer.encode(args.prompt)
        generator = torch.Generator().manual_seed(args.seed)
        pick = sampler(args.temperature, args.top_k, args.top_p, generator)
        tokens = (stream_without_cache if args.no_cache else stream)(model, prompt, pick)
        if args.max_new_tokens is not None:
            tokens = itertools.islice(tokens, args.max_new_tokens)
        text_of = tokenizer.stream_decoder()
        try:
            out.write(args.prompt)
            for token in tokens:
                out.write(text_of(token))
                out.flush()
            out.write("\n")
            out.flush()
        except KeyboardInterrupt as e:  # Ctrl-C: the way to stop an endless stream, not an error
            out.write("\n")
            out.flush()
            if isinstance(e, Terminated):  # SIGTERM: stopped from outside, and says so (exit 143)
                raise
        except BrokenPipeError:  # the reader went away (| head): stop quietly
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left to flush at exit
        except OSError as e:  # > a file on a full disk
            if write_error(e) is None:
                raise
            if out is sys.stdout:
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the rest can't be written either
            raise UserError(f"could not write the stream to standard output: {write_error(e)}; what was "
                            f"written before is there") from None
    return 0


if __name__ == "__main__":
    sys.exit(main())
