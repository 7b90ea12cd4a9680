"""Quantisation-aware training of a fixed network, evaluation, and weight inheritance from a supernet."""
from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from nas import layers
from nas.data import Dataset, batches


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Fine-tuning recipe.

  Attributes:
    steps: optimiser steps.
    batch_size: images per step.
    lr: peak learning rate (Adam, cosine decay to zero).
    weight_decay: decoupled weight decay of the weights (not of the LSQ steps).
    seed: batch order and sampling.
  """
  steps: int = 600
  batch_size: int = 64
  lr: float = 3e-3
  weight_decay: float = 1e-4
  seed: int = 0


def _decay_mask(params):
  """optax mask: True for conv/dense kernels only (no decay of LSQ steps, biases, BatchNorm scales)."""
  def decays(path, _):
    names = [k.key for k in path if isinstance(k, jax.tree_util.DictKey)]
    return bool(names) and names[-1] == "kernel"
  return jax.tree_util.tree_map_with_path(decays, params)


def weights_optimizer(model: nnx.Module, lr, weight_decay: float) -> nnx.Optimizer:
  """AdamW over the weights (nnx.Param, LSQ steps included); only kernels decay."""
  return nnx.Optimizer(model, optax.adamw(lr, weight_decay=weight_decay, mask=_decay_mask), wrt=nnx.Param)


def calibrate(model: nnx.Module, x: np.ndarray, **call_kwargs) -> None:
  """LSQ initial activation steps from one batch (eager forward pass in calibration mode)."""
  layers.set_calibrating(model, True)
  try:
    model.train()
    model(jnp.asarray(x), **call_kwargs)
  finally:
    layers.set_calibrating(model, False)


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


@nnx.jit
def _train_step(model, opt, x, y):
  def loss_fn(model):
    logits = model(x, mode="argmax")
    return cross_entropy(logits, y), logits
  (loss, logits), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
  opt.update(model, grads)
  return loss, jnp.mean(jnp.argmax(logits, -1) == y)


@nnx.jit(static_argnames=("mode",))
def _eval_logits(model, x, mode):
  return model(x, mode=mode)


def evaluate(model: nnx.Module, x: np.ndarray, y: np.ndarray, batch_size: int = 512, mode: str = "argmax") -> float:
  """Top-1 accuracy in eval mode (BatchNorm running statistics)."""
  model.eval()
  correct = 0
  for i in range(0, len(x), batch_size):
    logits = _eval_logits(model, jnp.asarray(x[i:i + batch_size]), mode)
    correct += int(jnp.sum(jnp.argmax(logits, -1) == jnp.asarray(y[i:i + batch_size])))
  model.train()
  return correct / max(len(x), 1)


def finetune(model: nnx.Module, data: Dataset, cfg: TrainConfig,
             callback: Callable[[int, dict], None] | None = None) -> dict:
  """QAT of a fixed network; returns the final train loss and test accuracy.

  Raises:
    FloatingPointError: if the loss becomes NaN or infinite.
  """
  stream = batches(data.x_train, data.y_train, cfg.batch_size, cfg.seed)
  schedule = optax.cosine_decay_schedule(cfg.lr, max(cfg.steps, 1))
  opt = weights_optimizer(model, schedule, cfg.weight_decay)
  model.train()
  loss = acc = float("nan")
  for step in range(cfg.steps):
    x, y = next(stream)
    loss, acc = _train_step(model, opt, jnp.asarray(x), jnp.asarray(y))
    if callback is not None and (step % 50 == 0 or step == cfg.steps - 1):
      loss, acc = float(loss), float(acc)
      if not np.isfinite(loss):
        raise FloatingPointError(f"fine-tuning loss became {loss} at step {step}; lower finetune.lr (now {cfg.lr}).")
      callback(step, {"finetune/loss": loss, "finetune/train_acc": acc})
  return {"train_loss": float(loss), "test_accuracy": evaluate(model, data.x_test, data.y_test)}


def inherit_weights(derived: nnx.Module, supernet: nnx.Module) -> None:
  """Copies the supernet's weights and BatchNorm statistics into the derived network, sliced to its widths.

  Width masks keep the first k channels, so the first k channels of each tensor are the ones the search
  trained. LSQ steps are not copied (the supernet holds one per candidate); they are re-initialised from
  the inherited weights (and from a calibration batch for activations).
  """
  src = nnx.state(supernet, nnx.Not(nnx.Any(layers.QuantStep, nnx.RngState)))
  dst = nnx.state(derived, nnx.Not(nnx.Any(layers.QuantStep, nnx.RngState)))
  src_flat = dict(nnx.to_flat_state(src)) if hasattr(nnx, "to_flat_state") else dict(src.flat_state())
  updated = {}
  for path, var in (nnx.to_flat_state(dst) if hasattr(nnx, "to_flat_state") else dst.flat_state()):
    if path not in src_flat or not isinstance(var, (nnx.Param, nnx.BatchStat)):
      continue
    s = src_flat[path][...]
    d = var[...]
    if s.ndim != d.ndim or any(a < b for a, b in zip(s.shape, d.shape)):
      raise ValueError(f"cannot inherit {path}: supernet shape {s.shape}, derived {d.shape}.")
    var[...] = s[tuple(slice(0, n) for n in d.shape)]
    updated[path] = var
  for _, m in derived.iter_modules():
    if isinstance(m, layers.QLayer):
      m.wq.init_from(m.kernel[...])
