"""Imports run one way: no module of executor/ or producer/ imports, however indirectly,
a module that imports it back (function-level imports included: they run too; imports
under ``if TYPE_CHECKING:`` are for the type checker only and never run), and the producer
package, which other teams install on its own, imports nothing of the executor."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("executor", "producer")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for package in PACKAGES for p in (ROOT / package).rglob("*.py")}


def _runtime_imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def import_graph() -> dict[str, set[str]]:
    known = modules()
    graph: dict[str, set[str]] = {}
    for name, path in known.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges: set[str] = set()
        for node in _runtime_imports(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join([*parts, *([node.module] if node.module else [])])
                # A submodule by that name, else an attribute of the module ``base``.
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                           for alias in node.names]
            for target in targets:
                # The module itself, or the package whose attribute it is.
                while target and target not in known:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    edges.add(target)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_graph_sees_the_imports() -> None:
    graph = import_graph()
    assert len(graph) > 80
    assert "executor.pipeline.steps.submit" in graph["executor.worker"]
    assert "executor.infra.secrets" in graph["executor.brokers.binance.config"]
    assert "producer.contract" in graph["executor.model.order"]


def test_no_module_imports_itself_back() -> None:
    assert cycles(import_graph()) == []


def test_a_cycle_would_be_found() -> None:
    graph = import_graph()
    graph["executor.infra.errors"] = {*graph["executor.infra.errors"], "executor.config"}
    assert any({"executor.config", "executor.infra.errors"} <= set(c) for c in cycles(graph))


def test_the_producer_package_needs_nothing_of_the_executor() -> None:
    graph = import_graph()
    for name, edges in graph.items():
        if name.startswith("producer"):
            assert not [e for e in edges if e.startswith("executor")], name


# executor/'s folders from the bottom up: a module imports only from its own layer and
# the layers below it. The entry points (worker.py, host.py, projection.py, cli.py,
# __main__.py) are the top.
LAYERS = ("model", "infra", "safety", "brokers", "archive", "config", "pipeline",
          "background", "operations", "entry")


def layer_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1 or parts[1] in ("worker", "host", "projection", "cli", "__main__"):
        return "entry"
    assert parts[1] in LAYERS, f"{module}: not in any layer of {LAYERS}"
    return parts[1]


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    found = []
    for name, edges in graph.items():
        if not name.startswith("executor"):
            continue
        for target in edges:
            if (target.startswith("executor")
                    and LAYERS.index(layer_of(target)) > LAYERS.index(layer_of(name))):
                found.append(f"{name} -> {target}")
    return sorted(found)


def test_imports_run_down_the_layers() -> None:
    assert upward_imports(import_graph()) == []


def test_every_module_of_the_executor_is_in_a_layer() -> None:
    for name in import_graph():
        if name.startswith("executor"):
            layer_of(name)  # raises for a module outside the layers


def test_an_upward_import_would_be_found() -> None:
    graph = import_graph()
    graph["executor.model.order"] = {*graph["executor.model.order"], "executor.infra.store"}
    assert upward_imports(graph) == ["executor.model.order -> executor.infra.store"]


# The broker-neutral streams machinery, and the rules of native contingent lists, shared
# by the adapters: they import none of them.
NEUTRAL_STREAMS = ("executor.brokers.price_stream", "executor.brokers.stream_health",
                   "executor.brokers.websocket", "executor.brokers.prices",
                   "executor.brokers.native_lists")
ADAPTERS = ("executor.brokers.paper", "executor.brokers.binance", "executor.brokers.oanda",
            "executor.brokers.alpaca")


def test_the_shared_stream_modules_import_no_adapter() -> None:
    graph = import_graph()
    for name in NEUTRAL_STREAMS:
        assert name in graph, name
        assert not [e for e in graph[name] if e.startswith(ADAPTERS)], name
