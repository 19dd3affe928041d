import io
import itertools
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import ROOT
from course.checkpoint import model_payload, save_checkpoint
from gpt.errors import UserError
from gpt.generate import generate, sampler, stream, stream_without_cache
from gpt.kv_cache import KVCache, attention_to_window
from gpt.model import GPT, causal_attention
from gpt.modern import RingKVCache, RotaryGPT
from gpt.tokenizer import BPETokenizer, CharTokenizer

import task08_infinite

VOCAB = "\n !',.:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
BS = 16


def small_model(seed=0, cls=GPT, **kw):
    torch.manual_seed(seed)
    model = cls(len(VOCAB), BS, 32, 4, 2, dropout=0.1, **kw).eval()
    with torch.no_grad():  # away from the tiny initialisation, so that the tokens and positions matter
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return model


@pytest.fixture
def checkpoint(tmp_path):
    path = tmp_path / "small.pt"
    save_checkpoint(path, {**model_payload(small_model()), "tokenizer": CharTokenizer(VOCAB).to_dict()})
    return path


def test_cached_attention_equals_the_last_rows_of_full_attention():
    q, k, v = torch.randn(3, 2, 4, 10, 8).unbind(0)
    full = causal_attention(q, k, v)
    for tq in (1, 3, 10):
        diff = (attention_to_window(q[..., -tq:, :], k, v) - full[..., -tq:, :]).abs().max().item()
        assert diff < 1e-5, f"{tq} queries against 10 keys: max difference {diff}"


@pytest.mark.parametrize("cls", [GPT, RotaryGPT])
def test_cached_logits_match_a_full_forward_pass(cls):
    model = small_model(cls=cls)
    idx = torch.randint(len(VOCAB), (1, BS))
    with torch.no_grad():
        full, _ = model(idx)
        cache = model.new_cache()
        first = model(idx[:, :5], cache=cache)[0]
        rest = [model(idx[:, t:t + 1], cache=cache)[0] for t in range(5, BS)]
    cached = torch.cat([first, *rest], dim=1)
    assert (cached - full).abs().max().item() < 1e-4
    assert cache.length == BS


@pytest.mark.parametrize("cls", [GPT, RotaryGPT])
def test_cached_greedy_equals_recomputation_for_the_first_block(cls):
    model = small_model(cls=cls)
    prompt = [0]
    cached = list(itertools.islice(stream(model, prompt, sampler(temperature=0)), BS))
    full = generate(model, torch.tensor([prompt]), BS, temperature=0)[0, 1:].tolist()
    assert cached == full
    recomputed = list(itertools.islice(stream_without_cache(model, prompt, sampler(temperature=0)), BS))
    assert recomputed == full


def greedy_with_logits(model, way, prompt, n):
    """n tokens of a greedy stream, with the logits each was picked from."""
    seen = []

    def pick(logits):
        seen.append(logits[0].clone())
        return logits[0].argmax().item()

    tokens = list(itertools.islice(way(model, prompt, pick), n))
    return tokens, seen


def test_the_cached_stream_equals_the_recomputing_stream_for_the_first_block_and_a_ring_never_fills():
    """Learned positions: over the first block_size tokens the cache holds the whole context, so the
    cached stream picks what stream_without_cache picks, from the same logits. A rotary model's ring
    cache never reports full: its stream never runs more than one position again after the prompt."""
    model = small_model()
    prompt = [5, 9, 2]
    n = BS - len(prompt) + 1  # the last of them is read from a full window of block_size tokens
    cached, cached_logits = greedy_with_logits(model, stream, prompt, n)
    recomputed, recomputed_logits = greedy_with_logits(model, stream_without_cache, prompt, n)
    assert len(cached_logits) == n
    assert cached == recomputed and len(set(cached)) > 1
    diff = (torch.stack(cached_logits) - torch.stack(recomputed_logits)).abs().max().item()
    assert diff < 1e-4, f"max difference {diff}"

    rope = small_model(cls=RotaryGPT)
    cache = rope.new_cache()
    assert isinstance(cache, RingKVCache) and not cache.full()
    with torch.no_grad():
        rope(torch.tensor([prompt]), cache=cache)
        for t in range(3 * BS):
            assert not cache.full(), f"full after {cache.length} tokens"
            rope(torch.tensor([[t % len(VOCAB)]]), cache=cache)
    assert not cache.full() and cache.length == len(prompt) + 3 * BS
    lengths = []
    hook = rope.register_forward_pre_hook(lambda m, args: lengths.append(args[0].size(1)))
    try:
        list(itertools.islice(stream(rope, prompt, sampler(temperature=0)), 3 * BS))
    finally:
        hook.remove()
    assert lengths == [len(prompt)] + [1] * (3 * BS - 1), "the prompt once, then one position per token"


def logits_seen_by(model, tokens: list[int], way=stream):
    """Stream over a fixed text: record the logits each step picked from, and pick the text's next token."""
    seen = []
    feed = iter(tokens[1:])

    def pick(logits):
        seen.append(logits[0].clone())
        return next(feed)

    list(itertools.islice(way(model, tokens[:1], pick), len(tokens) - 1))
    return seen


def test_learned_positions_window_restarts_from_its_newest_half():
    """When the window is full, the stream keeps its newest block_size/2 tokens and computes them again
    from position 0: at every step the logits equal a fresh forward over the window the rule keeps."""
    model = small_model()
    tokens = torch.randint(len(VOCAB), (3 * BS + 1,), generator=torch.Generator().manual_seed(1)).tolist()
    seen = logits_seen_by(model, tokens)
    length, restarts = 0, 0
    for step, logits in enumerate(seen):
        if length == BS:
            length, restarts = BS // 2, restarts + 1
        else:
            length += 1
        with torch.no_grad():
            fresh = model(torch.tensor([tokens[step + 1 - length:step + 1]]))[0][0, -1]
        assert (logits - fresh).abs().max().item() < 1e-4, f"step {step}: window of {length}"
    assert restarts == 4, "over 3 blocks the window restarts at block_size, then every block_size/2 + 1 tokens"


def test_rope_stream_slides_and_every_step_equals_a_fresh_forward_over_the_last_block():
    """One layer: a rotary model's keys and values depend on the token alone, so the sliding window
    reproduces a fresh forward over the same last block_size tokens at every step, far past block_size."""
    torch.manual_seed(3)
    model = RotaryGPT(len(VOCAB), BS, 32, 4, 1).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    tokens = torch.randint(len(VOCAB), (3 * BS + 1,), generator=torch.Generator().manual_seed(2)).tolist()
    seen = logits_seen_by(model, tokens)
    assert len(seen) == 3 * BS
    for step, logits in enumerate(seen):
        window = tokens[max(0, step + 1 - BS):step + 1]
        with torch.no_grad():
            fresh = model(torch.tensor([window]))[0][0, -1]
        assert (logits - fresh).abs().max().item() < 1e-4, f"step {step}"


def sliding_window_forward(model, tokens: list[int]) -> torch.Tensor:
    """What a sliding window computes with any number of layers: the whole sequence at once, each query
    reading only the block_size tokens up to it, positions turned as far as they go."""

    T, bs = len(tokens), model.block_size
    x = model.token_embedding(torch.tensor([tokens]))
    band = torch.ones(T, T, dtype=torch.bool).tril() & ~torch.ones(T, T, dtype=torch.bool).tril(-bs)
    for block in model.blocks:
        sa = block.sa
        q, k, v = sa.queries_keys_values(block.ln1(x))
        q, k = sa.rotary(q), sa.rotary(k)
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=band)
        x = x + sa.proj(out.transpose(1, 2).reshape(1, T, -1))
        x = x + block.ffwd(block.ln2(x))
    return model.lm_head(model.ln_f(x))[0]


def test_rope_stream_with_several_layers_is_sliding_window_attention():
    """With more layers a cached key also carries what its token read before it: the stream equals
    attention over a sliding window of block_size tokens, at every step."""
    model = small_model(cls=RotaryGPT)
    tokens = torch.randint(len(VOCAB), (3 * BS + 1,), generator=torch.Generator().manual_seed(4)).tolist()
    seen = logits_seen_by(model, tokens)
    with torch.no_grad():
        reference = sliding_window_forward(model, tokens[:-1])
    diff = (torch.stack(seen) - reference).abs().max().item()
    assert diff < 1e-4, f"max difference {diff}"
    with torch.no_grad():
        fresh = model(torch.tensor([tokens[2 * BS:3 * BS]]))[0][0, -1]
    assert (seen[-1] - fresh).abs().max().item() > 1e-3, "deeper layers see further back than one window"


@torch.no_grad()
def test_the_rope_cache_is_a_ring_of_block_size_slots_and_a_learned_one_stops_at_block_size():
    rope = small_model(cls=RotaryGPT)
    cache = rope.new_cache()
    assert isinstance(cache, RingKVCache)
    rope(torch.tensor([[1, 2, 3]]), cache=cache)
    for t in range(3 * BS):
        rope(torch.tensor([[t % len(VOCAB)]]), cache=cache)
    assert cache.length == 3 + 3 * BS and cache.k.shape[3] == BS
    learned = small_model()
    cache = learned.new_cache()
    assert type(cache) is KVCache and not isinstance(cache, RingKVCache)
    learned(torch.tensor([list(range(BS))]), cache=cache)
    assert cache.full()
    with pytest.raises(UserError, match="sequence length 17 exceeds block_size 16: the model has no position "
                                        "embedding past 15"):
        learned(torch.tensor([[1]]), cache=cache)


def test_stream_runs_far_past_block_size_with_valid_tokens():
    model = small_model()
    tokens = list(itertools.islice(stream(model, [1, 2, 3], sampler(generator=torch.Generator().manual_seed(0))),
                                   6 * BS))
    assert len(tokens) == 6 * BS and all(0 <= t < len(VOCAB) for t in tokens)


def run_main(args):
    out = io.StringIO()
    assert task08_infinite.main(args, out=out) == 0
    return out.getvalue()


def test_same_seed_same_stream(checkpoint):
    base = ["--checkpoint", str(checkpoint), "--max-new-tokens", "60", "--device", "cpu", "--prompt", "ROMEO:"]
    a, b = run_main(base + ["--seed", "3"]), run_main(base + ["--seed", "3"])
    c = run_main(base + ["--seed", "4"])
    assert a == b != c
    assert a.startswith("ROMEO:") and len(a) == len("ROMEO:") + 60 + 1


def test_a_bpe_model_streams_text(tmp_path):
    text = "To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer\n" * 30
    bpe = BPETokenizer.train(text, 300)
    torch.manual_seed(0)
    model = GPT(bpe.vocab_size, BS, 32, 4, 1)
    path = tmp_path / "bpe.pt"
    save_checkpoint(path, {**model_payload(model), "tokenizer": bpe.to_dict()})
    out = run_main(["--checkpoint", str(path), "--max-new-tokens", "40", "--device", "cpu", "--prompt", "To be"])
    assert out.startswith("To be") and len(out) > len("To be") + 40, "40 subword tokens spell more than 40 characters"


def test_bad_prompt_names_the_characters(checkpoint, capsys):
    with pytest.raises(SystemExit) as exit_info:
        task08_infinite.main(["--checkpoint", str(checkpoint), "--prompt", "Zoë~", "--max-new-tokens", "1"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "'ë'" in err and "'~'" in err


def script(*args):
    # Ctrl-C as in a terminal: a process started in the background inherits SIGINT ignored, so reset it.
    return subprocess.Popen([sys.executable, "task08_infinite.py", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={**os.environ, "OMP_NUM_THREADS": "1"},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def test_missing_checkpoint_says_how_to_make_one(tmp_path, capsys):
    import task08_infinite

    with pytest.raises(SystemExit) as exit_info:
        task08_infinite.main(["--checkpoint", str(tmp_path / "none.pt")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert "no checkpoint at" in err and "python task07.py" in err and "Traceback" not in err


@pytest.mark.slow  # a process started per test, signalled or cut off: seconds each
def test_ctrl_c_ends_the_stream_cleanly(checkpoint):
    proc = script("--checkpoint", str(checkpoint), "--device", "cpu")
    got = proc.stdout.read(300)  # the stream is flowing
    assert len(got) == 300
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()
    assert b"Traceback" not in err
    assert (got + out).endswith(b"\n")


@pytest.mark.slow  # a process started per test, signalled or cut off: seconds each
def test_closed_pipe_ends_the_stream_cleanly(checkpoint):
    proc = script("--checkpoint", str(checkpoint), "--device", "cpu")
    assert len(proc.stdout.read(200)) == 200
    proc.stdout.close()  # like `| head -c 200`
    deadline = time.monotonic() + 30
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    err = proc.stderr.read()
    assert proc.returncode == 0, err.decode()
    assert b"Traceback" not in err and b"BrokenPipe" not in err


def test_generation_benchmark_reports_both_ways(checkpoint, capsys):
    from course.bench import bench_generate
    from course.checkpoint import load_checkpoint, model_from_checkpoint

    model, tokenizer = model_from_checkpoint(load_checkpoint(checkpoint))
    med = bench_generate(model, tokenizer, blocks=2, repeats=1, label="small")
    assert set(med) == {True, False}
    for way in med.values():
        assert way["chars_per_s"] > 0 and way["first_block_ms"] > 0 and way["last_block_ms"] > 0
    out = capsys.readouterr().out
    ratio = float(re.search(r"-> (\d+\.\d+)x faster", out).group(1))
    assert ratio == pytest.approx(med[True]["chars_per_s"] / med[False]["chars_per_s"], abs=0.01)
    assert f"{2 * BS} tokens per stream" in out  # blocks * block_size, as asked for


@pytest.mark.parametrize("flags, message", [
    (["--temperature", "-1"], "argument --temperature: must be at least 0 (got -1)"),
    (["--temperature", "nan"], "argument --temperature: must be at least 0 (got nan)"),
    (["--max-new-tokens", "-5"], "argument --max-new-tokens: must be at least 0 (got -5)"),
    (["--top-k", "0"], "argument --top-k: must be at least 1 (got 0)"),
    (["--top-p", "0"], "argument --top-p: must be greater than 0 and at most 1 (got 0)"),
    (["--top-p", "1.5"], "argument --top-p: must be greater than 0 and at most 1 (got 1.5)"),
    (["--device", "gpu"], "argument --device: unknown choice 'gpu'; choose one of auto, cuda, mps, cpu"),
])
def test_bad_sampling_settings_are_refused(checkpoint, capsys, flags, message):
    with pytest.raises(SystemExit) as exit_info:
        task08_infinite.main(["--checkpoint", str(checkpoint), "--device", "cpu", *flags], out=io.StringIO())
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_max_new_tokens_is_exact_even_at_zero(checkpoint):
    base = ["--checkpoint", str(checkpoint), "--device", "cpu", "--prompt", "AB"]
    assert run_main(base + ["--max-new-tokens", "0"]) == "AB\n"
    assert len(run_main(base + ["--max-new-tokens", "3"])) == len("AB") + 3 + 1


def test_the_window_measure_scores_the_same_text_both_ways(corpus_text, capsys):
    """One layer of rotary attention: the sliding cache computes what recomputation computes, so the
    two read the validation text at the same bits per character; a learned-position model restarts its
    window, and reads it differently."""
    from gpt.data import load_dataset
    from course.measures import print_stream_cost as stream_cost

    tokenizer = load_dataset().tokenizer
    torch.manual_seed(0)
    rope = RotaryGPT(tokenizer.vocab_size, 8, 32, 4, 1).eval()
    both = stream_cost(rope, tokenizer, 40)
    assert both["cache"] == pytest.approx(both["recompute"], abs=1e-4) and 5 < both["cache"] < 7
    learned = GPT(tokenizer.vocab_size, 8, 32, 4, 1).eval()
    with torch.no_grad():
        learned.position_embedding.weight.normal_()
    both = stream_cost(learned, tokenizer, 40)
    assert abs(both["cache"] - both["recompute"]) > 1e-3
    assert "39 characters of the validation split" in capsys.readouterr().out


def test_the_course_size_benchmark_model_is_the_gpu_preset():
    from course.bench import course_size_model

    model, tokenizer = course_size_model()
    assert sum(p.numel() for p in model.parameters()) == 10_788_929 and model.block_size == 256
    assert tokenizer.vocab_size == 65 and not model.training


def test_the_gpu_benchmark_says_it_needs_a_gpu(monkeypatch):
    from course.bench import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit, match="needs a CUDA GPU"):
        main(["gpu"])
