"""The vLLM gate: a model jfe exports embeds the same in vLLM's pooling runner as in jfe.

Runs inside the venv ``tools/vllm_env.sh`` builds (vLLM pins its own torch)::

    venv=$(tools/vllm_env.sh) && "$venv/bin/python" tools/vllm_check.py [--bench] [--json out.json]

For every registered family it builds a tiny random model (hidden 256: vLLM's CPU attention wants
a head dim of 64), saves it as ``jfe export`` does, and compares, in fp32 (max abs diff <= 1e-5):

- ``vllm.LLM(..., runner="pooling").embed`` against ``Embedder.encode`` on a text with its
  instruction, an image, image+text with an instruction, and a text over ``max_text_tokens``
  (through :class:`jfe.serving.vllm.VllmEmbedder`, which renders and cuts as jfe does);
- ``jfe encode --engine vllm`` against ``jfe encode`` on a small pool: same shard files and ids;
- ``vllm serve PATH --runner pooling``: ``/v1/embeddings`` with chat messages against
  ``Embedder.encode``, and ``/tokenize`` against jfe's token ids, for texts with their instruction,
  images, and image+text with an instruction (``tools/vllm_serve.py``);
- a ``max_pixels`` budget given at load time, on large images, against jfe's with the same budget;
- token vectors (``embedding: multi`` and ``both`` exports, vLLM's ``token_embed`` task) against
  ``Embedder.encode_multi`` and ``jfe encode``'s token-vector shards (``tools/vllm_multi.py``).

``--bench`` adds ``encode_vs_vllm`` (jfe's encode against vLLM's on the same inputs, both items/s)
and ``engine_overhead`` (``--engine vllm``'s loop against ``LLM.embed`` called directly). Each
family runs in a subprocess of its own (one vLLM engine per process). Prints one line per check;
exits 1 if any failed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB; the tiny models need little

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TOL = 1e-5
INSTRUCTION = "Retrieve an image of the handwritten digit described."
LONG = " ".join(["a red seven written quickly and slanted to the right"] * 60)


def _image(seed: int, size=(32, 32)):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8))


def _cases():
    return {
        "text+instruction": ([{"text": "a handwritten seven"}, {"text": "nine"}], INSTRUCTION),
        "image": ([{"image": _image(0)}, {"image": _image(1, (16, 40))}], None),
        "image+text+instruction": ([{"image": _image(2), "text": "inverted"}], INSTRUCTION),
        "long text": ([{"text": LONG}], INSTRUCTION),
    }


def _export(arch: str, root: Path) -> Path:
    from jfe import Embedder
    from jfe.tiny import build_tiny_model

    base = build_tiny_model(root / f"base-{arch}", arch=arch, hidden=256, layers=2, vision_hidden=256)
    embedder = Embedder.from_pretrained(base, dtype="float32", device="cpu")
    embedder.config.prompts = {"query": INSTRUCTION}
    return embedder.save(root / f"export-{arch}")


def _pool(root: Path) -> Path:
    """A small M-BEIR candidate pool: texts, images, image+text."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(12):
        image = None
        if i % 3:
            image = f"images/{i}.png"
            _image(100 + i, (24 + 4 * i, 32)).save(root / image)
        text = None if i % 3 == 1 else f"candidate {i} " * (1 + i)
        modality = "image,text" if image and text else ("image" if image else "text")
        rows.append({"did": f"9:{i}", "txt": text, "img_path": image, "modality": modality, "src_content": None})
    path = root / "pool.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def check_family(arch: str, bench: bool, serve: bool, multi: bool = True, both: bool = False) -> dict[str, str]:
    """All checks of one family, in this process; returns name -> result line."""
    import numpy as np

    from jfe import Embedder
    from jfe.serving.vllm import VllmEmbedder

    results: dict[str, str] = {}
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        folder = _export(arch, root)
        ours = Embedder.from_pretrained(folder, dtype="float32", device="cpu")
        engine = VllmEmbedder(folder, dtype="float32", enforce_eager=True, max_model_len=4096)
        for name, (inputs, instruction) in _cases().items():
            diff = float(np.abs(engine.encode(inputs, instruction) - ours.encode(inputs, instruction)).max())
            ok = diff <= TOL
            failed |= not ok
            results[f"{arch} vllm {name}"] = f"max abs diff {diff:.2e}" + ("" if ok else f" FAILED (> {TOL})")

        pool = _pool(root)
        from jfe.retrieval.encode import encode_to_shards
        from jfe.retrieval.items import read_items
        from jfe.retrieval.shards import read_embeddings

        items = read_items(pool, root)
        encode_to_shards(ours, items, root / "emb-jfe", num_shards=2, dtype="float32", model_name=str(folder))
        encode_to_shards(engine, items, root / "emb-vllm", num_shards=2, dtype="float32", model_name=str(folder))
        ids_a, vecs_a = read_embeddings([root / "emb-jfe"])
        ids_b, vecs_b = read_embeddings([root / "emb-vllm"])
        files_a = sorted(p.relative_to(root / "emb-jfe") for p in (root / "emb-jfe").rglob("*") if p.is_file())
        files_b = sorted(p.relative_to(root / "emb-vllm") for p in (root / "emb-vllm").rglob("*") if p.is_file())
        diff = float(np.abs(vecs_a - vecs_b).max())
        ok = ids_a == ids_b and files_a == files_b and vecs_a.dtype == vecs_b.dtype and diff <= TOL
        failed |= not ok
        results[f"{arch} encode --engine vllm"] = (
            f"{len(ids_b)} items in {len(files_b)} files, same ids and files, max abs diff {diff:.2e}"
            if ok
            else f"FAILED: ids equal {ids_a == ids_b}, files {files_a} vs {files_b}, max abs diff {diff:.2e}"
        )
        if bench:
            results.update(_bench(arch, ours, engine))
        del engine
        # an image-token budget given at load time reaches vLLM's processor as it does jfe's
        budget = 64 * 64
        capped = VllmEmbedder(folder, dtype="float32", enforce_eager=True, max_model_len=4096, max_pixels=budget)
        photo = [{"image": _image(7, (600, 800))}, {"image": _image(8, (40, 1200)), "text": "wide"}]
        ours_capped = Embedder.from_pretrained(folder, dtype="float32", device="cpu", max_pixels=budget)
        diff = float(np.abs(capped.encode(photo) - ours_capped.encode(photo)).max())
        uncapped = float(np.abs(ours.encode(photo) - ours_capped.encode(photo)).max())
        ok = diff <= TOL and uncapped > 1e-3
        failed |= not ok
        results[f"{arch} vllm max_pixels={budget}"] = (
            f"max abs diff {diff:.2e} (uncapped differs by {uncapped:.2e})" + ("" if ok else " FAILED")
        )
        del capped
        if serve:
            from vllm_serve import check_serve

            # a long text is left out: a server sees the whole text (docs/serving.md, Long texts)
            cases = {name: case for name, case in _cases().items() if name != "long text"}
            lines, ok = check_serve(arch, folder, ours, cases)
            failed |= not ok
            results.update(lines)
        if multi:
            from vllm_multi import check_multi

            prompts = {"query": INSTRUCTION}
            results.update(check_multi(arch, root / f"base-{arch}", root, _cases(), prompts, pool, both))
            failed |= results.pop(f"{arch} multi ok") != "yes"
    results[f"{arch} ok"] = "no" if failed else "yes"
    return results


def _bench(arch: str, ours, engine, repeats: int = 12) -> dict[str, str]:
    """Items/s of both engines on the same 192 mixed inputs, and ``jfe encode --engine vllm``'s
    overhead over what a caller of ``LLM.embed`` does for the same files (open the images, render
    the prompts, embed). Every timed call gets texts of its own, so no prompt comes from jfe's
    render cache; each throughput is the best of ``repeats`` runs, the overhead the median of
    ``repeats`` paired, alternated rounds."""
    import tempfile

    import numpy as np
    from PIL import Image

    from jfe.formatting import EmbedInput
    from jfe.retrieval.encode import encode_items
    from jfe.retrieval.items import EncodeItem
    from jfe.serving.vllm import requests

    def inputs(round_: int) -> list[dict]:
        out = [{"text": f"candidate {i} of round {round_} " * (1 + i % 9)} for i in range(64)]
        out += [{"image": _image(i, (16 + 8 * (i % 4), 32))} for i in range(64)]
        return out + [{"image": _image(50 + i), "text": f"variant {i} of round {round_}"} for i in range(64)]

    def best(fn) -> float:
        fn(-1)  # warm-up
        times = []
        for r in range(repeats):
            start = time.perf_counter()
            fn(r)
            times.append(time.perf_counter() - start)
        return min(times)

    t_jfe = best(lambda r: ours.encode(inputs(1000 + r), batch_size=32))
    t_vllm = best(lambda r: engine.encode(inputs(2000 + r)))
    with tempfile.TemporaryDirectory() as tmp:
        # the same items as files, read and decoded as jfe encode reads them
        items = {}
        for r in range(-1, repeats):
            items[r] = []
            for i, x in enumerate(inputs(3000 + r)):
                path = None
                if "image" in x:
                    path = f"{tmp}/{r}-{i}.png"
                    x["image"].save(path)
                items[r].append(EncodeItem(id=f"{r}:{i}", text=x.get("text"), image=path))

        def loop(r: int) -> None:
            encode_items(engine, items[r], progress=None)

        def direct(r: int) -> None:
            # what a caller of LLM.embed does for the same files: open each image, render each prompt
            # with the saved chat template, embed
            rows = [
                EmbedInput(text=it.text, image=Image.open(it.image).convert("RGB") if it.image else None)
                for it in items[r]
            ]
            engine.llm.embed(requests(engine.processor, rows, [None] * len(rows), 10**9), use_tqdm=False)

        # alternated, so both see the same drift of a shared machine, and each goes first in half the
        # rounds (the first call after a pause runs ~15% slower: vLLM's engine idles between calls);
        # the overhead is the median of the rounds' paired ratios, steadier than a ratio of two
        # minimums on calls of half a second
        ratios = []
        for r in range(-1, repeats):
            took = {}
            pair = ((loop, "loop"), (direct, "direct"))
            for fn, name in pair if r % 2 else pair[::-1]:
                start = time.perf_counter()
                fn(r)
                took[name] = time.perf_counter() - start
            if r >= 0:
                ratios.append(took["loop"] / took["direct"])
    n = 192
    speeds = f"jfe {n / t_jfe:.0f} items/s, vllm {n / t_vllm:.0f} items/s"
    overhead = float(np.median(ratios))
    return {
        f"{arch} bench encode_vs_vllm": f"{t_vllm / t_jfe:.2f} ({speeds}; jfe's items/s over vLLM's)",
        f"{arch} bench engine_overhead": f"{overhead:.2f} (jfe encode --engine vllm over opening, rendering "
        f"and LLM.embed; goal <= 1.1: {'met' if overhead <= 1.1 else 'MISSED'})",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bench", action="store_true", help="also measure encode_vs_vllm and engine_overhead")
    parser.add_argument("--json", help="write every result here")
    parser.add_argument("--families", help="comma-separated model types (default: every registered family)")
    parser.add_argument("--no-serve", action="store_true", help="skip the vllm serve check")
    parser.add_argument("--no-multi", action="store_true", help="skip the token-vector checks")
    parser.add_argument("--family", help=argparse.SUPPRESS)  # the per-family subprocess
    parser.add_argument("--multi-both", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.family:
        results = check_family(args.family, args.bench, not args.no_serve, not args.no_multi, args.multi_both)
        print(json.dumps(results))
        return 0

    import vllm

    from jfe import backbones

    print(f"vllm_check: vllm {vllm.__version__}, python {sys.version.split()[0]}", flush=True)
    families = args.families.split(",") if args.families else list(backbones.names())
    everything: dict[str, str] = {}
    failed = False
    for arch in families:
        command = [sys.executable, __file__, "--family", arch] + ["--bench"] * args.bench
        command += ["--no-serve"] * args.no_serve + ["--no-multi"] * args.no_multi
        # the both model's token vectors differ from a multi model's only in the folder jfe hands
        # vLLM, the same for every family: checked once per run, an engine start spared per family
        command += ["--multi-both"] * (arch == families[0])
        done = subprocess.run(command, capture_output=True, text=True)
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if done.returncode != 0 or not lines:
            everything[f"{arch} check"] = f"FAILED: exit {done.returncode}: {done.stderr[-1500:]}"
            failed = True
        else:
            results = json.loads(lines[-1])
            failed |= results.pop(f"{arch} ok") != "yes"
            everything.update(results)
        for name in [k for k in everything if k.startswith(f"{arch} ")]:
            print(f"{name}: {everything[name]}", flush=True)
    if args.json:
        tmp = Path(args.json).with_suffix(".tmp")
        tmp.write_text(json.dumps(everything, indent=2))
        os.replace(tmp, args.json)
    print("vllm_check: " + ("FAILED" if failed else "all passed"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
