"""The package's layers: pipelines at the bottom; erase and eval each on pipelines only; the API, CLI and
base-model recipes on top. Model families are known to the adapter registry alone."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[1] / "src" / "erasekit"
# layer -> erasekit subpackages/modules it must not import
FORBIDDEN = {
    "pipelines": {"erase", "eval", "recipes", "api", "cli"},
    "erase": {"eval", "recipes", "api", "cli"},
    "eval": {"erase", "recipes", "api", "cli"},
}


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
