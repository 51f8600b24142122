"""The package's shape: small modules, no import cycles, and imports that point one way.

Read from the source (`ast`), not by importing it. Imports under `if TYPE_CHECKING:` are not counted (they
never run); imports inside functions are (they run when called, and a cycle through them is still a cycle).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "flux_mcp"
MAX_LINES = 450

# Each module of flux_mcp and its layer; a module imports only from its own layer or those below it.
MODELS = {"models", "arguments", "results", "inputs", "videos", "settings", "credits"}
CLIENT = {"client", "upstream", "http_clients", "errors", "addresses", "tls", "probes"}
JOBS = {
    "tasks",
    "waiting",
    "poller",
    "finishing",
    "callbacks",
    "uploads",
    "images",
    "pictures",
    "downloads",
    "video_files",
    "store",
    "store_rows",
    "store_backend",
    "store_errors",
    "store_sqlite",
    "store_postgres",
}
SURFACE = {
    "server",
    "state",
    "tools",
    "toolkit",
    "schemas",
    "job_calls",
    "delivery",
    "render",
    "gallery",
    "resources",
    "prompts",
    "roots",
    "refusals",
    "auth",
    "oauth",
    "oauth_keys",
    "http",
    "http_gate",
    "http_routes",
    "logs",
    "stdio",
    "cli",
    "doctor",
    "hostconfig",
    "sandbox",
    "ui",  # the gallery view's HTML, a package of data
}
LAYERS = (MODELS, CLIENT, JOBS, SURFACE)  # bottom to top
# What every test names as the surface: the modules the jobs, the client and the models never import.
NAMED_SURFACE = {"server", "tools", "job_calls", "delivery", "gallery", "resources", "http", "cli"}


def module_files() -> list[Path]:
    return sorted(path for path in PACKAGE.rglob("*.py") if "__pycache__" not in path.parts)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(part for part in parts if part != "__init__") or "__init__"


def imported_modules(path: Path) -> set[str]:
    """The flux_mcp modules `path` imports at run time, named below the package (`store`, `emulator.app`)."""
    known = {module_name(file) for file in module_files()}
    found: set[str] = set()
    own = module_name(path)
    package = ".".join(path.relative_to(PACKAGE).parent.parts)  # where `from .x import` starts

    def add(name: str) -> None:
        while name and name not in known:
            name = name.rpartition(".")[0]
        if name and name != own:
            found.add(name)

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, ast.Import):
                for alias in child.names:
                    if alias.name.startswith("flux_mcp."):
                        add(alias.name.removeprefix("flux_mcp."))
            elif isinstance(child, ast.ImportFrom):
                base = _absolute(child, package)
                if base == "flux_mcp" or base.startswith("flux_mcp."):
                    below = base.removeprefix("flux_mcp").removeprefix(".")
                    for alias in child.names:
                        add(f"{below}.{alias.name}" if below else alias.name)
                    if below:
                        add(below)
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return found


def _absolute(node: ast.ImportFrom, package: str) -> str:
    if node.level == 0:
        return node.module or ""
    parts = ["flux_mcp", *package.split(".")] if package else ["flux_mcp"]
    parts = parts[: len(parts) - (node.level - 1)]
    return ".".join(parts + ([node.module] if node.module else []))


def import_graph() -> dict[str, set[str]]:
    return {module_name(path): imported_modules(path) for path in module_files()}


def test_no_module_is_over_the_limit() -> None:
    sizes = {module_name(path): len(path.read_text(encoding="utf-8").splitlines()) for path in module_files()}
    assert {name: lines for name, lines in sizes.items() if lines > MAX_LINES} == {}


def test_the_imports_have_no_cycle() -> None:
    graph = import_graph()
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        if name in path:
            pytest.fail("import cycle: " + " -> ".join([*path[path.index(name) :], name]))
        if name in done:
            return
        for imported in sorted(graph.get(name, ())):
            visit(imported, [*path, name])
        done.add(name)

    for name in sorted(graph):
        visit(name, [])


def test_every_module_has_a_layer_and_imports_only_downwards() -> None:
    graph = import_graph()
    top_level = {name for name in graph if "." not in name and name != "__init__" and name != "emulator"}
    placed = set().union(*LAYERS)
    assert top_level == placed, {"without a layer": top_level - placed, "gone": placed - top_level}
    level = {name: index for index, layer in enumerate(LAYERS) for name in layer}
    upward = {
        (name, imported)
        for name in top_level
        for imported in graph[name]
        if imported in level and level[imported] > level[name]
    }
    assert not upward, sorted(upward)


def test_the_jobs_client_and_models_never_import_the_surface() -> None:
    graph = import_graph()
    below = MODELS | CLIENT | JOBS
    assert NAMED_SURFACE <= SURFACE
    reaching_up = {(name, imported) for name in below for imported in graph[name] if imported in SURFACE}
    assert not reaching_up, sorted(reaching_up)


def test_the_emulator_is_an_independent_witness() -> None:
    """It answers as the Flux API does, from its own rules: none of flux-mcp's (else it would agree with any
    bug in them)."""
    graph = import_graph()
    emulator = {name for name in graph if name == "emulator" or name.startswith("emulator.")}
    borrowed = {(name, imported) for name in emulator for imported in graph[name] if imported not in emulator}
    assert not borrowed, sorted(borrowed)
