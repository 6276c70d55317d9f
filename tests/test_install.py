"""The package describes itself: `pip install .` in a fresh virtual environment gives a package whose stage
CLIs run, and whose declared dependencies are what the code imports (the project's .venv provides them here,
so only the build backend is fetched, from PyPI)."""
import ast
import subprocess
import sys
import sysconfig
from pathlib import Path

from conftest import REPO

# import name -> distribution name, where they differ
DISTRIBUTIONS = {"cv2": "opencv-contrib-python-headless", "yaml": "pyyaml", "av": "av"}
OPTIONAL = {"decord": "decord", "skvideo": "test", "pytest": "test"}


def third_party_imports() -> set[str]:
    names = set()
    for path in [*(REPO / "pipeline").rglob("*.py"), *(REPO / "models").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n not in ("pipeline", "models", "__future__")}


def test_pip_install_in_a_fresh_venv_runs_a_stage_and_declares_what_the_code_imports(tmp_path):
    import shutil

    src = tmp_path / "src"  # a copy: setuptools builds in the source folder (build/, *.egg-info)
    for name in ("pipeline", "models"):
        shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, src / name)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
    py = venv / "bin" / "python"
    r = subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", str(src)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    # the dependencies come from the project's .venv (already installed: nothing is downloaded)
    env = {"PYTHONPATH": sysconfig.get_paths()["purelib"], "PATH": "/usr/bin:/bin"}
    r = subprocess.run([str(py), "-m", "pipeline.decode", "--help"], capture_output=True, text=True, env=env,
                       cwd=tmp_path)  # not the checkout: the installed package
    assert r.returncode == 0 and "--frames" in r.stdout, r.stderr[-3000:]
    where = subprocess.run([str(py), "-c", "import pipeline; print(pipeline.__file__)"], capture_output=True,
                           text=True, env=env, cwd=tmp_path).stdout
    assert str(venv) in where
    (info,) = venv.glob("lib/python*/site-packages/vidloc-*.dist-info")  # the install's own metadata
    requires = [line.split(":", 1)[1].strip() for line in (info / "METADATA").read_text().splitlines()
                if line.startswith("Requires-Dist:")]
    declared = {line.split(";")[0].split("[")[0].split("<")[0].split(">")[0].split("=")[0].strip().lower(): line
                for line in requires}
    runtime = {k for k, v in declared.items() if "extra ==" not in v}
    for name in third_party_imports():
        dist = DISTRIBUTIONS.get(name, name).lower()
        if name in OPTIONAL:
            assert dist in declared and "extra ==" in declared[dist], f"{name}: an optional dependency"
        else:
            assert dist in runtime, f"pipeline/ or models/ imports {name}, which pyproject.toml does not declare"
    assert not {"pytest", "scikit-video"} & runtime  # test-only packages are not runtime requirements
    # the pinned set make setup installs (requirements.txt) lies within every declared range
    from importlib.metadata import version

    from packaging.requirements import Requirement

    for line in requires:
        req = Requirement(line)
        if req.marker is None:
            assert req.specifier.contains(version(req.name), prereleases=True), (line, version(req.name))
