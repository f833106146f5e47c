"""Training runs under the real DeepSpeed launcher on 2 CPU ranks (gloo), shared by the tests."""

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def deepspeed_command(recipe: str, zero: str, port: int, out: Path, steps: int, *overrides: str) -> list[str]:
    """``recipes/{recipe}`` for ``steps`` steps under ``deepspeed_configs/{zero}.json`` on 2 ranks, with
    the ``key=value`` overrides (later ones win)."""
    return [
        str(Path(sys.executable).parent / "deepspeed"), "--num_gpus", "2", "--master_port", str(port),
        "--module", "jfe.train", "--config", str(REPO / "recipes" / recipe),
        "--deepspeed", str(REPO / "deepspeed_configs" / f"{zero}.json"),
        f"output_dir={out}", f"max_steps={steps}", "warmup_steps=0", "logging_steps=1", "save_steps=1000",
        *overrides,
    ]  # fmt: skip


def launch_env() -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def deepspeed_run(recipe: str, zero: str, port: int, out: Path, steps: int, *overrides: str) -> tuple[list[float], str]:
    """Run :func:`deepspeed_command`; check it used 2 ranks and ran every step; return the logged
    losses and the launcher's output."""
    command = deepspeed_command(recipe, zero, port, out, steps, *overrides)
    result = subprocess.run(command, cwd=REPO, env=launch_env(), capture_output=True, text=True, timeout=480)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((out / "final" / "jfe_train.json").read_text())
    assert summary["world_size"] == 2 and summary["global_steps"] == steps
    return [e["loss"] for e in summary["loss_history"]], result.stdout + result.stderr


def deepspeed_losses(recipe: str, zero: str, port: int, out: Path, steps: int, *overrides: str) -> list[float]:
    """The logged losses of :func:`deepspeed_run`."""
    return deepspeed_run(recipe, zero, port, out, steps, *overrides)[0]
