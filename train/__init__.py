"""train: the real local-SGD trainer (mini-batch, local, post-local, hierarchical)."""
