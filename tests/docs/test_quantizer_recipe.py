"""docs/extending/quantizer.md runs as written: its module registers a quantiser, its code trains a tiny
supernet with it for one step; the new quantiser passes the checks every quantiser must.

As tests/docs/test_recipes.py does for the other pages: a block after ``<!-- file: PATH -->`` under ``nas/`` is
imported as that package's module, every other ```python block runs in one namespace, ```bash blocks are not
run; the registry and the imported module are restored afterwards."""
import pathlib
import re
import sys
import types

import jax.numpy as jnp
import numpy as np
import pytest

from nas.ops import quant, quantizers

REPO = pathlib.Path(__file__).resolve().parents[2]
BLOCK = re.compile(r"(?:<!-- file: (?P<path>\S+) -->\n)?```(?P<lang>\w*)\n(?P<code>.*?)^```", re.S | re.M)


@pytest.fixture
def recipe():
  text = (REPO / "docs" / "extending" / "quantizer.md").read_text()
  saved, modules = dict(quantizers.REGISTRY), set(sys.modules)
  yield [(m["path"], m["lang"], m["code"]) for m in BLOCK.finditer(text)]
  quantizers.REGISTRY.clear()
  quantizers.REGISTRY.update(saved)
  for name in set(sys.modules) - modules:
    if name.startswith("nas.ops.quantizers."):
      del sys.modules[name]


def test_quantizer_recipe_runs(recipe):
  files = [b for b in recipe if b[0]]
  assert [p for p, _, _ in files] == ["nas/ops/quantizers/maxabs.py"]
  namespace = {"__name__": "recipe"}
  for path, lang, code in recipe:
    if path:  # imported as the package module it stands for (the package imports its folder the same way)
      name = path[:-len(".py")].replace("/", ".")
      module = types.ModuleType(name)
      module.__file__ = path
      sys.modules[name] = module
      exec(compile(code, path, "exec"), module.__dict__)
    elif lang == "python":
      exec(compile(code, "docs/extending/quantizer.md", "exec"), namespace)
  assert "maxabs" in quantizers.names()
  assert namespace["model"].convs[1].aq.quantizer == "maxabs"
  # the checks of the conformance test, on the recipe's quantiser
  q = quantizers.get("maxabs")
  x = jnp.asarray(np.random.default_rng(0).normal(size=(16, 4)), jnp.float32)
  qn, qp = quant.qrange(4, True)
  param = q.init(x, 4, True, (0,), "weight")
  assert bool(jnp.all(param > 0))
  out = q.quantize(x, param, qn, qp, q.grad_scale(x.size, qp))
  s = np.asarray(q.step(param, qn, qp))
  np.testing.assert_array_equal(np.asarray(out), np.round(np.clip(np.asarray(x) / s, -qn, qp)) * s)
  np.testing.assert_array_equal(np.asarray(out), np.asarray(q.value(x, param, qn, qp)))
  assert bool(jnp.all(q.quantize(x, param, 0, 0, 0.0) == 0))  # a pruned candidate
