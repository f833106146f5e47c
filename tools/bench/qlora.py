"""qlora_memory: a 4-bit model's memory (QLoRA's own nf4 config) against the same model in bf16."""

from __future__ import annotations

from pathlib import Path


def measure(folder: Path, hidden: int, layers: int) -> dict:
    import torch
    from transformers import AutoModel

    from jfe.backbones import backbone_for
    from jfe.tiny import build_tiny_model
    from jfe.train.model import nf4_config

    # the LLM dominates a real VLM's weights (Qwen2-VL-7B: 7.6B LLM, 0.7B vision), so the vision
    # tower (kept in bf16, as jfe does) is small here too
    build_tiny_model(folder, hidden=hidden, layers=layers, vision_hidden=max(64, hidden // 8))
    bf16 = AutoModel.from_pretrained(folder, dtype=torch.bfloat16)
    params = sum(p.numel() for p in bf16.parameters())
    bf16_bytes = bf16.get_memory_footprint()
    del bf16
    nf4 = nf4_config("bfloat16", backbone_for(folder).quantization_skip)
    q4 = AutoModel.from_pretrained(folder, dtype=torch.bfloat16, quantization_config=nf4)
    return {"qlora_memory": q4.get_memory_footprint() / bf16_bytes, "qlora_model_parameters": params}
