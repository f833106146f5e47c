"""One-shot check of a lent GPU machine: ``python tools/gpu_check.py [--json gpu_check.json]``.

Run from the repository root (``python -m tools.gpu_check`` works too). It prints a header line,
then one line per check, and nothing else on stdout::

    <check name>: <figure with units>
    <check name>: unavailable: <reason>            (package not installed, no CUDA, ...)
    <check name>: FAILED: <ExceptionType>: <message>

and exits 1 if any check FAILED, 0 otherwise. Whatever the libraries print (DeepSpeed logs to
stdout) goes to stderr, with the traceback of each failure. Every model is random-init and built
offline, so no network is needed; the whole run takes a few minutes on one H200 and stops
starting checks once ``--budget-s`` (480 s) is spent. Without CUDA every check runs its CPU
fallback on small sizes (``--quick``), which is what the tests run. See docs/gpu_check.md.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import re
import signal
import socket
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python tools/gpu_check.py` puts tools/ on the path, not the root
    sys.path.insert(0, str(REPO))

# Every line after the header has this shape (the tests hold the output to it).
LINE = re.compile(r"^[\w .+\-/]+: (unavailable: .+|FAILED: .+|.+)$")

# Packages the optional checks need; --pretend-missing hides any of these (or others).
OPTIONAL_PACKAGES = ("flash_attn", "deepspeed", "bitsandbytes", "faiss")

# Agreement bars. bf16 against fp32 on the tiny model measures ~0.99995 (CPU), so 0.999 leaves
# room for kernel differences and still catches a broken attention path. nf4 on random weights
# measures ~0.97; below 0.9 the quantised forward is broken, not merely lossy.
COSINE_MIN = 0.999
NF4_COSINE_MIN = 0.9
FAISS_AGREEMENT_MIN = 0.99  # near-ties may swap the 10th and 11th neighbour between kernels

# bf16 dense tensor-core peak in TFLOP/s, by a substring of torch.cuda.get_device_name(); the first
# match wins, so the more specific names come first.
PEAK_BF16_TFLOPS = (
    ("H200", 790.0),  # the figure the project's issue uses (NVIDIA lists 989 dense for the SXM part)
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),  # SXM
    ("A100", 312.0),
)

INSTRUCTION = "Retrieve an image of the handwritten digit described."
TEXTS = (
    "a handwritten seven",
    "the quick brown fox jumps over the lazy dog",
    "a photo of a red car",
    "which colour is the ink",
    "digit 3 rotated by ninety degrees, more than two plus one",
)


@dataclass(frozen=True)
class Sizes:
    """Every size the run uses: :data:`FULL` on a GPU, :data:`QUICK` with ``--quick`` or without CUDA."""

    llm: tuple[int, int, int, int, int]  # hidden, layers, heads, kv heads, intermediate (bf16 fwd+bwd)
    vocab: int  # of the fwd+bwd model (no LM head, so it adds memory, not FLOPs)
    tokens: tuple[int, int]  # batch, sequence length of one fwd+bwd step
    steps: int  # timed fwd+bwd steps, after two warm-up steps
    model: tuple[int, int, int]  # hidden, layers, vision hidden of the jfe model of the other checks
    encode_model: tuple[int, int, int]  # the same, for encode throughput
    encode: tuple[int, int]  # items, batch size
    image_side: int  # largest image side in pixels (the tiny processor: patch 4, merge 2)
    faiss: tuple[int, int, int]  # vectors, queries, dimension


# A Qwen2-VL-2B-like LLM (1.3B non-embedding parameters, head dim 128), 8 x 1024 tokens.
FULL = Sizes(llm=(1536, 28, 12, 2, 8960), vocab=32768, tokens=(8, 1024), steps=10, model=(256, 4, 128),
             encode_model=(512, 8, 256), encode=(1024, 32), image_side=64, faiss=(200_000, 1_000, 256))  # fmt: skip
QUICK = Sizes(llm=(64, 2, 4, 2, 128), vocab=1024, tokens=(2, 64), steps=2, model=(256, 2, 64),
              encode_model=(256, 2, 64), encode=(24, 8), image_side=32, faiss=(5_000, 50, 64))  # fmt: skip

Outcome = tuple[str, dict[str, Any]]  # the figure line and its numbers (for --json)


class Unavailable(Exception):
    """The check cannot run here (a package or CUDA is missing); not a failure."""


class CheckFailed(AssertionError):
    """The check ran and its figure is outside what it must be."""


class CheckTimeout(Exception):
    """The check ran past the time left in the run's budget."""


@dataclass
class Context:
    """What the checks share: sizes, the device, a scratch folder and the tiny models built there."""

    sizes: Sizes
    workdir: Path
    cuda: bool
    batch_size: int
    peak_tflops: float | None = None  # --peak-tflops overrides the table
    models: dict[tuple[int, int, int], Path] = field(default_factory=dict)

    @property
    def device(self) -> str:
        return "cuda" if self.cuda else "cpu"

    def model_dir(self, shape: tuple[int, int, int]) -> Path:
        """A random-init tiny Qwen2-VL of ``shape`` (hidden, layers, vision hidden), built once."""
        if shape not in self.models:
            from jfe.tiny import build_tiny_model

            hidden, layers, vision = shape
            out = self.workdir / f"qwen2_vl-{hidden}x{layers}-v{vision}"
            self.models[shape] = build_tiny_model(out, arch="qwen2_vl", hidden=hidden, layers=layers,
                                                  vision_hidden=vision)  # fmt: skip
        return self.models[shape]


# --- helpers -------------------------------------------------------------------------------------


def require(package: str) -> Any:
    """Import ``package``, or raise :class:`Unavailable` if it is not installed. An installed
    package that fails to import (a flash-attn built for another torch, say) raises as it is, so the
    check reads FAILED: jfe finds such a package with find_spec and would pick it, then crash."""
    import importlib

    try:
        return importlib.import_module(package)
    except ModuleNotFoundError as err:
        if err.name == package:
            raise Unavailable(f"{package} not installed") from err
        raise


def require_cuda(ctx: Context) -> None:
    if not ctx.cuda:
        raise Unavailable("no CUDA")


def peak_bf16_tflops(device_name: str) -> float | None:
    """The device's bf16 dense peak from :data:`PEAK_BF16_TFLOPS`, or None for an unknown device."""
    for key, tflops in PEAK_BF16_TFLOPS:
        if key.lower() in device_name.lower():
            return tflops
    return None


def train_flops_per_token(params: int, layers: int, attention_width: int, seq_len: int) -> float:
    """Forward + backward FLOPs per token of a decoder, PaLM's count (appendix B):

        6 * N  +  12 * layers * attention_width * seq_len

    N is the non-embedding parameter count: each weight does one multiply-add (2 FLOPs) per token
    forward and two backward (4 FLOPs). The second term is the attention scores and the weighted
    sum of values (QK^T and AV, 2 * 2 * width * seq_len forward, x3 with backward), with
    ``attention_width`` = query heads x head dim; causal masking is not discounted, as in PaLM."""
    return 6.0 * params + 12.0 * layers * attention_width * seq_len


def synchronize(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def random_images(count: int, side: int, seed: int = 0) -> list:
    """RGB noise images from ``side / 2`` to ``side`` pixels a side, deterministic in ``seed``."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    sizes = rng.integers(max(8, side // 2), side + 1, size=(count, 2))
    return [Image.fromarray(rng.integers(0, 256, (int(h), int(w), 3), dtype=np.uint8)) for h, w in sizes]


def probe_inputs(side: int) -> tuple[list, list[str | None]]:
    """Inputs of every kind for the agreement checks: text, text with an instruction, images, and
    image+text with an instruction; with their instructions."""
    images = random_images(4, side, seed=1)
    items = [TEXTS[0], TEXTS[1], images[0], images[1], {"text": TEXTS[2], "image": images[2]},
             {"text": TEXTS[3], "image": images[3]}]  # fmt: skip
    return items, [None, INSTRUCTION, None, None, INSTRUCTION, INSTRUCTION]


def agreement(a: Any, b: Any) -> tuple[float, float]:
    """Min row cosine and max abs difference of two (N, D) arrays of L2-normalised rows."""
    import numpy as np

    cosines = (np.asarray(a, dtype=np.float64) * np.asarray(b, dtype=np.float64)).sum(1)
    return float(cosines.min()), float(np.abs(np.asarray(a) - np.asarray(b)).max())


def open_embedder(path: Path, dtype: str | None, device: str, **kwargs: Any) -> Any:
    """A jfe Embedder of the checkpoint ``path`` (dtype None: bf16 on CUDA, fp32 on CPU)."""
    from jfe import Embedder

    return Embedder.from_pretrained(path, dtype=dtype, device=device, **kwargs)


def free_memory() -> None:
    gc.collect()
    with contextlib.suppress(Exception):
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()


# --- the checks ----------------------------------------------------------------------------------


def llm_config(sizes: Sizes) -> Any:
    """The transformers config of the fwd+bwd model: a Qwen2-VL whose LLM has the shape ``sizes.llm``
    (FULL: Qwen2-VL-2B's LLM, vocabulary aside) and whose vision tower is tiny (no images go in)."""
    from transformers import AutoConfig

    from jfe import backbones
    from jfe.tiny import SPECIAL_TOKENS

    hidden, layers, heads, kv_heads, intermediate = sizes.llm
    ids = {token: i for i, token in enumerate(SPECIAL_TOKENS)}  # the random input ids start above them
    config = backbones.get("qwen2_vl").tiny_config(ids, sizes.vocab, hidden, layers, 64)
    half = hidden // heads // 2  # mrope splits head_dim / 2 frequencies as Qwen2-VL does: 1/4, 3/8, 3/8
    section = [half // 4, (half - half // 4) // 2]
    rope = {"rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": [*section, half - sum(section)]}
    config["text_config"].update(num_attention_heads=heads, num_key_value_heads=kv_heads,
                                 intermediate_size=intermediate, rope_parameters=rope)  # fmt: skip
    return AutoConfig.for_model("qwen2_vl", **config)


def non_embedding_params(model: Any) -> int:
    """Parameters of the LLM less its input embedding: what a text-only step multiplies by."""
    return sum(p.numel() for p in model.language_model.parameters()) - model.get_input_embeddings().weight.numel()


def count(n: float) -> str:
    """1234 -> 1.2k, 1.31e9 -> 1.31B."""
    for unit, scale in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g}{unit}"
    return f"{n:.0f}"


def fwd_bwd_figure(tokens_s: float, achieved_tflops: float, peak_tflops: float | None, device_name: str,
                   details: str) -> str:  # fmt: skip
    """The CUDA line of ``bf16 fwd+bwd``: MFU against the peak, or 'peak unknown' without one."""
    if peak_tflops is None:
        return f"{tokens_s:,.0f} tokens/s, {achieved_tflops:.0f} TFLOP/s, peak unknown for {device_name} ({details})"
    return (f"{tokens_s:,.0f} tokens/s, MFU {achieved_tflops / peak_tflops:.1%} ({achieved_tflops:.0f} of "
            f"{peak_tflops:.0f} TFLOP/s bf16 dense peak; {details})")  # fmt: skip


def check_bf16_fwd_bwd(ctx: Context) -> Outcome:
    """Training speed of the LLM: tokens/s and MFU of forward + backward, bf16 sdpa on CUDA."""
    import torch
    from transformers import AutoModel

    from jfe.tiny import SPECIAL_TOKENS

    _, layers, _, _, _ = ctx.sizes.llm
    batch, seq = ctx.sizes.tokens
    device, dtype = ctx.device, torch.bfloat16 if ctx.cuda else torch.float32
    config = llm_config(ctx.sizes)
    torch.manual_seed(0)
    with torch.device(device):  # initialise on the GPU: 1.3B parameters are slow to draw on a CPU
        model = AutoModel.from_config(config, dtype=dtype, attn_implementation="sdpa")
    model.to(device).train()
    params = non_embedding_params(model)
    # text tokens only, none of the special ids (image pads would ask for pixel values)
    input_ids = torch.randint(len(SPECIAL_TOKENS), ctx.sizes.vocab, (batch, seq), device=device)

    def step() -> None:
        hidden_states = model(input_ids=input_ids, use_cache=False).last_hidden_state
        hidden_states.float().square().mean().backward()
        model.zero_grad(set_to_none=True)

    try:
        for _ in range(2):  # warm-up: kernel selection, allocator
            step()
        if ctx.cuda:
            torch.cuda.reset_peak_memory_stats()
        synchronize(device)
        start = time.perf_counter()
        for _ in range(ctx.sizes.steps):
            step()
        synchronize(device)
        seconds = (time.perf_counter() - start) / ctx.sizes.steps
        memory = torch.cuda.max_memory_allocated() / 2**30 if ctx.cuda else None
    finally:
        model = None  # frees the GPU memory before the next check
        free_memory()
    tokens_s = batch * seq / seconds
    # attention width = query heads x head dim = hidden for these configs
    achieved = tokens_s * train_flops_per_token(params, layers, config.text_config.hidden_size, seq) / 1e12
    metrics = {"tokens_per_s": tokens_s, "step_s": seconds, "non_embedding_params": params,
               "achieved_tflops": achieved, "batch": batch, "seq_len": seq}  # fmt: skip
    shape = f"{count(params)} non-embedding params, {batch}x{seq} tokens, {seconds * 1e3:.0f} ms/step"
    if not ctx.cuda:
        return f"cpu fallback: {tokens_s:,.0f} tokens/s (fp32 sdpa, tiny config, {shape})", metrics
    name = torch.cuda.get_device_name(0)
    peak = ctx.peak_tflops or peak_bf16_tflops(name)
    metrics.update(peak_tflops=peak, peak_memory_gib=memory, mfu=achieved / peak if peak else None)
    return fwd_bwd_figure(tokens_s, achieved, peak, name, f"{shape}, peak mem {memory:.1f} GiB"), metrics


def check_sdpa_vs_fp32(ctx: Context) -> Outcome:
    """CUDA bf16 sdpa embeddings against CPU fp32 ones of the same inputs (CPU: sdpa vs eager, fp32)."""
    path = ctx.model_dir(ctx.sizes.model)
    items, instructions = probe_inputs(ctx.sizes.image_side)
    if ctx.cuda:
        runs = [("float32", "cpu", "sdpa"), ("bfloat16", "cuda", "sdpa")]
        label = "cuda bf16 sdpa vs cpu fp32"
    else:
        runs = [("float32", "cpu", "eager"), ("float32", "cpu", "sdpa")]
        label = "cpu fallback: sdpa vs eager, fp32"
    vectors = []
    for dtype, device, attention in runs:
        embedder = open_embedder(path, dtype, device, attn_implementation=attention)
        vectors.append(embedder.encode(items, instruction=instructions))
        del embedder
        free_memory()
    cosine, diff = agreement(*vectors)
    metrics = {"min_cosine": cosine, "max_abs_diff": diff, "inputs": len(items)}
    if not cosine >= COSINE_MIN:
        raise CheckFailed(f"min cosine {cosine:.6f} < {COSINE_MIN} ({label}, max abs diff {diff:.2e})")
    return f"min cosine {cosine:.6f}, max abs diff {diff:.2e} over {len(items)} inputs ({label})", metrics


def check_lora_step(ctx: Context) -> Outcome:
    """One AdamW step of jfe's own LoRA setup (load_embedder, lora_target language) on InfoNCE."""
    import torch

    from jfe.train.config import TrainConfig
    from jfe.train.loss import contrastive_loss
    from jfe.train.model import load_embedder

    path = ctx.model_dir(ctx.sizes.model)
    dtype = "bfloat16" if ctx.cuda else "float32"
    # no dropout, so the loss after the step is measured on the very function the step changed
    config = TrainConfig(model=str(path), output_dir=str(ctx.workdir / "lora"), dtype=dtype, lora_dropout=0.0)
    torch.manual_seed(0)
    embedder = load_embedder(config, str(path), device=ctx.device)
    embedder.train()
    trainable = [p for p in embedder.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-3)
    images = random_images(4, ctx.sizes.image_side, seed=2)
    queries = [TEXTS[0], images[0], {"text": TEXTS[1], "image": images[1]}, TEXTS[2]]
    candidates = [images[2], TEXTS[3], images[3], {"text": TEXTS[4], "image": images[0]}]
    instructions = [INSTRUCTION, None, INSTRUCTION, INSTRUCTION]

    def loss() -> torch.Tensor:
        q = embedder(**embedder.features(queries, instructions))
        c = embedder(**embedder.features(candidates))
        return contrastive_loss(q, c, config.temperature, gather=False)

    try:
        synchronize(ctx.device)
        start = time.perf_counter()
        before = loss()
        before.backward()
        named = [(name, p) for name, p in embedder.named_parameters() if p.grad is not None]
        not_lora = [name for name, _ in named if "lora_" not in name]
        nonfinite = [name for name, p in named if not torch.isfinite(p.grad).all()]
        optimizer.step()
        synchronize(ctx.device)
        step_s = time.perf_counter() - start
        with torch.no_grad():
            after = loss()
        lora = sum(1 for name, _ in embedder.named_parameters() if "lora_" in name)
        counts = (sum(p.numel() for p in trainable), sum(p.numel() for p in embedder.parameters()))
    finally:
        embedder = optimizer = trainable = None
        free_memory()
    before, after = float(before), float(after)
    if not named:
        raise CheckFailed("no parameter got a gradient")
    if not_lora:
        raise CheckFailed(f"{len(not_lora)} non-LoRA parameters got gradients, e.g. {', '.join(not_lora[:3])}")
    if nonfinite:
        raise CheckFailed(f"non-finite gradients in {len(nonfinite)} tensors, e.g. {', '.join(nonfinite[:3])}")
    if not (torch.isfinite(torch.tensor([before, after])).all() and after != before):
        raise CheckFailed(f"loss {before} -> {after}: the step did not change a finite loss")
    metrics = {"loss_before": before, "loss_after": after, "step_s": step_s, "lora_tensors_with_grad": len(named),
               "lora_tensors": lora, "trainable_params": counts[0], "params": counts[1]}  # fmt: skip
    return (
        f"loss {before:.4f} -> {after:.4f} after one AdamW step, {step_s * 1e3:.0f} ms/step, finite grads on "
        f"{len(named)} of {lora} LoRA tensors and nothing else ({counts[0]:,} of {counts[1]:,} params trainable, "
        f"{dtype} on {ctx.device})",
        metrics,
    )


def check_encode_throughput(ctx: Context) -> Outcome:
    """Embedder.encode items/s on a mix of texts, images and image+text, with the default attention."""
    side = ctx.sizes.image_side
    path = ctx.model_dir(ctx.sizes.encode_model)
    n_items, batch = ctx.sizes.encode[0], ctx.batch_size
    images = random_images(n_items, side, seed=3)
    items = [(TEXTS[i % len(TEXTS)], images[i], {"text": TEXTS[i % len(TEXTS)], "image": images[i]})[i % 3]
             for i in range(n_items)]  # fmt: skip
    # images up to side x side pixels, a side / 8 x side / 8 grid of visual tokens (patch 4, merge 2)
    embedder = open_embedder(path, None, ctx.device, max_pixels=side * side)
    try:
        embedder.encode(items[:batch], batch_size=batch)  # warm-up
        synchronize(ctx.device)
        start = time.perf_counter()
        vectors = embedder.encode(items, batch_size=batch)
        synchronize(ctx.device)
        seconds = time.perf_counter() - start
        dtype = str(next(embedder.parameters()).dtype).removeprefix("torch.")
        attention = embedder.model.config._attn_implementation
    finally:
        del embedder
        free_memory()
    if vectors.shape[0] != n_items:
        raise CheckFailed(f"encode returned {vectors.shape[0]} rows for {n_items} items")
    hidden, layers, _ = ctx.sizes.encode_model
    metrics = {"items_per_s": n_items / seconds, "items": n_items, "batch_size": batch, "seconds": seconds}
    return (
        f"{n_items / seconds:,.1f} items/s ({n_items} items, texts, images up to {side}x{side} px and image+text in "
        f"equal parts; batch {batch}; {ctx.device} {dtype} {attention}; model {hidden}x{layers})",
        metrics,
    )


def check_flash_attn(ctx: Context) -> Outcome:
    """flash-attn 2 embeddings against sdpa ones, both bf16 on CUDA."""
    require("flash_attn")
    require_cuda(ctx)
    path = ctx.model_dir(ctx.sizes.model)
    items, instructions = probe_inputs(ctx.sizes.image_side)
    vectors = []
    for attention in ("sdpa", "flash_attention_2"):
        embedder = open_embedder(path, "bfloat16", "cuda", attn_implementation=attention)
        vectors.append(embedder.encode(items, instruction=instructions))
        del embedder
        free_memory()
    cosine, diff = agreement(*vectors)
    if not cosine >= COSINE_MIN:
        raise CheckFailed(f"min cosine {cosine:.6f} < {COSINE_MIN} (max abs diff {diff:.2e})")
    metrics = {"min_cosine": cosine, "max_abs_diff": diff, "inputs": len(items)}
    return f"min cosine {cosine:.6f}, max abs diff {diff:.2e} over {len(items)} inputs (bf16)", metrics


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def zero2_config(cuda: bool, batch: int) -> dict[str, Any]:
    """The project's deepspeed_configs/zero2.json with its "auto" values filled as the HF Trainer would."""
    config = json.loads((REPO / "deepspeed_configs" / "zero2.json").read_text())
    auto = {"train_batch_size": batch, "train_micro_batch_size_per_gpu": batch, "gradient_accumulation_steps": 1,
            "gradient_clipping": 1.0}  # fmt: skip
    for key, value in auto.items():
        if config.get(key) == "auto":
            config[key] = value
    config["bf16"] = {"enabled": cuda}
    config["fp16"] = {"enabled": False}
    zero = config["zero_optimization"]
    if zero.get("reduce_bucket_size") == "auto":
        zero["reduce_bucket_size"] = 50_000_000
    config["zero_allow_untested_optimizer"] = True  # a plain torch AdamW: no JIT-built fused Adam
    return config


def check_deepspeed_zero2(ctx: Context) -> Outcome:
    """One DeepSpeed ZeRO-2 engine step, in this process (world size 1), on the full tiny LLM."""
    deepspeed = require("deepspeed")
    import torch
    import torch.distributed as dist

    from jfe.train.config import TrainConfig
    from jfe.train.loss import contrastive_loss
    from jfe.train.model import load_embedder

    path = ctx.model_dir(ctx.sizes.model)
    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "RANK": "0", "WORLD_SIZE": "1",
           "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1"}  # fmt: skip
    saved_env = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    owns_group = not dist.is_initialized()
    engine = None
    try:
        if owns_group:
            if ctx.cuda:
                torch.cuda.set_device(0)
            dist.init_process_group("nccl" if ctx.cuda else "gloo", rank=0, world_size=1)
        dtype = "bfloat16" if ctx.cuda else "float32"
        config = TrainConfig(model=str(path), output_dir=str(ctx.workdir / "zero2"), trainable="full", dtype=dtype)
        torch.manual_seed(0)
        embedder = load_embedder(config, str(path), device=ctx.device)
        embedder.train()
        optimizer = torch.optim.AdamW([p for p in embedder.parameters() if p.requires_grad], lr=1e-4)
        queries, candidates = list(TEXTS[:4]), [TEXTS[4], *random_images(3, ctx.sizes.image_side, seed=4)]
        engine, *_ = deepspeed.initialize(model=embedder, optimizer=optimizer,
                                          config=zero2_config(ctx.cuda, len(queries)))  # fmt: skip

        def loss() -> torch.Tensor:
            q = engine(**embedder.features(queries, INSTRUCTION))
            c = engine(**embedder.features(candidates))
            return contrastive_loss(q, c, config.temperature, gather=False)

        synchronize(ctx.device)
        start = time.perf_counter()
        before = loss()
        engine.backward(before)
        engine.step()
        synchronize(ctx.device)
        step_s = time.perf_counter() - start
        with torch.no_grad():
            after = loss()
        stage = engine.zero_optimization_stage()
    finally:
        if engine is not None and hasattr(engine, "destroy"):
            engine.destroy()
        if owns_group and dist.is_initialized():
            dist.destroy_process_group()
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        engine = embedder = optimizer = None
        free_memory()
    before, after = float(before), float(after)
    if stage != 2:
        raise CheckFailed(f"the engine runs ZeRO stage {stage}, not 2")
    if not (torch.isfinite(torch.tensor([before, after])).all() and after != before):
        raise CheckFailed(f"loss {before} -> {after}: the step did not change a finite loss")
    metrics = {"loss_before": before, "loss_after": after, "step_s": step_s, "deepspeed": deepspeed.__version__}
    precision = "bf16" if ctx.cuda else "fp32"
    return (
        f"loss {before:.4f} -> {after:.4f} after one engine step, {step_s * 1e3:.0f} ms/step (ZeRO-2, world size 1, "
        f"{precision}, {ctx.device}, deepspeed {deepspeed.__version__})",
        metrics,
    )


def check_bitsandbytes_4bit(ctx: Context) -> Outcome:
    """nf4 (QLoRA's base: jfe.train.model.nf4_config) embeddings against bf16 ones of the same model."""
    bnb = require("bitsandbytes")
    from jfe.backbones import backbone_for
    from jfe.train.model import nf4_config

    path = ctx.model_dir(ctx.sizes.model)
    items, instructions = probe_inputs(ctx.sizes.image_side)
    skip = backbone_for(path).quantization_skip
    runs = {"bf16": {}, "nf4": {"device_map": {"": ctx.device}, "quantization_config": nf4_config("bfloat16", skip)}}
    vectors, memory, quantised = [], [], 0
    for kwargs in runs.values():
        embedder = open_embedder(path, "bfloat16", ctx.device, **kwargs)
        vectors.append(embedder.encode(items, instruction=instructions))
        memory.append(embedder.model.get_memory_footprint() / 2**20)
        quantised = max(quantised, sum(type(m).__name__ == "Linear4bit" for m in embedder.model.modules()))
        del embedder
        free_memory()
    if not quantised:
        raise CheckFailed("no layer was quantised to 4 bits")
    cosine, diff = agreement(*vectors)
    if not cosine >= NF4_COSINE_MIN:
        raise CheckFailed(f"min cosine {cosine:.4f} < {NF4_COSINE_MIN}: the 4-bit forward is broken")
    metrics = {"min_cosine": cosine, "max_abs_diff": diff, "linear4bit_layers": quantised,
               "memory_mib": memory[1], "bf16_memory_mib": memory[0]}  # fmt: skip
    return (
        f"nf4 vs bf16 min cosine {cosine:.4f} over {len(items)} inputs ({quantised} Linear4bit layers, "
        f"{memory[1]:.1f} vs {memory[0]:.1f} MiB, {ctx.device}, bitsandbytes {bnb.__version__})",
        metrics,
    )


def check_faiss_gpu(ctx: Context) -> Outcome:
    """faiss GPU flat search against CPU flat search: the same top-10 on random unit vectors."""
    faiss = require("faiss")
    import numpy as np

    if not hasattr(faiss, "StandardGpuResources"):
        raise Unavailable("no GPU build of faiss (faiss-cpu installed)")
    if faiss.get_num_gpus() < 1:
        raise Unavailable("faiss sees no GPU")
    count, nq, dim = ctx.sizes.faiss
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((count, dim), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = vectors[rng.choice(count, nq, replace=False)] + 0.1 * rng.standard_normal((nq, dim), dtype=np.float32)
    cpu = faiss.IndexFlatIP(dim)
    cpu.add(vectors)
    resources = faiss.StandardGpuResources()
    gpu = faiss.index_cpu_to_gpu(resources, 0, cpu)
    gpu.search(queries[:8], 10)  # warm-up
    found, seconds = [], []
    for index in (cpu, gpu):
        start = time.perf_counter()
        found.append(index.search(queries, 10)[1])
        seconds.append(time.perf_counter() - start)
    same = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(*found, strict=True)]))
    if not same >= FAISS_AGREEMENT_MIN:
        raise CheckFailed(f"top-10 agreement {same:.4f} < {FAISS_AGREEMENT_MIN}")
    qps = [nq / s for s in seconds]
    metrics = {"top10_agreement": same, "cpu_qps": qps[0], "gpu_qps": qps[1], "vectors": count, "dim": dim}
    return (
        f"top-10 agreement {same:.4f} ({count:,} x {dim} vectors, {nq} queries, flat IP); "
        f"gpu {qps[1]:,.0f} q/s vs cpu {qps[0]:,.0f} q/s",
        metrics,
    )


# (name, check): run in this order. The first four run everywhere (CPU fallbacks); the rest need
# an optional package, and say "unavailable" without it.
CHECKS: list[tuple[str, Callable[[Context], Outcome]]] = [
    ("bf16 fwd+bwd", check_bf16_fwd_bwd),
    ("sdpa vs fp32", check_sdpa_vs_fp32),
    ("lora step", check_lora_step),
    ("encode throughput", check_encode_throughput),
    ("flash-attn 2 vs sdpa", check_flash_attn),
    ("deepspeed zero2", check_deepspeed_zero2),
    ("bitsandbytes 4-bit", check_bitsandbytes_4bit),
    ("faiss-gpu vs cpu", check_faiss_gpu),
]


# --- running -------------------------------------------------------------------------------------


@dataclass
class Result:
    name: str
    status: str  # ok, unavailable or failed
    text: str  # the figure, the reason, or "<ExceptionType>: <message>"
    metrics: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def line(self) -> str:
        prefix = {"ok": "", "unavailable": "unavailable: ", "failed": "FAILED: "}[self.status]
        return f"{self.name}: {prefix}{self.text}"


def one_line(text: str, limit: int = 400) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise :class:`CheckTimeout` in this (main) thread after ``seconds``; a no-op where SIGALRM is missing."""
    if not hasattr(signal, "SIGALRM") or seconds <= 0:
        yield
        return

    def expire(signum: int, frame: Any) -> None:
        raise CheckTimeout(f"ran past the {seconds:.0f} s left in the run's budget")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run_check(name: str, check: Callable[[Context], Outcome], ctx: Context, seconds_left: float) -> Result:
    """One check as a :class:`Result`: its figure, why it is unavailable, or how it failed."""
    start = time.perf_counter()
    try:
        with time_limit(seconds_left):
            figure, metrics = check(ctx)
        result = Result(name, "ok", one_line(figure), metrics)
    except Unavailable as err:
        result = Result(name, "unavailable", one_line(err) or "?")
    except Exception as err:
        print(f"--- {name} failed:", file=sys.stderr)
        traceback.print_exc(file=sys.stderr)
        result = Result(name, "failed", one_line(f"{type(err).__name__}: {err}"))
    finally:
        free_memory()
    result.seconds = time.perf_counter() - start
    return result


class _Hiding:
    """A meta-path finder wrapper that finds nothing for the hidden packages, so they look absent:
    ``import`` raises ModuleNotFoundError and ``importlib.util.find_spec`` returns None (a finder
    that raised instead would break transformers, which probes optional packages with find_spec)."""

    def __init__(self, finder: Any, hidden: frozenset[str]):
        self._finder, self._hidden = finder, hidden

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name.partition(".")[0] in self._hidden:
            return None
        find = getattr(self._finder, "find_spec", None)
        return find(name, path, target) if find is not None else None

    def __getattr__(self, attribute: str) -> Any:  # invalidate_caches, find_distributions, ...
        return getattr(self._finder, attribute)


@contextlib.contextmanager
def hide_modules(names: Sequence[str]) -> Iterator[None]:
    """Make the top-level packages ``names`` unimportable inside the block (--pretend-missing)."""
    hidden = frozenset(name.strip().replace("-", "_") for name in names if name.strip())
    if not hidden:
        yield
        return
    saved_path = list(sys.meta_path)
    saved_modules = {k: v for k, v in sys.modules.items() if k.partition(".")[0] in hidden}
    for key in saved_modules:
        del sys.modules[key]
    sys.meta_path[:] = [_Hiding(finder, hidden) for finder in saved_path]
    try:
        yield
    finally:
        sys.meta_path[:] = saved_path
        sys.modules.update(saved_modules)


@contextlib.contextmanager
def results_stdout() -> Iterator[TextIO]:
    """A stream to the real stdout for the result lines, while fd 1 and sys.stdout point at stderr,
    so what libraries print (DeepSpeed logs to stdout, C code writes to fd 1) stays off stdout."""
    sys.stdout.flush()
    saved = os.dup(1)
    out = os.fdopen(os.dup(saved), "w", buffering=1)
    original = sys.stdout
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    try:
        yield out
    finally:
        sys.stderr.flush()
        out.close()
        os.dup2(saved, 1)
        os.close(saved)
        sys.stdout = original


def header() -> tuple[str, dict[str, Any]]:
    """The header line: versions, the device and CUDA."""
    import platform

    info: dict[str, Any] = {"python": platform.python_version()}
    for package in ("torch", "transformers"):
        try:
            info[package] = __import__(package).__version__
        except ImportError:
            info[package] = "not installed"
    try:
        import torch

        if torch.cuda.is_available():
            count = torch.cuda.device_count()
            info["device"] = f"{torch.cuda.get_device_name(0)}" + (f" (x{count})" if count > 1 else "")
            info["cuda"] = torch.version.cuda
        else:
            info["device"] = f"cpu ({cpu_name()}, {torch.get_num_threads()} threads)"
            info["cuda"] = f"none (torch built for {torch.version.cuda})" if torch.version.cuda else "none"
    except ImportError:
        info["device"], info["cuda"] = "unknown", "unknown"
    line = (f"gpu_check: torch {info['torch']}, transformers {info['transformers']}, python {info['python']}, "
            f"device {info['device']}, CUDA {info['cuda']}")  # fmt: skip
    return line, info


def cpu_name() -> str:
    with contextlib.suppress(OSError):
        for row in Path("/proc/cpuinfo").read_text().splitlines():
            if row.startswith("model name"):
                return row.split(":", 1)[1].strip()
    import platform

    return platform.processor() or "unknown cpu"


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Atomically: a reader sees the previous file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    names = [name for name, _ in CHECKS]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--json", type=Path, help="also write every result (with its numbers) to this JSON file")
    parser.add_argument("--quick", action="store_true", help="small sizes (the default without CUDA)")
    parser.add_argument("--pretend-missing", default="", metavar="PKG,...",
                        help=f"make these packages unimportable, e.g. {','.join(OPTIONAL_PACKAGES)}")  # fmt: skip
    parser.add_argument("--only", default="", metavar="NAME,...", help=f"run only these checks: {', '.join(names)}")
    parser.add_argument("--batch-size", type=int, help="encode throughput batch size (default: 32, quick 8)")
    parser.add_argument("--peak-tflops", type=float, help="bf16 dense peak of the GPU, overriding the table")
    parser.add_argument("--budget-s", type=float, default=480.0, help="start no check after this many seconds")
    parser.add_argument("--workdir", type=Path, help="where the tiny models go (default: a temporary folder)")
    args = parser.parse_args(argv)
    args.only = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = sorted(set(args.only) - set(names))
    if unknown:
        parser.error(f"unknown check(s) {', '.join(unknown)}; the checks are: {', '.join(names)}")
    args.pretend_missing = [n.strip() for n in args.pretend_missing.split(",") if n.strip()]
    return args


def run(args: argparse.Namespace, out: TextIO, checks: Sequence[tuple[str, Callable]] = CHECKS) -> int:
    """Every selected check in turn, one line each on ``out``; 1 if any FAILED, else 0."""
    started = time.perf_counter()
    with hide_modules(args.pretend_missing), contextlib.ExitStack() as stack:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is built locally; the GPU machine has no network
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        try:
            import torch

            cuda = torch.cuda.is_available()
        except ImportError:
            cuda = False
        sizes = QUICK if args.quick or not cuda else FULL
        line, info = header()
        info.update(sizes="quick" if sizes is QUICK else "full", pretend_missing=args.pretend_missing)
        pretend = f", pretending {','.join(args.pretend_missing)} missing" if args.pretend_missing else ""
        print(f"{line}, sizes {info['sizes']}{pretend}", file=out, flush=True)
        workdir = args.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="jfe-gpu-check-")))
        ctx = Context(sizes, workdir, cuda, args.batch_size or sizes.encode[1], args.peak_tflops)
        results: list[Result] = []
        for name, check in checks:
            if args.only and name not in args.only:
                continue
            left = args.budget_s - (time.perf_counter() - started)
            if left <= 0:
                result = Result(name, "unavailable", f"skipped: the {args.budget_s:.0f} s budget is spent")
            else:
                result = run_check(name, check, ctx, left)
            print(result.line(), file=out, flush=True)
            print(f"--- {name}: {result.seconds:.1f} s", file=sys.stderr, flush=True)
            results.append(result)
            if args.json:  # after every check, so a run killed midway keeps what it measured
                write_json(args.json, report(info, results, started))
        code = 1 if any(r.status == "failed" for r in results) else 0
        if args.json:
            write_json(args.json, report(info, results, started) | {"exit_code": code})
    return code


def report(info: dict[str, Any], results: Sequence[Result], started: float) -> dict[str, Any]:
    rows = [{"name": r.name, "status": r.status, "line": r.line(), "text": r.text, "metrics": r.metrics,
             "seconds": round(r.seconds, 3)} for r in results]  # fmt: skip
    return {"header": info, "results": rows, "total_seconds": round(time.perf_counter() - started, 3)}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with results_stdout() as out:
        return run(args, out)


if __name__ == "__main__":
    sys.exit(main())
