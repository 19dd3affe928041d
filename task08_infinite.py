"""Task 08: infinite Shakespeare, streamed from a trained model until you press Ctrl-C.

Loads a checkpoint (task 07's by default; task 09's and compare_rnn.py's GRU end lower, and stream the
same way with --checkpoint) and prints one character at a time, as fast as the model
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

from course.checkpoint import load_model
from course.config import Parser, at_least, checked, probability
from course.device import DEVICES
from course.exits import friendly_errors
from course.output import write_stream
from gpt.generate import sampler, stream, stream_without_cache
from torch import Generator


def parse_args(argv=None):
    p = Parser(description=__doc__)
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
    with friendly_errors():
        model, tokenizer = load_model(args.checkpoint, args.device, "python task08_infinite.py")
        pick = sampler(args.temperature, args.top_k, args.top_p, Generator().manual_seed(args.seed))
        tokens = (stream_without_cache if args.no_cache else stream)(model, tokenizer.encode(args.prompt), pick)
        write_stream(args.prompt, tokens, tokenizer.stream_decoder(), args.max_new_tokens, out)  # until Ctrl-C
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
