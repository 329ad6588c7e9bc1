"""The import graph keeps its layers: read from the source with `ast`, nothing imported.

contracts is the neutral layer every package may import, so it imports nothing of
Plantwatch's (and nothing outside the standard library); serving does not reach into
training, alerting not into ingestion; and no import hides inside a function to dodge a
cycle. The only function-level imports of Plantwatch modules are in ALLOWED and
COMMAND_MODULES, each with the reason it is not at the top.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

from tests.conftest import ROOT

PACKAGES = {"plantwatch": ROOT / "services" / "plantwatch", "plantwatch_operator": ROOT / "operator" / "plantwatch_operator"}

#: Modules whose commands import what they run inside the function that runs it, and why.
COMMAND_MODULES = {
    "plantwatch.cli": "each command imports what it runs, so `plantwatch validate` does not load numpy, "
    "ONNX Runtime, aiohttp or the Kubernetes client (cli.py's docstring)",
    "plantwatch.alerts.cli": "the `plantwatch alerts` commands, registered by cli.py: the same rule, the API client "
    "(and the Kubernetes client for --kube) only when a command runs",
    "plantwatch.query.cli": "the `plantwatch query` commands, registered by cli.py: the same rule, the store's reads "
    "(psycopg) only when a command runs",
}
#: (importing module, imported module) → why the import is inside a function.
ALLOWED = {
    ("plantwatch.inference.status", "plantwatch.kube"): "the Kubernetes client (~0.4 s to import) only when the "
    "service reports status (--status-namespace)",
    ("plantwatch.ingest.node_status", "plantwatch.kube"): "the Kubernetes client (~0.4 s to import) only when the "
    "gateway reports node status in a cluster",
    ("plantwatch.alerts.client", "plantwatch.kube"): "the Kubernetes client (~0.4 s to import) only for `plantwatch alerts --kube`",
    ("plantwatch.ingest.alert_status", "plantwatch.kube"): "the Kubernetes client (~0.4 s to import) only when the "
    "gateway reports its alerts in a cluster",
}


def _modules() -> dict[str, Path]:
    out = {}
    for top, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = path.relative_to(folder).with_suffix("").parts
            name = ".".join((top, *parts))
            out[name.removesuffix(".__init__")] = path
    return out


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(imported module, inside a function) for each import of the file; `from a import b` gives a.b as well as a."""
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                found.extend((alias.name, in_function) for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                found.append((child.module, in_function))
                found.extend((f"{child.module}.{alias.name}", in_function) for alias in child.names)
            visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(ast.parse(path.read_text(), str(path)), False)
    return found


GRAPH = {name: _imports(path) for name, path in _modules().items()}


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _ours(module: str) -> bool:
    return any(_within(module, top) for top in PACKAGES)


def _edges(importer: str, imported: str) -> list[str]:
    return sorted(
        {
            f"{m} imports {t}"
            for m, targets in GRAPH.items()
            if _within(m, importer)
            for t, _ in targets
            if _within(t, imported) and t in GRAPH
        }
    )


def test_the_graph_was_read():
    assert "plantwatch.contracts.names" in GRAPH and "plantwatch.inference.stream" in GRAPH
    assert ("plantwatch.features", False) in GRAPH["plantwatch.inference.stream"]


def test_contracts_import_nothing_of_plantwatch_and_only_the_standard_library():
    for module, targets in GRAPH.items():
        if not _within(module, "plantwatch.contracts"):
            continue
        for target, _ in targets:
            top = target.split(".")[0]
            assert (_within(target, "plantwatch.contracts") or not _ours(target)) and (
                top in sys.stdlib_module_names or top == "plantwatch" or top == "__future__"
            ), f"{module} imports {target}: contracts may import only the standard library and each other"


def test_serving_does_not_import_training():
    assert _edges("plantwatch.inference", "plantwatch.detect") == []


def test_alerting_does_not_import_ingestion():
    assert _edges("plantwatch.alerts", "plantwatch.ingest") == []


def test_no_import_hides_in_a_function_but_the_allowed_ones():
    hidden = sorted({(m, t) for m, targets in GRAPH.items() for t, inside in targets if inside and _ours(t) and t in GRAPH})
    unexplained = [f"{m} imports {t} inside a function" for m, t in hidden if (m, t) not in ALLOWED and m not in COMMAND_MODULES]
    assert unexplained == [], "move these to the top, or add them to ALLOWED with the reason"
    stale = sorted(set(ALLOWED) - set(hidden))
    assert stale == [], f"ALLOWED lists imports that are no longer inside a function: {stale}"
