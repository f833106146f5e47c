"""``jfe encode --engine vllm``: the forward done by vLLM's offline pooling runner.

A folder ``Embedder.save`` writes loads in vLLM as it is: vLLM maps the base model to its
embedding architecture and reads last-token pooling and normalisation from the
sentence-transformers files. What vLLM does not do is jfe's input handling, so it is done here,
with the code every jfe path uses: texts cut to ``max_text_tokens`` before the prompt
(:func:`jfe.formatting.cut_texts`), the prompt rendered by the model's chat template
(:func:`jfe.formatting.render`), and the image handed over as ``multi_modal_data``, which vLLM's
processor expands into the placeholder tokens. vLLM batches the requests itself.

Token vectors (``embedding: multi``, or a ``both`` model's ``multi_vector/`` view) come from vLLM's
``token_embed`` pooling task: every prompt token's state through the saved sentence-transformers
``Dense`` head, L2-normalised. vLLM has no counterpart of ``MultiVectorMask``, so the template
markers (:data:`jfe.multivector.SKIPPED_TOKENS`) are dropped here, by the prompt token ids vLLM
returns with each output (the image placeholders already expanded).

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

from jfe.embedder import MULTI_VECTOR_FOLDER, load_processor, per_input
from jfe.formatting import EmbedInput, render
from jfe.inference import Row
from jfe.inputs import to_embed_input
from jfe.multivector import check_vectors, skipped_ids

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
    ``vllm.LLM(..., runner="pooling")``: ``embed`` for single vectors, ``encode`` with the
    ``token_embed`` task for token vectors."""

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
        self._vllm = vllm
        self.path = os.fspath(path)
        self.processor, self.config = load_processor(self.path, min_pixels, max_pixels, chat_template)
        if self.config.fusion == "late":
            # vLLM embeds an image+text prompt as one sequence: it cannot split it as late fusion does
            raise ValueError(f"{path}: a late-fusion model (fusion: late); --engine vllm embeds early only, use jfe")
        self.multi = self.config.embedding != "single"
        hidden = AutoConfig.from_pretrained(self.path).get_text_config().hidden_size
        self.dimension = self.config.multi_dim if self.config.embedding == "multi" else hidden
        self._skip = np.asarray(skipped_ids(self.processor.tokenizer), dtype=np.int64)
        if min_pixels or max_pixels:
            # the processor jfe renders with and vLLM's own must resize alike: vLLM's gets the bounds
            # as the processor's size, which every family's image processor reads
            size = dict(self.processor.image_processor.size)
            llm_kwargs.setdefault("mm_processor_kwargs", {})["size"] = size
        self._dtype = dtype or "auto"
        self._llm_kwargs = llm_kwargs
        self._engines: dict[bool, Any] = {}
        if self.config.embedding != "both":
            # started now, so a bad option fails here; a both model's first call says which head it needs
            self._engine(self.config.embedding == "multi")

    @property
    def llm(self):
        """The ``vllm.LLM`` of the model's own vectors (single for a ``both`` model)."""
        return self._engine(self.config.embedding == "multi")

    def _engine(self, multi: bool):
        if multi in self._engines:
            return self._engines[multi]
        # one engine at a time: each claims its own share of the accelerator's memory
        for old in self._engines.values():
            old.llm_engine.engine_core.shutdown()
        self._engines.clear()
        folder, kwargs = self.path, dict(self._llm_kwargs)
        if multi:
            # one engine serves one pooling task; a both model's top folder is the single-vector
            # model (no Dense module), its multi_vector/ view the one with the token-vector head
            kwargs.setdefault("pooler_config", {"task": "token_embed"})
            if self.config.embedding == "both":
                folder = os.path.join(self.path, MULTI_VECTOR_FOLDER)
        llm = self._vllm.LLM(model=folder, runner="pooling", dtype=self._dtype, **kwargs)
        self._engines[multi] = llm
        return llm

    def encode(self, inputs: list, instruction: str | list[str | None] | None = None) -> np.ndarray:
        """(N, D) float32 embeddings of raw inputs (as ``Embedder.encode`` takes them)."""
        check_vectors(self.config.embedding, multi=False)
        rows = [to_embed_input(x, i) for i, x in enumerate(inputs)]
        return self._embed(rows, per_input(instruction, len(rows)))

    def encode_multi(self, inputs: list, instruction: str | list[str | None] | None = None) -> list[np.ndarray]:
        """Each input's token vectors, (n_i, multi_dim) float32 (as ``Embedder.encode_multi``)."""
        check_vectors(self.config.embedding, multi=True)
        rows = [to_embed_input(x, i) for i, x in enumerate(inputs)]
        return self._embed_multi(rows, per_input(instruction, len(rows)))

    def _embed(self, rows: list[EmbedInput], instructions: list[str | None]) -> np.ndarray:
        batch = requests(self.processor, rows, instructions, self.config.max_text_tokens)
        outputs = self._engine(False).embed(batch, use_tqdm=False)
        return np.asarray([o.outputs.embedding for o in outputs], dtype=np.float32)

    def _embed_multi(self, rows: list[EmbedInput], instructions: list[str | None]) -> list[np.ndarray]:
        batch = requests(self.processor, rows, instructions, self.config.max_text_tokens)
        outputs = self._engine(True).encode(batch, pooling_task="token_embed", use_tqdm=False)
        out = []
        for o in outputs:
            vectors = o.outputs.data.float().cpu().numpy()
            ids = np.asarray(o.prompt_token_ids, dtype=np.int64)
            if len(ids) != len(vectors):
                raise RuntimeError(f"vLLM gave {len(vectors)} token vectors for a prompt of {len(ids)} tokens")
            out.append(vectors[~np.isin(ids, self._skip)])
        return out

    def embed_windows(
        self,
        windows: Iterable[list[Row]],
        total: int,
        batch_size: int = 32,
        progress: str | None = None,
        multi: bool = False,
    ) -> tuple[np.ndarray | list, np.ndarray]:
        """The engine interface of :meth:`jfe.Embedder.embed_windows`; ``batch_size`` is left to
        vLLM's scheduler, which batches each window's requests itself."""
        check_vectors(self.config.embedding, multi)
        out = [None] * total if multi else np.zeros((total, self.dimension), dtype=np.float32)
        ok = np.zeros(total, dtype=bool)
        with tqdm(total=total, desc=progress, disable=progress is None, unit="item") as bar:
            for window in windows:
                good = [(pos, x, instruction) for pos, x, instruction in window if x is not None]
                if good:
                    positions = [pos for pos, _, _ in good]
                    rows, instructions = [x for _, x, _ in good], [t for *_, t in good]
                    if multi:
                        for pos, vectors in zip(positions, self._embed_multi(rows, instructions), strict=True):
                            out[pos] = vectors
                    else:
                        out[positions] = self._embed(rows, instructions)
                    ok[positions] = True
                bar.update(len(window))
        return out, ok
