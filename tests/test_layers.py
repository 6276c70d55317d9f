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


HEAVY = ("torch", "torchvision", "cv2", "av", "decord")


def package_of(module: str) -> str:
    """stage (pipeline/<stage>.py: a command), core, compute, workflow, or models."""
    parts = module.split(".")
    if parts[0] == "models":
        return "models"
    return parts[1] if parts[1] in ("core", "compute", "workflow") else "stage"


# What each kind may import from the project: the arrows point down (docs/architecture.md).
MAY_IMPORT = {
    "core": {"core"},  # torch-free, below everything; pipeline/core/settings.py reads models.tvl1_params
    "workflow": {"core", "workflow"},  # parse time: torch-free like core
    "compute": {"core", "compute", "models"},
    "stage": {"core", "compute", "models"},  # never another stage
    "models": {"models"},
}


def test_each_package_imports_only_below_it():
    graph = import_graph()
    wrong = sorted(f"{m} -> {t}" for m, ts in graph.items() for t in ts
                   if package_of(t) not in MAY_IMPORT[package_of(m)] and t != "models.tvl1_params")
    assert wrong == []


def test_core_and_workflow_import_no_torch_cv2_av_or_decord_anywhere():
    """The torch-free boundary is the packages: pipeline/core/ and pipeline/workflow/, imports inside
    functions included, so nothing the Snakefile or a light stage reaches can load them."""
    found = []
    for d in ("core", "workflow"):
        for path in (REPO / "pipeline" / d).glob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                         else [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
                found += [f"{path.relative_to(REPO)}: {n}" for n in names if n.split(".")[0] in HEAVY]
    assert found == []


def test_the_top_level_of_pipeline_is_its_commands():
    """pipeline/<name>.py is a command (`python -m pipeline.<name>`): a stage, or warm, which starts the
    per-video torch stages; shared code lives in the sub-packages."""
    for path in (REPO / "pipeline").glob("*.py"):
        if path.name != "__init__.py":
            text = path.read_text()
            assert "def main(" in text and '__name__ == "__main__"' in text, path.name
