"""The service's shape: small modules with one job, and no import cycles between them."""

import ast
from pathlib import Path

SERVICE = Path(__file__).resolve().parents[1] / "service"
MAX_LINES = 300


def _imports(path: Path) -> set[str]:
    """The service modules ``path`` imports, at the top or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
        names += [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
        found |= {name.split(".")[1] for name in names if name.startswith("service.")}
    return found


def test_no_module_is_over_300_lines() -> None:
    sizes = {path.name: len(path.read_text().splitlines()) for path in SERVICE.glob("*.py")}
    assert len(sizes) > 20
    assert not {name: n for name, n in sizes.items() if n > MAX_LINES}, sorted(
        sizes.items(), key=lambda kv: -kv[1]
    )


def test_service_modules_import_each_other_without_cycles() -> None:
    graph = {path.stem: _imports(path) for path in SERVICE.glob("*.py")}
    assert graph["gateway"] >= {"models", "image_pipeline", "labels", "scoring"}  # the scan sees imports
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            raise AssertionError("import cycle: " + " -> ".join([*path[path.index(module) :], module]))
        if module in done:
            return
        for imported in sorted(graph.get(module, ())):
            visit(imported, [*path, module])
        done.add(module)

    for module in sorted(graph):
        visit(module, [])
