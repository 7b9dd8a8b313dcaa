"""The package as a user outside the repository gets it (Colab, a plain ``pip install``): installed into a fresh
virtual environment from a git copy of the repository with the requirement string the Colab install cell uses
(``calgrpo[gemini] @ git+...@main``, :func:`calgrpo_lib.colab.install_spec`), and every notebook run from a folder of
its own, against the installed copy.

The fresh environment gets ``calgrpo`` from that install only; its dependencies are this environment's (a ``.pth``
line after its own site-packages: no network, and no second copy of torch). Notebooks run in their CI setting
(``CALGRPO_QUICK=1``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import nbformat
import pytest
from conftest import ROOT

from calgrpo_lib.colab import install_spec

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
# left out of the copy that is built: what the repository has beside the package
NOT_BUILT = shutil.ignore_patterns(".venv", ".git", "build", "*.egg-info", "runs", "__pycache__", ".pytest_cache",
                                   ".ruff_cache", ".hypothesis", "notebooks", "tests", "bench", "cache")


def test_every_package_of_calgrpo_lib_is_listed_in_pyproject() -> None:
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "calgrpo_lib").rglob("__init__.py")}
    assert found <= listed, f"packages missing from [tool.setuptools] packages: {sorted(found - listed)}"
    assert "calgrpo_lib.results" in listed  # the published results, for notebook 05


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """(the fresh environment's python, the environment its notebooks run in)."""
    work = tmp_path_factory.mktemp("installed")
    src = work / "src"  # a git repository, as GitHub serves it: what is committed there is what pip builds
    shutil.copytree(ROOT, src, ignore=NOT_BUILT)
    git = ["git", "-C", str(src), "-c", "user.name=test", "-c", "user.email=test@localhost"]
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "snapshot"]):
        subprocess.run(git + args, check=True, capture_output=True)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(work / "venv")], check=True)
    python = work / "venv" / "bin" / "python"
    site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    (site / "calgrpo_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    spec = install_spec(f"git+file://{src}@main")  # as on Colab, with a file address for GitHub's
    run = subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--no-build-isolation",
                          spec], capture_output=True, text=True)
    assert run.returncode == 0, f"pip install {spec!r} failed:\n{run.stderr[-3000:]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "PYTHONPATH"))}
    env.update(CALGRPO_QUICK="1", MPLBACKEND="module://matplotlib_inline.backend_inline",
               JUPYTER_DATA_DIR=str(work / "jupyter"), JUPYTER_CONFIG_DIR=str(work / "jupyter" / "config"),
               JUPYTER_RUNTIME_DIR=str(work / "jupyter" / "runtime"))
    return python, env


def test_the_install_holds_the_package_its_data_and_the_published_results(installed) -> None:
    python, env = installed
    probe = ("import calgrpo_lib, pathlib; root = pathlib.Path(calgrpo_lib.__file__).parent; print(root); "
             "from calgrpo_lib.results_file import find_results; print(find_results('results/experiment_v2.json')); "
             "from calgrpo_lib.policy import TINY_DIR; print(TINY_DIR.is_dir())")
    out = subprocess.run([python, "-c", probe], check=True, capture_output=True, text=True, env=env,
                         cwd=python.parents[2]).stdout.split()
    root = Path(out[0])
    assert root.is_relative_to(python.parents[1]) and not root.is_relative_to(ROOT)  # the installed copy
    assert Path(out[1]) == root / "results" / "experiment_v2.json" and out[2] == "True"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_the_notebook_runs_from_another_folder_against_the_installed_package(installed, notebook: Path,
                                                                              tmp_path: Path) -> None:
    python, env = installed
    nb = nbformat.read(notebook, as_version=4)
    venv = python.parents[1]
    nb.cells.insert(0, nbformat.v4.new_code_cell(  # the kernel imports the installed copy, not the repository's
        f"import calgrpo_lib, pathlib\nassert pathlib.Path(calgrpo_lib.__file__).is_relative_to({str(venv)!r}), "
        f"calgrpo_lib.__file__"))
    course = tmp_path / "my-course"  # a folder with no repository around it
    course.mkdir()
    nbformat.write(nb, course / notebook.name)
    run = subprocess.run([python, "-m", "nbconvert", "--to", "notebook", "--execute", "--output",
                          "executed.ipynb", "--ExecutePreprocessor.timeout=600", notebook.name], cwd=course, env=env,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    executed = nbformat.read(course / "executed.ipynb", as_version=4)
    errors = [o for c in executed.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors and len(executed.cells) == len(nb.cells)
