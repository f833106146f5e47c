"""``jfe encode --engine vllm``: the forward done by vLLM's offline pooling runner.

A folder ``Embedder.save`` writes loads in vLLM as it is: vLLM maps the base model to its
embedding architecture and reads last-token pooling and normalisation from the
sentence-transformers files. What vLLM does not do is jfe's input handling, so it is done here,
with the code every jfe path uses: texts cut to ``max_text_tokens`` before the prompt
(:func:`jfe.formatting.cut_texts`), the prompt rendered by the model's chat template
(:func:`jfe.formatting.render`), and the image handed over as ``multi_modal_data``, which vLLM's
processor expands into the placeholder tokens. vLLM batches the requests itself.

vLLM pins its own torch; on a GPU machine install it with ``pip install 'jfe[vllm]'``, on a CPU
machine it lives in the venv ``tools/vllm_env.sh`` builds.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import numpy as np
from tqdm.auto import tqdm
from transformers import AutoConfig

from jfe.embedder import load_processor, per_input
from jfe.formatting import EmbedInput, render
from jfe.inference import Row

MISSING = (
    "jfe encode --engine vllm needs vLLM: pip install 'jfe[vllm]' on a GPU machine "
    "(on a CPU machine, use the venv tools/vllm_env.sh builds)"
)


def requests(processor: Any, rows: list[EmbedInput], instructions: list[str | None], max_text_tokens: int) -> list:
    """vLLM prompts for ``rows``: jfe's rendering, with each image as ``multi_modal_data``."""
    prompts = render(processor, rows, instructions, max_text_tokens)
    return [
        {"prompt": p, "multi_modal_data": {"image": x.image}} if x.image is not None else {"prompt": p}
        for p, x in zip(prompts, rows, strict=True)
    ]


class VllmEmbedder:
    """Embeds like :class:`jfe.Embedder` (same inputs, instructions and outputs) through
    ``vllm.LLM(..., runner="pooling").embed``."""

    # jfe encode hands this engine its items in file order: vLLM packs requests into batches by
    # tokens itself, and with length-sorted requests it ran 15% slower here
    schedules_batches = True

    def __init__(
        self,
        path: str | os.PathLike,
        dtype: str | None = None,
        min_pixels: int | None = None,
        max_pixels: int | None = None,
        chat_template: str | None = None,
        **llm_kwargs: Any,
    ):
        try:
            import vllm
        except ImportError as err:
            raise ImportError(MISSING) from err
        path = os.fspath(path)
        self.processor, self.config = load_processor(path, min_pixels, max_pixels, chat_template)
        if self.config.embedding == "multi":
            # vLLM's pooling runner gives the last token's state, not jfe's token-vector head
            raise ValueError(f"{path}: a multi-vector model (embedding: multi); --engine vllm serves single vectors")
        self.dimension = AutoConfig.from_pretrained(path).get_text_config().hidden_size
        if min_pixels or max_pixels:
            # the processor jfe renders with and vLLM's own must resize alike: vLLM's gets the bounds
            # as the processor's size, which every family's image processor reads
            size = dict(self.processor.image_processor.size)
            llm_kwargs.setdefault("mm_processor_kwargs", {})["size"] = size
        self.llm = vllm.LLM(model=path, runner="pooling", dtype=dtype or "auto", **llm_kwargs)

    def encode(self, inputs: list, instruction: str | list[str | None] | None = None) -> np.ndarray:
        """(N, D) float32 embeddings of raw inputs (as ``Embedder.encode`` takes them)."""
        from jfe.inputs import to_embed_input

        rows = [to_embed_input(x, i) for i, x in enumerate(inputs)]
        return self._embed(rows, per_input(instruction, len(rows)))

    def _embed(self, rows: list[EmbedInput], instructions: list[str | None]) -> np.ndarray:
        batch = requests(self.processor, rows, instructions, self.config.max_text_tokens)
        outputs = self.llm.embed(batch, use_tqdm=False)
        return np.asarray([o.outputs.embedding for o in outputs], dtype=np.float32)

    def embed_windows(
        self,
        windows: Iterable[list[Row]],
        total: int,
        batch_size: int = 32,
        progress: str | None = None,
        multi: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The engine interface of :meth:`jfe.Embedder.embed_windows`; ``batch_size`` is left to
        vLLM's scheduler, which batches each window's requests itself."""
        if multi:
            raise ValueError("--engine vllm serves single vectors; encode token vectors with --engine jfe")
        out = np.zeros((total, self.dimension), dtype=np.float32)
        ok = np.zeros(total, dtype=bool)
        with tqdm(total=total, desc=progress, disable=progress is None, unit="item") as bar:
            for window in windows:
                good = [(pos, x, instruction) for pos, x, instruction in window if x is not None]
                if good:
                    positions = [pos for pos, _, _ in good]
                    out[positions] = self._embed([x for _, x, _ in good], [t for *_, t in good])
                    ok[positions] = True
                bar.update(len(window))
        return out, ok
