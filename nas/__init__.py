"""Differentiable mixed-precision and width search in JAX / Flax NNX. Knows nothing of Hydra or wandb."""
from nas.runtime import apply_xla_defaults as _apply_xla_defaults

_apply_xla_defaults()  # before any JAX computation: XLA reads its flags once (nas/runtime.py says what and why)
