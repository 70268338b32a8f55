"""The import graph runs one way: hub -> contract <- notebook side, layers inside each side, and
no circle between files.

Every import statement of the project's packages is read with `ast` (module-level and inside
functions alike, since a lazy import is still a dependency) and checked against the rules below
(docs/architecture.md states them); a test fails naming the file, the line and the rule it
breaks, or the files that import each other round a circle.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("workbench_contract", "hub_config", "launcher_magic", "extensions")

# (importer prefix, imported prefix, why it is forbidden). A longer importer prefix is a layer.
FORBIDDEN = [
    ("hub_config", "launcher_magic", "the hub does not carry the notebook side"),
    ("hub_config", "extensions", "the hub does not carry the notebook side"),
    ("launcher_magic", "hub_config", "the notebook image does not carry the hub"),
    ("launcher_magic", "extensions", "the kernel starts boards by module name from the contract"),
    ("extensions", "hub_config", "the Jupyter server extension does not carry the hub"),
    ("extensions", "launcher_magic", "the Jupyter server extension reads the contract only"),
    ("launcher_magic.core", "launcher_magic.kernel", "the job model runs where no kernel is"),
    ("launcher_magic.core", "launcher_magic.engines", "engines build on the job model"),
    ("launcher_magic.core", "launcher_magic.training", "the job model is read by every part"),
    ("launcher_magic.training", "launcher_magic.kernel", "ranks run no kernel code"),
    ("launcher_magic.training", "launcher_magic.engines", "ranks run no engine code"),
    ("launcher_magic.engines", "launcher_magic.kernel", "engines know nothing of magics or panels"),
    # Engines start ranks, which run the job's main.py; only the warm interpreter imports the
    # training worker, to have it loaded before it forks any rank.
    *((engine, "launcher_magic.training", "engines start ranks; they do not run training code")
      for engine in ("launcher_magic.engines.base", "launcher_magic.engines.cluster",
                     "launcher_magic.engines.local.engine",
                     "launcher_magic.engines.local.supervisor",
                     "launcher_magic.engines.local.rendezvous",
                     "launcher_magic.engines.local.devices")),
    ("hub_config.services", "hub_config.cli", "services run without the operator's CLI"),
    ("hub_config.services", "hub_config.kube_spawner", "services do not load the spawners"),
    ("hub_config.services", "hub_config.local_spawner", "services do not load the spawners"),
    *((process, "hub_config.cli", "the hub's processes do not carry the operator's CLI")
      for process in ("hub_config.kube_spawner", "hub_config.local_spawner",
                      "hub_config.jupyterhub_config", "hub_config.auth")),
    *(("hub_config.cluster_policy", module, "the cluster policy is pure data the CLI and the hub "
       "both use; it reads tenants and the contract only")
      for module in ("hub_config.cli", "hub_config.kube_spawner", "hub_config.local_spawner",
                     "hub_config.auth", "hub_config.services", "hub_config.jupyterhub_config")),
]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, module: str | None = None) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in the file (of module `module`)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    module = module or _module_name(path)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")
                parent = parent[:len(parent) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return found


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _sources():
    """(path, module name) of every source file of the project's packages."""
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            yield path, _module_name(path)


def _violations(rules, sources) -> list[str]:
    found = []
    for path, importer in sources:
        for line, imported in _imports(path, importer):
            for source, target, why in rules:
                if _within(importer, source) and _within(imported, target) \
                        and not _within(importer, target):
                    found.append(f"{path.name}:{line} ({importer}) imports {imported}: {why}")
    return sorted(set(found))


def _file_imports(path: Path, module: str, modules: set[str]) -> set[str]:
    """The project modules (files) `module` imports. `from pkg import x` reaches x's file where
    x is a module, else pkg's `__init__`; `import a.b.c` the longest of a.b.c, a.b, a that is
    a module of the project."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    wanted = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            wanted += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            wanted += [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                       for a in node.names]
    found = set()
    for name in wanted:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        if name and name != module:
            found.add(name)
    return found


def _circles(sources) -> list[list[str]]:
    """Every set of files that import each other round a circle (Tarjan's strongly connected
    components of the file graph), each sorted."""
    sources = list(sources)
    modules = {module for _, module in sources}
    graph = {module: _file_imports(path, module, modules) for path, module in sources}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while not component or component[-1] != node:
                component.append(stack.pop())
            if len(component) > 1:
                circles.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return sorted(circles)


def test_no_import_circle_between_files():
    assert _circles(_sources()) == []


def test_the_checker_catches_a_circle(tmp_path):
    """Two files that import each other (one of them lazily) are a circle, as
    `engines/local/supervisor.py` and `warm.py` were."""
    first, second = tmp_path / "first.py", tmp_path / "second.py"
    first.write_text("from launcher_magic.engines.local.second import start\n")
    second.write_text("def start():\n    from launcher_magic.engines.local import first\n")
    probes = [(first, "launcher_magic.engines.local.first"),
              (second, "launcher_magic.engines.local.second")]
    assert _circles([*_sources(), *probes]) == [[p for _, p in probes]]
    assert _circles([*_sources(), probes[0]]) == []


def test_no_forbidden_import():
    assert _violations(FORBIDDEN, _sources()) == []


def test_the_contract_imports_only_the_standard_library():
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    bad = [f"{path.relative_to(ROOT)}:{line} imports {name}"
           for path in sorted((ROOT / "workbench_contract").rglob("*.py"))
           for line, name in _imports(path)
           if name.split(".")[0] not in stdlib and not _within(name, "workbench_contract")]
    assert bad == []


@pytest.mark.parametrize("module, code", [
    ("hub_config.probe", "from launcher_magic.core import spec\n"),
    ("launcher_magic.core.probe", "from ..kernel import panel\n"),
    ("launcher_magic.engines.probe", "def later():\n    import launcher_magic.kernel.magics\n"),
    ("hub_config.cluster_policy.probe", "from hub_config.cli import CommandError\n"),
], ids=["absolute", "relative", "lazy", "policy-to-cli"])
def test_the_checker_catches_a_forbidden_import(tmp_path, module, code):
    """The rules are only worth something if a new bad import fails them."""
    probe = tmp_path / "probe.py"
    probe.write_text(code)
    found = _violations(FORBIDDEN, [(probe, module)])
    assert found and all(v.startswith("probe.py:") for v in found), found
