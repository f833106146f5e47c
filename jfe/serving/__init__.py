"""Other engines that embed with a model jfe saved, as jfe does (vLLM's pooling runner)."""
