"""nas.deploy.c: the generated C inference is bit-exact with the NumPy integer reference (host build), on the
CV32E40P RTL too (Verilator), and refuses what its kernels do not implement in one sentence."""
import dataclasses
import shutil

import numpy as np
import pytest

from nas.deploy import c as cb
from nas.deploy import integer
from nas.deploy import exact8
from nas.models import build_model
from nas.models.space import SearchSpace
try:  # the dataset loaders' module moved (nas.train.data -> nas.train.datasets)
  from nas.train.datasets import load_digits
except ImportError:
  from nas.train.data import load_digits
from nas.train.finetune import calibrate

SPACE = dict(w_bits=(2, 4, 8), a_bits=(2, 4, 8), width_mults=(1.0,), first_layer_bits=8, last_layer_bits=8,
             channel_multiple=1, method="gumbel", hard=True, per_channel_w=True)

needs_cc = pytest.mark.skipif(shutil.which("make") is None or shutil.which("cc") is None,
                              reason="no C compiler: install one with `apt-get install -y gcc make`.")


def _network(model: str, classifier: str, x_cal: np.ndarray, input_signed: bool = False, **kwargs):
  """A calibrated (untrained) derived network with 2-, 4- and 8-bit weights per output channel, a strided
  layer and, through the skipped strided layer after it, a dilated one."""
  space = SearchSpace(**SPACE)
  sup = build_model(model, space, seed=0, classifier=classifier, input_signed=input_signed, **kwargs)
  choices = {n: max(c.values) for n, c in sup.choices.items()}
  widths = kwargs["widths"]
  choices.update({"convs.2.keep": 0, "convs.1.a_bits": 2, "convs.3.a_bits": 4,
                  "convs.1.w_bits": tuple([2, 4, 8][i % 3] for i in range(widths[1])),
                  "convs.3.w_bits": tuple([4, 2, 8, 2][i % 4] for i in range(widths[3]))})
  choices = {k: v for k, v in choices.items() if k in sup.choices}
  net = build_model(model, space, seed=0, arch=sup.architecture(choices), classifier=classifier,
                    input_signed=input_signed, **kwargs)
  calibrate(net, x_cal[:64])
  net.eval()
  return integer.from_network(net)


@pytest.fixture(scope="module")
def digits():
  return load_digits()


@pytest.fixture(scope="module")
def digits_pool(digits):
  return _network("digits_cnn", "pool", digits.x_train, widths=(6, 8, 8, 6), strides=(1, 2, 2, 1), skip=(2,))


@pytest.fixture(scope="module")
def digits_flatten_signed(digits):
  x = digits.x_train * 2.0 - 1.0  # signed input pixels: the int8 input path
  return _network("digits_cnn", "flatten", x, input_signed=True, widths=(6, 8, 8, 6), strides=(1, 2, 2, 1),
                  skip=(2,))


def _check_layers(inet):
  bits = set(np.concatenate([l.w_bits for l in inet.layers]).tolist())
  assert {2, 4, 8} <= bits
  assert any(l.stride > 1 and l.dilation == 1 for l in inet.layers)
  assert any(l.dilation > 1 for l in inet.layers)


def _host_logits(inet, x, tmp_path):
  out = cb.write_c(inet, tmp_path / "c")
  cb.build_host(out)
  return cb.run_host(out, cb.quantize_images(inet, x))


@needs_cc
def test_host_build_is_bit_exact_on_digits_with_global_pooling(digits_pool, digits, tmp_path):
  _check_layers(digits_pool)
  x = digits.x_test
  assert len(x) >= 200
  acc, _ = integer.run(digits_pool, x)
  np.testing.assert_array_equal(_host_logits(digits_pool, x, tmp_path), acc)


@needs_cc
def test_host_build_is_bit_exact_with_signed_input_and_a_flattening_classifier(digits_flatten_signed, digits,
                                                                               tmp_path):
  inet = digits_flatten_signed
  _check_layers(inet)
  assert inet.layers[0].in_signed and inet.layers[-1].kind == "conv" and inet.layers[-1].kernel == 2
  x = digits.x_test * 2.0 - 1.0
  acc, _ = integer.run(inet, x)
  np.testing.assert_array_equal(_host_logits(inet, x, tmp_path), acc)


@needs_cc
def test_host_build_is_bit_exact_on_int8_kernels_with_half_to_even_pooling(digits_pool, digits, tmp_path):
  inet = exact8.int8_kernels(digits_pool)
  assert inet.pool.half_even
  acc, _ = integer.run(inet, digits.x_test)
  np.testing.assert_array_equal(_host_logits(inet, digits.x_test, tmp_path), acc)


@needs_cc
def test_host_build_is_bit_exact_on_fmnist_cnn_with_a_skipped_layer(tmp_path):
  rng = np.random.default_rng(0)
  x = rng.uniform(0.0, 1.0, (200, 28, 28, 1)).astype(np.float32) ** 2
  inet = _network("fmnist_cnn", "flatten", x, widths=(8, 12, 8, 10), strides=(2, 1, 2, 1), skip=(2,))
  assert [l.name for l in inet.layers] == ["convs.0", "convs.1", "convs.3", "head"]
  assert inet.layers[2].dilation == 2 and inet.layers[0].stride == 2
  acc, _ = integer.run(inet, x)
  np.testing.assert_array_equal(_host_logits(inet, x, tmp_path), acc)


def test_ping_pong_buffers_are_sized_to_the_peak(digits_pool):
  h, c = cb.emit.network_sources(digits_pool)
  st = cb.stages(digits_pool)
  assert [s.kind for s in st] == ["conv", "conv", "conv", "pool", "dense"]
  sizes = {l.split()[1]: int(l.split()[2]) for l in h.splitlines() if l.startswith("#define HW_BUF")}
  assert sizes["HW_BUF0_BYTES"] == max(st[0].out_bytes, st[2].out_bytes)  # 8x8x6 u8, 2x2x6 int32
  assert sizes["HW_BUF1_BYTES"] == max(st[1].out_bytes, st[3].out_bytes)
  assert "malloc" not in c


def test_unsupported_bit_widths_and_layers_are_refused_in_one_sentence(digits_pool, tmp_path):
  l = digits_pool.layers[1]
  one_bit = dataclasses.replace(digits_pool, layers=(digits_pool.layers[0], dataclasses.replace(
      l, w_bits=np.where(np.arange(len(l.w_bits)) == 0, 1, l.w_bits)), *digits_pool.layers[2:]))
  with pytest.raises(ValueError, match=r"^layer convs.1: weights of 1 bits have no C kernel; [^.]*\.$"):
    cb.write_c(one_bit, tmp_path)
  wide = dataclasses.replace(digits_pool, layers=(dataclasses.replace(digits_pool.layers[0], in_bits=16),
                                                  *digits_pool.layers[1:]))
  with pytest.raises(ValueError, match=r"^layer convs.0: 16-bit input activations have no C kernel"):
    cb.write_c(wide, tmp_path)
  odd = dataclasses.replace(digits_pool, layers=(*digits_pool.layers[:-1],
                                                 dataclasses.replace(digits_pool.layers[-1], kind="attention")))
  with pytest.raises(ValueError, match=r"^layer head: kind 'attention' has no C kernel"):
    cb.write_c(odd, tmp_path)


@pytest.mark.skipif(bool(cb.missing_tools()), reason=f"RISC-V tools missing ({', '.join(cb.missing_tools())}); "
                    f"install with: {cb.INSTALL_HINT}.")
def test_riscv_build_on_the_cv32e40p_rtl_is_bit_exact_and_counts_cycles(digits_pool, digits, tmp_path):
  x = digits.x_test[:20]
  out = cb.write_c(digits_pool, tmp_path / "c", images=x)
  r = cb.simulate(out)
  acc, _ = integer.run(digits_pool, x)
  np.testing.assert_array_equal(r["logits"], acc)
  assert r["stages"] == ["convs.0", "convs.1", "convs.3", "pool", "head"]
  assert r["cycles"].shape == (20, 5) and (r["cycles"] > 0).all()
  # end to end = the stages plus a few cycles of bookkeeping; the whole run (start-up and copies included)
  # is the testbench's own clock count, a check of mcycle itself
  assert (r["total"] >= r["cycles"].sum(1)).all() and (r["total"] - r["cycles"].sum(1) < 200).all()
  assert r["total"].sum() <= r["sim_cycles"] <= r["total"].sum() * 1.02 + 5000


@pytest.mark.skipif(bool(cb.missing_tools()), reason=f"RISC-V tools missing ({', '.join(cb.missing_tools())}); "
                    f"install with: {cb.INSTALL_HINT}.")
def test_pulp_simd_build_is_bit_exact_and_faster(digits_pool, digits, tmp_path):
  """cv.sdotusp.b on the COREV_PULP=1 core: convs.3 (8 input channels) takes the SIMD path, convs.1 (6) not."""
  x = digits.x_test[20:40]
  out = cb.write_c(digits_pool, tmp_path / "c", images=x)
  simd = cb.simulate(out, pulp=True)
  acc, _ = integer.run(digits_pool, x)
  np.testing.assert_array_equal(simd["logits"], acc)
  plain = cb.simulate(out)
  np.testing.assert_array_equal(plain["logits"], acc)
  i = simd["stages"].index("convs.3")
  assert simd["cycles"][:, i].mean() < 0.8 * plain["cycles"][:, i].mean()
