"""The explorer (python -m course.explore): every number its page shows is the model's own, through the
functions the scripts use; its requests answer mistakes with messages; it serves on 127.0.0.1 and
stops on Ctrl-C. The page itself, in a real browser: tests/test_explore_browser.py."""

import io
import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from contextlib import contextmanager

import pytest
import torch
import torch.nn.functional as F

from conftest import ROOT
from course.checkpoint import model_payload, save_checkpoint
from course.explore.__main__ import listening_socket, main, open_checkpoints, server_for
from course.explore.app import make_app
from course.explore.reading import (MAX_TOKENS, Opened, about, differences, read, read_in_windows,
                                    sampling_settings, window_start)
from course.plots import attention_maps
from gpt.errors import UserError
from gpt.generate import next_token_probs, sample_next
from gpt.model import GPT
from gpt.modern import RotaryGPT
from gpt.rnn import RNNLanguageModel
from gpt.tokenizer import BPETokenizer, CharTokenizer

import task08_infinite

VOCAB = "\n !',.:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
BS = 16
TEXT = "ROMEO:\nBut soft, what light through yonder window breaks?"  # 56 characters: longer than the window


def small(cls=GPT, seed=0, **kw):
    torch.manual_seed(seed)
    if cls is RNNLanguageModel:
        return RNNLanguageModel(len(VOCAB), BS, 16, 24, 2, cell="gru").eval()
    model = cls(len(VOCAB), BS, 32, 4, 2, **kw).eval()
    with torch.no_grad():  # away from the tiny initialisation, so that attention is far from uniform
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return model


def save(path, model):
    save_checkpoint(path, {**model_payload(model), "tokenizer": CharTokenizer(VOCAB).to_dict()})
    return str(path)


@pytest.fixture
def opened(tmp_path):
    return Opened(save(tmp_path / "gpt.pt", small()))


@pytest.mark.parametrize("settings", [(1.0, None, None), (0.7, None, None), (1.0, 5, None), (0.8, None, 0.9),
                                      (1.3, 8, 0.5), (0.0, None, None), (1.0, 1, None)])
def test_the_distribution_shown_is_the_one_task_08_samples_from(settings):
    """Drawn with the same random numbers, sample_next and the distribution the page shows pick the
    same token every time; what top-k and top-p leave out has probability 0."""
    temperature, top_k, top_p = settings
    torch.manual_seed(1)
    logits = 3 * torch.randn(4, len(VOCAB))
    kept = next_token_probs(logits, temperature, top_k, top_p)
    probs = kept / kept.sum(-1, keepdim=True)  # as the page shows them
    assert torch.allclose(probs.sum(-1), torch.ones(4)), probs.sum(-1)
    if top_k:
        assert ((probs > 0).sum(-1) <= top_k).all()
    for seed in range(40):
        drawn = sample_next(logits, temperature, top_k, top_p, generator=torch.Generator().manual_seed(seed))
        shown = torch.multinomial(probs, 1, generator=torch.Generator().manual_seed(seed))
        assert torch.equal(drawn, shown), (seed, drawn.flatten().tolist(), shown.flatten().tolist())


def test_a_long_text_is_read_in_half_overlapping_windows_with_the_most_context():
    """The first block_size tokens in the first window; after them each token has at least half a
    window before it, as in task 08's stream of a task 07 model."""
    for bs in (1, 2, 7, 16, 64):
        for t in range(5 * bs):
            before = t - window_start(t, bs)  # the tokens of context t is read with
            assert before == t if t < bs else bs - max(1, bs // 2) <= before <= bs - 1, (bs, t, before)


@pytest.mark.parametrize("cls", [GPT, RotaryGPT, RNNLanguageModel])
def test_the_losses_and_maps_read_are_the_models_own_window_by_window(tmp_path, cls):
    """Each token's loss, the next-token logits and every attention row, against the model run on
    the window each token is read in, one window at a time."""
    o = Opened(save(tmp_path / "m.pt", small(cls)))
    ids = CharTokenizer(VOCAB).encode(TEXT)
    result = read(o, TEXT, sampling_settings())
    logits, band = read_in_windows(o.model, torch.tensor([ids]))
    assert result["tokens"] == list(TEXT) and result["loss"][0] is None and result["longer"]
    for t in range(len(ids)):
        s = window_start(t, BS)
        window = torch.tensor([ids[s:s + BS]])
        with torch.no_grad():
            own = o.model(window)[0][0, t - s]  # (V,): the logits after token t, in its window
        assert torch.allclose(logits[t], own, atol=1e-5), t
        if t + 1 < len(ids):
            loss = F.cross_entropy(own[None], torch.tensor([ids[t + 1]])).item()
            assert result["loss"][t + 1] == pytest.approx(loss, abs=1e-5), t
        if cls is RNNLanguageModel:
            continue
        maps = attention_maps(o.model, window)  # per layer (nh, W, W)
        row = torch.stack([m[:, t - s] for m in maps])  # (L, nh, W)
        assert torch.allclose(band[:, :, t, :row.size(-1)], row, atol=1e-6), t
        assert torch.allclose(band[:, :, t].sum(-1), torch.ones(2, 4), atol=1e-5), "each row sums to 1"
        assert torch.all(band[:, :, t, t - s + 1:] == 0), f"row {t} reads nothing after itself"
    assert (result["attention"] is None) == (cls is RNNLanguageModel)


def test_a_bpe_model_reads_tokens_and_has_no_difference_by_character_with_a_character_model(tmp_path):
    text = "To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer\n" * 30
    bpe = BPETokenizer.train(text, 300)
    torch.manual_seed(0)
    path = tmp_path / "bpe.pt"
    save_checkpoint(path, {**model_payload(GPT(bpe.vocab_size, BS, 32, 4, 1)), "tokenizer": bpe.to_dict()})
    o = Opened(path)
    result = read(o, "To be, or not to be", sampling_settings())
    assert "".join(result["tokens"]) == "To be, or not to be" and len(result["tokens"]) < len("To be, or not to be")
    assert len(result["loss"]) == len(result["tokens"]) and result["attention"]["window"] == len(result["tokens"])
    assert about(o)["tokens"] == f"byte-level BPE, {bpe.vocab_size} tokens"
    by_character = read(Opened(save(tmp_path / "gpt.pt", small())), "To be, or not to be", sampling_settings())
    assert differences(by_character, result) is None


def test_a_text_shorter_than_the_window_is_one_forward(opened):
    ids = CharTokenizer(VOCAB).encode("To be, or not")
    result = read(opened, "To be, or not", sampling_settings(0.5, 3, None))
    with torch.no_grad():
        logits = opened.model(torch.tensor([ids]))[0][0]  # (T, V)
    expected = F.cross_entropy(logits[:-1], torch.tensor(ids[1:]), reduction="none")
    assert result["loss"][1:] == pytest.approx(expected.tolist(), abs=1e-5) and not result["longer"]
    top = next_token_probs(logits[-1:], 0.5, 3).topk(3)
    assert [p for _, p in result["next"][-1]] == pytest.approx(top.values[0].tolist(), abs=1e-6)
    assert [token for token, _ in result["next"][-1]] == [VOCAB[i] for i in top.indices[0].tolist()]


@pytest.mark.parametrize("text, sampling, message", [
    ("Zoë~", {}, r"2 character\(s\) outside the vocabulary: '~', 'ë'"),
    ("", {}, "nothing to read"),
    ("a" * (MAX_TOKENS + 1), {}, f"at most {MAX_TOKENS:,}"),
    ("abc", {"temperature": -1}, "temperature must be at least 0"),
    ("abc", {"top_p": 1.5}, "top-p must be greater than 0 and at most 1"),
    ("abc", {"top_k": "many"}, "are numbers"),
])
def test_mistakes_get_a_message(opened, text, sampling, message):
    with pytest.raises(UserError, match=message):
        read(opened, text, sampling_settings(**sampling))


@contextmanager
def served(app):
    """The app on a free port of 127.0.0.1, in a thread, as the explorer serves it; yields its address."""
    sock = listening_socket(0)
    server = server_for(app)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def post(url: str, body: dict, headers: dict = {}) -> tuple[int, bytes]:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_the_page_and_its_requests(tmp_path):
    gpt, gru = Opened(save(tmp_path / "gpt.pt", small())), Opened(save(tmp_path / "gru.pt", small(RNNLanguageModel)))
    failed = [{"path": "missing.pt", "message": "no checkpoint at missing.pt."}]
    with served(make_app([gpt, gru], failed, TEXT)) as url:
        page = urllib.request.urlopen(url + "/").read().decode()
        addresses = set(re.findall(r"https?://[^\s\"'`]+", page))
        assert "<script>" in page and addresses == {"http://www.w3.org/2000/svg"}, "no address but SVG's name"
        info = json.loads(urllib.request.urlopen(url + "/api/models").read())
        assert [m["kind"] for m in info["models"]] == ["GPT", "RNNLanguageModel"] and info["failed"] == failed
        assert info["models"][0]["attention"] == {"layers": 2, "heads": 4, "positions": "learned"}
        assert info["models"][1]["attention"] is None and "GRU has no attention" in info["models"][1]["no_attention"]
        status, body = post(url + "/api/read", {"text": TEXT, "temperature": 0.8})
        answer = json.loads(body)
        assert status == 200 and [len(m["loss"]) for m in answer["models"]] == [len(TEXT)] * 2
        assert answer["differences"][0][1:] == pytest.approx(
            [b - a for a, b in zip(answer["models"][0]["loss"][1:], answer["models"][1]["loss"][1:])])
        status, body = post(url + "/api/read", {"text": "café"})
        assert status == 200 and all("'é'" in m["error"] for m in json.loads(body)["models"])
        status, body = post(url + "/api/read", {"text": "abc", "top_k": 0})
        assert status == 400 and json.loads(body) == {"error": "top-k must be at least 1 (got 0)"}
        status, body = post(url + "/api/stream", {"model": 0, "text": "é"})
        assert status == 400 and "outside the vocabulary" in json.loads(body)["error"]
        status, body = post(url + "/api/read", {"text": "abc"}, {"Host": "attacker.example"})
        assert status == 400, "only pages addressed to this machine"


def test_streaming_is_task_08s_own_stream(tmp_path, capsys):
    """The same seed, prompt and settings give the page the very characters task08_infinite.py prints."""
    path = save(tmp_path / "gpt.pt", small())
    with served(make_app([Opened(path)], [], TEXT)) as url:
        status, body = post(url + "/api/stream", {"model": 0, "text": "ROMEO:", "seed": 7, "tokens": 300,
                                                  "temperature": 0.9, "top_p": 0.95})
    out = io.StringIO()
    task08_infinite.main(["--checkpoint", path, "--device", "cpu", "--prompt", "ROMEO:", "--seed", "7",
                          "--max-new-tokens", "300", "--temperature", "0.9", "--top-p", "0.95"], out=out)
    assert status == 200 and body.decode() == out.getvalue()[len("ROMEO:"):-1] and len(body) == 300


def test_a_bad_checkpoint_is_shown_and_none_good_is_an_error(tmp_path):
    good, foreign = save(tmp_path / "gpt.pt", small()), tmp_path / "notes.pt"
    foreign.write_text("not a checkpoint")
    opened, failed = open_checkpoints([good, str(tmp_path / "missing.pt"), str(foreign)], "cpu")
    assert [o.path for o in opened] == [good]
    assert [f["path"] for f in failed] == [str(tmp_path / "missing.pt"), str(foreign)]
    assert "no checkpoint at" in failed[0]["message"] and "Train one first" in failed[0]["message"]
    assert "is not a readable checkpoint" in failed[1]["message"]
    with pytest.raises(UserError, match="no checkpoint at"):
        open_checkpoints([str(tmp_path / "missing.pt")], "cpu")


def test_a_missing_checkpoint_ends_the_command_with_a_message(tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["--checkpoint", str(tmp_path / "missing.pt")])
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and err.startswith(f"error: no checkpoint at {tmp_path / 'missing.pt'}")
    assert "Traceback" not in err


def test_a_port_in_use_is_a_message():
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        with pytest.raises(UserError, match=f"port {port} is in use on 127.0.0.1.*--port 0 for any free one"):
            listening_socket(port)
    finally:
        taken.close()


@pytest.mark.slow
@pytest.mark.parametrize("stop, status, line", [(signal.SIGINT, 0, "explorer stopped"),
                                                (signal.SIGTERM, 143, "stopped by SIGTERM")])
def test_the_command_serves_on_127_0_0_1_and_stops_cleanly(tmp_path, stop, status, line):
    path = save(tmp_path / "gpt.pt", small())
    proc = subprocess.Popen([sys.executable, "-m", "course.explore", "--checkpoint", path, "--port", "0",
                             "--device", "cpu"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = [proc.stdout.readline() for _ in range(2)]
        assert lines[0].startswith(f"{path}: GPT (task 07), block_size {BS}"), lines
        assert lines[1].startswith("explorer: http://127.0.0.1:") and "Ctrl-C to stop" in lines[1], lines
        url = lines[1].split()[1]
        status_code, _ = post(url + "api/read", {"text": "To be"})
        assert status_code == 200
        proc.send_signal(stop)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == status, err
    assert err.strip().splitlines()[-1] == line and "Traceback" not in err, err


STUCK_SHUTDOWN = """
import asyncio, socket, sys
import uvicorn
from starlette.applications import Starlette
from course.explore.__main__ import serve

async def never_done(self, sockets=None):  # a graceful stop that never ends, whatever the cause
    await asyncio.sleep(3600)

uvicorn.Server.shutdown = never_done
sock = socket.socket()
sock.bind(("127.0.0.1", 0))
sock.listen(8)
print("serving", flush=True)
sys.exit(serve(Starlette(), sock))
"""


@pytest.mark.slow
@pytest.mark.parametrize("stop, status, line", [(signal.SIGINT, 0, "explorer stopped"),
                                                (signal.SIGTERM, 143, "stopped by SIGTERM")])
def test_one_ctrl_c_ends_the_explorer_within_seconds_even_when_its_graceful_stop_hangs(stop, status, line):
    proc = subprocess.Popen([sys.executable, "-c", STUCK_SHUTDOWN], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "serving\n", proc.stderr.read()
        time.sleep(0.5)  # uvicorn is running and has its handlers in place
        proc.send_signal(stop)
        started = time.monotonic()
        out, err = proc.communicate(timeout=20)
        took = time.monotonic() - started
    finally:
        proc.kill()
    assert proc.returncode == status, err
    assert took < 10, took
    assert err.strip().splitlines()[-1] == line and "Traceback" not in err, err
