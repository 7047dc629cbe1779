"""The package's structure: no import cycles among op_tensorflow's modules.

The import graph is read from the source with ``ast`` (nothing is imported), counting every
import statement wherever it is: at module level, inside functions (lazy imports), under
``if TYPE_CHECKING:``, and ``importlib.import_module("op_tensorflow....")`` calls with a literal
name. The one edge left out is a submodule's import from its own parent package (e.g.
``from op_tensorflow.registry import register_layer`` in ``registry/conv.py``): importing a
submodule always runs its parent package first, so that dependency is implicit in Python, and
a package may import its own plugin submodules after defining what they use.
"""

from __future__ import annotations

import ast
import pathlib

import op_tensorflow

PACKAGE_DIR = pathlib.Path(op_tensorflow.__file__).parent


def _module_names(package_dir: pathlib.Path, package: str) -> dict[str, pathlib.Path]:
    """Dotted module name -> source file, for every module of the package (subpackages too)."""
    names = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(package_dir).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join([package, *parts])] = path
    return names


def _resolve_relative(module: str, is_package: bool, level: int, target: str | None) -> str:
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (level - 1)] if level > 1 else base
    return ".".join(base + ([target] if target else []))


def _imports(tree: ast.AST, module: str, is_package: bool, modules: set[str], package: str) -> set[str]:
    """The package's modules that ``module`` imports, anywhere in its source."""

    def known(name: str) -> str | None:
        """``name`` itself if it is one of the modules, else its longest module prefix."""
        while name:
            if name in modules:
                return name
            name = name.rpartition(".")[0]
        return None

    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == package or alias.name.startswith(package + "."):
                    found.add(known(alias.name))
        elif isinstance(node, ast.ImportFrom):
            source = node.module or ""
            if node.level:
                source = _resolve_relative(module, is_package, node.level, node.module)
            if not (source == package or source.startswith(package + ".")):
                continue
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                found.add(submodule if submodule in modules else known(source))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
            and node.args[0].value.startswith(package)
        ):
            found.add(known(node.args[0].value))
    found.discard(None)
    found.discard(module)
    # Leave out imports from the module's own parent packages (see the module docstring).
    return {m for m in found if not module.startswith(m + ".")}


def import_graph(package_dir: pathlib.Path, package: str) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (at module level or inside functions)."""
    files = _module_names(package_dir, package)
    graph = {}
    for name, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        graph[name] = _imports(tree, name, path.name == "__init__.py", set(files), package)
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The graph's cycles: one per strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
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
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def _describe(graph: dict[str, set[str]], component: list[str]) -> str:
    members = set(component)
    edges = [f"{a} -> {b}" for a in component for b in sorted(graph[a] & members)]
    return "{" + ", ".join(component) + "}: " + "; ".join(edges)


def test_no_import_cycle_among_op_tensorflow_modules():
    graph = import_graph(PACKAGE_DIR, "op_tensorflow")
    assert "op_tensorflow.frame" in graph and "op_tensorflow.budget" in graph
    cycles = import_cycles(graph)
    assert not cycles, "import cycles among op_tensorflow modules:\n" + "\n".join(_describe(graph, c) for c in cycles)


def test_frame_does_not_import_the_r_interop():
    graph = import_graph(PACKAGE_DIR, "op_tensorflow")
    assert "op_tensorflow.frame" in graph["op_tensorflow.r"]  # R interop depends on frames ...
    reachable, todo = set(), ["op_tensorflow.frame"]
    while todo:  # ... and frames reach the R interop through no import chain
        for succ in graph[todo.pop()] - reachable:
            reachable.add(succ)
            todo.append(succ)
    assert "op_tensorflow.r" not in reachable


def test_the_cycle_check_finds_lazy_and_relative_cycles(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from pkg.frame import Frame\n")
    (pkg / "frame.py").write_text("class Frame:\n    def from_r(self):\n        from pkg.r import from_r\n")
    (pkg / "r.py").write_text("from pkg import frame\n")
    (pkg / "sub" / "__init__.py").write_text("X = 1\nfrom pkg.sub import plugin  # noqa\n")
    (pkg / "sub" / "plugin.py").write_text("from pkg.sub import X\nfrom . import other\n")
    (pkg / "sub" / "other.py").write_text("import importlib\nimportlib.import_module('pkg.sub.plugin')\n")
    graph = import_graph(pkg, "pkg")
    assert graph["pkg.frame"] == {"pkg.r"}  # the import inside a function counts
    assert graph["pkg.r"] == {"pkg.frame"}
    assert graph["pkg.sub.plugin"] == {"pkg.sub.other"}  # relative import; the parent package is left out
    assert graph["pkg.sub.other"] == {"pkg.sub.plugin"}
    assert sorted(import_cycles(graph)) == [["pkg.frame", "pkg.r"], ["pkg.sub.other", "pkg.sub.plugin"]]


def test_moved_public_classes_keep_their_module_path():
    """R's S3 classes (``op_tensorflow.frame.PrivateSeries``, ...) and reprs name the facade module."""
    from op_tensorflow import auditing, budget, frame

    for module, names in (
        (frame, ["_PrivateBase", "PrivateSeries", "PrivateDataFrame"]),
        (budget, ["LedgerEntry", "PrivacyBudget", "Reservation"]),
        (auditing, ["AttackResult", "AuditReport"]),
    ):
        for name in names:
            cls = getattr(module, name)
            assert cls.__module__ == module.__name__, f"{name}.__module__ is {cls.__module__}"
