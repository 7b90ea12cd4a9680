"""A ViT-style encoder supernet: heads, MLP widths, sub-group weight bits, N:M sparsity and the activation bits
of every linear input and of both attention matmuls, searched in one network.

References:
  Dosovitskiy et al., "An Image is Worth 16x16 Words: Transformers for Image Recognition at Scale", ICLR 2021.
  Zhao et al., "Automatic Mixed-Precision Quantization Search of BERT" (AQ-BERT), IJCAI 2021.
  Zhou et al., "Learning N:M Fine-grained Structured Sparse Neural Networks From Scratch", ICLR 2021.
  Wan et al., "FBNetV2", CVPR 2020 (width masks, here over heads and MLP columns).
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from hardware.base import LayerSpec
from hardware.nm import NM
from nas.ops import sparsity
from nas.models.arch import Architecture, LayerChoice
from nas.ops.layers import PRUNED, ActQuantizer, ChoiceKeys, QLayer, width_mask
from nas.models import register
from nas.models.base import FLOAT_BITS, Supernet
from nas.models.space import SearchSpace


def layer_norm(features: int, rngs: nnx.Rngs) -> nnx.LayerNorm:
  """Pre-norm LayerNorm, computed in float32 (epsilon 1e-6, as in ViT)."""
  return nnx.LayerNorm(features, epsilon=1e-6, dtype=jnp.float32, param_dtype=jnp.float32, rngs=rngs)


def _normal(rngs: nnx.Rngs, shape, scale: float) -> jax.Array:
  """N(0, scale^2) drawn with NumPy from a seed off the NNX key (QLayer's reason: no compile per shape)."""
  key = rngs.params()
  if isinstance(key, jax.core.Tracer):
    return jax.random.normal(key, shape, jnp.float32) * scale
  seed = np.asarray(jax.random.key_data(key)).astype(np.uint64).ravel()
  return jnp.asarray(np.random.default_rng(seed.tolist()).standard_normal(shape).astype(np.float32) * scale)


class Attention(nnx.Module):
  """Multi-head self-attention over a searchable number of heads, each of ``head_dim`` columns.

  The heads choice ``{name}.heads`` masks the head columns of Q, K and V (FBNetV2 masks over heads: head h
  is kept when h < heads), so a dropped head's values are zero and so are its columns of the output
  projection's input; the projection's input rows are tied to the same choice by construction. Q and K
  (the operands of Q K^T) and the softmax output and V (those of attention x V) pass activation quantisers
  with searchable bits. Scores and softmax are computed in float32.
  """

  def __init__(self, net: "ViT", name: str, embed: int, heads: int, head_dim: int, tokens: int):
    self.heads_key = net.heads_choice(f"{name}.heads", heads)
    self.max_heads = net.max_channels(self.heads_key)
    self.head_dim = head_dim
    width = self.max_heads * head_dim
    heads_axis = (self.heads_key, head_dim)
    self.q = net.linear(f"{name}.q", embed, width, tokens, groups=self.max_heads, cout_axis=heads_axis)
    self.k = net.linear(f"{name}.k", embed, width, tokens, groups=self.max_heads, cout_axis=heads_axis)
    self.v = net.linear(f"{name}.v", embed, width, tokens, groups=self.max_heads, cout_axis=heads_axis)
    s = net.space
    # (name, bits) of each matmul's first and second operand: Q and K, then the softmax output and V.
    self.qk_keys = tuple(net.bits_choice(f"{name}.qk.{op}", None, s.a_bits) for op in ("a_bits", "w_bits"))
    self.av_keys = tuple(net.bits_choice(f"{name}.av.{op}", None, s.a_bits) for op in ("a_bits", "w_bits"))
    self.q_act = ActQuantizer(self.qk_keys[0][1], signed=True)
    self.k_act = ActQuantizer(self.qk_keys[1][1], signed=True)
    self.p_act = ActQuantizer(self.av_keys[0][1], signed=False)  # probabilities: unsigned
    self.v_act = ActQuantizer(self.av_keys[1][1], signed=True)
    self.proj = net.linear(f"{name}.proj", width, embed, tokens, groups=heads, cin_axis=heads_axis)

  def head_mask(self, net: "ViT", arch: Mapping[str, jax.Array]) -> jax.Array | None:
    """The mask over the Q/K/V columns (max heads x head_dim), or None when the heads choice is fixed."""
    choice = net.choices[self.heads_key]
    if choice.fixed:
      return None
    cols = tuple(h * self.head_dim for h in choice.values)
    return width_mask(cols, arch[self.heads_key], self.max_heads * self.head_dim)

  def qkv(self, y: jax.Array, net: "ViT", arch: Mapping[str, jax.Array]):
    """Q, K, V of the normalised tokens ``y`` (B, T, E), each (B, T, heads x head_dim), masked by the heads (the
    mask scales the quantised kernels' columns and the biases: the same product, a pass over each kernel
    instead of one over each output)."""
    m = self.head_mask(net, arch)
    return self.q(y, arch, m), self.k(y, arch, m), self.v(y, arch, m)

  def attend(self, q: jax.Array, k: jax.Array, v: jax.Array, arch: Mapping[str, jax.Array]) -> jax.Array:
    """softmax(Q K^T / sqrt(d)) V per head, operands quantised; returns the projection's input (B, T, H d)."""
    b, t, _ = q.shape
    h, d = self.max_heads, self.head_dim
    q = self.q_act(q, arch[self.qk_keys[0][0]]).reshape(b, t, h, d)
    k = self.k_act(k, arch[self.qk_keys[1][0]]).reshape(b, t, h, d)
    scores = jnp.einsum("bthd,bshd->bhts", q.astype(jnp.float32), k.astype(jnp.float32)) * (d ** -0.5)
    p = jax.nn.softmax(scores, axis=-1)  # float32
    p = self.p_act(p, arch[self.av_keys[0][0]])
    v = self.v_act(v, arch[self.av_keys[1][0]]).reshape(b, t, h, d)
    return jnp.einsum("bhts,bshd->bthd", p, v).reshape(b, t, h * d)

  def __call__(self, y: jax.Array, net: "ViT", arch: Mapping[str, jax.Array]) -> jax.Array:
    return self.proj(self.attend(*self.qkv(y, net, arch), arch), arch)


class Block(nnx.Module):
  """Pre-norm encoder block: x + Attn(LN(x)), then x + fc2(mask(GELU(fc1(LN(x))))), the MLP's hidden width
  the choice ``{name}.mlp.width`` (FBNetV2 mask after the GELU; fc2's input rows are tied to it)."""

  def __init__(self, net: "ViT", name: str, embed: int, heads: int, mlp: int, tokens: int, mlp_groups: int,
               rngs: nnx.Rngs):
    self.ln1 = layer_norm(embed, rngs)
    self.attn = Attention(net, f"{name}.attn", embed, heads, embed // heads, tokens)
    self.ln2 = layer_norm(embed, rngs)
    self.hidden_key = net.width_choice(f"{name}.mlp.width", mlp)
    hidden = net.max_channels(self.hidden_key)
    axis = (self.hidden_key, 1)
    # fc1's bit groups are the supernet's (its widest MLP over mlp_groups), also in a derived network that is
    # narrower: a group's bits drive the same columns in the supernet, the architecture, the cost and the export.
    group = -(-max(net.space.channels(mlp)) // mlp_groups)
    self.fc1 = net.linear(f"{name}.mlp.fc1", embed, hidden, tokens, groups=mlp_groups, cout_axis=axis,
                          group_size=group)
    self.fc2 = net.linear(f"{name}.mlp.fc2", hidden, embed, tokens, groups=mlp_groups, cin_axis=axis)

  def __call__(self, x: jax.Array, net: "ViT", arch: Mapping[str, jax.Array]) -> jax.Array:
    x = x + self.attn(self.ln1(x.astype(jnp.float32)), net, arch)
    h = jax.nn.gelu(self.fc1(self.ln2(x.astype(jnp.float32)), arch), approximate=False)
    h = net.mask(h, self.hidden_key, arch)
    return x + self.fc2(h, arch)


@register
class ViT(Supernet):
  """Patch embedding -> learned positions (+ a class token) -> ``depth`` pre-norm blocks -> LayerNorm -> dense.

  The patch embedding is a ``conv`` with kernel = stride = ``patch`` at ``search.first_layer_bits`` and the
  classifier a ``dense`` at ``search.last_layer_bits``, like the CNNs' first and last layers. Softmax and
  LayerNorm run in float32 (the quantisers sit on the matmul operands, not on these).

  Choices, per block i (prefix ``blocks.{i}``):
    ``.attn.heads``: the number of heads, base ``heads`` times ``search.width_mults`` (rounded, >= 1; the
      head dimension stays embed / heads, so more heads widen Q, K, V).
    ``.mlp.width``: MLP hidden columns, ``space.channels(mlp)`` (below the base prunes, above expands).
    ``{linear}.w_bits``: per-group weight bits of each linear (AQ-BERT): groups of one head's columns for
      ``.attn.q/k/v``, embed / heads columns for ``.attn.proj``, ``mlp_groups`` groups for ``.mlp.fc1`` and
      ``.mlp.fc2``; candidates ``search.w_bits`` plus 0 (the group pruned) when ``prune_groups``.
    ``{linear}.a_bits``: the linear's input bits. ``{linear}.nm``: its N:M pattern (``hardware.nm.NM.code``:
      104 = 1:4, 204 = 2:4, 0 dense; in ascending density, dense last), trained with SR-STE.
    ``.attn.qk.a_bits`` / ``.attn.qk.w_bits``: bits of Q and K; ``.attn.av.a_bits`` / ``.attn.av.w_bits``:
      bits of the softmax output and of V (a matmul's "weights" are its second operand, as in LayerSpec).
  With ``search.quantize=False`` every bit choice is float, every linear dense and no group prunable: a plain
  float ViT (a teacher). Bit choices follow ``search.method`` (Gumbel or SDQ); heads, widths and N:M are
  Gumbel choices. ``search.per_channel_w=true`` is refused: the linears' bits are per group, and the patch
  embedding and classifier have fixed bits. ``search.channel_multiple`` rounds the MLP widths, not the heads.
  Before any search step, "argmax" breaks the ties of uniform Gumbel logits towards the first candidate, which
  for group bits is 0 (pruned) and for N:M the sparsest pattern: derive or evaluate "argmax" only after the
  architecture has trained.

  Args:
    space: the candidates.
    rngs: NNX random streams.
    arch: build the fixed network of this architecture instead of the supernet.
    num_classes: classifier outputs.
    input_shape: (H, W, C) of one image; H and W multiples of ``patch``.
    patch: patch side (kernel and stride of the embedding); None: a quarter of the image side (4 x 4 = 16
      tokens: 7 for 28x28, 2 for the 8x8 digits, 8 for 32x32), so every dataset's default runs.
    embed: token width (fixed: the residual stream).
    heads: base number of heads (divides ``embed``).
    mlp: base MLP hidden width.
    depth: encoder blocks.
    pool: ``cls`` (a class token, read after the final LayerNorm) or ``mean`` (mean over the tokens).
    mlp_groups: weight-bit groups of fc1's and fc2's output columns.
    nm_patterns: the N:M candidates besides dense, e.g. [[2, 4], [1, 4]]; empty: dense only.
    prune_groups: add the 0-bit (pruned) candidate to every group's weight bits.
    nm_decay: SR-STE's lambda_W.
    input_signed: whether the input pixels can be negative.
  """

  name = "vit"

  def __init__(self, space: SearchSpace, *, rngs: nnx.Rngs, arch: Architecture | None = None,
               num_classes: int = 10, input_shape: Sequence[int] = (28, 28, 1), patch: int | None = None,
               embed: int = 64,
               heads: int = 4, mlp: int = 128, depth: int = 4, pool: str = "cls", mlp_groups: int = 4,
               nm_patterns: Sequence[Sequence[int]] = ((2, 4), (1, 4)), prune_groups: bool = True,
               nm_decay: float = sparsity.SRSTE_DECAY, input_signed: bool = False):
    h, w, c = (int(v) for v in input_shape)
    if patch is None:  # a quarter of the side: 4 x 4 = 16 tokens
      if h != w or h % 4:
        raise ValueError(f"model.args.patch=null takes a quarter of a square image's side; the images are {h}x{w}: "
                         f"set model.args.patch to a divisor of both sides.")
      patch = h // 4
    if patch < 1 or h % patch or w % patch:
      raise ValueError(f"model.args.patch={patch} must divide the image sides {h}x{w}; e.g. 7 for 28x28, "
                       f"2 or 4 for 8x8.")
    if heads < 1 or embed % heads:
      raise ValueError(f"model.args.heads={heads} must be >= 1 and divide model.args.embed={embed}.")
    if pool not in ("cls", "mean"):
      raise ValueError(f"model.args.pool={pool!r}; use 'cls' or 'mean'.")
    if mlp_groups < 1 or depth < 1 or mlp < 1:
      raise ValueError(f"model.args mlp_groups={mlp_groups}, depth={depth}, mlp={mlp} must all be >= 1.")
    if space.quantize and space.per_channel_w:
      raise ValueError("search.per_channel_w=true has no meaning for model=vit: its weight bits are already chosen "
                       "per group of output columns (one head's for attention, model.args.mlp_groups groups for the "
                       "MLP: AQ-BERT's sub-groups) and per-channel bits are for the CNNs; set "
                       "search.per_channel_w=false (raise model.args.mlp_groups for finer MLP groups).")
    parsed = tuple(NM.parse(p, f"model.args.nm_patterns entry") for p in nm_patterns) if space.quantize else ()
    # N:M groups run along each linear's reduction axis (its input width): the embedding (Q, K, V, fc1), every
    # heads candidate x head_dim (the projection) and every MLP width candidate (fc2).
    head_dim = embed // heads
    reductions = ([(embed, "input of attn.q/k/v and mlp.fc1 (model.args.embed)")]
                  + [(h * head_dim, f"input of attn.proj at {h} heads")
                     for h in sorted({max(1, int(round(heads * m))) for m in space.width_mults})]
                  + [(w, "input of mlp.fc2 (an MLP width candidate)") for w in space.channels(mlp)])
    for nm in parsed:
      for rows, what in reductions:
        nm.check_reduction(rows, f"model.args.nm_patterns entry [{nm.n}, {nm.m}], {what}")
    self._setup(space, arch, rngs)
    self.pool = pool
    self.embed = embed
    self.nm_decay = float(nm_decay)
    patterns = tuple(nm.code for nm in parsed)
    # Candidates in ascending density, dense last, as bits and widths ascend: the budget projection and the
    # budget filling after the argmax (nas.search.loop.fit_to_budget / fill_budget) move one candidate down or up
    # and read "up" as more network. Dense first made "up" mean sparser: on a target where N:M costs the same
    # as dense (riscv), the filling then moved every linear to 2:4 for free.
    density = lambda code: NM.from_code(code).density
    self.nm_values = tuple(sorted(set(patterns), key=lambda c: (density(c), c))) + (sparsity.DENSE,)
    self.group_w_bits = ((PRUNED,) if prune_groups else ()) + space.w_bits
    self._cost_axes = {}  # layer name -> (cin axis, cout axis, group size) of the linears
    self.patch = self.qlayer("patch", "conv", None, c, None, embed, patch, patch, (h, w), first=True,
                             a_signed=input_signed)
    self.tokens = (h // patch) * (w // patch) + (pool == "cls")
    self.cls_token = nnx.Param(jnp.zeros((1, 1, embed), jnp.float32)) if pool == "cls" else None
    self.pos = nnx.Param(_normal(rngs, (1, self.tokens, embed), 0.02))
    self.blocks = nnx.List([Block(self, f"blocks.{i}", embed, heads, mlp, self.tokens, mlp_groups, rngs)
                            for i in range(depth)])
    self.norm = layer_norm(embed, rngs)
    self.head = self.qlayer("head", "dense", None, embed, None, num_classes, 1, 1, (1, 1), last=True)

  # ------------------------------------------------------------------------------------------ building
  def heads_choice(self, name: str, base: int) -> str:
    """The number of heads: base times each width multiple, rounded, at least 1 (a Gumbel choice)."""
    values = sorted({max(1, int(round(base * m))) for m in self.space.width_mults})
    return self.add_choice(name, values, base)

  def linear(self, attr: str, cin: int, cout: int, tokens: int, *, groups: int,
             cin_axis: tuple[str, int] | None = None, cout_axis: tuple[str, int] | None = None,
             group_size: int | None = None) -> QLayer:
    """A token-wise linear with per-group weight bits (``groups`` groups of its output columns, each
    ``group_size`` columns: by default cout / groups rounded up), input bits and an N:M choice; ``cin_axis`` /
    ``cout_axis`` = (choice, columns per choice value) when a choice sets that width (heads x head_dim, or MLP
    columns x 1)."""
    group_size = -(-cout // groups) if group_size is None else group_size
    wk, wb = self.bits_choice(f"{attr}.w_bits", None, self.group_w_bits, channels=groups)
    ak, ab = self.bits_choice(f"{attr}.a_bits", None, self.space.a_bits)
    nk = self.add_choice(f"{attr}.nm", self.nm_values, sparsity.DENSE)
    if nk not in self._onehot_choices:
      self._onehot_choices += (nk,)
    # Only choices whose values are channel counts go in ChoiceKeys (what nas.search.cost reads); heads go through
    # cost_layers().
    channel_key = lambda axis: axis[0] if axis is not None and axis[1] == 1 else None
    keys = ChoiceKeys(wk, ak, channel_key(cin_axis), channel_key(cout_axis), nm=nk)
    spec = LayerSpec("linear", cin, cout, in_h=tokens, name=attr)
    self._layer_names.append(attr)
    self._cost_axes[attr] = (cin_axis, cout_axis, group_size)
    return QLayer(spec, keys, wb, ab, True, rngs=self.rngs, group_size=group_size,
                  nm_codes=self.choices[nk].values, nm_decay=self.nm_decay)

  # ------------------------------------------------------------------------------------------ forward
  def __call__(self, x: jax.Array, *, mode: str = "sample", key: jax.Array | None = None, tau=1.0) -> jax.Array:
    return self.forward(x, self.mixing_weights(mode, key, tau))

  def forward(self, x: jax.Array, arch: Mapping[str, jax.Array]) -> jax.Array:
    """Logits of images ``x`` (B, H, W, C) under the choices' mixing weights ``arch`` (``mixing_weights``)."""
    t = self.patch(x, arch)
    t = t.reshape(t.shape[0], -1, self.embed)
    if self.cls_token is not None:
      t = jnp.concatenate([jnp.broadcast_to(self.cls_token[...], (t.shape[0], 1, self.embed)), t], axis=1)
    t = t + self.pos[...]
    for block in self.blocks:
      t = block(t, self, arch)
    t = self.norm(t.astype(jnp.float32))
    t = t[:, 0] if self.pool == "cls" else jnp.mean(t, axis=1)
    return self.head(t, arch)

  # ------------------------------------------------------------------------------------------ costs
  def cost_layers(self) -> list[tuple[LayerSpec, dict]]:
    """Every costed op in forward order, as (LayerSpec at the widest choices, the choices that drive it).

    The ops: ``patch`` (conv), then per block ``.ln1`` (layernorm), ``.attn.q/k/v`` (linear), ``.attn.qk``
    (matmul, Q K^T), ``.attn.softmax``, ``.attn.av`` (matmul, attention x V), ``.attn.proj`` (linear),
    ``.ln2``, ``.mlp.fc1``, ``.mlp.fc2`` (linear); then ``norm`` (layernorm) and ``head`` (dense). GELU,
    the residual additions and the score scaling are not costed (no LayerSpec kind for them).

    The dict of each op has keys:
      ``w_bits``: the weight-bit choice (for a matmul its second operand's: K, V); None for softmax and
        layernorm (float32).
      ``w_groups``: None, or the number of output columns each row of the per-group ``w_bits`` choice drives
        (group g: columns [g w_groups, (g + 1) w_groups), cut at cout); a group at 0 bits is pruned.
      ``a_bits``: the input-activation bit choice (a matmul's first operand: Q, the softmax output); None for
        softmax and layernorm.
      ``cin``, ``cout``: None (fixed at the spec's value) or (choice, per_value): that axis is the choice's
        value times per_value (heads x head_dim for Q/K/V columns and the projection's rows; heads x T for
        Q K^T's columns and the softmax; MLP columns x 1).
      ``nm``: the N:M choice (values ``hardware.nm.NM.code``) or None (dense).
      ``dead_if``: weight-bit choices (per group, with a 0-bit candidate) that leave the op's result unused when
        all their groups are pruned: every op of an attention (its LayerNorm, Q, K, V, both matmuls and the
        softmax) when its output projection is wholly pruned (the attention adds exactly 0 to the residual),
        and the MLP's LayerNorm and fc1 when fc2 is. Such a sub-block is skipped (FBNet's skip op). Only the
        projections with a fixed number of output columns (the embedding) kill: the other dead ops (K when
        all of Q is pruned, fc2 computing only its bias when all of fc1 is) are still costed, an upper bound.
    The specs carry ``nm=None``: the widest choice is dense.
    """
    out = []
    none = dict(w_bits=None, w_groups=None, a_bits=None, cin=None, cout=None, nm=None, dead_if=())

    def add(spec, **axes):
      out.append((spec, {**none, **axes}))

    def add_layer(layer, **extra):
      cin_axis, cout_axis, group_size = self._cost_axes.get(layer.spec.name, (None, None, None))
      add(layer.spec, w_bits=layer.keys.w_bits, a_bits=layer.keys.a_bits, cin=cin_axis, cout=cout_axis,
          w_groups=group_size, nm=layer.keys.nm, **extra)

    def killers(layer):  # the layer's weight-bit choice, where pruning all its groups is a candidate
      return (layer.keys.w_bits,) if PRUNED in self.choices[layer.keys.w_bits].values else ()

    t, e = self.tokens, self.embed
    add_layer(self.patch)
    for i, block in enumerate(self.blocks):
      p, attn = f"blocks.{i}", block.attn
      h, d = attn.max_heads, attn.head_dim
      a_dead, m_dead = killers(attn.proj), killers(block.fc2)
      add(LayerSpec("layernorm", e, e, in_h=t, name=f"{p}.ln1"), dead_if=a_dead)
      for layer in (attn.q, attn.k, attn.v):
        add_layer(layer, dead_if=a_dead)
      add(LayerSpec("matmul", d, h * t, in_h=t, head_cols=t, name=f"{p}.attn.qk"),
          a_bits=attn.qk_keys[0][0], w_bits=attn.qk_keys[1][0], cout=(attn.heads_key, t), dead_if=a_dead)
      add(LayerSpec("softmax", h * t, h * t, in_h=t, name=f"{p}.attn.softmax"),
          cin=(attn.heads_key, t), cout=(attn.heads_key, t), dead_if=a_dead)
      add(LayerSpec("matmul", t, h * d, in_h=t, head_cols=d, name=f"{p}.attn.av"),
          a_bits=attn.av_keys[0][0], w_bits=attn.av_keys[1][0], cout=(attn.heads_key, d), dead_if=a_dead)
      add_layer(attn.proj)
      add(LayerSpec("layernorm", e, e, in_h=t, name=f"{p}.ln2"), dead_if=m_dead)
      add_layer(block.fc1, dead_if=m_dead)
      add_layer(block.fc2)
    add(LayerSpec("layernorm", e, e, in_h=t, name="norm"))
    add_layer(self.head)
    return out

  def qlayers(self) -> list[QLayer]:
    """The weighted layers. Their ChoiceKeys name only the widths whose choice values are channel counts (the
    MLP's); the heads-driven widths, the per-group bits and the weight-less ops are in ``cost_layers``, which
    the expected cost of this model must read (``nas.search.cost.build_cost_tables`` does not yet)."""
    per_block = [(b.attn.q, b.attn.k, b.attn.v, b.attn.proj, b.fc1, b.fc2) for b in self.blocks]
    return [self.patch] + [layer for group in per_block for layer in group] + [self.head]

  @staticmethod
  def _axis(choices: Mapping, axis, fixed: int) -> int:
    return fixed if axis is None else int(choices[axis[0]]) * axis[1]

  def kept_channels(self, derived: Mapping) -> dict[str, int]:
    """Per-group weight-bit choices keep the groups the derived width keeps."""
    kept = {}
    for spec, axes in self.cost_layers():
      if axes["w_groups"]:
        kept[axes["w_bits"]] = -(-self._axis(derived, axes["cout"], spec.cout) // axes["w_groups"])
    return kept

  def architecture(self, choices: Mapping | None = None) -> Architecture:
    """The discrete network for ``choices`` (default: the derived argmax): every op of ``cost_layers`` at its
    chosen widths and N:M pattern. A linear's per-group bits become per-column bits; pruned (0-bit) columns
    are left out of its spec (an op whose columns are all pruned is left out, and so are the ops whose result
    it leaves unused: ``dead_if`` of ``cost_layers``), though the inputs of the ops after it still count them
    (a conservative cost). Softmax and layernorm carry 32-bit (float) bits."""
    choices = dict(self.derive() if choices is None else choices)
    layers = []
    pruned = lambda v: all(int(b) == PRUNED for b in (v if isinstance(v, (tuple, list)) else (v,)))
    for spec, axes in self.cost_layers():
      if any(pruned(choices[k]) for k in axes["dead_if"]):
        continue
      cin = self._axis(choices, axes["cin"], spec.cin)
      cout = self._axis(choices, axes["cout"], spec.cout)
      nm = NM.from_code(choices[axes["nm"]]) if axes["nm"] else None
      w_bits = choices[axes["w_bits"]] if axes["w_bits"] else FLOAT_BITS
      a_bits = choices[axes["a_bits"]] if axes["a_bits"] else FLOAT_BITS
      if isinstance(w_bits, (tuple, list)) or PRUNED == w_bits:
        per_group = tuple(w_bits) if isinstance(w_bits, (tuple, list)) else (w_bits,)
        size = axes["w_groups"] or cout
        cols = [int(per_group[min(c // size, len(per_group) - 1)]) for c in range(cout)]
        cols = [b for b in cols if b != PRUNED]
        if not cols:
          continue
        cout = len(cols)
        w_bits = cols[0] if len(set(cols)) == 1 else tuple(cols)
      head_cols = spec.head_cols
      s = LayerSpec(spec.kind, cin, cout, spec.kernel, spec.stride, spec.in_h, spec.in_w, spec.name, head_cols, nm)
      layers.append(LayerChoice(s, w_bits, a_bits))
    return Architecture(self.name, choices, tuple(layers))
