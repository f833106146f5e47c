"""Last-token pooling that reads the last REAL token whatever side the batch was padded on."""

from __future__ import annotations

import torch


def last_token_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of the last non-padding position of each row.

    Assuming one padding side gives batch-dependent embeddings when the other side is used, so the
    position is read from the mask: the first 1 met when scanning each row from the end.
    """
    width = attention_mask.shape[-1]
    return width - 1 - attention_mask.flip(-1).int().argmax(-1)


def last_token_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(batch, seq, dim) hidden states -> (batch, dim) states of each row's last real token."""
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    return hidden[rows, last_token_positions(attention_mask).to(hidden.device)]
