"""Colab badges and install cells (calgrpo_lib.colab): written from one address, idempotent, guarded in the repo."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import types
from pathlib import Path

import nbformat
import pytest
from conftest import ROOT

from calgrpo_lib.colab import (
    BADGE_IMAGE,
    INSTALL_TAG,
    README_START,
    add_colab,
    colab_url,
    install_cell_source,
    install_spec,
    main,
    parse_repo,
    repository_from_pyproject,
    set_repository,
)


@pytest.fixture
def repo_copy(tmp_path: Path) -> Path:
    for name in ("README.md", "pyproject.toml"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "notebooks", tmp_path / "notebooks", ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    return tmp_path


def _snapshot(root: Path) -> dict[str, str]:
    files = [root / "README.md", *(root / "notebooks").glob("*.ipynb")]
    return {str(p.relative_to(root)): p.read_text() for p in files}


def test_the_committed_files_are_as_the_tool_writes_them_for_pyproject_address() -> None:
    # No address: no notebook has a badge or an install cell and the README says how to add them. An address: all
    # of them point at it. Either way, a hand edit or a stale badge shows up here.
    repo = repository_from_pyproject(ROOT / "pyproject.toml")
    assert add_colab(ROOT, repo, check=True) == [], "run `make colab` (python -m calgrpo_lib.colab) and commit"
    if repo is None:
        assert "github.com/<" not in (ROOT / "README.md").read_text()  # no placeholder address either


def test_an_address_gives_every_notebook_a_badge_and_an_install_cell(repo_copy: Path) -> None:
    before = _snapshot(repo_copy)
    changed = add_colab(repo_copy, "https://github.com/acme/calgrpo.git", branch="dev")
    assert len(changed) == len(before)
    for path in sorted((repo_copy / "notebooks").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        title, install = nb.cells[0], nb.cells[1]
        assert title.source.startswith("# ") and colab_url("acme/calgrpo", path.name, "dev") in title.source
        assert f"github/acme/calgrpo/blob/dev/notebooks/{path.name}" in title.source
        assert install.cell_type == "code" and install.metadata["tags"] == [INSTALL_TAG]
        assert install_spec("git+https://github.com/acme/calgrpo.git@dev") in install.source
        assert sum(INSTALL_TAG in c.metadata.get("tags", []) for c in nb.cells) == 1
    readme = (repo_copy / "README.md").read_text()
    assert readme.count(BADGE_IMAGE) == len(before) - 1 and "#egg=" not in readme
    after = _snapshot(repo_copy)
    assert add_colab(repo_copy, "acme/calgrpo", branch="dev") == [] and _snapshot(repo_copy) == after  # idempotent
    add_colab(repo_copy, None)  # and undone exactly
    assert _snapshot(repo_copy) == before


def test_the_install_cell_does_nothing_off_colab_and_installs_on_colab(monkeypatch) -> None:
    calls: list[list[str]] = []
    monkeypatch.setattr(subprocess, "run", lambda args, check: calls.append(args))
    source = install_cell_source("acme/calgrpo")
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    exec(compile(source, "<install cell>", "exec"), {})
    assert calls == []
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    exec(compile(source, "<install cell>", "exec"), {})
    assert calls == [[sys.executable, "-m", "pip", "install", "-q",
                      "calgrpo[gemini] @ git+https://github.com/acme/calgrpo.git@main"]]


def test_the_address_is_kept_in_pyproject(tmp_path: Path) -> None:
    path = tmp_path / "pyproject.toml"
    base = (ROOT / "pyproject.toml").read_text()
    path.write_text(base)
    assert set_repository(path, "acme/calgrpo") and not set_repository(path, "acme/calgrpo")
    assert repository_from_pyproject(path) == "acme/calgrpo"
    assert tomllib.loads(path.read_text())["project"]["name"] == tomllib.loads(base)["project"]["name"]
    assert set_repository(path, "https://github.com/other/fork") and repository_from_pyproject(path) == "other/fork"
    path.write_text(base + '\n[project.urls]\nHomepage = "https://example.org"\n')
    set_repository(path, "acme/calgrpo")
    urls = tomllib.loads(path.read_text())["project"]["urls"]
    assert urls == {"Homepage": "https://example.org", "Repository": "https://github.com/acme/calgrpo"}


@pytest.mark.parametrize("bad", ["calgrpo", "a/b/c", "https://gitlab.com/a/b", "a b/c", ""])
def test_a_bad_address_is_refused_by_name(bad: str) -> None:
    with pytest.raises(ValueError, match=r"repo=.*OWNER/NAME"):
        parse_repo(bad)


def test_the_command_line(repo_copy: Path, capsys) -> None:
    assert main(["--root", str(repo_copy), "--check"]) == 0
    with pytest.raises(SystemExit):  # --check compares with pyproject's address, never one given with it
        main(["--root", str(repo_copy), "--check", "--repo", "acme/calgrpo"])
    with pytest.raises(SystemExit):
        main(["--root", str(repo_copy), "--repo", "acme/calgrpo", "--branch", "bad branch"])
    assert "branch='bad branch'" in capsys.readouterr().err
    assert main(["--root", str(repo_copy), "--repo", "acme/calgrpo"]) == 0
    assert repository_from_pyproject(repo_copy / "pyproject.toml") == "acme/calgrpo"
    assert main(["--root", str(repo_copy), "--check"]) == 0  # what it wrote is what --check expects
    readme = repo_copy / "README.md"
    readme.write_text(readme.read_text().replace(README_START, README_START + "\nhand edit"))
    assert main(["--root", str(repo_copy), "--check"]) == 1
