"""jfe's embedding path, and the training model the GPU check's LoRA step uses, import and run
without deepspeed, faiss, bitsandbytes, datasets or flash-attn (a GPU machine may lack any of them).

The child process hides those packages the way a machine without them looks: every meta-path
finder finds nothing for them, so ``import`` raises ModuleNotFoundError and
``importlib.util.find_spec`` returns None. (A finder that raised instead would break transformers,
which probes optional packages with find_spec.)
"""

import json
import os
import subprocess
import sys
from pathlib import Path

BLOCKED = ("deepspeed", "faiss", "bitsandbytes", "datasets", "flash_attn")

CHILD = r"""
import importlib.util
import json
import sys
import tempfile

BLOCKED = frozenset(sys.argv[1].split(","))


class Hiding:
    def __init__(self, finder):
        self.finder = finder

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            return None
        find = getattr(self.finder, "find_spec", None)
        return None if find is None else find(name, path, target)

    def __getattr__(self, attribute):
        return getattr(self.finder, attribute)


sys.meta_path[:] = [Hiding(finder) for finder in sys.meta_path]
hidden = {}
for name in sorted(BLOCKED):
    try:
        __import__(name)
        hidden[name] = "imported"
    except ModuleNotFoundError:
        hidden[name] = "missing" if importlib.util.find_spec(name) is None else "find_spec found it"

import numpy as np
from PIL import Image

from jfe import Embedder
from jfe.tiny import build_tiny_model

with tempfile.TemporaryDirectory() as tmp:
    path = build_tiny_model(f"{tmp}/tiny")
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8))
    embedder = Embedder.from_pretrained(path, dtype="float32", device="cpu")
    vectors = embedder.encode(["a handwritten seven", image, {"text": "red", "image": image}])
try:
    import jfe.train.model  # noqa: F401  (the GPU check's LoRA step loads its model with it)

    train_model = "ok"
except ImportError as err:
    train_model = f"{type(err).__name__}: {err}"
print(json.dumps({
    "hidden": hidden,
    "shape": list(vectors.shape),
    "finite": bool(np.isfinite(vectors).all()),
    "norms": np.linalg.norm(vectors, axis=1).tolist(),
    "attention": embedder.model.config._attn_implementation,
    "train_model": train_model,
    "loaded": sorted(m for m in sys.modules if m.partition(".")[0] in BLOCKED),
}))
"""


def test_embedding_and_training_model_need_none_of_the_optional_packages(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-c", CHILD, ",".join(BLOCKED)], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["hidden"] == dict.fromkeys(sorted(BLOCKED), "missing")  # the block really hides them
    assert out["shape"][0] == 3 and out["finite"]
    assert all(abs(n - 1) < 1e-5 for n in out["norms"])
    assert out["attention"] == "sdpa"  # no flash-attn: the embedder falls back to sdpa
    assert out["train_model"] == "ok"
    assert out["loaded"] == []  # nothing reached a hidden package by another route
