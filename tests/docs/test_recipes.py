"""The recipes of docs/extending/ run as written, against the real code.

Each page's fenced blocks, in order, in a temporary folder laid out like the repository root (a copy of
``conf/``): a block right after a ``<!-- file: PATH -->`` line is written to PATH (a YAML preset, a module); a
module under ``nas/`` is then imported as that package's module (``nas/models/tiny_cnn.py`` as
``nas.models.tiny_cnn``), as the package's own import of its folder would; every other ```python block runs, in
one namespace per page, with the folder as the working directory and on ``sys.path``. ```bash blocks are not
run. What a recipe registers (models, datasets, export formats) and imports is removed afterwards, so the
other tests never see it.
"""
import importlib.util
import pathlib
import re
import shutil
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
PAGES = ("hardware", "model", "dataset", "export_format")
BLOCK = re.compile(r"(?:<!-- file: (?P<path>\S+) -->\n)?```(?P<lang>\w*)\n(?P<code>.*?)^```", re.S | re.M)


def blocks(page: str) -> list[tuple[str | None, str, str]]:
  """(file path or None, language, code) of each fenced block of ``docs/extending/<page>.md``, in order."""
  text = (REPO / "docs" / "extending" / f"{page}.md").read_text()
  return [(m["path"], m["lang"], m["code"]) for m in BLOCK.finditer(text)]


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
  """A temporary repository root (``conf/`` copied) as the working directory, with the registries restored."""
  from nas.deploy.formats import base as formats
  from nas.models import MODELS
  from nas.train.datasets import DATASETS

  shutil.copytree(REPO / "conf", tmp_path / "conf")
  monkeypatch.chdir(tmp_path)
  monkeypatch.syspath_prepend(str(tmp_path))
  registries = [(r, dict(r)) for r in (MODELS, DATASETS, formats.FORMATS)]
  modules = set(sys.modules)
  yield tmp_path
  for registry, saved in registries:
    registry.clear()
    registry.update(saved)
  for name in set(sys.modules) - modules:
    if getattr(sys.modules[name], "__file__", None) and str(tmp_path) in sys.modules[name].__file__:
      del sys.modules[name]


def import_module_file(path: pathlib.Path, rel: str) -> None:
  """Imports a module written under ``nas/`` as the package module it stands for."""
  name = rel[:-len(".py")].replace("/", ".")
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  sys.modules[name] = module
  spec.loader.exec_module(module)


def run_page(page: str, root: pathlib.Path) -> dict:
  namespace = {"__name__": f"recipe_{page}"}
  ran = 0
  for path, lang, code in blocks(page):
    if path:
      target = root / path
      target.parent.mkdir(parents=True, exist_ok=True)
      target.write_text(code)
      if path.startswith("nas/") and path.endswith(".py"):
        import_module_file(target, path)
    elif lang == "python":
      exec(compile(code, f"docs/extending/{page}.md", "exec"), namespace)
      ran += 1
  assert ran, f"docs/extending/{page}.md has no python block to run"
  return namespace


def test_every_page_has_files_and_code():
  for page in PAGES:
    found = blocks(page)
    assert any(path for path, _, _ in found), page
    assert any(lang == "python" and not path for path, lang, _ in found), page


def test_hardware_recipe_presets_pass_the_conformance_checks(sandbox):
  ns = run_page("hardware", sandbox)
  assert (sandbox / "conf" / "hardware" / "cpu_2core.yaml").exists() and (sandbox / "bitserial.py").exists()
  assert {o.status for o in ns["outcomes"]} == {"PASS"}


def test_model_recipe_registers_builds_and_costs_a_supernet(sandbox):
  from nas.models import MODELS
  ns = run_page("model", sandbox)
  assert "tiny_cnn" in MODELS and ns["net"].name == "tiny_cnn"
  assert ns["tables"] and ns["logits"].shape == (4, 10)


def test_dataset_recipe_registers_and_loads_a_dataset(sandbox):
  from nas.train.datasets import DATASETS
  ns = run_page("dataset", sandbox)
  assert "tiny_blobs" in DATASETS
  assert ns["data"].x_train.ndim == 4 and ns["data"].num_classes == 3


def test_export_format_recipe_builds_a_format_for_an_integer_network(sandbox):
  from nas.deploy.formats import FORMATS
  ns = run_page("export_format", sandbox)
  assert "layers_json" in FORMATS and (sandbox / "export" / "layers.json").exists()


def test_recipes_leave_the_registries_as_they_were():
  from nas.deploy.formats import FORMATS
  from nas.models import MODELS
  from nas.train.datasets import DATASETS
  assert "tiny_cnn" not in MODELS and "tiny_blobs" not in DATASETS and "layers_json" not in FORMATS
