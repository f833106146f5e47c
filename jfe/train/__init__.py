"""Two-stage contrastive training (post-training adaptation, then instruction tuning)."""
