"""The ViT encoder supernet (nas/models/vit.py): shapes of the supernet, float and derived networks; the heads
choice tied across Q, K, V, the output projection and both attention matmuls; cost_layers against a hand count;
weight inheritance. Training steps: test_vit_train.py. Tiny shapes (8x8 images, one or two blocks), forwards jitted."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from nas.ops.choices import OneHot
from nas.ops.layers import ActQuantizer, QuantStep
from nas.models import build_model
from nas.models.vit import ViT
from nas.models.space import SearchSpace
from nas.train.finetune import inherit_weights

SPACE = SearchSpace(w_bits=(2, 4, 8), a_bits=(4, 8), width_mults=(0.5, 1.0))
# 8x8 digits with patch 4: 4 patches + a class token = 5 tokens; embed 16, 2 heads of 8, MLP 32 (16 or 32).
TINY = dict(num_classes=4, input_shape=(8, 8, 1), patch=4, embed=16, heads=2, mlp=32, depth=1, mlp_groups=4)


def tiny(space=SPACE, **kwargs):
  return build_model("vit", space, **{**TINY, **kwargs})


def images(n=4, seed=0):
  return jnp.asarray(np.random.default_rng(seed).uniform(0, 1, (n, 8, 8, 1)), jnp.float32)


@nnx.jit(static_argnames=("mode",))
def forward(model, x, key, mode="sample"):
  return model(x, mode=mode, key=key)


@pytest.mark.parametrize("method", ["gumbel", "sdq"])
def test_supernet_forward_in_every_mode(method):
  model = tiny(SearchSpace(w_bits=(2, 4, 8), a_bits=(4, 8), width_mults=(0.5, 1.0), method=method))
  assert model.tokens == 5
  for mode in ("sample", "argmax"):
    y = forward(model, images(), jax.random.key(1), mode=mode)
    assert y.shape == (4, 4) and bool(jnp.all(jnp.isfinite(y)))
  probs = model.max_probs()  # per-group choices count the groups the derived widths keep
  assert "blocks.0.mlp.fc1.w_bits" in probs and all(0 < p <= 1 for p in probs.values())


def test_float_teacher_is_a_plain_vit():
  model = tiny(SearchSpace(quantize=False, width_mults=(1.0,)))
  assert all(c.fixed for c in model.choices.values())  # nothing searched: float, dense, base widths
  assert not nnx.state(model, QuantStep)  # no quantiser steps anywhere
  assert all(m.bits is None for _, m in model.iter_modules() if isinstance(m, ActQuantizer))
  assert {model.choices[n].values for n in model.choices if n.endswith(".nm")} == {(0,)}
  y = forward(model, images(), None, mode="argmax")
  assert y.shape == (4, 4)


def test_heads_mask_zeroes_exactly_the_dropped_heads():
  model = tiny(SearchSpace(w_bits=(4, 8), a_bits=(8,), width_mults=(0.5, 1.0, 1.5)))  # 1, 2 or 3 heads
  attn = model.blocks[0].attn
  assert model.choices[attn.heads_key].values == (1, 2, 3) and attn.max_heads == 3 and attn.head_dim == 8
  for name, c in model.choices.items():  # argmax: 8-bit groups and dense (the last candidates; the first are
    if name.endswith((".w_bits", ".nm")) and not c.fixed:  # 0 = pruned and 1:4)
      c.logits[...] = c.logits[...].at[..., -1].set(5.0)
  logits = np.zeros(3, np.float32)
  logits[1] = 5.0  # argmax: 2 heads of 3
  model.choices[attn.heads_key].logits[...] = jnp.asarray(logits)

  @nnx.jit
  def run(model, y):
    arch = model.mixing_weights("argmax")
    q, k, v = attn.qkv(y, model, arch)
    return q, k, v, attn.attend(q, k, v, arch)

  y = jnp.asarray(np.random.default_rng(0).normal(size=(2, 5, 16)), jnp.float32)
  q, k, v, o = (np.asarray(t) for t in run(model, y))
  for t in (q, k, v, o):  # columns 16..23 (head 3) are zero; the first two heads are not
    assert t.shape == (2, 5, 24)
    assert np.all(t[..., 16:] == 0)
    assert np.all(np.abs(t[..., :16]).max(axis=(0, 1)) > 0)


def test_heads_tie_every_attention_shape():
  """One heads choice sets Q/K/V columns, the projection's rows, Q K^T's and the softmax's columns and A V's."""
  model = nnx.eval_shape(lambda: tiny(SearchSpace(width_mults=(0.5, 1.0, 1.5))))
  ops = {spec.name: (spec, axes) for spec, axes in model.cost_layers()}
  key = "blocks.0.attn.heads"
  for name in ("q", "k", "v", "qk", "softmax", "av"):
    assert ops[f"blocks.0.attn.{name}"][1]["cout"][0] == key, name
  assert ops["blocks.0.attn.proj"][1]["cin"] == (key, 8)
  assert ops["blocks.0.attn.softmax"][1]["cin"] == (key, 5)
  for heads in (1, 2, 3):
    arch = model.architecture({**model.reference, key: heads})
    s = {l.spec.name: l.spec for l in arch.layers}
    assert s["blocks.0.attn.q"].cout == s["blocks.0.attn.k"].cout == s["blocks.0.attn.v"].cout == heads * 8
    assert s["blocks.0.attn.proj"].cin == heads * 8
    assert s["blocks.0.attn.qk"].cout == heads * 5 and float(s["blocks.0.attn.qk"].heads()) == heads
    assert s["blocks.0.attn.av"].cout == heads * 8 and float(s["blocks.0.attn.av"].heads()) == heads
    assert s["blocks.0.attn.softmax"].cin == heads * 5


def test_reference_macs_of_the_default_vit_match_a_hand_count():
  """28x28, patch 7: T = 16 + 1 tokens, E = 64, 4 heads of 16, MLP 128, 4 blocks, 10 classes.
  patch: 4x4 positions x 7x7x1 x 64 = 50,176. Per block: Q, K, V, proj 4 x 17 x 64 x 64 = 278,528; QK^T and AV
  2 x 4 x 17 x 17 x 16 = 36,992; fc1, fc2 2 x 17 x 64 x 128 = 278,528: 594,048, x 4 = 2,376,192. Head 64 x 10 =
  640. Total 2,427,008."""
  model = nnx.eval_shape(lambda: build_model("vit", SearchSpace()))
  arch = model.reference_architecture()
  assert sum(float(l.spec.macs()) for l in arch.layers) == 2_427_008
  kinds = [l.spec.kind for l in arch.layers]
  assert kinds.count("matmul") == 8 and kinds.count("softmax") == 4 and kinds.count("layernorm") == 9
  assert kinds.count("linear") == 24 and all(l.spec.nm is None for l in arch.layers)
  sm = next(l.spec for l in arch.layers if l.spec.kind == "softmax")
  assert float(sm.elements()) == 4 * 17 * 17


def test_derived_network_with_pruned_groups_and_nm_builds_and_reports_its_layers():
  model = tiny()
  choices = dict(model.reference)
  choices.update({"blocks.0.attn.heads": 1, "blocks.0.mlp.width": 16, "blocks.0.mlp.fc1.nm": 204,
                  "blocks.0.attn.q.w_bits": (4, 0), "blocks.0.mlp.fc1.w_bits": (2, 0, 8, 8),
                  "blocks.0.mlp.fc2.w_bits": (0, 0, 0, 0), "blocks.0.attn.proj.w_bits": (0, 8)})
  arch = model.architecture(choices)
  s = {l.spec.name: l for l in arch.layers}
  assert s["blocks.0.attn.q"].spec.cout == 8 and s["blocks.0.attn.q"].w_bits == 4  # one head, at 4 bits
  assert "blocks.0.mlp.fc2" not in s and "blocks.0.mlp.fc1" not in s  # fc2 wholly pruned: the MLP is skipped
  assert s["blocks.0.attn.proj"].spec.cout == 8  # proj's first group (of 8 columns) pruned
  choices["blocks.0.mlp.fc2.w_bits"] = (0, 0, 0, 8)
  s = {l.spec.name: l for l in model.architecture(choices).layers}
  fc1 = s["blocks.0.mlp.fc1"]  # 16 columns of groups of 8: (2, 0) -> 8 columns at 2 bits, 8 pruned
  assert fc1.spec.cout == 8 and fc1.w_bits == 2 and fc1.spec.nm == (2, 4)
  assert s["blocks.0.mlp.fc2"].spec.cout == 4 and s["blocks.0.mlp.fc2"].w_bits == 8  # one group of 16 / 4 kept
  arch = model.architecture(choices)
  derived = build_model("vit", SPACE, arch=arch, **TINY)
  assert derived.blocks[0].attn.q.kernel[...].shape == (16, 8)
  assert derived.blocks[0].fc1.kernel[...].shape == (16, 16)
  y = forward(derived, images(), None, mode="argmax")
  assert y.shape == (4, 4) and bool(jnp.all(jnp.isfinite(y)))


def test_derived_network_keeps_the_supernets_bit_groups_when_narrower():
  """fc1's weight-bit groups are 32 / 4 = 8 columns in the supernet; a network derived at width 16 keeps groups
  of 8 (not 16 / 4 = 4), so its columns carry the bits the architecture and the cost model give them."""
  model = tiny()
  choices = dict(model.reference)
  choices.update({"blocks.0.mlp.width": 16, "blocks.0.mlp.fc1.w_bits": (2, 8, 0, 0)})
  arch = model.architecture(choices)
  fc1 = {l.spec.name: l for l in arch.layers}["blocks.0.mlp.fc1"]
  assert fc1.w_bits == (2,) * 8 + (8,) * 8  # by hand: columns 0-7 in group 0 (2 bits), 8-15 in group 1 (8 bits)
  derived = build_model("vit", SPACE, arch=arch, **TINY)
  layer = derived.blocks[0].fc1
  assert layer.group_size == 8
  sel = layer.column_weights(derived.mixing_weights("argmax", None, 1.0))
  sel = np.asarray(sel.dense(len(layer.wq.bits)) if isinstance(sel, OneHot) else sel)
  per_column = [layer.wq.bits[int(i)] for i in np.argmax(sel, axis=-1)]
  assert per_column == list(fc1.w_bits)


def test_derived_float_network_inherits_the_supernet_exactly():
  """Slicing the supernet to the chosen heads and MLP width gives its masked output: every mask sits where the
  slicing cuts (float, so no quantiser steps are re-initialised)."""
  space = SearchSpace(quantize=False, width_mults=(0.5, 1.0))
  model = tiny(space, depth=2)
  rng = np.random.default_rng(0)
  for c in model.choices.values():
    if not c.fixed:
      c.logits[...] = jnp.asarray(rng.normal(size=c.logits[...].shape), jnp.float32)
  arch = model.architecture()
  assert any(model.choices[n].values[0] == arch.choices[n] for n in arch.choices if not model.choices[n].fixed)
  derived = build_model("vit", space, arch=arch, **{**TINY, "depth": 2})
  inherit_weights(derived, model)
  x = images()
  np.testing.assert_allclose(np.asarray(forward(derived, x, None, mode="argmax")),
                             np.asarray(forward(model, x, None, mode="argmax")), rtol=1e-5, atol=1e-5)


def test_bad_args_raise():
  with pytest.raises(ValueError, match="patch=3 must divide"):
    ViT(SPACE, rngs=nnx.Rngs(0), **{**TINY, "patch": 3})
  with pytest.raises(ValueError, match="heads=3 must be >= 1 and divide"):
    ViT(SPACE, rngs=nnx.Rngs(0), **{**TINY, "heads": 3})
  with pytest.raises(ValueError, match="model.args.nm_patterns"):
    ViT(SPACE, rngs=nnx.Rngs(0), **{**TINY, "nm_patterns": [[4, 4]]})
  with pytest.raises(ValueError, match="pool='max'"):
    ViT(SPACE, rngs=nnx.Rngs(0), **{**TINY, "pool": "max"})


@pytest.mark.parametrize("shape,patch,tokens", [((8, 8, 1), 2, 17), ((28, 28, 1), 7, 17), ((32, 32, 3), 8, 17)])
def test_patch_follows_the_image_size_by_default(shape, patch, tokens):
  args = {k: v for k, v in TINY.items() if k not in ("patch", "input_shape")}
  net = ViT(SPACE, rngs=nnx.Rngs(0), input_shape=shape, **args)
  assert net.patch.spec.kernel == net.patch.spec.stride == patch and net.tokens == tokens


def test_patch_default_needs_a_square_side_divisible_by_four():
  args = {k: v for k, v in TINY.items() if k not in ("patch", "input_shape")}
  with pytest.raises(ValueError, match=r"model.args.patch=null .* 6x9"):
    ViT(SPACE, rngs=nnx.Rngs(0), input_shape=(6, 9, 1), **args)
