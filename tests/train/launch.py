"""Training runs under the real DeepSpeed launcher on 2 CPU ranks (gloo), shared by the tests."""

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def deepspeed_losses(recipe: str, zero: str, port: int, out: Path, steps: int, *overrides: str) -> list[float]:
    """Run ``recipes/{recipe}`` for ``steps`` steps under ``deepspeed_configs/{zero}.json`` with the
    ``key=value`` overrides; check it used 2 ranks and ran every step; return the logged losses."""
    command = [
        str(Path(sys.executable).parent / "deepspeed"), "--num_gpus", "2", "--master_port", str(port),
        "--module", "jfe.train", "--config", str(REPO / "recipes" / recipe),
        "--deepspeed", str(REPO / "deepspeed_configs" / f"{zero}.json"),
        f"output_dir={out}", f"max_steps={steps}", "warmup_steps=0", "logging_steps=1", "save_steps=1000",
        *overrides,
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=480)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((out / "final" / "jfe_train.json").read_text())
    assert summary["world_size"] == 2 and summary["global_steps"] == steps
    return [e["loss"] for e in summary["loss_history"]]
