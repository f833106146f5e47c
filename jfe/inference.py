"""The one inference loop, shared by ``Embedder.encode`` and ``jfe encode`` / ``search`` / ``eval``.

Rows arrive in windows (all inputs at once for ``Embedder.encode``; a DataLoader's worth of
decoded images for ``jfe encode``). Each window is sorted by exact token count and cut into
batches, so little of a batch is padding; the next batch is collated in a thread while the model
runs this one (torch releases the GIL), so preprocessing hides behind compute. Pooling is
batch-independent, so neither the order nor the batching changes any embedding.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from tqdm.auto import tqdm

from jfe.formatting import EmbedInput, count_cut
from jfe.fusion import combine_numpy, split_parts
from jfe.lengths import collated_by_length

logger = logging.getLogger(__name__)

# One row of a window: (position in the output, the input or None if it could not be read, instruction).
Row = tuple[int, EmbedInput | None, str | None]


def embed_windows(
    embedder,
    windows: Iterable[list[Row]],
    total: int,
    batch_size: int = 32,
    progress: str | None = None,
    multi: bool = False,
) -> tuple[np.ndarray | list, np.ndarray]:
    """Embeddings (``total``, D) float32, L2-normalised, at each row's position, and a bool mask
    of the positions that were embedded (rows given as None are skipped and stay False). With
    ``multi``, a list of each row's token vectors, (n_i, d) float32 arrays (None where skipped)."""
    out = [None] * total if multi else np.zeros((total, embedder.dimension), dtype=np.float32)
    ok = np.zeros(total, dtype=bool)
    late = embedder.config.fusion == "late"
    fused = np.zeros(total, dtype=bool)  # late fusion: rows whose two parts are summed
    bar = tqdm(total=total, desc=progress, disable=progress is None, unit="item")
    max_text = embedder.config.max_text_tokens
    cut = [0]  # texts over max_text_tokens, reported once at the end

    def batches() -> Iterator[tuple[list[int], object]]:
        for window in windows:
            good = [(pos, x, instruction) for pos, x, instruction in window if x is not None]
            bar.update(len(window) - len(good))
            if not good:
                continue
            rows, instructions = [x for _, x, _ in good], [t for *_, t in good]
            cut[0] += count_cut(embedder.processor, [x.text for x in rows], max_text)
            positions = [pos for pos, _, _ in good]
            if late:
                rows, instructions, owner = split_parts(rows, instructions)
                positions = [positions[j] for j in owner]
                fused[positions] |= np.bincount(owner, minlength=len(good))[owner] > 1
            for idx, features in collated_by_length(embedder.processor, rows, instructions, max_text, batch_size):
                yield [positions[j] for j in idx], features

    stream = batches()
    with torch.inference_mode(), bar, ThreadPoolExecutor(max_workers=1) as pool:
        upcoming = pool.submit(next, stream, None)
        while (batch := upcoming.result()) is not None:
            upcoming = pool.submit(next, stream, None)
            positions, features = batch
            if multi:
                for pos, vectors in zip(positions, embedder.embed(**features).multi.to_list(), strict=True):
                    out[pos] = vectors.cpu().numpy()
            elif late:
                # a row's two parts may land in different batches: sum them, normalise at the end
                np.add.at(out, positions, embedder(**features).cpu().numpy())
            else:
                out[positions] = embedder(**features).cpu().numpy()
            bar.update(int((~ok[np.unique(positions)]).sum()))  # a late-fusion row counts once
            ok[positions] = True
    if late:
        combine_numpy(out, fused)
    if cut[0]:
        logger.warning(
            "%s%d of %d texts were longer than max_text_tokens (%d tokens) and were cut to it (the prompt is kept)",
            f"{progress}: " if progress else "", cut[0], total, max_text,
        )  # fmt: skip
    return out, ok
