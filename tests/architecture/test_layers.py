"""The import graph follows ../shared/DESIGN.md: cli → workflows → feature packages → base packages.

Every ``import lmforge.x`` and ``from lmforge.x import`` counts, also those inside functions: a lazy import is
still a dependency.
"""

import ast
from pathlib import Path

import lmforge

ROOT = Path(lmforge.__file__).parent
FEATURES = {"compress", "evaluate", "audit", "explain", "scaling", "train", "serve", "report"}
BASE = {"models", "data", "runs", "energy", "errors", "io", "paths", "formatting"}


def imported_packages(path: Path) -> set[str]:
    """The lmforge top-level packages (or modules) a source file imports."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found |= {name.split(".")[1] for name in names if name.startswith("lmforge.")}
    return found


def edges() -> dict[tuple[str, str], list[str]]:
    """(importing package, imported package) → the files that make that edge."""
    graph: dict[tuple[str, str], list[str]] = {}
    for path in ROOT.rglob("*.py"):
        relative = path.relative_to(ROOT)
        if relative == Path("__init__.py"):  # the package root wires plug-ins (see its comment)
            continue
        package = relative.parts[0].removesuffix(".py")
        for target in imported_packages(path) - {package}:
            graph.setdefault((package, target), []).append(str(relative))
    return graph


def test_every_package_is_placed_in_a_layer():
    packages = {p.name.removesuffix(".py") for p in ROOT.iterdir() if p.name != "__init__.py" and not p.name.startswith("__")
                and (p.is_dir() or p.suffix == ".py")}
    assert packages - {"cli", "workflows"} == FEATURES | BASE, "a new package must be added to a layer here and in DESIGN.md"


def test_feature_packages_do_not_import_each_other():
    bad = {edge: files for edge, files in edges().items() if edge[0] in FEATURES and edge[1] in FEATURES}
    assert not bad, f"feature packages import each other (pass results as arguments, or move the job to workflows): {bad}"


def test_base_packages_import_no_layer_above_them():
    bad = {edge: files for edge, files in edges().items() if edge[0] in BASE and edge[1] in FEATURES | {"workflows", "cli"}}
    assert not bad, f"base packages import upwards: {bad}"


def test_only_the_cli_imports_the_cli():
    bad = {edge: files for edge, files in edges().items() if edge[1] == "cli" and edge[0] != "cli"}
    assert not bad, f"the CLI is the top layer: {bad}"


def test_cli_modules_are_parsing_and_printing():
    long = {p.name: n for p in (ROOT / "cli").glob("*.py") if (n := len(p.read_text().splitlines())) > 125}
    assert not long, f"CLI modules over ~120 lines hold work that belongs in workflows: {long}"


def test_the_graph_is_read_from_real_imports():
    """The checks above would pass on an empty graph; make sure the walk sees the edges every layer has."""
    graph = edges()
    assert ("cli", "workflows") in graph and ("workflows", "compress") in graph and ("workflows", "evaluate") in graph
    assert ("compress", "models") in graph and ("evaluate", "models") in graph


def module_graph() -> dict[str, set[str]]:
    """Module → the lmforge modules it imports (lazy imports too). Package ``__init__`` files are left out as nodes:
    they re-export their submodules, which is not a dependency of those submodules on each other."""
    files = {".".join(p.relative_to(ROOT.parent).with_suffix("").parts).removesuffix(".__init__"): p
             for p in ROOT.rglob("*.py")}

    def module_of(name: str) -> str:  # `from lmforge.a.b import c`: module a.b.c if it exists, else a.b
        while name not in files:
            name = name.rpartition(".")[0]
        return name

    graph = {}
    for name, path in files.items():
        if path.name == "__init__.py":
            continue
        imported = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.startswith("lmforge"):
                imported |= {module_of(f"{node.module}.{alias.name}") for alias in node.names}
            elif isinstance(node, ast.Import):
                imported |= {module_of(alias.name) for alias in node.names if alias.name.startswith("lmforge")}
        graph[name] = {m for m in imported if m != name and files[m].name != "__init__.py"}
    return graph


def test_no_two_modules_import_each_other():
    """No circle of imports between modules (e.g. a pipeline importing the engine that imports the pipeline):
    an engine or loader that must be reachable registers itself instead."""
    graph = module_graph()
    assert ("lmforge.data.curate.ray_engine", "lmforge.data.curate.pipeline") in {(a, b) for a in graph for b in graph[a]}
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            raise AssertionError(f"import circle: {' → '.join(path[path.index(module):] + [module])}")
        if module in done:
            return
        for imported in sorted(graph[module]):
            visit(imported, path + [module])
        done.add(module)

    for module in sorted(graph):
        visit(module, [])
