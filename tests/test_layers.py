"""The layers point down: models/ never imports pipeline/, and the project's modules import no circle."""
import ast

from conftest import REPO


def import_graph() -> dict[str, set[str]]:
    mods = {".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__"): p
            for d in ("pipeline", "models") for p in (REPO / d).rglob("*.py")}
    graph = {m: set() for m in mods}
    for m, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text())):  # imports inside functions count too
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            graph[m] |= {n for n in names if n in mods and n != m and n not in ("pipeline", "models")}
    return graph


def test_models_never_import_pipeline():
    graph = import_graph()
    assert sorted(f"{m} -> {t}" for m, ts in graph.items() if m.startswith("models.")
                  for t in ts if t.startswith("pipeline")) == []


def test_no_import_circles():
    graph = import_graph()

    def reaches(start):
        seen, todo = set(), list(graph[start])
        while todo:
            m = todo.pop()
            if m not in seen:
                seen.add(m)
                todo += graph[m]
        return seen

    circles = sorted(m for m in graph if m in reaches(m))
    assert circles == [], f"modules on an import circle: {circles}"
