"""The package's shape: one folder per layer, imports that point down, no cycles, MCP only at the top.

Read from the source (`ast`), not by importing it. Imports under `if TYPE_CHECKING:` are not counted (they
never run); imports inside functions are (they run when called, and a cycle through them is still a cycle).
"""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "flux_mcp"

# flux_mcp's layers, bottom to top: a package imports from its own modules and those of packages below it.
LAYERS = ("domain", "net", "upstream", "history", "media", "jobs", "server", "web", "cli")
# Only the MCP surface and above speak MCP or HTTP-serving: everything below it is usable without them.
SURFACE = LAYERS.index("server")
SURFACE_LIBRARIES = ("mcp", "mcp_types", "starlette", "uvicorn", "sse_starlette")
EMULATOR = "emulator"  # the independent witness: it borrows nothing, and only the CLI starts it


def module_files(root: Path) -> list[Path]:
    return sorted(path for path in root.rglob("*.py") if "__pycache__" not in path.parts)


def module_name(root: Path, path: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(part for part in parts if part != "__init__") or "__init__"


def package_of(module: str) -> str:
    return module.split(".")[0]


def run_time_imports(path: Path) -> list[tuple[str, int]]:
    """(absolute module, line) of every import `path` runs, TYPE_CHECKING blocks left out."""
    found: list[tuple[str, int]] = []
    here = path.parent

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                for branch in child.orelse:  # an `else:` runs
                    visit(ast.Module(body=[branch], type_ignores=[]))
                continue
            if isinstance(child, ast.Import):
                found.extend((alias.name, child.lineno) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = _absolute(child, here)
                found.append((base, child.lineno))
                found.extend((f"{base}.{alias.name}", child.lineno) for alias in child.names)
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return found


def _absolute(node: ast.ImportFrom, here: Path) -> str:
    if node.level == 0:
        return node.module or ""
    parts = list(here.parts[here.parts.index("flux_mcp") :])
    parts = parts[: len(parts) - (node.level - 1)]
    return ".".join(parts + ([node.module] if node.module else []))


def import_graph(root: Path) -> dict[str, set[str]]:
    """Each flux_mcp module and the flux_mcp modules it imports, named below the package."""
    files = module_files(root)
    known = {module_name(root, file) for file in files}
    graph: dict[str, set[str]] = {}
    for file in files:
        own = module_name(root, file)
        graph[own] = set()
        for imported, _ in run_time_imports(file):
            if not (imported == "flux_mcp" or imported.startswith("flux_mcp.")):
                continue
            name = imported.removeprefix("flux_mcp").removeprefix(".")
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != own:
                graph[own].add(name)
    return graph


def wrong_way_imports(root: Path) -> list[str]:
    """Every import that breaks a package rule, as `module -> imported (rule)`."""
    level = {name: index for index, name in enumerate(LAYERS)}
    broken = []
    for module, imported_modules in sorted(import_graph(root).items()):
        package = package_of(module)
        for imported in sorted(imported_modules):
            target = package_of(imported)
            if package == "__init__" or target == package:
                continue
            if package == EMULATOR:
                broken.append(f"{module} -> {imported} (the emulator borrows nothing from flux_mcp)")
            elif target == EMULATOR and package != "cli":
                broken.append(f"{module} -> {imported} (only cli/ starts the emulator)")
            elif target in level and level[target] > level[package]:
                broken.append(f"{module} -> {imported} ({package}/ is below {target}/)")
            elif target == "__init__":
                broken.append(
                    f"{module} -> flux_mcp (the package's facade is for users, not for its own modules)"
                )
    return broken


def surface_libraries_below_the_surface(root: Path) -> list[str]:
    below = set(LAYERS[:SURFACE])
    found = []
    for file in module_files(root):
        module = module_name(root, file)
        if package_of(module) not in below:
            continue
        for imported, line in run_time_imports(file):
            if imported.split(".")[0] in SURFACE_LIBRARIES:
                found.append(f"{module}:{line} imports {imported}")
    return sorted(set(found))


def test_every_module_lives_in_a_layer_package() -> None:
    packages = {path.name for path in PACKAGE.iterdir() if path.is_dir() and path.name != "__pycache__"}
    assert packages == {*LAYERS, EMULATOR}
    loose = sorted(path.name for path in PACKAGE.glob("*.py") if path.name != "__init__.py")
    assert loose == [], "modules outside a layer package"


def test_each_package_says_its_job_in_one_line() -> None:
    for name in (*LAYERS, EMULATOR):
        docstring = ast.get_docstring(ast.parse((PACKAGE / name / "__init__.py").read_text(encoding="utf-8")))
        assert docstring, f"{name}/__init__.py has no docstring"
        assert len(docstring.splitlines()[0]) <= 110, name


def test_packages_import_only_downwards() -> None:
    assert wrong_way_imports(PACKAGE) == []


def test_nothing_below_the_server_imports_mcp_or_starlette() -> None:
    assert surface_libraries_below_the_surface(PACKAGE) == []


def test_the_imports_have_no_cycle() -> None:
    graph = import_graph(PACKAGE)
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


def test_a_wrong_way_import_is_caught(tmp_path: Path) -> None:
    """The rules are not vacuous: a copy of the package with one upward import, one MCP import in the jobs
    layer and one emulator import outside the CLI fails each rule, naming the line."""
    copy = tmp_path / "flux_mcp"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__", "*.mp4", "*.html"))
    catalogue = copy / "domain" / "catalogue.py"
    catalogue.write_text(catalogue.read_text() + "\nfrom flux_mcp.server.build import build_server\n")
    poller = copy / "jobs" / "poller.py"
    poller.write_text(poller.read_text() + "\nfrom mcp.server.mcpserver import Context\n")
    render = copy / "server" / "render.py"
    render.write_text(render.read_text() + "\nfrom flux_mcp.emulator import EmulatorConfig\n")

    assert wrong_way_imports(copy) == [
        "domain.catalogue -> server.build (domain/ is below server/)",
        "server.render -> emulator (only cli/ starts the emulator)",
    ]
    assert surface_libraries_below_the_surface(copy) == [
        f"jobs.poller:{len(poller.read_text().splitlines())} imports mcp.server.mcpserver",
        f"jobs.poller:{len(poller.read_text().splitlines())} imports mcp.server.mcpserver.Context",
    ]


# Each telemetry library has one door: the layers report to `domain.telemetry` (an Observer, spans through
# the OpenTelemetry API), the command sets up the SDK, and only the HTTP app's /metrics knows Prometheus.
TELEMETRY_DOORS = {
    "opentelemetry": {"domain.telemetry", "cli.telemetry"},
    "prometheus_client": {"web.metrics"},
}


def telemetry_imports(root: Path) -> list[str]:
    """`module:line imports X` of each telemetry library imported outside its door."""
    found = []
    for file in module_files(root):
        module = module_name(root, file)
        for imported, line in run_time_imports(file):
            doors = TELEMETRY_DOORS.get(imported.split(".")[0])
            if doors is not None and module not in doors:
                found.append(f"{module}:{line} imports {imported}")
    return sorted(set(found))


def test_telemetry_libraries_are_imported_through_their_one_module(tmp_path: Path) -> None:
    assert telemetry_imports(PACKAGE) == []

    planted = tmp_path / "flux_mcp"
    (planted / "jobs").mkdir(parents=True)
    (planted / "jobs" / "poller.py").write_text("from opentelemetry import trace\nimport prometheus_client\n")
    assert telemetry_imports(planted) == [
        "jobs.poller:1 imports opentelemetry",
        "jobs.poller:1 imports opentelemetry.trace",
        "jobs.poller:2 imports prometheus_client",
    ]


# Calls that change the whole process: warning filters (catch_warnings swaps the one global list, so
# concurrent callers clobber each other), logger levels and handlers. Only the command (cli/) sets them.
PROCESS_WIDE_CALLS = {
    "filterwarnings",
    "simplefilter",
    "resetwarnings",
    "catch_warnings",
    "captureWarnings",
    "setLevel",
    "basicConfig",
    "dictConfig",
    "fileConfig",
    "set_tracer_provider",  # OpenTelemetry's one provider per process
    "set_meter_provider",
}
PROCESS_WIDE_ATTRIBUTES = {"MAX_IMAGE_PIXELS"}  # Pillow's global decompression-bomb limit


def process_wide_settings(root: Path) -> list[str]:
    """`module:line call` of each process-wide setting made outside cli/."""
    found: list[tuple[str, int, str]] = []
    for file in module_files(root):
        module = module_name(root, file)
        if package_of(module) == "cli":
            continue
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and _called_name(node.func) in PROCESS_WIDE_CALLS:
                found.append((module, node.lineno, _called_name(node.func)))
            elif isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    if isinstance(target, ast.Attribute) and target.attr in PROCESS_WIDE_ATTRIBUTES:
                        found.append((module, node.lineno, f"{target.attr} ="))
    return [f"{module}:{line} {what}" for module, line, what in sorted(found)]


def _called_name(func: ast.expr) -> str:
    if isinstance(func, ast.Attribute):
        return func.attr
    return func.id if isinstance(func, ast.Name) else ""


def test_no_library_module_sets_a_warning_filter_or_a_logger_level(tmp_path: Path) -> None:
    assert process_wide_settings(PACKAGE) == []

    planted = tmp_path / "flux_mcp"
    (planted / "media").mkdir(parents=True)
    (planted / "cli").mkdir()
    (planted / "media" / "pictures.py").write_text(
        "import logging, warnings\nfrom PIL import Image\n"
        "warnings.filterwarnings('error')\n"
        "with warnings.catch_warnings():\n    pass\n"
        "logging.getLogger('httpx').setLevel(logging.WARNING)\n"
        "Image.MAX_IMAGE_PIXELS = None\n"
    )
    (planted / "cli" / "logs.py").write_text("import warnings\nwarnings.simplefilter('ignore')\n")
    assert process_wide_settings(planted) == [
        "media.pictures:3 filterwarnings",
        "media.pictures:4 catch_warnings",
        "media.pictures:6 setLevel",
        "media.pictures:7 MAX_IMAGE_PIXELS =",
    ]


def runtime_asserts(root: Path) -> list[str]:
    """`module:line` of each `assert` in flux-mcp's own code (the emulator, a test witness, may use them)."""
    found = []
    for file in module_files(root):
        module = module_name(root, file)
        if package_of(module) == EMULATOR:
            continue
        tree = ast.parse(file.read_text(encoding="utf-8"))
        found.extend(f"{module}:{node.lineno}" for node in ast.walk(tree) if isinstance(node, ast.Assert))
    return sorted(found)


def test_no_assert_guards_the_running_code(tmp_path: Path) -> None:
    """`python -O` removes asserts: a guard that matters is an `if` that raises or answers."""
    assert runtime_asserts(PACKAGE) == []

    planted = tmp_path / "flux_mcp"
    (planted / "jobs").mkdir(parents=True)
    (planted / "emulator").mkdir()
    guarded = "def f(x: int | None) -> int:\n    assert x is not None\n    return x\n"
    (planted / "jobs" / "runner.py").write_text(guarded)
    (planted / "emulator" / "app.py").write_text("assert True\n")
    assert runtime_asserts(planted) == ["jobs.runner:2"]


# --- the tests' own shape: shared helpers live in tests/support and testkit, never in a test module -----

ROOT = PACKAGE.parent.parent


def imported_names(path: Path, root: Path) -> list[tuple[str, int]]:
    """(absolute dotted name, line) of every module or name `path` imports; relative imports resolved."""
    package = list(path.relative_to(root).parent.parts)
    found: list[tuple[str, int]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.extend((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base_parts = package[: len(package) - node.level + 1] if node.level else []
            base = ".".join([*base_parts, *([node.module] if node.module else [])])
            found.append((base, node.lineno))
            found.extend((f"{base}.{alias.name}", node.lineno) for alias in node.names)
    return found


def borrowed_test_code(root: Path) -> list[str]:
    """Every import of a test module anywhere, and of anything in tests/ from benchmarks/ or testkit/."""
    found = []
    for folder in ("tests", "benchmarks", "testkit"):
        for path in module_files(root / folder):
            where = path.relative_to(root).as_posix()
            for name, line in imported_names(path, root):
                parts = name.split(".")
                if parts[0] == "tests" and any(part.startswith("test_") for part in parts):
                    found.append(f"{where}:{line} imports the test module {name}")
                elif parts[0] == "tests" and folder != "tests":
                    found.append(f"{where}:{line} imports {name} from tests/")
    return sorted(set(found))


def test_no_test_module_imports_another_and_benchmarks_import_nothing_from_tests() -> None:
    assert borrowed_test_code(ROOT) == []


def test_borrowed_test_code_is_caught(tmp_path: Path) -> None:
    for folder in ("tests", "benchmarks", "testkit"):
        shutil.copytree(ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns("node_modules"))
    inputs = tmp_path / "tests" / "domain" / "test_inputs.py"
    inputs.write_text(inputs.read_text() + "\nfrom tests.cli.test_cli import run_cli\n")
    http = tmp_path / "tests" / "web" / "test_http.py"
    http.write_text(http.read_text() + "\nfrom . import test_oauth\n")
    replicas = tmp_path / "benchmarks" / "replicas.py"
    replicas.write_text(replicas.read_text() + "\nfrom tests.support import TOKEN\n")

    def last_line(path: Path) -> int:
        return len(path.read_text().splitlines())

    assert borrowed_test_code(tmp_path) == [
        f"benchmarks/replicas.py:{last_line(replicas)} imports tests.support from tests/",
        f"benchmarks/replicas.py:{last_line(replicas)} imports tests.support.TOKEN from tests/",
        f"tests/domain/test_inputs.py:{last_line(inputs)} imports the test module tests.cli.test_cli",
        f"tests/domain/test_inputs.py:{last_line(inputs)} imports the test module tests.cli.test_cli.run_cli",
        f"tests/web/test_http.py:{last_line(http)} imports the test module tests.web.test_oauth",
    ]
