"""Data parallelism over all local devices with jax.sharding: the batch is split along a 'data' mesh axis,
the model and optimiser states are replicated, and XLA's SPMD partitioner inserts the gradient all-reduce."""
from __future__ import annotations

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


class DataParallel:
  """Shards batches over the local devices; a no-op on one device.

  Args:
    batch_size: the global batch; it must divide evenly over the devices.
    field: the config field holding the batch size, for the error message.
  """

  def __init__(self, batch_size: int, field: str = "batch_size"):
    devices = jax.local_devices()
    self.n = len(devices)
    self.mesh = Mesh(np.asarray(devices), ("data",)) if self.n > 1 else None
    if self.n > 1 and batch_size % self.n:
      raise ValueError(f"{field}={batch_size} does not split over {self.n} devices; use a multiple of {self.n}.")

  def replicate(self, *objects) -> None:
    if self.mesh is None:
      return
    for obj in objects:
      state = nnx.state(obj)
      nnx.update(obj, jax.device_put(state, NamedSharding(self.mesh, P())))

  def batch(self, *arrays):
    if self.mesh is None:
      return tuple(jax.numpy.asarray(a) for a in arrays)
    sharding = NamedSharding(self.mesh, P("data"))
    return tuple(jax.device_put(np.asarray(a), sharding) for a in arrays)

  def value(self, x):
    return x if self.mesh is None else jax.device_put(x, NamedSharding(self.mesh, P()))
