"""Every task on cuda, mps and cpu: the paths a tensor takes on an accelerator, proved on a CPU.

A real accelerator is strict where a CPU is not (no float64 on MPS, explicit moves, a generator per
device), so the whole of a run is run here against one emulated on the CPU (tests/emulated_device.py).
The precision each device gets is checked with its capabilities monkeypatched. The smoke tests at the
end (`pytest -m device`) run on the accelerators a machine really has, and are skipped elsewhere.
"""

import dataclasses
import itertools
import os
import subprocess
import sys

import pytest
import torch

from conftest import ROOT
from emulated_device import OnDevice, emulated_mps
from course import startup
from course.checkpoint import load_checkpoint, resume, save_checkpoint
from course.config import GPTConfig, ModernGPTConfig
from course.device import Precision, choose_precision, pinned
from course.exits import friendly_errors
from course.presets import TASK07, choose_preset
from course.timing import how_long, seconds_per_step
from gpt.errors import UserError
from gpt.generate import stream
from gpt.train import TrainingState, make_optimizer

import task05
import task07
import task08_infinite
import task09_rope


def tiny(tmp_path, small_text_file, cls=GPTConfig, **kw):
    base = dict(data=str(small_text_file), block_size=16, n_embd=16, n_head=2, n_layer=2, dropout=0.1,
                batch_size=4, learning_rate=3e-3, max_iters=6, eval_interval=3, eval_iters=2, final_eval_iters=2,
                device="auto", sample_tokens=20, runs=str(tmp_path / "runs"), checkpoint="")
    base.update(kw)
    return cls(**base)


def quiet(*_):
    pass


# --- an emulated Apple GPU: strict about float64, moves and generators ------------------------------

def test_the_emulated_device_refuses_what_mps_refuses(monkeypatch):
    """The emulation itself: if it let these through, the tests below would prove nothing."""
    with emulated_mps(monkeypatch):
        x = torch.ones(3).to("mps")
        assert isinstance(x, OnDevice) and x.device.type == "mps"
        with pytest.raises(TypeError, match="float64"):
            x.double()
        with pytest.raises(RuntimeError, match="same device"):
            x + torch.ones(3)
        with pytest.raises(RuntimeError, match="generator"):
            torch.multinomial(x.softmax(0), 1, generator=torch.Generator())
        assert type(x.cpu()) is torch.Tensor and (x * 2).sum().item() == 6.0


def test_a_whole_task_runs_on_an_accelerator_without_float64(tmp_path, small_text_file, monkeypatch):
    """Task 05 from its command line: training, the final evaluation, the measures (whose float64 sum
    once ran on the device), the run files (pictures included) and the sample."""
    from course.plots import ATTENTION_TEXT

    text = tmp_path / "text.txt"
    text.write_text(small_text_file.read_text() + ATTENTION_TEXT)  # with the characters the picture reads
    with emulated_mps(monkeypatch):
        result = task05.main(["--data", str(text), "--max-iters", "3", "--eval-interval", "1",
                              "--eval-iters", "1", "--batch-size", "2", "--sample-tokens", "30",
                              "--runs", str(tmp_path / "runs")])
    assert result["device"] == "mps" and isinstance(next(result["model"].parameters()), OnDevice)
    assert 0 < result["measures"]["loss"] < 10 and len(result["measures"]["loss_by_position"]) == 8
    assert {os.path.basename(p) for p in result["files"]} >= {"history.csv", "loss.png", "attention.png", "summary.json"}
    assert len(result["sample"]) == 30


@pytest.mark.parametrize("task, cls", [(task07, GPTConfig), (task09_rope, ModernGPTConfig)])
def test_task07_and_task09_run_whole_on_an_accelerator(tmp_path, small_text_file, monkeypatch, task, cls):
    cfg = tiny(tmp_path, small_text_file, cls)
    with emulated_mps(monkeypatch):
        result = task.train_gpt(cfg, quiet=True)
    assert isinstance(next(result["model"].parameters()), OnDevice)
    assert result["history"][-1]["final"] and 0 < result["measures"]["loss"] < 10


@pytest.mark.parametrize("task, cls", [(task07, GPTConfig), (task09_rope, ModernGPTConfig)])
def test_task08_streams_on_an_accelerator_past_the_window(tmp_path, small_text_file, monkeypatch, capsys, task, cls):
    """A checkpoint trained on the CPU, streamed on the device for three windows (the learned window's
    restart, RoPE's ring and its angles past the table all run there)."""
    cfg = tiny(tmp_path, small_text_file, cls, device="cpu", checkpoint=str(tmp_path / "model.pt"), runs="")
    task.train_gpt(cfg, quiet=True)
    capsys.readouterr()
    with emulated_mps(monkeypatch):
        assert task08_infinite.main(["--checkpoint", cfg.checkpoint, "--max-new-tokens", "50"]) == 0
    assert len(capsys.readouterr().out) == len("\n") + 50 + len("\n")


# --- the precision each device runs natively -----------------------------------------------------

def pretend_cuda(monkeypatch, name: str, capability: tuple[int, int]):
    """A CUDA GPU of this compute capability, as PyTorch would describe it (bf16 emulated before sm_80)."""
    native = capability >= (8, 0)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: name)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: native or including_emulation)


def test_a_gpu_without_bf16_in_hardware_trains_in_fp16_with_a_gradient_scaler(monkeypatch):
    pretend_cuda(monkeypatch, "Tesla T4", (7, 5))  # is_bf16_supported() says True: emulated
    p = choose_precision("cuda")
    scaler = p.grad_scaler()  # every precision has one now; only fp16's is switched on
    assert p.name == "fp16" and "no bf16" in p.why and isinstance(scaler, torch.amp.GradScaler) and scaler.is_enabled()
    with pytest.raises(UserError, match="no bf16 in hardware"):
        choose_precision("cuda", "bf16")


def test_ampere_and_later_train_in_bf16_without_a_scaler(monkeypatch):
    pretend_cuda(monkeypatch, "NVIDIA A100-SXM4-40GB", (8, 0))
    p = choose_precision("cuda")
    assert p.name == "bf16" and p.dtype == torch.bfloat16 and not p.grad_scaler().is_enabled()


def test_mps_and_cpu_run_fp32_unless_asked():
    assert choose_precision("mps").name == "fp32" and "MPS" in choose_precision("mps").why
    assert choose_precision("cpu").name == "fp32" and choose_precision("cpu").dtype is None
    assert choose_precision("cpu", "bf16") == Precision("bf16", "cpu", "asked for with --precision")
    with pytest.raises(UserError, match="unknown precision"):
        choose_precision("cpu", "fp8")


def test_the_precision_flag_reaches_the_run_and_is_printed(run_log, tmp_path, small_text_file):
    lines = []
    run_log(lines.append)
    task07.train_gpt(tiny(tmp_path, small_text_file, precision="bf16", device="cpu"))
    assert any(line.startswith("device: cpu (") and "precision: bf16 (asked for with --precision)" in line
               for line in lines), lines[:3]


def test_fp16_with_a_gradient_scaler_trains_and_its_scale_is_checkpointed(tmp_path, small_text_file, monkeypatch):
    """The T4/V100 path, on the CPU: the loss is scaled before the backward pass, and a resumed run
    continues with the scale the checkpoint holds."""
    scaled = []
    real_scale = torch.amp.GradScaler.scale
    # every run has a scaler now (switched off unless fp16): what counts is that an enabled one scaled each loss
    monkeypatch.setattr(torch.amp.GradScaler, "scale",
                        lambda self, loss: scaled.append(self.is_enabled()) or real_scale(self, loss))
    cfg = tiny(tmp_path, small_text_file, precision="fp16", device="cpu", checkpoint=str(tmp_path / "m.pt"))
    result = task07.train_gpt(cfg, quiet=True)
    assert scaled == [True] * cfg.max_iters
    assert all(torch.isfinite(torch.tensor([r["train"], r["val"]])).all() for r in result["history"])
    assert load_checkpoint(cfg.checkpoint)["state"]["scaler"]["scale"] > 0


def test_bf16_autocast_runs_through_task09s_model_its_cached_stream_and_the_measures(tmp_path, small_text_file,
                                                                                     monkeypatch):
    cfg = tiny(tmp_path, small_text_file, ModernGPTConfig, precision="bf16", device="cpu", runs="")
    measured = []
    import course.run

    real = course.run.measure_val
    monkeypatch.setattr(course.run, "measure_val", lambda *a, **k: measured.append(
        torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu")) or real(*a, **k))
    result = task09_rope.train_gpt(cfg, quiet=True)
    assert measured == [torch.bfloat16], "the measures run in the precision the table's evaluations ran in"
    model = result["model"].eval()
    tokens = torch.randint(model.token_embedding.num_embeddings, (1, 12))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        full, _ = model(tokens)
        cache = model.new_cache()
        cached = torch.cat([model(tokens[:, :5], cache=cache)[0], model(tokens[:, 5:], cache=cache)[0]], 1)
        streamed = list(itertools.islice(stream(model, tokens[0].tolist(), lambda logits: 0), 40))
    assert full.dtype == torch.bfloat16 and (cached.float() - full.float()).abs().max() < 0.1
    assert streamed == [0] * 40


def test_without_the_fix_the_measures_would_not_run_in_the_tables_precision(tmp_path, small_text_file, monkeypatch):
    """fp32 runs measure outside autocast: the spy above sees the difference."""
    import course.run

    measured = []
    real = course.run.measure_val
    monkeypatch.setattr(course.run, "measure_val", lambda *a, **k: measured.append(torch.is_autocast_enabled("cpu"))
                        or real(*a, **k))
    task07.train_gpt(tiny(tmp_path, small_text_file, device="cpu", runs=""), quiet=True)
    assert measured == [False]


# --- exact resume on every device, batches through pinned memory ---------------------------------

class FakeTrainer:
    """What SaveCheckpoints reads of the loop, for a run on device."""
    def __init__(self, model, device):
        from gpt.train import lecture_step
        self.state, self.device, self.step = TrainingState(0), device, lecture_step
        self.optimizer = make_optimizer(model.parameters(), 1e-3, fused=False)


def saved_run(tmp_path, device):
    """A run of task 07 saved as a run on device saves it, at iteration 8."""
    from course.checkpoint import SaveCheckpoints
    from gpt.tokenizer import CharTokenizer

    model = task07.build_model(dataclasses.replace(TASK07["cpu"], n_layer=1, n_embd=16, n_head=2), 5)
    trainer = FakeTrainer(model, device)
    trainer.state.iter = 8
    path = tmp_path / "run.pt"
    SaveCheckpoints(path, "task07", TASK07["cpu"], model, CharTokenizer("abcde")).on_eval(trainer, {})
    return path, model, trainer


def resumed_on(device, path, monkeypatch) -> str:
    """Resume the run saved at path as a run on device would (as far as resume can tell); its line."""
    import course.checkpoint
    from gpt.tokenizer import CharTokenizer

    fresh = task07.build_model(dataclasses.replace(TASK07["cpu"], n_layer=1, n_embd=16, n_head=2), 5)
    monkeypatch.setattr(course.checkpoint, "device_of", lambda model: device)
    line, scaler = resume(path, fresh, make_optimizer(fresh.parameters(), 1e-3, fused=False), CharTokenizer("abcde"),
                          TrainingState(0))
    assert "resumed from" in line and scaler is None
    return line


def test_a_checkpoint_holds_the_devices_random_state_and_resume_restores_it(tmp_path, monkeypatch):
    """Dropout on a GPU draws from the GPU's generator: without its state, a resumed run would repeat
    the dropout masks of the run's start (a run reseeds every device as it starts)."""
    device_state = {"now": torch.tensor([1, 2, 3], dtype=torch.uint8)}
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda *a: device_state["now"].clone())
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda s, *a: device_state.update(now=s.clone()))
    path = saved_run(tmp_path, "cuda")[0]
    assert load_checkpoint(path)["state"]["device_rng"].tolist() == [1, 2, 3]
    device_state["now"] = torch.tensor([9, 9, 9], dtype=torch.uint8)  # what reseeding at start-up leaves
    assert "note" not in resumed_on("cuda", path, monkeypatch)
    assert device_state["now"].tolist() == [1, 2, 3]


def test_resuming_on_another_kind_of_device_says_its_numbers_differ_whichever_way(tmp_path, monkeypatch):
    """Saved on a CPU (no device random state) and resumed on a GPU, or the other way: both say so."""
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda *a: torch.zeros(4, dtype=torch.uint8))
    for saved_on, resumed_there in (("cpu", "cuda"), ("cuda", "cpu")):
        line = resumed_on(resumed_there, saved_run(tmp_path, saved_on)[0], monkeypatch)
        assert f"saved on {saved_on} and resumes on {resumed_there}" in line, line


def test_batches_reach_a_cuda_device_through_pinned_memory(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self: calls.append("pin") or self)
    monkeypatch.setattr(torch.Tensor, "to", lambda self, *a, **k: calls.append(("to", a, k)) or self)
    batches = pinned(lambda state: (torch.zeros(2, 3, dtype=torch.long), torch.ones(2, 3, dtype=torch.long)), "cuda")
    batches(None)
    assert calls == ["pin", ("to", ("cuda",), {"non_blocking": True})] * 2
    plain = lambda state: None  # noqa: E731
    assert pinned(plain, "cpu") is plain and pinned(plain, "mps") is plain


# --- presets that fit the device ------------------------------------------------------------------

def test_on_a_mac_the_preset_choice_names_mps_truthfully(monkeypatch):
    import course.presets

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(course.presets, "mps_available", lambda: True)
    preset, why = choose_preset([], TASK07)
    assert preset == "cpu" and "MPS" in why and "a day on a CPU" not in why
    monkeypatch.setattr(course.presets, "mps_available", lambda: False)
    assert choose_preset([], TASK07)[1].startswith("no GPU found")
    assert choose_preset(["--preset", "gpu"], TASK07) == ("gpu", "asked for with --preset")


def test_a_run_of_hours_is_announced_with_a_warning():
    assert "warning" in how_long(7.0, 12 * 3600, 5000, "cpu") and "12.0 hours" in how_long(7.0, 12 * 3600, 5000, "cpu")
    assert how_long(0.05, 480, 8000, "cpu").startswith("about 8 minutes here for 8,000 steps")


def test_timing_a_step_touches_neither_the_model_nor_the_random_state():
    model = task07.build_model(dataclasses.replace(TASK07["cpu"], n_layer=1), 65)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    optimizer = make_optimizer(model.parameters(), 1e-3)
    assert seconds_per_step(model, optimizer, 4, 16, 65, choose_precision("cpu")) > 0  # on the model's device
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()) and model.training


# --- the same table on every x86 CPU --------------------------------------------------------------

AVX2_FLAGS = {"sse4_2", "avx", "avx2", "fma"}


def test_avx2_kernels_are_asked_for_only_where_they_are_safe_and_wanted():
    env = {}
    assert startup.choose_avx2(env, "x86_64", AVX2_FLAGS)
    assert env == {"ATEN_CPU_CAPABILITY": "avx2"}
    for env, machine, flags in [({}, "arm64", AVX2_FLAGS), ({}, "aarch64", AVX2_FLAGS),
                                ({}, "x86_64", {"avx", "avx2"}),  # no FMA: PyTorch's AVX2 kernels need it
                                ({"ATEN_CPU_CAPABILITY": "avx512"}, "x86_64", AVX2_FLAGS),
                                ({"GPT_CPU_KERNELS": "native"}, "x86_64", AVX2_FLAGS)]:
        before = dict(env)
        assert not startup.choose_avx2(env, machine, flags) and env == before


@pytest.mark.slow  # a process or more started per test: seconds each
@pytest.mark.skipif(not {"avx2", "fma"} <= startup.cpu_flags(), reason="this CPU has no AVX2 (or it can't tell)")
def test_a_script_gets_the_avx2_kernels_and_native_opts_out(tmp_path):
    """A script of this repository (here python -m course.X, as a task script) asks for the AVX2 kernels
    before its first computation; GPT_CPU_KERNELS=native leaves the choice to PyTorch; a program that is
    not this repository's, importing gpt and course, asks for nothing."""
    env = {k: v for k, v in os.environ.items() if k not in ("ATEN_CPU_CAPABILITY", "GPT_CPU_KERNELS")}
    ask = [sys.executable, "-m", "course.startup"]
    out = subprocess.run(ask, cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "AVX2", out.stderr
    out = subprocess.run(ask, cwd=ROOT, env={**env, "GPT_CPU_KERNELS": "native"}, capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == torch.backends.cpu.get_cpu_capability() if "ATEN_CPU_CAPABILITY" not in os.environ \
        else out.stdout.strip() != ""
    code = "import os, gpt.model, course.run; print(os.environ.get('ATEN_CPU_CAPABILITY'))"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env={**env, "PYTHONPATH": str(ROOT)},
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "None" and out.stderr == ""


# --- on the accelerators this machine really has: pytest -m device --------------------------------

ACCELERATORS = [
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here")),
    pytest.param("mps", marks=pytest.mark.skipif(not (torch.backends.mps.is_available()), reason="no Apple GPU (MPS) here")),
]


@pytest.mark.device
@pytest.mark.parametrize("device", ACCELERATORS)
def test_device_task07_trains_resumes_exactly_and_streams(run_log, tmp_path, small_text_file, capsys, device):
    """In fp32, so that only the GPU's non-deterministic kernels (not bf16 rounding) separate the two runs."""
    settings = dict(device=device, max_iters=12, eval_interval=4, precision="fp32")
    whole = task07.train_gpt(tiny(tmp_path, small_text_file, **settings), quiet=True)
    cfg = tiny(tmp_path, small_text_file, **settings, checkpoint=str(tmp_path / "t07.pt"))

    def stop_at_8(line):
        if line.startswith("Epoch 8:"):
            raise KeyboardInterrupt

    with pytest.raises(SystemExit), friendly_errors(checkpoint=cfg.checkpoint):  # as task07.main runs it
        run_log(stop_at_8)
        task07.train_gpt(cfg)
    resumed = task07.train_gpt(cfg, resume=True, quiet=True)
    assert [r["val"] for r in resumed["history"]] == pytest.approx([r["val"] for r in whole["history"]], abs=1e-3)
    capsys.readouterr()
    assert task08_infinite.main(["--checkpoint", cfg.checkpoint, "--device", device, "--max-new-tokens", "50"]) == 0
    assert len(capsys.readouterr().out) == 52


@pytest.mark.device
@pytest.mark.parametrize("device", ACCELERATORS)
def test_device_task09_trains_and_measures(tmp_path, small_text_file, device):
    result = task09_rope.train_gpt(tiny(tmp_path, small_text_file, ModernGPTConfig, device=device), quiet=True)
    assert result["device"] == device and next(result["model"].parameters()).device.type == device
    assert result["history"][-1]["final"] and 0 < result["measures"]["loss"] < 10
