"""tools/gpu_check.py: the quick CPU run reports a figure for every CPU-runnable check, optional
packages that are missing (or pretended missing) read "unavailable" without failing the run, a
check that raises reads FAILED and exits 1, and the arithmetic behind the GPU figures."""

import importlib.util
import io
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from transformers import AutoModel

from tools import gpu_check
from tools.gpu_check import LINE, Result, Unavailable

REPO = Path(__file__).resolve().parents[2]
CPU_CHECKS = ("bf16 fwd+bwd", "sdpa vs fp32", "lora step", "encode throughput")
OPTIONAL_CHECKS = {  # check name -> the package it needs
    "flash-attn 2 vs sdpa": "flash_attn",
    "deepspeed zero2": "deepspeed",
    "bitsandbytes 4-bit": "bitsandbytes",
    "faiss-gpu vs cpu": "faiss",
}
ALL = "deepspeed,faiss,bitsandbytes,flash_attn"


def _script(tmp_path, *args, timeout=300):
    """Run the script as a maintainer would (``python tools/gpu_check.py``), on the CPU path even
    where a GPU is visible; returns the process and the lines of its stdout after the header."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "CUDA_VISIBLE_DEVICES": ""}
    command = [sys.executable, "tools/gpu_check.py", "--quick", "--workdir", str(tmp_path / "work"), *args]
    proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    lines = proc.stdout.splitlines()
    assert lines and lines[0].startswith("gpu_check: torch "), proc.stdout + proc.stderr[-3000:]
    return proc, dict(_parse(line) for line in lines[1:])


def _parse(line):
    assert LINE.match(line), f"malformed line: {line!r}"
    name, _, rest = line.partition(": ")
    return name, rest


def _cosine(text):
    return float(re.search(r"min cosine (\d\.\d+)", text).group(1))


@pytest.mark.slow
def test_quick_run_reports_the_cpu_checks_and_hidden_packages_as_unavailable(tmp_path):
    started = time.perf_counter()
    out = tmp_path / "gpu_check.json"
    proc, lines = _script(tmp_path, "--json", str(out), "--pretend-missing", ALL)
    seconds = time.perf_counter() - started
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert list(lines) == [name for name, _ in gpu_check.CHECKS]  # one line per check, in order
    for name in CPU_CHECKS:
        assert not lines[name].startswith(("unavailable:", "FAILED:")), lines[name]
        assert re.search(r"\d", lines[name]), lines[name]  # a figure
    assert "tokens/s" in lines["bf16 fwd+bwd"] and "cpu fallback" in lines["bf16 fwd+bwd"]
    assert "sdpa vs eager" in lines["sdpa vs fp32"] and _cosine(lines["sdpa vs fp32"]) >= 0.999
    assert "items/s" in lines["encode throughput"]
    for name, package in OPTIONAL_CHECKS.items():
        assert lines[name] == f"unavailable: {package} not installed"

    report = json.loads(out.read_text())
    assert report["exit_code"] == 0 and report["header"]["sizes"] == "quick"
    rows = {row["name"]: row for row in report["results"]}
    assert [rows[name]["line"] for name in lines] == [f"{name}: {text}" for name, text in lines.items()]
    assert rows["sdpa vs fp32"]["metrics"]["min_cosine"] >= 0.999
    assert rows["lora step"]["metrics"]["lora_tensors_with_grad"] > 0
    assert not list(out.parent.glob(f".{out.name}.*"))  # the temporary file was renamed over
    print(f"quick run: {seconds:.1f} s")
    assert seconds < 120  # ~20 s alone on 2 cores; the margin is for a busy machine


@pytest.mark.slow
def test_optional_checks_run_where_they_can_and_say_why_where_not(tmp_path):
    proc, lines = _script(tmp_path, "--only", ",".join(OPTIONAL_CHECKS))
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert list(lines) == list(OPTIONAL_CHECKS)
    installed = {name: importlib.util.find_spec(package) is not None for name, package in OPTIONAL_CHECKS.items()}
    # no CUDA here: flash-attn needs it, faiss needs its GPU build; DeepSpeed and bitsandbytes run on CPU
    assert lines["flash-attn 2 vs sdpa"].startswith("unavailable: ")
    assert lines["faiss-gpu vs cpu"].startswith("unavailable: ")
    if installed["faiss-gpu vs cpu"]:
        assert lines["faiss-gpu vs cpu"] in ("unavailable: no GPU build of faiss (faiss-cpu installed)",
                                             "unavailable: faiss sees no GPU")  # fmt: skip
    for name in ("deepspeed zero2", "bitsandbytes 4-bit"):
        if installed[name]:
            assert "loss" in lines[name] or "cosine" in lines[name], lines[name]
            assert not lines[name].startswith(("unavailable:", "FAILED:")), lines[name]
        else:
            assert lines[name] == f"unavailable: {OPTIONAL_CHECKS[name]} not installed"


def test_script_runs_as_a_module_and_rejects_unknown_checks(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
    command = [sys.executable, "-m", "tools.gpu_check", "--only", "faiss-gpu vs cpu", "--pretend-missing", "faiss"]
    proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.splitlines()[1:] == ["faiss-gpu vs cpu: unavailable: faiss not installed"]
    bad = subprocess.run([sys.executable, "tools/gpu_check.py", "--only", "nope"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert bad.returncode == 2 and "unknown check(s) nope" in bad.stderr


def _ok(ctx):
    return "12.5 things/s (tiny)", {"rate": 12.5}


def _boom(ctx):
    raise ValueError("bad\nnews")


def _absent(ctx):
    raise Unavailable("foo not installed")


def _noisy(ctx):
    print("library chatter on stdout")  # run() writes results to its own stream only
    return "1 figure", {}


def test_a_raising_check_reads_failed_and_the_run_exits_1(tmp_path):
    out, path = io.StringIO(), tmp_path / "r.json"
    args = gpu_check.parse_args(["--quick", "--json", str(path), "--workdir", str(tmp_path)])
    checks = [("ok one", _ok), ("boom", _boom), ("absent one", _absent)]
    assert gpu_check.run(args, out, checks) == 1
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("gpu_check: torch ") and lines[0].endswith("sizes quick")
    assert lines[1:] == ["ok one: 12.5 things/s (tiny)", "boom: FAILED: ValueError: bad news",
                         "absent one: unavailable: foo not installed"]  # fmt: skip
    assert all(LINE.match(line) for line in lines[1:])
    report = json.loads(path.read_text())
    assert report["exit_code"] == 1
    assert [r["status"] for r in report["results"]] == ["ok", "failed", "unavailable"]
    assert report["results"][0]["metrics"] == {"rate": 12.5}


def test_unavailable_is_not_a_failure_and_a_spent_budget_skips(tmp_path):
    out = io.StringIO()
    args = gpu_check.parse_args(["--quick", "--workdir", str(tmp_path)])
    assert gpu_check.run(args, out, [("absent one", _absent), ("noisy", _noisy)]) == 0
    assert out.getvalue().splitlines()[1:] == ["absent one: unavailable: foo not installed", "noisy: 1 figure"]
    out = io.StringIO()
    args = gpu_check.parse_args(["--quick", "--workdir", str(tmp_path), "--budget-s", "0"])
    assert gpu_check.run(args, out, [("ok one", _ok)]) == 0
    assert out.getvalue().splitlines()[1:] == ["ok one: unavailable: skipped: the 0 s budget is spent"]


def test_a_check_past_its_time_fails_with_a_timeout():
    def slow(ctx):
        time.sleep(5)
        return "never", {}

    result = gpu_check.run_check("slow one", slow, None, seconds_left=0.2)
    assert result.status == "failed" and result.text.startswith("CheckTimeout: ran past")
    assert result.seconds < 2


def test_hidden_packages_look_absent_inside_the_block_only():
    import wave  # a stdlib module: present, and imported before the block

    with gpu_check.hide_modules(["wave", "no-such-pkg"]):
        assert importlib.util.find_spec("wave") is None  # transformers' probe: None, not an exception
        with pytest.raises(ModuleNotFoundError):
            import wave  # noqa: F401
        with pytest.raises(Unavailable, match=r"^wave not installed$"):
            gpu_check.require("wave")
        assert importlib.util.find_spec("json") is not None  # everything else is found as before
    assert importlib.util.find_spec("wave") is not None
    assert "wave" in sys.modules


def test_result_lines_have_the_documented_shapes():
    assert Result("a b", "ok", "3 x/s").line() == "a b: 3 x/s"
    assert Result("a b", "unavailable", "no CUDA").line() == "a b: unavailable: no CUDA"
    assert Result("a b", "failed", "KeyError: 'x'").line() == "a b: FAILED: KeyError: 'x'"
    for name, _ in gpu_check.CHECKS:
        assert LINE.match(f"{name}: unavailable: no CUDA"), name


def test_peak_table_knows_the_project_figures_and_not_other_devices():
    assert gpu_check.peak_bf16_tflops("NVIDIA H200") == 790.0  # the project's figure, not the datasheet's
    assert gpu_check.peak_bf16_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert gpu_check.peak_bf16_tflops("NVIDIA H100 PCIe") == 756.0
    assert gpu_check.peak_bf16_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert gpu_check.peak_bf16_tflops("Tesla T4") is None
    line = gpu_check.fwd_bwd_figure(40_000, 320.0, None, "Tesla T4", "details")
    assert "peak unknown for Tesla T4" in line and "40,000 tokens/s" in line
    line = gpu_check.fwd_bwd_figure(40_000, 395.0, 790.0, "NVIDIA H200", "details")
    assert line.startswith("40,000 tokens/s, MFU 50.0% (395 of 790 TFLOP/s")


def test_the_full_fwd_bwd_model_is_qwen2_vl_2b_shaped_and_its_flop_count():
    config = gpu_check.llm_config(gpu_check.FULL)
    with torch.device("meta"):  # no memory: only the shapes are needed
        model = AutoModel.from_config(config)
    params = gpu_check.non_embedding_params(model)
    # Qwen2-VL-2B's LLM: 1.54B parameters, of which the 151,936 x 1536 embedding is 0.23B
    assert 1.30e9 < params < 1.32e9
    assert config.text_config.rope_parameters["mrope_section"] == [16, 24, 24]  # as the released checkpoint
    batch, seq = gpu_check.FULL.tokens
    assert batch * seq == 8 * 1024
    # 6N + 12 * layers * width * seq: 7.86 GFLOP of weights, 0.53 GFLOP of attention per token
    flops = gpu_check.train_flops_per_token(params, 28, 1536, seq)
    assert flops == 6 * params + 12 * 28 * 1536 * 1024
    assert 8.3e9 < flops < 8.5e9


def test_zero2_config_is_the_projects_with_every_auto_filled():
    config = gpu_check.zero2_config(cuda=False, batch=4)
    assert config["zero_optimization"]["stage"] == 2
    assert "auto" not in json.dumps(config)
    assert config["train_batch_size"] == config["train_micro_batch_size_per_gpu"] == 4
    assert config["bf16"] == {"enabled": False} and gpu_check.zero2_config(cuda=True, batch=4)["bf16"]["enabled"]


def test_an_installed_package_that_fails_to_import_is_a_failure_not_unavailable(tmp_path, monkeypatch):
    # jfe picks flash-attn when find_spec finds it, so a broken build must not read "unavailable"
    (tmp_path / "broken_pkg").mkdir()
    (tmp_path / "broken_pkg" / "__init__.py").write_text("raise ImportError('undefined symbol: _ZN3c10')\n")
    (tmp_path / "needy_pkg").mkdir()
    (tmp_path / "needy_pkg" / "__init__.py").write_text("import no_such_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for package, error in (("broken_pkg", "ImportError: undefined symbol"), ("needy_pkg", "ModuleNotFoundError")):
        result = gpu_check.run_check("x", lambda ctx, p=package: gpu_check.require(p), None, seconds_left=10)
        assert result.status == "failed" and result.text.startswith(error), result.text
    result = gpu_check.run_check("x", lambda ctx: gpu_check.require("no_such_pkg_xyz"), None, seconds_left=10)
    assert result.line() == "x: unavailable: no_such_pkg_xyz not installed"
