"""Quantisation-aware training of a fixed network, evaluation, and weight inheritance from a supernet."""
from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from nas.ops import layers

from nas.ops import quant
from nas.ops import quantizers
from nas.train.augment import random_crop_flip
from nas.train.checkpoint import LoopCheckpointer
from nas.train.data import Dataset, batches
from nas.train.parallel import DataParallel
from nas.train.staged import StagedStep


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Fine-tuning recipe.

  Attributes:
    steps: optimiser steps.
    batch_size: images per step.
    lr: peak learning rate (Adam, cosine decay to zero).
    weight_decay: decoupled weight decay of the weights (not of the LSQ steps).
    optimizer: ``adamw`` or ``sgd`` (SGD with Nesterov momentum 0.9: the standard ResNet-20 CIFAR recipe).
    kd_alpha: weight of the distillation term (0: no teacher); the hard-label term gets 1 - kd_alpha.
    kd_temperature: distillation temperature T (the soft term is scaled by T^2).
    augment: random crop (pad 4) and horizontal flip on the device.
    seed: batch order and sampling.
  """
  steps: int = 600
  batch_size: int = 64
  lr: float = 3e-3
  weight_decay: float = 1e-4
  optimizer: str = "adamw"
  kd_alpha: float = 0.0
  kd_temperature: float = 4.0
  augment: bool = False
  seed: int = 0


def _decays(path) -> bool:
  names = [k.key for k in path if isinstance(k, jax.tree_util.DictKey)]
  return bool(names) and names[-1] == "kernel"


def _decay_mask(params):
  """optax mask: True for conv/dense kernels only (no decay of quantiser steps, biases, BatchNorm scales)."""
  return jax.tree_util.tree_map_with_path(lambda path, _: _decays(path), params)


STEP_ADAM_EPS = 1e-12


def _is_step(path, leaf) -> bool:
  """Whether a leaf of the weights' state is an LSQ step: by type, or by name where optax passes plain arrays
  (its update calls the labels on the gradients, whose leaves are no Variables)."""
  if isinstance(leaf, layers.QuantStep):
    return True
  names = [k.key for k in path if isinstance(k, jax.tree_util.DictKey)]
  return bool(names) and names[-1] == "step" and not isinstance(leaf, nnx.Variable)


def _param_labels(params):
  return jax.tree_util.tree_map_with_path(lambda p, x: "step" if _is_step(p, x) else "weights", params,
                                          is_leaf=lambda x: isinstance(x, nnx.Variable))


def log_domain(inner: optax.GradientTransformation) -> optax.GradientTransformation:
  """Runs ``inner`` on log(s) for positive parameters s: it sees the gradient s * dL/ds and its update u
  becomes s * (exp(u) - 1), so that s moves by a factor, not by an amount.

  LSQ steps need this under Adam. Adam normalises each parameter's gradient, so with the weights' rate
  (3e-3) every step size moves by about 3e-3 per update whatever its magnitude: 30 % of an 8-bit weight step
  (about 0.01) per update, 3 % of a 2-bit one. LSQ's gradient scale 1/sqrt(N Q_P), which exists to balance
  exactly that, is divided out by Adam. 8-bit networks trained worst of all: uniform W8A8 scored below W4A4
  on Fashion-MNIST (81.5 against 83.4 %) and 5 points below the float network. In the log domain Adam moves
  every step by the same relative amount, at any bit-width (the trained-threshold quantiser of Jain et al.
  trains log2 thresholds for the same reason).

  References:
    Jain et al., "Trained Quantization Thresholds for Accurate and Efficient Fixed-Point Inference of Deep
    Neural Networks", MLSys 2020.
  """
  def log(params):
    return jax.tree.map(lambda s: jnp.log(jnp.maximum(s, quant.STEP_FLOOR)), params)

  def init(params):
    return inner.init(log(params))

  def update(updates, state, params=None):
    if params is None:
      raise ValueError("log_domain needs the parameters in update().")
    grads = jax.tree.map(lambda g, s: g * s, updates, params)
    log_updates, state = inner.update(grads, state, log(params))
    return jax.tree.map(lambda u, s: s * jnp.expm1(u), log_updates, params), state

  return optax.GradientTransformation(init, update)


def weights_optimizer(model: nnx.Module, lr, weight_decay: float, kind: str = "adamw") -> nnx.Optimizer:
  """AdamW (or SGD with Nesterov momentum) over the weights; only kernels decay. Under AdamW the quantiser
  parameters (QuantStep: LSQ steps, PACT's alphas) train with Adam in the log domain at the same rate
  (``log_domain``: a relative, scale-free update); under SGD they follow the weights' SGD, as in LSQ. A
  quantiser with ``step_decay`` (PACT) adds L2 on its parameters at ``weight_decay``, into the gradient.

  The model's quantiser modules are first bound to its space's quantiser (``layers.bind_quantizer``)."""
  q = quantizers.get(layers.bind_quantizer(model))
  if kind == "adamw":
    weights = optax.adamw(lr, weight_decay=weight_decay, mask=_decay_mask)
    # eps 1e-12: the log-domain gradients s dL/ds, with LSQ's 1/sqrt(N Q_P) scale in them, are 1e-7..1e-5,
    # where Adam's default 1e-8 would shrink the updates of the smallest (8-bit) steps by up to a tenth.
    steps = log_domain(optax.adam(lr, eps=STEP_ADAM_EPS))
    if q.step_decay:
      steps = optax.chain(optax.add_decayed_weights(weight_decay), steps)
    tx = optax.multi_transform({"weights": weights, "step": steps}, _param_labels)
  elif kind == "sgd":  # LSQ's own setting: its gradient scale balances the steps under SGD
    mask = _decay_mask
    if q.step_decay:
      mask = lambda params: jax.tree_util.tree_map_with_path(lambda p, x: _decays(p) or _is_step(p, x), params)
    tx = optax.chain(optax.add_decayed_weights(weight_decay, mask=mask),
                     optax.sgd(lr, momentum=0.9, nesterov=True))
  else:
    raise ValueError(f"finetune.optimizer={kind!r}; use 'adamw' or 'sgd'.")
  return nnx.Optimizer(model, tx, wrt=nnx.Param)


def calibrate(model: nnx.Module, x: np.ndarray, mode: str = "argmax") -> None:
  """The quantiser's initial activation parameters from one batch (LSQ: 2 mean|x| / sqrt(Q_P)): a forward
  pass in calibration mode (``mode``: the model's mixing mode, e.g. ``expected`` for a supernet), jitted as one
  program (run eagerly, each of its few hundred small ops compiled on its own: half a minute on 2 cores for a
  4-layer supernet).

  The model's quantiser modules are first bound to its space's quantiser (``layers.bind_quantizer``; a weight
  quantiser that changes quantiser re-initialises from its kernel)."""
  layers.bind_quantizer(model)
  layers.set_calibrating(model, True)
  try:
    model.train()
    _calibration_forward(model, jnp.asarray(x), mode)
  finally:
    layers.set_calibrating(model, False)


@nnx.jit(static_argnames=("mode",))
def _calibration_forward(model, x, mode):
  model(x, mode=mode)


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def distillation_loss(student_logits, teacher_logits, labels, alpha, temperature):
  """(1 - alpha) CE(y, student) + alpha T^2 KL(softmax(teacher / T) || softmax(student / T)).

  References:
    Hinton, Vinyals, Dean, "Distilling the Knowledge in a Neural Network", arXiv 1503.02531.
  """
  hard = cross_entropy(student_logits, labels)
  t = temperature
  p_teacher = jax.nn.softmax(teacher_logits / t)
  log_p_teacher = jax.nn.log_softmax(teacher_logits / t)
  log_p_student = jax.nn.log_softmax(student_logits / t)
  kl = jnp.sum(p_teacher * (log_p_teacher - log_p_student), axis=-1).mean()
  return (1.0 - alpha) * hard + alpha * t * t * kl


@nnx.jit(static_argnames=("augment",))
def _train_step(model, opt, x, y, key=None, augment=False):
  if augment:
    x = random_crop_flip(key, x)

  def loss_fn(model):
    logits = model(x, mode="argmax")
    return cross_entropy(logits, y), logits
  (loss, logits), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
  opt.update(model, grads)
  return loss, jnp.mean((jnp.argmax(logits, -1) == y).astype(jnp.float32))


@nnx.jit(static_argnames=("augment",))
def _distill_step(model, opt, teacher, x, y, key, kd, augment=False):
  """One distillation step; ``kd`` = (alpha, temperature) of ``distillation_loss``."""
  alpha, temperature = kd
  if augment:
    x = random_crop_flip(key, x)
  teacher_logits = jax.lax.stop_gradient(teacher(x, mode="argmax"))  # teacher in eval mode (set by caller)

  def loss_fn(model):
    logits = model(x, mode="argmax")
    return distillation_loss(logits, teacher_logits, y, alpha, temperature), logits
  (loss, logits), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
  opt.update(model, grads)
  return loss, jnp.mean((jnp.argmax(logits, -1) == y).astype(jnp.float32))


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
             callback: Callable[[int, dict], None] | None = None, teacher: nnx.Module | None = None,
             checkpoint_dir=None, checkpoint_every: int = 100) -> dict:
  """QAT of a fixed network (with distillation from ``teacher`` if ``cfg.kd_alpha`` > 0).

  Returns the final train loss and test accuracy. With ``checkpoint_dir`` the loop saves its state every
  ``checkpoint_every`` steps and resumes from the latest checkpoint there.

  Raises:
    FloatingPointError: if the loss becomes NaN or infinite.
  """
  if cfg.kd_alpha > 0 and teacher is None:
    raise ValueError("finetune.kd_alpha > 0 needs a teacher network.")
  stream = batches(data.x_train, data.y_train, cfg.batch_size, cfg.seed)
  schedule = optax.cosine_decay_schedule(cfg.lr, max(cfg.steps, 1))
  opt = weights_optimizer(model, schedule, cfg.weight_decay, cfg.optimizer)
  ckpt = LoopCheckpointer(checkpoint_dir, checkpoint_every)
  start = ckpt.restore({"model": model, "opt": opt})
  for _ in range(start):
    next(stream)
  dp = DataParallel(cfg.batch_size, "finetune.batch_size")
  dp.replicate(model, opt)
  if teacher is not None:
    dp.replicate(teacher)
    teacher.eval()
  base_key = jax.random.key(cfg.seed + 1)
  model.train()
  # One jitted function of the networks' and the optimiser's flat state (nas.train.staged): no graph
  # traversal per step. The objects are written back before a checkpoint and at the end.
  if cfg.kd_alpha > 0:
    step_fn = StagedStep(_distill_step, model, opt, teacher, static_argnames=("augment",))
    kd = (jnp.float32(cfg.kd_alpha), jnp.float32(cfg.kd_temperature))
  else:
    step_fn = StagedStep(_train_step, model, opt, static_argnames=("augment",))
  loss = acc = float("nan")
  try:
    for step in range(start, cfg.steps):
      x, y = dp.batch(*next(stream))
      key = jax.random.fold_in(base_key, step)
      if cfg.kd_alpha > 0:
        loss, acc = step_fn(x, y, key, kd, augment=cfg.augment)
      else:
        loss, acc = step_fn(x, y, key, augment=cfg.augment)
      last = step == cfg.steps - 1
      if ckpt.due(step, last):
        step_fn.sync()
        ckpt.maybe_save(step, {"model": model, "opt": opt}, last=last)
      if step % 50 == 0 or last:
        loss, acc = float(loss), float(acc)
        if not np.isfinite(loss):
          raise FloatingPointError(f"fine-tuning loss became {loss} at step {step}; lower finetune.lr (now {cfg.lr}).")
        if callback is not None:
          callback(step, {"finetune/loss": loss, "finetune/train_acc": acc})
  finally:
    step_fn.sync()
  ckpt.close()
  return {"train_loss": float(loss), "test_accuracy": evaluate(model, data.x_test, data.y_test)}


def inherit_weights(derived: nnx.Module, supernet: nnx.Module) -> None:
  """Copies the supernet's weights and BatchNorm statistics into the derived network, sliced to its widths.

  Width masks keep the first k channels, so the first k channels of each tensor are the ones the search
  trained. LSQ steps are not copied (the supernet holds one per candidate); they are re-initialised from
  the inherited weights (and from a calibration batch for activations).
  """
  src = nnx.state(supernet, nnx.Not(nnx.Any(layers.QuantStep, nnx.RngState)))
  dst = nnx.state(derived, nnx.Not(nnx.Any(layers.QuantStep, nnx.RngState)))
  src_flat = dict(nnx.to_flat_state(src))
  for path, var in nnx.to_flat_state(dst):
    if path not in src_flat or not isinstance(var, (nnx.Param, nnx.BatchStat)):
      continue
    s = src_flat[path][...]
    d = var[...]
    if s.ndim != d.ndim or any(a < b for a, b in zip(s.shape, d.shape)):
      raise ValueError(f"cannot inherit {path}: supernet shape {s.shape}, derived {d.shape}.")
    var[...] = s[tuple(slice(0, n) for n in d.shape)]
  for _, m in derived.iter_modules():
    if isinstance(m, layers.QLayer):
      m.wq.init_from(m.kernel[...])
