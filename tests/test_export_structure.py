"""The shape of ``dlc_export`` (issue 9): no module imports another in a circle, no module
is over 400 lines, and every kind of artifact is made in one place (``formats/``)."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "dlc_export"
MAX_LINES = 400


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts  # every package is a sibling
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST, modules: set[str], type_only: bool = False) -> set[str]:
    """Package modules imported anywhere in ``tree`` (function bodies too: a lazy import
    still ties the two modules together); under ``if TYPE_CHECKING:`` only with
    ``type_only``."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node) and not type_only:
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in modules)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                if sub in modules:
                    found.add(sub)  # from package import submodule
                elif node.module in modules:
                    found.add(node.module)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def import_graph(package: Path = PACKAGE, type_only: bool = False) -> dict[str, set[str]]:
    paths = {_module_name(p): p for p in package.rglob("*.py")}
    modules = set(paths)
    return {name: _imports(ast.parse(path.read_text(encoding="utf-8")), modules, type_only)
            - {name} for name, path in paths.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := dfs(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := dfs(start)):
            return cycle
    return None


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None
    tree = ast.parse("import x.y\nif TYPE_CHECKING:\n    import x.z\n"
                     "def f():\n    from x import w\n")
    assert _imports(tree, {"x.y", "x.z", "x.w"}) == {"x.y", "x.w"}


def test_dlc_export_has_no_import_cycle():
    graph = import_graph()
    assert len(graph) > 20 and graph["dlc_export.pipeline"], "the graph was not read"
    cycle = find_cycle(graph)
    assert cycle is None, "dlc_export modules import each other in a circle: " + \
        " -> ".join(cycle)


def test_no_cycle_even_through_type_only_imports():
    """Annotations too go one way (formats -> tasks, not back), in dlc_export and in the
    runtime (packages register their modules from __init__; the modules never import it)."""
    for package in (PACKAGE, PACKAGE.parent / "dlc_runtime"):
        cycle = find_cycle(import_graph(package, type_only=True))
        assert cycle is None, " -> ".join(cycle)


def test_no_dlc_export_module_is_over_400_lines():
    long = {str(p.relative_to(PACKAGE.parent)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"over {MAX_LINES} lines: {long}"


def test_tasks_do_not_write_artifacts():
    """Writing and loading artifacts belongs to formats: a task module that traces to ONNX or
    TorchScript, or builds an engine, is a second copy of a format."""
    writers = ("export_onnx", "save_torch_artifact", "export_tensorrt", "torch.jit.trace",
               "torch.onnx.export")
    for path in (PACKAGE / "tasks").glob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert not [w for w in writers if w in text], path.name
