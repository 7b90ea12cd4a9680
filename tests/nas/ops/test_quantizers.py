"""The quantiser extension point (nas/ops/quantizers): PACT's numerics by hand and against NumPy, a conformance
test every registered quantiser passes, and PACT through the layers (one-hot path, optimiser, selection)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from nas.models import build_model
from nas.models.space import SearchSpace
from nas.ops import layers, quant, quantizers
from nas.ops.quantizers import pact
from nas.train.finetune import calibrate, weights_optimizer


def _vjp(f, x, a, g=None):
  out, vjp = jax.vjp(f, jnp.asarray(x, jnp.float32), jnp.asarray(a, jnp.float32))
  gx, ga = vjp(jnp.ones_like(out) if g is None else jnp.asarray(g, jnp.float32))
  return np.asarray(out), np.asarray(gx), np.asarray(ga)


# --- PACT by hand ----------------------------------------------------------------------------------------------

def test_pact_unsigned_by_hand():
  # 2 bits unsigned: Q_P = 3; alpha = 3 -> step 1. clip(x, 0, 3) = [0, 0, .5, 1.5, 2.5, 2.9, 3, 3];
  # round half to even: .5 -> 0, 1.5 -> 2, 2.5 -> 2. Gradient to x: 1 on [0, alpha), 0 elsewhere (x = alpha
  # included: PACT's dy/dx is 0 for x >= alpha); to alpha: 1 where x >= alpha (x = 3 and 4), 0 inside.
  x = [-1.0, 0.0, 0.5, 1.5, 2.5, 2.9, 3.0, 4.0]
  out, gx, ga = _vjp(lambda x, a: pact.quantize(x, a, 0, 3, 1.0), x, 3.0)
  np.testing.assert_array_equal(out, [0, 0, 0, 2, 2, 3, 3, 3])
  np.testing.assert_array_equal(gx, [0, 1, 1, 1, 1, 1, 0, 0])
  assert float(ga) == 2.0


def test_pact_signed_by_hand():
  # 2 bits signed: [-Q_N, Q_P] = [-2, 1]; alpha = 1 -> step 1, range [-2, 1]. clip -> [-2, -2, -1.5, -.5, .5, 1, 1],
  # round half to even -> [-2, -2, -2, 0, 0, 1, 1]. Gradient to alpha: -Q_N / Q_P = -2 below -2 (x = -3), 1 at and
  # above alpha (x = 1, 2); with upstream g = 1..7: -2 * 1 + 6 + 7 = 11.
  x = [-3.0, -2.0, -1.5, -0.5, 0.5, 1.0, 2.0]
  g = [1, 2, 3, 4, 5, 6, 7]
  out, gx, ga = _vjp(lambda x, a: pact.quantize(x, a, 2, 1, 1.0), x, 1.0, g)
  np.testing.assert_array_equal(out, [-2, -2, -2, 0, 0, 1, 1])
  np.testing.assert_array_equal(gx, [0, 2, 3, 4, 5, 0, 0])
  assert float(ga) == 11.0


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("alpha", [0.7, 1.5, 6.0])
def test_pact_matches_numpy(bits, alpha):
  # y = round(clip(x, 0, alpha) / s) s with s = alpha / (2^b - 1), in float32 as the integer export computes it.
  rng = np.random.default_rng(bits)
  x = rng.normal(1.0, 2.0, (64, 5)).astype(np.float32)
  qp = 2 ** bits - 1
  s = np.float32(alpha) / np.float32(qp)
  ref = np.round(np.clip(x / s, 0, qp)) * s
  out, gx, ga = _vjp(lambda x, a: pact.quantize(x, a, 0, qp, 1.0), x, alpha)
  np.testing.assert_array_equal(out, ref)
  np.testing.assert_array_equal(gx, ((x >= 0) & (x < np.float32(alpha))).astype(np.float32))
  np.testing.assert_allclose(float(ga), float(np.sum(x >= np.float32(alpha))), rtol=1e-6)
  # The paper's form, round(clip(x, 0, alpha) (2^b - 1) / alpha) alpha / (2^b - 1), to float32 rounding.
  paper = np.round(np.clip(x, 0, alpha) * qp / alpha) * alpha / qp
  assert np.mean(np.isclose(out, paper, atol=1e-6)) > 0.99


def test_pact_grad_scale_and_out_scale():
  x = jnp.asarray([0.5, 2.0, 5.0])
  _, _, ga = _vjp(lambda x, a: pact.quantize(x, a, 0, 3, 0.25), x, 1.5)
  assert float(ga) == 0.5  # two elements at or above alpha, times 0.25
  out = pact.quantize(x, jnp.float32(1.5), 0, 3, 1.0, out_scale=jnp.float32(2.0))
  np.testing.assert_array_equal(np.asarray(out), 2 * np.asarray(pact.value(x, jnp.float32(1.5), 0, 3)))


def test_pact_init():
  x = jnp.asarray(np.random.default_rng(0).normal(size=(3, 3, 2, 4)), jnp.float32)
  assert float(pact.init(x, 4, False)) == pact.ALPHA_INIT
  np.testing.assert_allclose(np.asarray(pact.init(x, 4, True, (0, 1, 2), "weight")),
                             np.max(np.abs(np.asarray(x)), axis=(0, 1, 2)), rtol=1e-6)


# --- Every registered quantiser --------------------------------------------------------------------------------

@pytest.fixture(params=sorted(quantizers.names()))
def q(request):
  return quantizers.get(request.param)


@pytest.mark.parametrize("bits,signed", [(2, False), (4, True), (8, False), (8, True)])
def test_conformance(q, bits, signed):
  rng = np.random.default_rng(bits)
  x = jnp.asarray(rng.normal(0.5, 1.0, (16, 6)), jnp.float32)
  qn, qp = quant.qrange(bits, signed)
  for param, axis in ((q.init(x, bits, signed, None, "activation"), None),
                      (q.init(x, bits, signed, (0,), "weight"), (0,))):
    # init: positive, one per tensor or per channel
    assert param.shape == (() if axis is None else (6,))
    assert bool(jnp.all(param > 0))
    out = q.quantize(x, param, qn, qp, q.grad_scale(x.size, qp))
    assert out.shape == x.shape and out.dtype == jnp.float32
    # value only == the forward; both on the integer grid of the step, within [-qn, qp]
    np.testing.assert_array_equal(np.asarray(out), np.asarray(q.value(x, param, qn, qp)))
    s = np.asarray(q.step(param, qn, qp), np.float32)
    ints = np.round(np.clip(np.asarray(x) / s, -qn, qp))
    np.testing.assert_array_equal(np.asarray(out), ints * s)
    # straight-through: gradient 1 to x well inside the range, 0 well outside
    gx = np.asarray(jax.grad(lambda x: jnp.sum(q.quantize(x, param, qn, qp, 1.0)))(x))
    v = np.asarray(x) / s
    inside, outside = (v > -qn + 0.5) & (v < qp - 0.5), (v < -qn - 0.5) | (v > qp + 0.5)
    np.testing.assert_allclose(gx[inside], 1.0, rtol=1e-6)  # LSQ: (1 / s) s, to float32 rounding
    assert inside.any() and np.all(gx[outside] == 0)
    # the parameter gets a finite gradient
    ga = jax.grad(lambda a: jnp.sum(q.quantize(x, a, qn, qp, 1.0) ** 2))(param)
    assert ga.shape == param.shape and bool(jnp.all(jnp.isfinite(ga)))
  # positive on an all-zero tensor too
  assert bool(jnp.all(q.init(jnp.zeros((4, 3)), bits, signed, (0,), "weight") > 0))
  assert bool(jnp.all(q.init(jnp.zeros((4, 3)), bits, signed, None, "activation") > 0))
  # gradient scale: a float for an int Q_P, float32 for an array
  assert isinstance(q.grad_scale(100, qp), float)
  table = q.grad_scale(100, np.asarray([qp, 3.0], np.float32))
  assert table.dtype == np.float32 and table.shape == (2,)


def test_conformance_range_form_under_jit(q):
  # The SDQ / one-hot path: range, gradient scale and out_scale traced; a pruned candidate (0, 0) gives zeros.
  x = jnp.asarray(np.random.default_rng(1).normal(size=(8, 5)), jnp.float32)
  param = q.init(x, 4, True, (0,), "weight")
  qn, qp = quant.qrange(4, True)
  f = jax.jit(lambda x, a, qn, qp, g: q.quantize(x, a, qn, qp, g, out_scale=jnp.float32(1.0)))
  traced = f(x, param, jnp.float32(qn), jnp.float32(qp), jnp.float32(1.0))
  np.testing.assert_array_equal(np.asarray(traced), np.asarray(q.quantize(x, param, qn, qp, 1.0)))
  z, (gx, ga) = jax.value_and_grad(lambda x, a: jnp.sum(f(x, a, jnp.float32(0), jnp.float32(0), jnp.float32(0))),
                                   (0, 1))(x, param)
  assert float(z) == 0.0 and bool(jnp.all(jnp.isfinite(gx))) and bool(jnp.all(jnp.isfinite(ga)))


def test_registry_errors():
  with pytest.raises(ValueError, match=r"search\.quantizer='nope' is unknown; use one of \['lsq', 'pact'"):
    SearchSpace(quantizer="nope")
  with pytest.raises(TypeError, match="lacks"):
    quantizers.register(type("Half", (), {"name": "half"})())
  with pytest.raises(ValueError, match="registered twice"):
    quantizers.register(type("Other", (), {f: None for f in ("name", "step_decay", "init", "quantize", "value",
                                                               "grad_scale", "step")} | {"name": "lsq"})())
  assert "lsq" in quantizers.names() and "pact" in quantizers.names()


# --- PACT in the layers ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["gumbel", "sdq"])
def test_pact_onehot_path_equals_full_mix(method, onehot_matches_full_mix):
  # As tests/nas/ops/test_onehot.py for LSQ: the tap's hand-written backward pass uses PACT's step.
  space = SearchSpace(method=method, per_channel_w=True, first_layer_bits=None, w_bits=(2, 3, 4, 8),
                      quantizer="pact")
  model = build_model("digits_cnn", space, widths=(8, 16), strides=(1, 2))
  rng = np.random.default_rng(0)
  for choice in model.choices.values():
    if not choice.fixed:
      shape = choice.logits[...].shape
      value = rng.uniform(2.0, 8.0, shape) if method == "sdq" and shape[-1:] != (4,) else rng.normal(size=shape)
      choice.logits[...] = jnp.asarray(value, jnp.float32)
  x = jnp.asarray(rng.uniform(0, 1, (4, 8, 8, 1)), jnp.float32)
  calibrate(model, x, mode="expected")
  assert {m.quantizer for _, m in model.iter_modules() if isinstance(m, (layers.WeightQuantizer,
                                                                        layers.ActQuantizer))} == {"pact"}
  for _, m in model.iter_modules():  # alphas near the activations' scale, so that every bit-width matters
    if isinstance(m, layers.ActQuantizer) and m.bits is not None:
      m.step[...] = jnp.full_like(m.step[...], 1.0)
  model.eval()
  onehot_matches_full_mix(model, x)


def test_bind_and_using_select_the_quantizer():
  space = SearchSpace(quantizer="pact", w_bits=(4,), a_bits=(4,), width_mults=(1.0,))
  with quantizers.using("pact"):
    built = build_model("digits_cnn", space, widths=(4, 4), strides=(1, 2))
  conv = built.convs[1]
  np.testing.assert_allclose(np.asarray(conv.wq.step[...])[0], np.max(np.abs(np.asarray(conv.kernel[...])),
                                                                       axis=(0, 1, 2)), rtol=1e-6)
  plain = build_model("digits_cnn", space, widths=(4, 4), strides=(1, 2))  # build_model binds the space's
  assert plain.convs[1].wq.quantizer == "pact" and plain.convs[1].aq.quantizer == "pact"  # quantiser itself
  np.testing.assert_array_equal(np.asarray(plain.convs[1].wq.step[...]), np.asarray(conv.wq.step[...]))
  with quantizers.using("lsq"):  # a network built under another quantiser (a model class used directly) ...
    other = type(plain)(space, rngs=nnx.Rngs(0), widths=(4, 4), strides=(1, 2))
  assert other.convs[1].wq.quantizer == "lsq"
  assert layers.bind_quantizer(other) == "pact"  # ... is bound to its space's quantiser, weights re-initialised
  assert other.convs[1].wq.quantizer == "pact" and other.convs[1].aq.quantizer == "pact"
  np.testing.assert_array_equal(np.asarray(other.convs[1].wq.step[...]), np.asarray(conv.wq.step[...]))


def test_pact_alpha_gets_l2_in_the_optimizer():
  # PACT's lambda_alpha: with no task gradient (a zero loss) only the L2 term moves alpha, downwards.
  space = SearchSpace(quantizer="pact", w_bits=(4,), a_bits=(4,), width_mults=(1.0,))
  model = build_model("digits_cnn", space, widths=(4, 4), strides=(1, 2))
  opt = weights_optimizer(model, 1e-2, 1e-4)
  before = np.asarray(model.head.aq.step[...]).copy()
  grads = nnx.grad(lambda m: 0.0 * jnp.sum(m.head.kernel[...]))(model)
  opt.update(model, grads)
  after = np.asarray(model.head.aq.step[...])
  assert np.all(after < before)
  np.testing.assert_allclose(after, before * np.exp(-1e-2), rtol=1e-3)  # log-domain Adam: ~lr relative
  # LSQ's steps get none
  lsq_model = build_model("digits_cnn", SearchSpace(w_bits=(4,), a_bits=(4,), width_mults=(1.0,)),
                          widths=(4, 4), strides=(1, 2))
  opt = weights_optimizer(lsq_model, 1e-2, 1e-4)
  before = np.asarray(lsq_model.head.aq.step[...]).copy()
  opt.update(lsq_model, nnx.grad(lambda m: 0.0 * jnp.sum(m.head.kernel[...]))(lsq_model))
  np.testing.assert_array_equal(np.asarray(lsq_model.head.aq.step[...]), before)
