"""ResNet-20 and MobileNetV2 supernets (nas/models/resnet.py, nas/models/mobilenet.py).

The topology checks do not trust the models' own bookkeeping: ``resnet_graph`` and ``mobilenet_graph`` write
out, from the papers' descriptions, which layer's output each layer reads and which outputs are summed, and
the architecture's channel counts, resolutions, signedness and choice keys are checked against that. The
strongest check is weight inheritance: the derived network, sliced from the supernet, must give the
supernet's argmax logits, which holds only if every width mask sits where the slicing cuts.
"""
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hydra.utils import instantiate
from omegaconf import OmegaConf

from nas.search import cost
from nas.models.mobilenet import MobileNetV2
from nas.models.resnet import ResNet20
from nas.models.space import SearchSpace
from nas.train.finetune import calibrate, inherit_weights

CONF = pathlib.Path(__file__).resolve().parents[3] / "conf"
RISCV_YAML = CONF / "hardware" / "riscv.yaml"
SPACE = SearchSpace(w_bits=(2, 4, 8), a_bits=(4, 8), width_mults=(0.5, 1.0, 1.5))
MOBILENET_DEFAULT_STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 2, 2), (6, 64, 2, 2))  # the class defaults
# Small enough for eager CPU runs, large enough for every kind of edge: identity residuals tied to the stem
# and within a stage, a projection shortcut, a t = 1 block, a stride-2 block.
SMALL_STAGES = ((1, 4, 1, 1), (6, 8, 2, 2))
CASES = {
    "resnet20": (ResNet20, dict(num_classes=7, input_shape=(8, 8, 1), widths=(4, 8), blocks_per_stage=2)),
    "mobilenetv2": (MobileNetV2, dict(num_classes=7, input_shape=(16, 16, 3), stages=SMALL_STAGES,
                                      stem_width=4, last_width=8)),
}
# Structure-only cases (never run forward): a residual tied across stages (a stride-1 stage of equal width);
# t = 1 after a linear bottleneck, so the depthwise layer reads a signed tensor; a stride-1 width change.
STRUCTURE_CASES = {**CASES, "mobilenetv2_late_t1": (MobileNetV2, dict(
    num_classes=7, input_shape=(16, 16, 3), stages=((6, 4, 1, 1), (1, 4, 2, 1), (6, 8, 1, 2), (1, 12, 1, 1)),
    stem_width=8, last_width=8))}


@pytest.fixture(autouse=True, scope="module")
def cheap_weight_init():
  """QLayer draws its init with jax.random.normal, compiled once per kernel shape; the partitionable
  threefry (JAX's default) costs ~1 s of compile per shape on a busy 2-core machine, the classic one ~4x
  less. The values differ, which none of these tests depend on."""
  with jax.threefry_partitionable(False):
    yield


# ---------------------------------------------------------------------------------------------- topology
def resnet_graph(n_stages, blocks_per_stage):
  """(layer -> the layer whose output it reads (None: the image), residual sums as pairs of layers).

  He et al. §4.2: stem, then per block conv1 <- block input, conv2 <- conv1, and conv2 + (block input, or a
  1x1 projection of it at the first block of stages 2.. where the resolution halves); the head reads the last.
  """
  reads, sums, x, i = {"stem": None}, [], "stem", 0
  for s in range(n_stages):
    for b in range(blocks_per_stage):
      p = f"blocks.{i}"
      reads[f"{p}.conv1"], reads[f"{p}.conv2"] = x, f"{p}.conv1"
      if s > 0 and b == 0:
        reads[f"{p}.shortcut"] = x
        sums.append((f"{p}.conv2", f"{p}.shortcut"))
      else:
        sums.append((f"{p}.conv2", x))
      x, i = f"{p}.conv2", i + 1
  reads["head"] = x
  return reads, sums


def mobilenet_graph(stages, stem_width):
  """Same for MobileNetV2 (Sandler et al.): [expand <- input], dw <- expand (or input when t = 1),
  project <- dw, project + input when stride 1 and equal base channels; then last <- x, head <- last."""
  reads, sums, x, base, i = {"stem": None}, [], "stem", stem_width, 0
  for t, c, n, s in stages:
    for b in range(n):
      p = f"blocks.{i}"
      h = x
      if t != 1:
        reads[f"{p}.expand"], h = x, f"{p}.expand"
      reads[f"{p}.dw"], reads[f"{p}.project"] = h, f"{p}.dw"
      if (s if b == 0 else 1) == 1 and base == c:
        sums.append((f"{p}.project", x))
      x, base, i = f"{p}.project", c, i + 1
  reads["last"], reads["head"] = x, "last"
  return reads, sums


def graph_of(cls, model_kwargs):
  if cls is ResNet20:
    return resnet_graph(len(model_kwargs.get("widths", (16, 32, 64))), model_kwargs.get("blocks_per_stage", 3))
  return mobilenet_graph(model_kwargs.get("stages", MOBILENET_DEFAULT_STAGES), model_kwargs.get("stem_width", 32))


def abstract(cls, space=SPACE, **kwargs):
  """The model's structure without computing any weights (fast at full size)."""
  return nnx.eval_shape(lambda: cls(space, rngs=nnx.Rngs(0), **kwargs))


def random_choices(model, seed):
  rng = np.random.default_rng(seed)
  return {n: c.values[int(rng.integers(len(c.values)))] for n, c in model.choices.items()}


def check_chain(arch, reads, sums, input_channels):
  """Each layer's cin is the cout of the layer it reads, its input resolution that layer's output
  resolution (the head reads after the global pool), and both sides of a residual sum agree."""
  by_name = {l.spec.name: l.spec for l in arch.layers}
  assert list(by_name) == list(reads), "layers not in forward order"
  for name, src in reads.items():
    spec = by_name[name]
    if spec.kind == "dwconv":
      assert spec.cout == spec.cin, name
    if src is None:
      assert spec.cin == input_channels, name
      continue
    assert spec.cin == by_name[src].cout, (name, src)
    if spec.kind != "dense":
      assert (spec.in_h, spec.in_w) == (by_name[src].out_h, by_name[src].out_w), (name, src)
  for a, b in sums:
    assert by_name[a].cout == by_name[b].cout, (a, b)
    assert (by_name[a].out_h, by_name[a].out_w) == (by_name[b].out_h, by_name[b].out_w), (a, b)


# ---------------------------------------------------------------------------------------------- tests
@pytest.mark.parametrize("name", sorted(STRUCTURE_CASES) + ["resnet20_default", "mobilenetv2_default"])
def test_residual_sums_share_one_width_choice_and_channels_chain(name):
  cls, kwargs = STRUCTURE_CASES[name] if name in STRUCTURE_CASES else (CASES[name.split("_")[0]][0], {})
  model = abstract(cls, **kwargs)
  reads, sums = graph_of(cls, kwargs)
  assert sums
  layers = {l.spec.name: l for l in model.qlayers()}
  assert list(layers) == list(reads)
  for a, b in sums:
    assert layers[a].keys.cout is not None and layers[a].keys.cout == layers[b].keys.cout, (a, b)
  # The image has `input_shape[-1]` channels; 3 for the defaults.
  channels = kwargs.get("input_shape", (32, 32, 3))[-1]
  check_chain(model.reference_architecture(), reads, sums, channels)
  for seed in range(5):
    check_chain(model.architecture(random_choices(model, seed)), reads, sums, channels)


@pytest.mark.parametrize("name", sorted(STRUCTURE_CASES))
def test_signed_inputs_exactly_where_the_producer_has_no_relu(name):
  """MobileNetV2's projections are linear (signed output); every other layer ends in ReLU/ReLU6."""
  cls, kwargs = STRUCTURE_CASES[name]
  for input_signed in (False, True):
    model = abstract(cls, input_signed=input_signed, **kwargs)
    reads, _ = graph_of(cls, kwargs)
    for layer in model.qlayers():
      src = reads[layer.spec.name]
      want = input_signed if src is None else src.endswith(".project")
      assert layer.aq.signed == want, layer.spec.name


def test_resnet20_reference_macs_by_hand():
  # ResNet-20 at 32x32x3, base widths 16/32/64, 'SAME' padding; MACs = out_h * out_w * k * k * cin * cout.
  #   stem:                             32*32*9*3*16       =    442,368
  #   stage 1: 6 convs                  6 * 32*32*9*16*16  = 14,155,776
  #   stage 2: first conv (stride 2)    16*16*9*16*32      =  1,179,648
  #            5 convs                  5 * 16*16*9*32*32  = 11,796,480
  #            1x1 projection (stride 2) 16*16*16*32       =    131,072
  #   stage 3: first conv (stride 2)    8*8*9*32*64        =  1,179,648
  #            5 convs                  5 * 8*8*9*64*64    = 11,796,480
  #            1x1 projection (stride 2) 8*8*32*64         =    131,072
  #   head:    dense 64 -> 10                              =        640
  # Total 40,813,184. Without the two projections (option A, zero-padded identity) it is 40,551,040: the
  # well-known "~40.55 M" / "41 M" figure for ResNet-20, which this option-B network exceeds by 262,144.
  by_hand = (32 * 32 * 9 * 3 * 16 + 6 * 32 * 32 * 9 * 16 * 16 + 16 * 16 * 9 * 16 * 32 + 5 * 16 * 16 * 9 * 32 * 32
             + 16 * 16 * 16 * 32 + 8 * 8 * 9 * 32 * 64 + 5 * 8 * 8 * 9 * 64 * 64 + 8 * 8 * 32 * 64 + 64 * 10)
  assert by_hand == 40_813_184 == 40_551_040 + 2 * 131_072
  ref = abstract(ResNet20).reference_architecture()
  assert len(ref.layers) == 22  # 19 convs + 2 projections + the dense head ("20" counts convs + head)
  assert cost.architecture_metrics(ref)["macs"] == by_hand


def test_mobilenetv2_reference_macs_by_hand():
  # Defaults at 32x32x3: stem 32, stages (t, c, n, s) (1,16,1,1) (6,24,2,2) (6,32,2,2) (6,64,2,2), last 256.
  # Pointwise/dense: out_h*out_w*cin*cout; depthwise: out_h*out_w*9*channels.
  by_hand = [
      32 * 32 * 9 * 3 * 32,                                                # stem
      32 * 32 * 9 * 32, 32 * 32 * 32 * 16,                                 # block 0 (t=1): dw, project
      32 * 32 * 16 * 96, 16 * 16 * 9 * 96, 16 * 16 * 96 * 24,             # block 1: stride 2
      16 * 16 * 24 * 144, 16 * 16 * 9 * 144, 16 * 16 * 144 * 24,          # block 2: residual
      16 * 16 * 24 * 144, 8 * 8 * 9 * 144, 8 * 8 * 144 * 32,              # block 3: stride 2
      8 * 8 * 32 * 192, 8 * 8 * 9 * 192, 8 * 8 * 192 * 32,                # block 4: residual
      8 * 8 * 32 * 192, 4 * 4 * 9 * 192, 4 * 4 * 192 * 64,                # block 5: stride 2
      4 * 4 * 64 * 384, 4 * 4 * 9 * 384, 4 * 4 * 384 * 64,                # block 6: residual
      4 * 4 * 64 * 256, 256 * 10]                                          # last 1x1, head
  ref = abstract(MobileNetV2).reference_architecture()
  assert [float(l.spec.macs()) for l in ref.layers] == by_hand
  assert cost.architecture_metrics(ref)["macs"] == sum(by_hand) == 10_072_576


@pytest.mark.parametrize("name", sorted(CASES))
def test_model_config_builds_the_class_it_names(name):
  """conf/model/<name>.yaml: its args are the class's keyword arguments, passed as the app passes them."""
  cfg = OmegaConf.load(CONF / "model" / f"{name}.yaml")
  cls, _ = CASES[name]
  assert cfg.name == cls.name == name
  model = abstract(cls, **dict(cfg.args), num_classes=10, input_shape=(8, 8, 1))
  assert model.qlayers()[-1].spec.cout == 10


@pytest.fixture(scope="module")
def supernets():
  """One quantised supernet per model, built once: construction compiles the weight init per kernel shape."""
  return {name: cls(SPACE, rngs=nnx.Rngs(0), **kwargs) for name, (cls, kwargs) in CASES.items()}


@pytest.mark.parametrize("name", sorted(CASES))
def test_forward_in_every_mode(name, supernets):
  _, kwargs = CASES[name]
  x = jax.random.normal(jax.random.key(1), (2, *kwargs["input_shape"]))
  for mode in ("sample", "expected", "argmax"):
    y = supernets[name](x, mode=mode, key=jax.random.key(2), tau=1.0)
    assert y.shape == (2, kwargs["num_classes"]) and bool(jnp.all(jnp.isfinite(y))), mode


@pytest.mark.parametrize("name", sorted(CASES))
def test_cost_tables_give_the_architecture_cost_at_one_hot_choices(name, supernets):
  hw = instantiate(OmegaConf.load(RISCV_YAML), _convert_="all")
  model = supernets[name]
  tables = cost.build_cost_tables(model, hw)
  arrays = cost.table_arrays(tables, cost.METRICS)
  uniform = cost.expected_costs(tables, arrays, model.probs())
  assert all(np.isfinite(float(v)) and float(v) > 0 for v in uniform.values())
  for seed in range(3):
    choices = random_choices(model, seed)
    one_hot = {n: jnp.asarray(np.asarray(c.values) == choices[n], jnp.float32) for n, c in model.choices.items()}
    expected = cost.expected_costs(tables, arrays, one_hot)
    arch = model.architecture(choices)
    true = {**cost.architecture_cost(arch, hw), "weight_bytes": cost.architecture_metrics(arch)["weight_bytes"]}
    for m in cost.METRICS:
      assert float(expected[m]) == pytest.approx(true[m], rel=1e-5), (m, seed)


def randomize_batchnorm(model, seed):
  """Non-trivial running statistics and affine parameters, so eval-mode BN slicing is exercised."""
  rng = np.random.default_rng(seed)
  for _, m in model.iter_modules():
    if isinstance(m, nnx.BatchNorm):
      n = m.mean[...].shape
      m.mean[...] = jnp.asarray(rng.normal(0, 0.3, n), jnp.float32)
      m.var[...] = jnp.asarray(rng.uniform(0.5, 1.5, n), jnp.float32)
      m.scale[...] = jnp.asarray(rng.uniform(0.5, 1.5, n), jnp.float32)
      m.bias[...] = jnp.asarray(rng.normal(0, 0.3, n), jnp.float32)


def copy_chosen_steps(derived, supernet, choices):
  """The supernet's LSQ steps of the chosen bit-widths, sliced to the derived widths.

  inherit_weights re-initialises steps by design (the supernet holds one per candidate); copying them here
  makes the derived network compute exactly what the supernet computes in argmax mode.
  """
  for src, dst in zip(supernet.qlayers(), derived.qlayers()):
    w = src.wq.bits.index(choices[src.keys.w_bits])
    dst.wq.step[...] = src.wq.step[w:w + 1, :dst.spec.cout]
    a = src.aq.bits.index(choices[src.keys.a_bits])
    dst.aq.step[...] = src.aq.step[a:a + 1]


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("quantize,pick", [(False, "smallest"), (True, "random")])
def test_derived_network_with_inherited_weights_gives_the_supernets_argmax_logits(name, quantize, pick, supernets):
  """The derived network (``arch=``) has the architecture's layers, and pruned channels reach the output only
  through the kept ones: with the supernet's weights, BN statistics and (quantised) the chosen LSQ steps,
  sliced, it reproduces the supernet's argmax-mode logits in eval mode. Float: the smallest width everywhere
  (the most pruning). Quantised: random bits and widths, expansions (1.5x) included, after an LSQ
  calibration of the supernet."""
  cls, kwargs = CASES[name]
  if quantize:
    space, supernet = SPACE, nnx.clone(supernets[name])
  else:
    space = SearchSpace(quantize=False, width_mults=SPACE.width_mults)
    supernet = cls(space, rngs=nnx.Rngs(0), **kwargs)
  x = jax.random.normal(jax.random.key(5), (4, *kwargs["input_shape"]))
  choices = (random_choices(supernet, seed=6) if pick == "random"
             else {n: c.values[0] for n, c in supernet.choices.items()})
  for n, c in supernet.choices.items():
    c.logits[...] = jnp.asarray(np.asarray(c.values) == choices[n], jnp.float32)
  assert supernet.derive() == choices
  if quantize:
    calibrate(supernet, x, mode="argmax")
  randomize_batchnorm(supernet, seed=7)
  arch = supernet.architecture(choices)
  derived = cls(space, rngs=nnx.Rngs(1), arch=arch, **kwargs)
  assert all(c.fixed for c in derived.choices.values())
  assert derived.architecture() == arch
  assert [l.spec for l in derived.qlayers()] == [l.spec for l in arch.layers]
  inherit_weights(derived, supernet)
  if quantize:
    copy_chosen_steps(derived, supernet, choices)
  supernet.eval()
  derived.eval()
  want = supernet(x, mode="argmax")
  got = derived(x, mode="argmax")
  assert got.shape == (4, kwargs["num_classes"])
  assert float(jnp.std(want)) > 1e-3  # not a degenerate (all-zero) network
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-4, atol=1e-4)
