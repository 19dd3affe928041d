import io
import itertools
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import ROOT
from gpt.checkpoint import save_checkpoint
from gpt.generate import generate, kv_cache, sample_next, stream
from gpt.model import causal_attention, gpt_model
from gpt.tokenizer import CharTokenizer

import task08_infinite

VOCAB = "\n !',.:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
BS = 16


def small_model(seed=0):
    torch.manual_seed(seed)
    return gpt_model(len(VOCAB), BS, 32, 4, 2, dropout=0.1).eval()


@pytest.fixture
def checkpoint(tmp_path):
    model = small_model()
    path = tmp_path / "small.pt"
    save_checkpoint(path, {"model": model.state_dict(), "vocab": VOCAB, "iter": 0, "val_loss": 0.0,
                           "model_config": {"block_size": BS, "n_embd": 32, "n_head": 4, "n_layer": 2, "dropout": 0.1}})
    return path


def test_cached_attention_equals_the_last_rows_of_full_attention():
    q, k, v = torch.randn(3, 2, 4, 10, 8).unbind(0)
    full = causal_attention(q, k, v)
    for tq in (1, 3, 10):
        diff = (causal_attention(q[..., -tq:, :], k, v) - full[..., -tq:, :]).abs().max().item()
        assert diff < 1e-5, f"{tq} queries against 10 keys: max difference {diff}"


def test_cached_greedy_equals_recomputation_for_the_first_block():
    model = small_model()
    prompt = [0]
    cached = list(itertools.islice(stream(model, prompt, temperature=0), BS))
    full = generate(model, torch.tensor([prompt]), BS, temperature=0)[0, 1:].tolist()
    assert cached == full
    recomputed = list(itertools.islice(stream(model, prompt, temperature=0, use_cache=False), BS))
    assert recomputed == full


def test_cached_logits_match_a_full_forward_pass():
    model = small_model()
    idx = torch.randint(len(VOCAB), (1, BS))
    with torch.no_grad():
        full, _ = model(idx)
        with kv_cache(model):
            first, _ = model(idx[:, :5])
            rest = [model(idx[:, t:t + 1], start_pos=t)[0] for t in range(5, BS)]
    cached = torch.cat([first, *rest], dim=1)
    assert (cached - full).abs().max().item() < 1e-5
    assert all(m.cache is None for m in model.modules() if hasattr(m, "cache")), "caches are removed afterwards"


def test_stream_runs_far_past_block_size_with_valid_tokens():
    model = small_model()
    tokens = list(itertools.islice(stream(model, [1, 2, 3], generator=torch.Generator().manual_seed(0)), 6 * BS))
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


def test_bad_prompt_names_the_characters(checkpoint, capsys):
    with pytest.raises(SystemExit) as exit_info:
        task08_infinite.main(["--checkpoint", str(checkpoint), "--prompt", "Zoë~", "--max-new-tokens", "1"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "'ë'" in err and "'~'" in err


def script(*args):
    # Ctrl-C as in a terminal: a process started in the background inherits SIGINT ignored, so reset it.
    return subprocess.Popen([sys.executable, "task08_infinite.py", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def test_missing_checkpoint_says_how_to_make_one(tmp_path):
    proc = script("--checkpoint", str(tmp_path / "none.pt"))
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert b"no checkpoint at" in err and b"python task07.py" in err and b"Traceback" not in err


def test_ctrl_c_ends_the_stream_cleanly(checkpoint):
    proc = script("--checkpoint", str(checkpoint), "--device", "cpu")
    got = proc.stdout.read(300)  # the stream is flowing
    assert len(got) == 300
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()
    assert b"Traceback" not in err
    assert (got + out).endswith(b"\n")


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
    from gpt.bench import bench_generate

    med = bench_generate(str(checkpoint), blocks=2, repeats=1)
    assert set(med) == {True, False}
    for way in med.values():
        assert way["chars_per_s"] > 0 and way["first_block_ms"] > 0 and way["last_block_ms"] > 0
    out = capsys.readouterr().out
    ratio = float(re.search(r"-> (\d+\.\d+)x faster", out).group(1))
    assert ratio == pytest.approx(med[True]["chars_per_s"] / med[False]["chars_per_s"], abs=0.01)
    assert f"{2 * BS} characters per stream" in out  # blocks * block_size, as asked for


@pytest.mark.parametrize("flags, message", [
    (["--temperature", "-1"], "argument --temperature: must be at least 0 (got -1)"),
    (["--temperature", "nan"], "argument --temperature: must be at least 0 (got nan)"),
    (["--max-new-tokens", "-5"], "argument --max-new-tokens: must be at least 0 (got -5)"),
    (["--top-k", "0"], "argument --top-k: must be at least 1 (got 0)"),
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


def test_a_tiny_temperature_samples_the_likeliest_token():
    logits = torch.tensor([[0.5, 3.0, -2.0, 2.9]])
    for temperature in (1e-40, 1e-6):
        token = sample_next(logits, temperature, generator=torch.Generator().manual_seed(0))
        assert token.item() == 1
