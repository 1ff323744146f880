"""The import graph: no module of flowkit or a plug-in imports itself back through others,
the core never imports a plug-in, and plug-ins never import each other.

Every ``import`` statement counts, including the ones inside functions (a lazy import
hides a circle from Python, not from a reader). Importing ``a.b.c`` runs ``a/__init__``
and ``a/b/__init__`` too, so those are edges as well, except for the packages that hold
the importing module (they are being imported already)."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("flowkit", "flowkit_image", "flowkit_audio", "flowkit_text")


def module_files() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for file in (ROOT / package).rglob("*.py"):
            parts = file.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = file
    return found


def imported_names(module: str, file: Path) -> set[str]:
    is_package = file.name == "__init__.py"
    names = set()
    for node in ast.walk(ast.parse(file.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")[: len(module.split(".")) - node.level + is_package]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            names.add(target)
            names.update(f"{target}.{alias.name}" for alias in node.names)  # submodules named in the import
    return names


def import_graph() -> dict[str, set[str]]:
    files = module_files()
    graph = {}
    for module, file in files.items():
        ancestors = {".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 1)}
        edges = set()
        for name in imported_names(module, file):
            parts = name.split(".")
            edges.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
        graph[module] = {e for e in edges if e in files and e != module and e not in ancestors}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_module_imports_itself_back():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_the_cycle_finder_sees_a_planted_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) in (["a", "b", "c", "a"], ["b", "c", "a", "b"], ["c", "a", "b", "c"])
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_relative_imports_resolve_to_modules_and_their_packages():
    graph = import_graph()
    assert {"flowkit.bijector", "flowkit.nn"} <= graph["flowkit.layers.actnorm"]
    assert "flowkit.train.distributed" in graph["flowkit.train.engine"]  # `from . import distributed`
    assert "flowkit" in graph["flowkit_image.glow"]  # `import flowkit` runs flowkit/__init__


@pytest.mark.parametrize("package", PACKAGES)
def test_layering_core_below_plugins_and_plugins_apart(package):
    graph = import_graph()
    allowed = {"flowkit", package}
    for module, edges in graph.items():
        if module.split(".")[0] != package:
            continue
        bad = sorted(e for e in edges if e.split(".")[0] not in allowed)
        assert not bad, f"{module} imports {bad}"


def test_importing_flowkit_loads_no_plugin_and_no_heavy_extra():
    code = ("import sys, flowkit, flowkit.train, flowkit.testing; "
            "print(sorted({m.split('.')[0] for m in sys.modules}))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    for name in ("flowkit_image", "flowkit_audio", "flowkit_text", "torchaudio", "sentence_transformers", "PIL"):
        assert f"'{name}'" not in loaded
