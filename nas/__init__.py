"""Differentiable mixed-precision and width search in JAX / Flax NNX. Knows nothing of Hydra or wandb."""
