"""The plan of the house (ARCHITECTURE.md), checked on the source: arrows point one way and
no module imports itself in a circle, lazy imports inside functions included (they are still
dependencies; they only run later)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def import_graph() -> dict[str, set[str]]:
    files = {}
    for path in (ROOT / "workbench").rglob("*.py"):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        files[name.removesuffix(".__init__")] = path
    graph = {}
    for name, path in files.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("workbench"):
                for alias in node.names:  # `from workbench.train import ranks` names a module
                    sub = f"{node.module}.{alias.name}"
                    deps.add(sub if sub in files else node.module)
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.startswith("workbench")}
        graph[name] = {d for d in deps if d in files and d != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def _inside(module: str, room: str) -> bool:
    return module == room or module.startswith(room + ".")


# room -> rooms it must never import. The pipeline is the floor above train and evaluate;
# the run-directory contract is below everything that reads runs.
FORBIDDEN = {
    "workbench.train": ("workbench.evaluate", "workbench.pipeline", "workbench.export",
                        "workbench.sweep"),
    "workbench.evaluate": ("workbench.pipeline", "workbench.train.runner",
                           "workbench.train.trainer", "workbench.train.methods.sft",
                           "workbench.train.methods.preference", "workbench.train.methods.grpo",
                           "workbench.train.methods.grpo_trainer"),
    # Reward functions are pure Python below everything that trains or evaluates with them.
    "workbench.rewards": ("workbench.train", "workbench.evaluate", "workbench.pipeline",
                          "workbench.data", "workbench.estimate", "workbench.export",
                          "workbench.sweep"),
    "workbench.data": ("workbench.train", "workbench.evaluate", "workbench.pipeline",
                       "workbench.estimate", "workbench.export", "workbench.sweep"),
    "workbench.estimate": ("workbench.evaluate", "workbench.pipeline", "workbench.export",
                           "workbench.sweep", "workbench.train.runner", "workbench.train.methods"),
    "workbench.rundir": ("workbench.train", "workbench.evaluate", "workbench.pipeline"),
}


def test_arrows_point_one_way():
    graph = import_graph()
    wrong = [f"{m} -> {d}" for room, banned in FORBIDDEN.items()
             for m, deps in graph.items() if _inside(m, room)
             for d in deps if any(_inside(d, b) for b in banned)]
    assert not wrong, "imports against the plan of the house:\n" + "\n".join(sorted(wrong))


def test_no_import_circles_in_the_engine():
    graph = import_graph()
    # workbench.cli is the entry point that dispatches to every room (and sweep.cli borrows
    # its UserError); the engine below it must be free of circles.
    engine = {m: {d for d in deps if d != "workbench.cli"} for m, deps in graph.items()
              if m != "workbench.cli"}
    assert cycles(engine) == []


def test_the_checker_sees_lazy_imports_and_circles():
    graph = import_graph()
    assert "workbench.train.runner" in graph["workbench.pipeline.run"]  # imported in a function
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_every_method_in_the_profile_schema_has_a_module():
    from importlib import util

    from workbench.profile import TRAIN_METHODS
    from workbench.train.methods import METHODS

    assert tuple(METHODS) == TRAIN_METHODS
    for method in METHODS.values():
        assert util.find_spec(f"workbench.train.methods.{method.module}") is not None
