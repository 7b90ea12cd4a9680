"""The shape of the house, checked on the source tree (AST only, nothing imported):

- floors: ``hardware`` (cost models) <- ``nas`` (search, training, deployment) <- ``experiments`` (the apps);
  no module imports a floor above its own, and ``nas`` never imports Hydra or wandb;
- inside ``nas``, rooms import downward only: ops <- models <- search, train <- deploy;
- no import cycle between modules;
- no module over 500 lines; no function over 80 lines without a reason in its docstring ("Long:"); no function
  with more than 8 parameters (``self`` and ``cls`` not counted) outside constructors of config-like objects
  (``__init__`` and its ``_init_*`` helpers: a cost model's or a supernet's constructor takes its YAML's fields).
"""
import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
PACKAGES = ("hardware", "nas", "experiments")
FLOOR = {"hardware": 0, "nas": 1, "experiments": 2}
# Rooms of nas, bottom up; a room may import its own and any lower one. search and train are one level: the
# search loop uses the training plumbing (data, checkpoints, calibration) and fine-tuning uses nothing of search.
ROOMS = {"ops": 0, "models": 1, "train": 2, "search": 2, "deploy": 3}
MAX_MODULE_LINES, MAX_FUNCTION_LINES, MAX_PARAMS = 500, 80, 8
# Factories that are constructors in all but name, with the reason.
MANY_PARAMS = {"nas.models.base.qlayer": "builds one QLayer: each argument is one field of its LayerSpec and keys"}


def _modules():
  for pkg in PACKAGES:
    for path in sorted((ROOT / pkg).rglob("*.py")):
      parts = path.relative_to(ROOT).with_suffix("").parts
      yield ".".join(p for p in parts if p != "__init__"), path


MODULES = dict(_modules())


def _imports(path: pathlib.Path) -> set[str]:
  """Every module name this file imports, at any depth (function-level imports included)."""
  out = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      out.update(a.name for a in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      out.add(node.module)
      out.update(f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in MODULES)
  return out


def _internal(name: str) -> str | None:
  while name and name not in MODULES:
    name = name.rpartition(".")[0]
  return name or None


def test_no_floor_imports_upward():
  bad = []
  for mod, path in MODULES.items():
    for imp in _imports(path):
      top = imp.split(".")[0]
      if top in FLOOR and FLOOR[top] > FLOOR[mod.split(".")[0]]:
        bad.append(f"{mod} imports {imp}")
      if mod.startswith("nas") and top in ("hydra", "omegaconf", "wandb"):
        bad.append(f"{mod} imports {imp} (nas knows nothing of Hydra or wandb)")
  assert not bad, bad


def test_nas_rooms_import_downward():
  bad = []
  for mod, path in MODULES.items():
    parts = mod.split(".")
    if parts[0] != "nas" or len(parts) < 3:
      continue
    for imp in _imports(path):
      ip = imp.split(".")
      if ip[0] == "nas" and len(ip) > 1 and ip[1] in ROOMS and ROOMS[ip[1]] > ROOMS[parts[1]]:
        bad.append(f"{mod} imports {imp}")
  assert not bad, bad


def test_no_import_cycle():
  graph = {m: {i for i in map(_internal, _imports(p)) if i and i != m} for m, p in MODULES.items()}
  # A package's __init__ importing its own submodules (to register them or re-export names) is not a cycle
  # of code: drop package -> own submodule edges.
  graph = {m: {i for i in deps if not i.startswith(m + ".")} for m, deps in graph.items()}
  state, stack, cycles = {}, [], []

  def visit(m):
    state[m] = 1
    stack.append(m)
    for d in graph[m]:
      if state.get(d) == 1:
        cycles.append(stack[stack.index(d):] + [d])
      elif d not in state:
        visit(d)
    stack.pop()
    state[m] = 2

  for m in graph:
    if m not in state:
      visit(m)
  # A module importing a name its own package re-exports (``from nas.models import register`` inside
  # nas/models/digits.py) closes a loop through the package's __init__ only: not a cycle of code.
  real = [c for c in cycles if not all(c[0].split(".")[:2] == x.split(".")[:2] for x in c)]
  assert not real, real


@pytest.mark.parametrize("mod", sorted(MODULES))
def test_sizes(mod):
  path = MODULES[mod]
  text = path.read_text()
  assert text.count("\n") <= MAX_MODULE_LINES, f"{mod}: {text.count(chr(10))} lines > {MAX_MODULE_LINES}"
  for node in ast.walk(ast.parse(text)):
    if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
      continue
    a = node.args
    params = [p.arg for p in a.posonlyargs + a.args + a.kwonlyargs if p.arg not in ("self", "cls")]
    constructor = (node.name == "__init__" or node.name.startswith("_init_")
                   or f"{mod}.{node.name}" in MANY_PARAMS)
    assert constructor or len(params) <= MAX_PARAMS, (
        f"{mod}.{node.name} takes {len(params)} parameters > {MAX_PARAMS}")
    length = node.end_lineno - node.lineno + 1
    doc = ast.get_docstring(node) or ""
    assert length <= MAX_FUNCTION_LINES or "Long:" in doc, (
        f"{mod}.{node.name} is {length} lines > {MAX_FUNCTION_LINES} with no 'Long:' reason in its docstring")


def test_published_reports_name_their_folder_inside_the_repository():
  """A published report stands on its own: its folder is named relative to the repository, never by the path
  of the machine that built it."""
  import json
  reports = sorted((ROOT / "experiments" / "results").glob("*/report.json"))
  assert reports
  for path in reports:
    folder = json.loads(path.read_text())["bench_dir"]
    assert not pathlib.PurePath(folder).is_absolute(), f"{path.relative_to(ROOT)}: bench_dir {folder}"
    assert (ROOT / folder).resolve() == path.parent.resolve(), f"{path.relative_to(ROOT)}: bench_dir {folder}"
