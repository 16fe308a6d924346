"""The package's layers: `version`, `errors`, `config` and `io` on the ground floor; pipelines above them;
erase and eval each on pipelines only; attacks beside eval, on pipelines and eval (nothing below imports
attacks); the erase pipeline (`recipe`, `stages`, `adversarial`, `evaluation`, `record`,
`api`), the CLI and the base-model recipes on top. No module imports the package top (`erasekit`), and no
import circle runs through the package. Model families are known to the adapter registry alone."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[1] / "src" / "erasekit"
# layer -> erasekit subpackages/modules it must not import
TOP = {"recipes", "api", "cli", "recipe", "stages", "evaluation", "record", "adversarial"}
FORBIDDEN = {
    "pipelines": {"erase", "eval", "attacks", *TOP},
    "erase": {"eval", "attacks", *TOP},
    "eval": {"erase", "attacks", *TOP},
    "attacks": {"erase", *TOP},
}
GROUND = ("version.py", "errors.py", "config.py", "io.py", "progress.py")


def _modules(layer: str) -> list[Path]:
    return sorted((PACKAGE / layer).rglob("*.py"))


def _imported(path: Path) -> set[str]:
    """First component under `erasekit` of every import in `path` (absolute or relative)."""
    tree = ast.parse(path.read_text())
    package = path.relative_to(PACKAGE.parent).parent.parts  # e.g. ("erasekit", "erase")
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(package[: len(package) - node.level + 1])
                parts = base + (node.module.split(".") if node.module else [])
                names = [parts + [a.name] for a in node.names] if not node.module else [parts]
            else:
                names = [(node.module or "").split(".")]
            for parts in names:
                if parts[0] == "erasekit" and len(parts) > 1:
                    found.add(parts[1])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "erasekit" and len(parts) > 1:
                    found.add(parts[1])
    return found


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_no_layer_imports_the_layers_above_it(layer):
    bad = {str(p.relative_to(PACKAGE)): sorted(_imported(p) & FORBIDDEN[layer]) for p in _modules(layer)}
    assert not {k: v for k, v in bad.items() if v}


def test_the_import_checker_sees_relative_and_absolute_imports(tmp_path):
    module = PACKAGE / "erase" / "_probe_for_test.py"
    module.write_text("from ..eval import metrics\nimport erasekit.recipes.train_base\nfrom . import tasks\n")
    try:
        assert _imported(module) == {"eval", "recipes", "erase"}
    finally:
        module.unlink()


def _outside_adapters() -> list[Path]:
    skip = ("pipelines/adapters/", "pipelines/pipeline_class_conditional.py",
            "recipes/")  # builders and recipes construct models of one known family
    return [p for p in PACKAGE.rglob("*.py") if not str(p.relative_to(PACKAGE)).startswith(skip)]


def test_no_pipeline_class_checks_or_unet_attribute_outside_the_adapters():
    offenders = []
    for path in _outside_adapters():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "isinstance" and len(node.args) == 2:
                if "Pipeline" in ast.unparse(node.args[1]):
                    offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {ast.unparse(node)}")
            if isinstance(node, ast.Attribute) and node.attr in ("unet", "transformer"):
                offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno} .{node.attr}")
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "hasattr" and len(node.args) == 2:
                if "text_encoder" in ast.unparse(node.args[1]):
                    offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {ast.unparse(node)}")
    assert not offenders, offenders


def test_library_code_logs_instead_of_printing():
    printing = [str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py") if p.name != "cli.py"
                and any(isinstance(n, ast.Call) and getattr(n.func, "id", "") == "print"
                        for n in ast.walk(ast.parse(p.read_text())))]
    assert not printing


def test_the_ground_floor_imports_nothing_of_the_package_above_it():
    for name in GROUND:
        above = _imported(PACKAGE / name) - {Path(n).stem for n in GROUND}
        assert not above, (name, above)


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(parts: list[str]) -> str | None:
    """The package module an import names: the deepest prefix of `parts` that is a module or package."""
    for end in range(len(parts), 0, -1):
        path = PACKAGE.parent.joinpath(*parts[:end])
        if path.with_suffix(".py").is_file() or (path / "__init__.py").is_file():
            return ".".join(parts[:end])
    return None


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """module -> the package modules it imports (anywhere in it, functions included)."""
    graph: dict[str, set[str]] = {}
    for path in sorted(package.rglob("*.py")):
        name, here = _module_name(path), path.relative_to(PACKAGE.parent).parent.parts
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = list(here[: len(here) - node.level + 1]) if node.level else []
                parts = base + (node.module.split(".") if node.module else [])
                targets.update(_resolve(parts + [a.name]) for a in node.names)
            elif isinstance(node, ast.Import):
                targets.update(_resolve(a.name.split(".")) for a in node.names)
        graph[name] = {t for t in targets if t and t != name and t.split(".")[0] == "erasekit"}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One import circle through each strongly connected group of modules (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_circle_and_no_import_of_the_package_top():
    graph = import_graph()
    assert not cycles(graph)
    climbing = sorted(name for name, targets in graph.items() if "erasekit" in targets)
    assert not climbing, climbing


def test_the_circle_checker_finds_a_circle_and_a_climb():
    probe = PACKAGE / "erase" / "_probe_circle.py"
    probe.write_text("from .. import __version__\nfrom . import _probe_other\n")
    other = PACKAGE / "erase" / "_probe_other.py"
    other.write_text("def f():\n    from ._probe_circle import x\n")
    try:
        graph = import_graph()
        assert ["erasekit.erase._probe_circle", "erasekit.erase._probe_other"] in cycles(graph)
        assert "erasekit" in graph["erasekit.erase._probe_circle"]
    finally:
        probe.unlink()
        other.unlink()


MAX_MODULE_LINES, MAX_FUNCTION_LINES = 400, 60


def test_modules_and_functions_stay_short():
    long_modules, long_functions = [], []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text()
        if len(text.splitlines()) > MAX_MODULE_LINES:
            long_modules.append(f"{path.relative_to(PACKAGE)} ({len(text.splitlines())} lines)")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long_functions.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long_modules and not long_functions, long_modules + long_functions
