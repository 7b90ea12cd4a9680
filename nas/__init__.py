"""Differentiable mixed-precision and width search in JAX / Flax NNX. Knows nothing of Hydra or wandb."""
from nas.allocator import keep_freed_memory as _keep_freed_memory
from nas.runtime import apply_xla_defaults as _apply_xla_defaults

_apply_xla_defaults()  # before any JAX computation: XLA reads its flags once (nas/runtime.py says what and why)
_keep_freed_memory()  # XLA's per-step working memory reused, not page-faulted anew (nas/allocator.py)
