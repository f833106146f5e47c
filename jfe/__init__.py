"""jfe: one-tower early-fusion multimodal embeddings from vision-language models."""

from jfe.embedder import Embedder, EmbedderConfig
from jfe.formatting import EmbedInput, cut_texts

__version__ = "0.1.0"
__all__ = ["EmbedInput", "Embedder", "EmbedderConfig", "__version__", "cut_texts"]
