"""The quantised ViT of a derived ``vit`` network, as plain arrays: what ``nas.deploy.vit_onnx`` writes and
``nas.deploy.vit_pack`` packs.

Every linear (the patch embedding, Q, K, V, the output projection, fc1, fc2, the classifier) becomes integer
weights at their own per-column bit-widths (AQ-BERT sub-groups expanded to columns; a sub-8-bit value is an
integer in its own range), per-column steps, a float bias and its input quantiser (step, bits, signed); the
quantisers of Q, K, the softmax output P (unsigned) and V become (step, bits, signed); LayerNorm, the class
token and the positions stay float32, as ``nas.models.vit`` computes them. Integers are computed as the
fake-quantiser's forward value, ``round(clip(x / s, -Q_N, Q_P))`` in float32 with ties to even (``nas.ops.quant``),
and :func:`from_vit` checks them against the JAX layer's own quantised kernel (``w_int * s`` must equal it
exactly, else ValueError): the weights are the ones the network evaluates.

Pruned parts are left out where that changes no output: an attention (MLP) whose output projection (fc2) has
every group pruned adds exactly 0 to the residual and is no sub-block (FBNet's skip op); a head whose V columns
or whose rows of the projection are all zero contributes exactly 0 and is dropped with its Q, K, V columns; an
fc1 column that is zero (weights and bias: GELU(0) = 0) or whose fc2 row is zero is dropped with that row. Other
pruned columns (of Q, K, of the projection and fc2 outputs, which the residual needs) stay, as zeros. N:M weights
are the magnitude mask of ``nas.ops.sparsity`` applied before quantisation (kept in the dense tensor; the mask
is recorded for the packed file).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from hardware.nm import NM
from nas.ops import quant, quantizers, sparsity
from nas.ops.layers import PRUNED

MODEL = "vit"


@dataclasses.dataclass(frozen=True)
class ActQ:
  """A per-tensor quantiser: x -> round(clip(x / step, -Q_N, Q_P)) (``nas.ops.quant.qrange(bits, signed)``)."""
  step: np.float32
  bits: int
  signed: bool


@dataclasses.dataclass(frozen=True)
class Linear:
  """y = dequant(q_in) @ (w_int * w_step) + bias over the last axis; a pruned column has w_int 0 and bias 0.

  Attributes:
    w_int: (cin, cout) integers, column c within ``w_bits[c]`` signed bits (0 bits: all zero).
    w_bits, w_step: per output column.
    bias: (cout,) float32 (zeros for the patch embedding, which has none).
    act: its input quantiser.
    nm: the N:M pattern along the reduction axis (rows), or None; ``mask`` (cin, cout) bool its kept weights.
  """
  name: str
  w_int: np.ndarray
  w_bits: np.ndarray
  w_step: np.ndarray
  bias: np.ndarray
  act: ActQ
  nm: NM | None = None
  mask: np.ndarray | None = None


@dataclasses.dataclass(frozen=True)
class Norm:
  scale: np.ndarray
  bias: np.ndarray
  epsilon: float


@dataclasses.dataclass(frozen=True)
class Attention:
  """A pre-norm attention sub-block over ``heads`` kept heads of ``head_dim`` (0 heads: it adds proj's bias)."""
  ln: Norm
  q: Linear
  k: Linear
  v: Linear
  proj: Linear
  q_act: ActQ
  k_act: ActQ
  p_act: ActQ
  v_act: ActQ
  heads: int
  head_dim: int
  kept_heads: tuple[int, ...]  # which heads of the trained network these are


@dataclasses.dataclass(frozen=True)
class Mlp:
  """A pre-norm MLP sub-block: fc2(GELU(fc1(LN(x)))) (0 columns of fc1: it adds fc2's bias)."""
  ln: Norm
  fc1: Linear
  fc2: Linear


@dataclasses.dataclass(frozen=True)
class Block:
  attn: Attention | None  # None: skipped (every group of its projection pruned)
  mlp: Mlp | None  # None: skipped (every group of fc2 pruned)


@dataclasses.dataclass(frozen=True)
class VitNetwork:
  input_shape: tuple[int, int, int]
  patch_size: int
  patch: Linear  # (patch * patch * C, embed): rows in (kh, kw, c) order, the HWIO kernel reshaped
  cls_token: np.ndarray | None  # (embed,) or None (mean pooling)
  pos: np.ndarray  # (tokens, embed)
  blocks: tuple[Block, ...]
  norm: Norm
  pool: str
  head: Linear

  def linears(self) -> list[Linear]:
    """Every weighted layer that runs, in forward order."""
    out = [self.patch]
    for b in self.blocks:
      out += [] if b.attn is None else [b.attn.q, b.attn.k, b.attn.v, b.attn.proj]
      out += [] if b.mlp is None else [b.mlp.fc1, b.mlp.fc2]
    return out + [self.head]


def _act(aq, qz, name: str) -> ActQ:
  """The fixed quantiser ``aq`` (an ``ActQuantizer``) as (step, bits, signed); the step as the JAX pass takes it."""
  if aq.bits is None or len(aq.bits) != 1:
    raise ValueError(f"{name}: activations must be quantised at one bit-width to export, got {aq.bits}.")
  qn, qp = quant.qrange(aq.bits[0], aq.signed)
  step = qz.step(np.asarray(aq.step[...], np.float32)[0], np.float32(qn), np.float32(qp))
  return ActQ(np.float32(np.asarray(step, np.float32)), int(aq.bits[0]), bool(aq.signed))


def column_bits(net, layer) -> np.ndarray:
  """Per output column bit-width of ``layer``'s weights (0: pruned), as the derived network's quantiser expands
  its per-group choice (column c takes group ``c // layer.group_size``: ``nas.ops.layers.expand_groups``)."""
  cout = layer.kernel[...].shape[-1]
  chosen = net.choices[layer.keys.w_bits].derive()
  if not isinstance(chosen, tuple):
    return np.full(cout, int(chosen), np.int64)
  size = layer.group_size or 1
  return np.asarray([int(chosen[c // size]) for c in range(cout)], np.int64)


def _nm(net, layer) -> NM | None:
  if layer.keys.nm is None:
    return None
  return NM.from_code(int(net.choices[layer.keys.nm].derive()))


def _linear(net, layer, qz, arch) -> Linear:
  """One QLayer (conv patch embedding, linear or dense) as integers, checked against its JAX quantised kernel."""
  name = layer.spec.name
  if layer.wq.bits is None:
    raise ValueError(f"{name} has float weights; only quantised networks can be exported.")
  kernel = np.asarray(layer.kernel[...], np.float32)
  nm = _nm(net, layer)
  mask = None if nm is None else np.asarray(sparsity.nm_mask(kernel, nm.n, nm.m)) > 0
  sparse = kernel if mask is None else kernel * mask
  sparse = sparse.reshape(-1, sparse.shape[-1])  # a conv's HWIO kernel as (kh kw cin, cout)
  cout = sparse.shape[-1]
  bits = column_bits(net, layer)
  live = [b for b in layer.wq.bits if b != PRUNED]
  steps = np.asarray(layer.wq.step[...], np.float32) if live else np.ones((1, cout), np.float32)
  rows = [live.index(int(b)) if b != PRUNED else 0 for b in bits]
  qn = np.where(bits > 0, 2.0 ** (bits - 1), 0.0).astype(np.float32)
  qp = np.where(bits > 0, qn - 1, 0.0).astype(np.float32)
  step = np.asarray(qz.step(steps[rows, np.arange(cout)], qn, qp), np.float32)
  step = np.where(bits > 0, step, np.float32(1.0)).astype(np.float32)
  w_int = np.round(np.clip(sparse / step, -qn, qp)).astype(np.int64)  # float32 arithmetic, ties to even
  bias = np.zeros(cout, np.float32) if layer.bias is None else np.asarray(layer.bias[...], np.float32)
  bias = np.where(bits > 0, bias, np.float32(0.0)).astype(np.float32)
  jax_w = np.asarray(layer.wq(layer.sparse_kernel(arch), layer.column_weights(arch)), np.float32)
  if not np.array_equal((w_int * step).astype(np.float32), jax_w.reshape(sparse.shape)):
    bad = int(np.sum((w_int * step).astype(np.float32) != jax_w.reshape(sparse.shape)))
    raise ValueError(f"{name}: {bad} integer weights differ from the JAX layer's quantised kernel; the exporter "
                     f"does not know this layer's quantisation.")
  return Linear(name, w_int, bits, step, bias, _act(layer.aq, qz, name), nm,
                None if mask is None else mask.reshape(-1, cout))


def _norm(ln) -> Norm:
  return Norm(np.asarray(ln.scale[...], np.float32), np.asarray(ln.bias[...], np.float32), float(ln.epsilon))


def _zero_columns(layer: Linear) -> np.ndarray:
  """Output columns that are exactly 0 for every input (no weight, no bias)."""
  return ~np.any(layer.w_int != 0, axis=0) & (layer.bias == 0)


def _zero_rows(layer: Linear) -> np.ndarray:
  return ~np.any(layer.w_int != 0, axis=1)


def keep_columns(layer: Linear, cols: np.ndarray) -> Linear:
  """``layer`` with only output columns ``cols``."""
  return dataclasses.replace(layer, w_int=layer.w_int[:, cols], w_bits=layer.w_bits[cols],
                             w_step=layer.w_step[cols], bias=layer.bias[cols],
                             mask=None if layer.mask is None else layer.mask[:, cols])


def keep_rows(layer: Linear, rows: np.ndarray) -> Linear:
  """``layer`` reading only input rows ``rows`` (the others read inputs that are always 0)."""
  return dataclasses.replace(layer, w_int=layer.w_int[rows], mask=None if layer.mask is None else layer.mask[rows])


def _attention(net, block, qz, arch, prefix: str) -> Attention | None:
  a = block.attn
  q, k, v, proj = (_linear(net, l, qz, arch) for l in (a.q, a.k, a.v, a.proj))
  if not np.any(proj.w_bits):
    return None
  d = a.head_dim
  heads = q.w_int.shape[1] // d
  dead_v, dead_p = _zero_columns(v).reshape(heads, d).all(1), _zero_rows(proj).reshape(heads, d).all(1)
  kept = tuple(h for h in range(heads) if not (dead_v[h] or dead_p[h]))
  cols = np.asarray([h * d + i for h in kept for i in range(d)], np.int64)
  acts = [_act(x, qz, f"{prefix}.{n}") for x, n in ((a.q_act, "q"), (a.k_act, "k"), (a.p_act, "p"), (a.v_act, "v"))]
  return Attention(_norm(block.ln1), *(keep_columns(x, cols) for x in (q, k, v)), keep_rows(proj, cols), *acts,
                   len(kept), d, kept)


def _mlp(net, block, qz, arch) -> Mlp | None:
  fc1, fc2 = _linear(net, block.fc1, qz, arch), _linear(net, block.fc2, qz, arch)
  if not np.any(fc2.w_bits):
    return None
  cols = np.flatnonzero(~(_zero_columns(fc1) | _zero_rows(fc2)))
  return Mlp(_norm(block.ln2), keep_columns(fc1, cols), keep_rows(fc2, cols))


def from_vit(net) -> VitNetwork:
  """The quantised network of a derived (fixed-architecture) ``vit`` in eval mode (see the module docstring).

  Raises:
    ValueError: for another model, a supernet, a float layer, or integers that differ from the JAX layer's.
  """
  name = getattr(net, "name", type(net).__name__)
  if name != MODEL:
    raise ValueError(f"model {name!r} is not a ViT; nas.deploy.vit_int exports model 'vit'.")
  if net.arch is None:
    raise ValueError("the network is a supernet; export the derived network (built with arch=...).")
  qz = quantizers.get(getattr(net.space, "quantizer", None) or net.head.aq.quantizer)
  arch = net.mixing_weights("argmax")
  p = net.patch.spec.kernel
  blocks = tuple(Block(_attention(net, b, qz, arch, f"blocks.{i}.attn"), _mlp(net, b, qz, arch))
                 for i, b in enumerate(net.blocks))
  cls = None if net.cls_token is None else np.asarray(net.cls_token[...], np.float32).reshape(-1)
  h, w = net.patch.spec.in_h, net.patch.spec.in_w
  return VitNetwork((h, w, net.patch.spec.cin), p, _linear(net, net.patch, qz, arch), cls,
                    np.asarray(net.pos[...], np.float32)[0], blocks, _norm(net.norm), net.pool,
                    _linear(net, net.head, qz, arch))
