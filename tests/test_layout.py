"""The packages follow the data flow, and data flows one way: no module imports from a stage that stands
after its own (imports inside functions count too)."""

from __future__ import annotations

import ast

from conftest import ROOT

PACKAGE = ROOT / "src" / "tweetforge"
FLOW = [
    {"tweetforge", "tweetforge.errors", "tweetforge.config", "tweetforge.files", "tweetforge.artifacts", "tweetforge.plotting"},
    {"tweetforge.db"},
    {"tweetforge.data"},
    {"tweetforge.training", "tweetforge.models"},
    {"tweetforge.registry"},
    {"tweetforge.generation"},
    {"tweetforge.evaluation"},
    {"tweetforge.experiments"},
    {"tweetforge.pipeline"},
    {"tweetforge.serving"},
    {"tweetforge.ui"},
    {"tweetforge.cli", "tweetforge.__main__"},
]


def stage_of(module: str) -> int:
    best = None
    for index, names in enumerate(FLOW):
        for name in names:
            if (module == name or module.startswith(name + ".")) and (best is None or len(name) > len(best[1])):
                best = (index, name)
    assert best is not None, f"{module} belongs to no stage of the flow: add its package to FLOW"
    return best[0]


def module_name(path) -> str:  # type: ignore[no-untyped-def]
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported(tree: ast.AST) -> set[str]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tweetforge"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("tweetforge")}
    return found


def test_no_module_imports_from_a_later_stage():
    backwards = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if "migrations" in path.parts:
            continue
        own = module_name(path)
        for target in imported(ast.parse(path.read_text())):
            if stage_of(target) > stage_of(own):
                backwards.append(f"{own} imports {target}")
    assert backwards == []


def test_the_top_level_reads_like_the_pipeline():
    packages = sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists())
    assert packages == ["data", "db", "evaluation", "experiments", "generation", "models", "pipeline", "registry", "serving", "training", "ui"]
    modules = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert modules == ["__init__.py", "__main__.py", "artifacts.py", "cli.py", "config.py", "errors.py", "files.py", "plotting.py"]
