"""The explorer's page in a real browser: a headless Chromium (Debian's chromium and chromium-driver,
driven by Selenium) opens `python -m course.explore` on a small GPT trained here, types a prompt, and
checks that what the page shows is the model's own: the shaded losses and the next-token
probabilities to 1e-4, every attention row summing to 1 with nothing after its own token, characters
streaming in, a bad checkpoint's message. It saves a screenshot (runs/explore/browser-test.png).

Marked `browser`: left out of the default run; `pytest -m browser` runs them where Chromium is
installed (.ci/run installs it), and skips them, saying why, where it is not (with
EXPLORER_BROWSER=required, as .ci/run sets it, that is a failure instead). The browser is started
offline: no network, no sync, no updates, a fresh profile.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from conftest import ROOT
from course.checkpoint import model_payload, save_checkpoint
from course.config import GPTConfig
from course.explore.reading import window_start
from gpt.data import DEFAULT_PATH
from gpt.generate import sampler, stream
from gpt.rnn import RNNLanguageModel

pytestmark = pytest.mark.browser

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
PROMPT = "KING RICHARD III:\nNow is the winter of our discontent"  # 52 characters: longer than the window of 32
BS = 32
SCREENSHOT = ROOT / "runs" / "explore" / "browser-test.png"


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """A small GPT trained on Tiny Shakespeare by task 07's own run (its checkpoint and run files), and
    a GRU of compare_rnn.py's kind, untrained, to stand beside it."""
    if not DEFAULT_PATH.exists():
        pytest.skip(f"Tiny Shakespeare is not at {DEFAULT_PATH} (run any task once to download it)")
    import task07

    folder = tmp_path_factory.mktemp("explore")
    cfg = GPTConfig(block_size=BS, n_embd=32, n_head=4, n_layer=2, batch_size=16, learning_rate=3e-3, max_iters=150,
                    eval_interval=50, eval_iters=4, final_eval_iters=8, device="cpu", sample_tokens=0,
                    runs=str(folder / "runs"), checkpoint=str(folder / "gpt.pt"))
    result = task07.train_gpt(cfg, quiet=True)
    torch.manual_seed(0)
    gru = RNNLanguageModel(result["tokenizer"].vocab_size, BS, 32, 40, 2, cell="gru")
    save_checkpoint(folder / "gru.pt", {**model_payload(gru), "tokenizer": result["tokenizer"].to_dict()})
    return {"gpt": cfg.checkpoint, "gru": str(folder / "gru.pt"), "missing": str(folder / "missing.pt"),
            "model": result["model"].eval(), "tokenizer": result["tokenizer"]}


@pytest.fixture(scope="module")
def explorer(checkpoints):
    """python -m course.explore on the GPT, the GRU and a checkpoint that isn't there; its address."""
    proc = subprocess.Popen([sys.executable, "-m", "course.explore", "--checkpoint", checkpoints["gpt"],
                             checkpoints["gru"], checkpoints["missing"], "--port", "0", "--device", "cpu"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stdout:
            if line.startswith("explorer: "):
                yield line.split()[1]
                break
        else:
            pytest.fail(f"the explorer did not start: {proc.stderr.read()}")
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


def missing(reason: str):
    """Skip, saying what to install; or fail, where the browser is required (.ci/run)."""
    (pytest.fail if os.environ.get("EXPLORER_BROWSER") == "required" else pytest.skip)(reason)


@pytest.fixture(scope="module")
def browser():
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing("no Selenium: pip install selenium==4.51.0 (.ci/run does)")
    if not (CHROMIUM and CHROMEDRIVER):
        missing("no Chromium: apt-get install chromium chromium-driver (.ci/run does)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="chromium-")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
                 "--window-size=1500,1100"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)  # the system's driver: nothing downloaded
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def wait_for(check, timeout: float = 30.0, what: str = ""):
    """check() until it returns something true, or fail after timeout seconds."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    pytest.fail(f"waited {timeout:.0f} s for {what or check}")


def open_page(driver, url: str, text: str = PROMPT, **settings):
    """Open the page, set the sampling settings, type text into it and wait until the page has read it."""
    driver.get(url)
    wait_for(lambda: driver.execute_script("return document.querySelectorAll('#model-0 .surprise span').length"),
             what="the page's first reading")
    for name, value in settings.items():
        field = driver.find_element("id", name)
        field.clear()
        field.send_keys(str(value))
    box = driver.find_element("id", "text")
    box.clear()
    box.send_keys(text)
    wait_for(lambda: driver.execute_script(
        "return document.querySelectorAll('#model-0 .surprise span').length === arguments[0] && "
        "document.querySelector('#status').textContent.startsWith('read in')", len(text)), what="the typed text read")


def own_logits(model, tokenizer, text: str) -> torch.Tensor:
    """The model's logits after each token of text, each from the window it is read in, one window at a time."""
    ids = tokenizer.encode(text)
    rows = []
    with torch.no_grad():
        for t in range(len(ids)):
            s = window_start(t, model.block_size)
            rows.append(model(torch.tensor([ids[s:s + model.block_size]]))[0][0, t - s])
    return torch.stack(rows)  # (T, V)


def test_the_shaded_losses_and_next_probabilities_are_the_models_own(browser, explorer, checkpoints):
    open_page(browser, explorer, **{"temperature": 0.8, "top-k": 5})
    model, tokenizer = checkpoints["model"], checkpoints["tokenizer"]
    logits = own_logits(model, tokenizer, PROMPT)
    ids = torch.tensor(tokenizer.encode(PROMPT))
    losses = F.cross_entropy(logits[:-1], ids[1:], reduction="none")
    shown = browser.execute_script("return [...document.querySelectorAll('#model-0 .surprise span')]"
                                   ".map(s => s.dataset.loss === undefined ? null : Number(s.dataset.loss))")
    assert shown[0] is None and shown[1:] == pytest.approx(losses.tolist(), abs=1e-4)
    for t in (len(PROMPT) - 1, 10):  # after the cursor, at the end; then after the character clicked
        if t != len(PROMPT) - 1:
            browser.find_elements("css selector", "#model-0 .surprise span")[t].click()
        top = F.softmax(logits[t].topk(5).values / 0.8, dim=-1)  # temperature 0.8 over the 5 likeliest
        expected = [tokenizer.decode([i]) for i in logits[t].topk(5).indices.tolist()]
        rows = browser.execute_script("return [...document.querySelectorAll('#model-0 tr.choice')]"
                                      ".map(r => [r.dataset.token, Number(r.dataset.prob)])")
        assert [token for token, _ in rows] == expected, t
        assert [p for _, p in rows] == pytest.approx(top.tolist(), abs=1e-4), t


def test_each_attention_row_shown_sums_to_1_and_reads_nothing_after_its_token(browser, explorer):
    open_page(browser, explorer)
    spans = browser.find_elements("css selector", "#model-0 .surprise span")
    for t in (0, 7, BS - 1, BS, len(PROMPT) - 1):  # the first window, its last token, the windows after it
        spans[t].click()
        lines = browser.execute_script(
            "return [...document.querySelectorAll('#model-0 .reads .line')].map(l => [Number(l.dataset.row), "
            "[...l.querySelectorAll('span')].map(s => [Number(s.dataset.column), Number(s.dataset.weight)])])")
        assert len(lines) == 2 * 4, "a line per layer and head"
        for row, weights in lines:
            assert row == t
            assert sum(w for _, w in weights) == pytest.approx(1.0, abs=1e-4), (t, weights)
            assert all(w == 0 for c, w in weights if c > t), f"token {t} reads a token after it: {weights}"
    above = browser.execute_script("""
        return [...document.querySelectorAll('#model-0 .maps canvas')].map(canvas => {
          const T = canvas.width, pixels = canvas.getContext('2d').getImageData(0, 0, T, T).data;
          let after = 0, read = 0;
          for (let t = 0; t < T; t++) for (let c = 0; c < T; c++) {
            const p = 4 * (t * T + c), white = pixels[p] === 247 && pixels[p + 1] === 251 && pixels[p + 2] === 255;
            if (c > t && !white) after++;
            if (c <= t && !white) read++;
          }
          return [after, read];
        })""")
    assert len(above) == 2 * 4, "a heatmap per layer and head"
    assert all(after == 0 for after, _ in above), f"cells past the diagonal drawn: {above}"
    assert all(read > 0 for _, read in above)


def test_streaming_shows_task_08s_characters_as_they_come(browser, explorer, checkpoints):
    open_page(browser, explorer, **{"temperature": 0.8, "top-k": 5, "seed": 7, "stream-tokens": 400})
    browser.find_element("css selector", "#model-0 button.stream").click()
    first = wait_for(lambda: browser.find_element("css selector", "#model-0 pre.stream").get_attribute("textContent"),
                     what="the first streamed characters")
    wait_for(lambda: browser.find_element("css selector", "#model-0 button.stream").text == "Stream", what="the end")
    text = browser.find_element("css selector", "#model-0 pre.stream").get_attribute("textContent")
    model, tokenizer = checkpoints["model"], checkpoints["tokenizer"]
    tokens = stream(model, tokenizer.encode(PROMPT), sampler(0.8, 5, None, torch.Generator().manual_seed(7)))
    expected = tokenizer.decode([next(tokens) for _ in range(400)])
    assert 0 < len(first) <= len(text) and text == expected
    assert "characters in" in browser.find_element("css selector", "#model-0 .speed").text


def test_a_bad_checkpoint_shows_its_message(browser, explorer, checkpoints):
    open_page(browser, explorer)
    failed = browser.find_element("css selector", "#failed").text
    assert f"{checkpoints['missing']}: no checkpoint at {checkpoints['missing']}" in failed
    assert "Train one first" in failed


def test_side_by_side_the_difference_a_gru_without_attention_and_a_screenshot(browser, explorer):
    open_page(browser, explorer)
    losses = browser.execute_script(
        "return [0, 1].map(i => [...document.querySelectorAll(`#model-${i} .surprise span`)].map(s => Number(s.dataset.loss)))")
    shown = browser.execute_script(
        "return [...document.querySelectorAll('.difference span')].map(s => Number(s.dataset.difference))")
    assert shown[1:] == pytest.approx([b - a for a, b in zip(losses[0][1:], losses[1][1:])], abs=1e-4)
    assert "GRU − GPT (task 07)" in browser.find_element("id", "differences").text
    assert "A GRU has no attention" in browser.find_element("css selector", "#model-1 .no-attention").text
    browser.find_element("id", "measure").click()
    wait_for(lambda: browser.find_element("id", "positions-status").text.startswith("measured"), timeout=120,
             what="the loss by position")
    assert len(browser.find_elements("css selector", "#positions-charts svg")) == 2, "the curves, and their difference"
    browser.find_elements("css selector", "#model-0 .surprise span")[20].click()
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(SCREENSHOT)), SCREENSHOT
