"""The package's shape: import layers, no import cycles, file and function size limits.

Reads every .py under score_jax/ with `ast` (nothing is imported or run), so it sees every import:
module level, inside functions and under TYPE_CHECKING. Each failure names file:line and the
offending import or function.
"""

import ast
import collections
import pathlib

import pytest

# Top-level units, lowest layer first. A module may import from its own layer or lower ones;
# units sharing a layer may import each other only if the units' imports form no cycle. The
# package root (score_jax/__init__.py) sits below every layer and imports nothing.
LAYERS = [
  ("parallel", "data", "rewards", "storage"),
  ("models",),
  ("tasks",),
  ("rl",),
  ("generation",),
  ("configs",),
  ("trainer",),
  ("report",),
  ("testbed", "compare"),
  ("benchmarks", "generate", "main", "preflight"),
]
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 80
# Declarative config defaults only: one long list of field assignments reads better whole.
LONG_FUNCTION_ALLOWLIST = {("score_jax/configs/defaults.py", "base_config")}

REPO = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = "score_jax"
ROOT_UNIT = "<root>"
LAYER_OF = {unit: i for i, units in enumerate(LAYERS) for unit in units} | {ROOT_UNIT: -1}

# One import of one of our modules: `target` is the module (or dotted name) it loads, `name` what a
# `from ... import name` takes (None for a plain `import`), `local` the name it binds in the
# importer and `bound` the dotted path of ours that name refers to.
Import = collections.namedtuple("Import", "importer target line statement name local bound")


def _module_name(path: pathlib.Path) -> str:
  parts = list(path.relative_to(REPO).with_suffix("").parts)
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


FILES = {_module_name(p): p for p in sorted((REPO / PACKAGE).rglob("*.py"))}
SOURCES = {name: path.read_text() for name, path in FILES.items()}
TREES = {name: ast.parse(source, str(FILES[name])) for name, source in SOURCES.items()}


def _where(module: str, line: int) -> str:
  return f"{FILES[module].relative_to(REPO)}:{line}"


def _unit(module: str) -> str:
  parts = module.split(".")
  return parts[1] if len(parts) > 1 else ROOT_UNIT


def _package_of(module: str) -> str:
  is_package = FILES[module].name == "__init__.py"
  return module if is_package else module.rpartition(".")[0]


def _known(name: str) -> str | None:
  """The longest prefix of dotted `name` that is a module of ours, if any."""
  parts = name.split(".")
  for n in range(len(parts), 0, -1):
    if ".".join(parts[:n]) in FILES:
      return ".".join(parts[:n])
  return None


def _absolute(module: str, name: str, level: int = 0) -> str:
  """What `name` (imported `level` dots up from `module`) names as a dotted path of ours.

  A bare name of a file beside the importer resolves to that file: the sandbox scripts run
  outside the package with their folder on sys.path and import each other that way.
  """
  package = _package_of(module).split(".")
  if level:
    return ".".join(package[: len(package) - level + 1] + ([name] if name else []))
  sibling = ".".join([*package, name])
  return sibling if "." not in name and sibling in FILES else name


def _imports(module: str) -> list[Import]:
  """Every import of one of our modules in `module`, in source order."""
  found = []
  for node in ast.walk(TREES[module]):
    if isinstance(node, (ast.Import, ast.ImportFrom)):
      statement = " ".join(ast.get_source_segment(SOURCES[module], node).split())
    if isinstance(node, ast.Import):
      for alias in node.names:
        target = _absolute(module, alias.name)
        local = alias.asname or alias.name.split(".")[0]
        bound = target if alias.asname else _absolute(module, local)
        found.append(Import(module, target, node.lineno, statement, None, local, bound))
    elif isinstance(node, ast.ImportFrom):
      base = _absolute(module, node.module or "", node.level)
      for alias in node.names:
        submodule = f"{base}.{alias.name}"
        target = submodule if submodule in FILES else base
        local = alias.asname or alias.name
        found.append(Import(module, target, node.lineno, statement, alias.name, local, submodule))
  ours = [i for i in found if i.target.split(".")[0] == PACKAGE]
  return sorted(ours, key=lambda i: i.line)


IMPORTS = {module: _imports(module) for module in FILES}


def _edges() -> dict[str, dict[str, Import]]:
  """importer -> imported module -> its first import (resolved to a module of ours)."""
  graph = {module: {} for module in FILES}
  for module, imports in IMPORTS.items():
    for imp in imports:
      target = _known(imp.target)
      if target and target != module:
        graph[module].setdefault(target, imp._replace(target=target))
  return graph


GRAPH = _edges()


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
  """Tarjan's components with more than one node, each sorted."""
  index, low, stack, on_stack, found = {}, {}, [], set(), []

  def visit(node: str):
    index[node] = low[node] = len(index)
    stack.append(node)
    on_stack.add(node)
    for succ in sorted(graph.get(node, ())):
      if succ not in index:
        visit(succ)
        low[node] = min(low[node], low[succ])
      elif succ in on_stack:
        low[node] = min(low[node], index[succ])
    if low[node] == index[node]:
      component = []
      while True:
        member = stack.pop()
        on_stack.discard(member)
        component.append(member)
        if member == node:
          break
      if len(component) > 1:
        found.append(sorted(component))

  for node in sorted(graph):
    if node not in index:
      visit(node)
  return found


def _cycle_through(start: str, graph: dict[str, set[str]], allowed: set[str]) -> list[str]:
  """A shortest path start -> ... -> start inside `allowed` (breadth first)."""
  parent, queue = {}, collections.deque([start])
  while queue:
    node = queue.popleft()
    for succ in sorted(graph.get(node, ())):
      if succ not in allowed:
        continue
      if succ == start:
        path = [node]
        while path[-1] != start:
          path.append(parent[path[-1]])
        return [start, *reversed(path[:-1]), start]
      if succ not in parent:
        parent[succ] = node
        queue.append(succ)
  return []


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
  """Shortest cycles covering every node that lies on one (several per tangle)."""
  found = []
  for component in _strongly_connected(graph):
    covered: set[str] = set()
    for node in component:
      if node not in covered:
        path = _cycle_through(node, graph, set(component))
        covered.update(path)
        found.append(path)
  return found


def _describe_cycle(path: list[str], import_of) -> str:
  steps = [import_of(a, b) for a, b in zip(path, path[1:])]
  lines = [f"  {_where(s.importer, s.line)}: `{s.statement}`" for s in steps]
  return " -> ".join(path) + "\n" + "\n".join(lines)


def test_every_unit_has_a_layer():
  missing = sorted({_unit(m) for m in FILES} - set(LAYER_OF))
  assert not missing, f"score_jax units missing from LAYERS: {missing}"


def test_no_module_imports_a_higher_layer():
  problems = []
  for module, imports in sorted(IMPORTS.items()):
    for imp in imports:
      target = _known(imp.target)
      if target is None:
        problems.append(f"{_where(module, imp.line)}: `{imp.statement}` names no module of ours")
        continue
      low, high = _unit(module), _unit(target)
      if low in LAYER_OF and high in LAYER_OF and LAYER_OF[high] > LAYER_OF[low]:
        problems.append(
          f"{_where(module, imp.line)}: `{imp.statement}`: {low} (layer {LAYER_OF[low]}) imports"
          f" {target} ({high}, layer {LAYER_OF[high]})"
        )
  assert not problems, "imports of a higher layer:\n" + "\n".join(problems)


def test_units_sharing_a_layer_form_no_cycle():
  unit_graph, witness = collections.defaultdict(set), {}
  for module, targets in GRAPH.items():
    for target, imp in targets.items():
      a, b = _unit(module), _unit(target)
      if a != b and a in LAYER_OF and LAYER_OF[a] == LAYER_OF.get(b):
        unit_graph[a].add(b)
        witness.setdefault((a, b), imp)
  problems = [_describe_cycle(path, lambda a, b: witness[a, b]) for path in _cycles(unit_graph)]
  assert not problems, "units of one layer import each other in a cycle:\n" + "\n".join(problems)


def test_no_import_cycles():
  graph = {module: set(targets) for module, targets in GRAPH.items()}
  problems = [_describe_cycle(path, lambda a, b: GRAPH[a][b]) for path in _cycles(graph)]
  assert not problems, "import cycles:\n" + "\n".join(problems)


def test_files_are_short():
  problems = []
  for module, path in sorted(FILES.items()):
    lines = len(path.read_text().splitlines())
    if lines > MAX_FILE_LINES:
      where = _where(module, MAX_FILE_LINES + 1)
      problems.append(f"{where}: {lines} lines (limit {MAX_FILE_LINES})")
  assert not problems, "files over the limit:\n" + "\n".join(problems)


def test_functions_are_short():
  problems = []
  for module, tree in sorted(TREES.items()):
    relative = str(FILES[module].relative_to(REPO))
    for node in ast.walk(tree):
      if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        continue
      length = node.end_lineno - node.lineno + 1
      if length > MAX_FUNCTION_LINES and (relative, node.name) not in LONG_FUNCTION_ALLOWLIST:
        problems.append(f"{relative}:{node.lineno}: def {node.name} is {length} lines")
  assert not problems, f"functions over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(problems)


@pytest.mark.parametrize("allowed", sorted(LONG_FUNCTION_ALLOWLIST))
def test_allowlisted_functions_exist(allowed):
  path, name = allowed
  tree = ast.parse((REPO / path).read_text())
  names = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
  assert name in names, f"stale LONG_FUNCTION_ALLOWLIST entry {allowed}"


def _is_private(name: str) -> bool:
  return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _module_bindings(module: str) -> dict[str, str]:
  """Local name -> the module (or package) of ours it is bound to in `module`."""
  return {imp.local: imp.bound for imp in IMPORTS[module] if imp.bound in FILES}


def _dotted(node: ast.AST) -> list[str] | None:
  parts = []
  while isinstance(node, ast.Attribute):
    parts.append(node.attr)
    node = node.value
  return [node.id, *reversed(parts)] if isinstance(node, ast.Name) else None


def _private_reaches(module: str) -> list[str]:
  """`from <other package> import _x` and `<other package's module>._x` in `module`."""
  problems = []
  for imp in IMPORTS[module]:
    source = _known(imp.target)
    if imp.name and _is_private(imp.name) and source and _unit(source) != _unit(module):
      problems.append(f"{_where(module, imp.line)}: `{imp.statement}` takes {imp.name}")
  bindings = _module_bindings(module)
  for node in ast.walk(TREES[module]):
    if not isinstance(node, ast.Attribute) or not _is_private(node.attr):
      continue
    chain = _dotted(node.value)
    if not chain or chain[0] not in bindings:
      continue
    target = ".".join([bindings[chain[0]], *chain[1:]])
    if target in FILES and _unit(target) != _unit(module):
      problems.append(f"{_where(module, node.lineno)}: {'.'.join(chain)}.{node.attr}")
  return problems


def test_no_private_names_from_other_packages():
  problems = [p for module in sorted(FILES) for p in _private_reaches(module)]
  assert not problems, "private names used outside their package:\n" + "\n".join(problems)
