"""Open-in-Colab badges and the Colab install cell, written into the notebooks and the README from one GitHub address.

A notebook opened on Colab (``https://colab.research.google.com/github/OWNER/NAME/blob/BRANCH/notebooks/NB.ipynb``)
starts in a runtime without this package. :func:`add_colab` gives every notebook in ``notebooks/``:

- an *Open in Colab* badge under its title, pointing at the notebook's GitHub path;
- a first code cell (tagged ``colab-install``) that pip-installs ``calgrpo[gemini] @ git+https://github.com/OWNER/NAME.git@BRANCH``
  when it runs on Colab (``google.colab`` is imported there) and does nothing anywhere else;

and rewrites the README's Colab block (between ``<!-- colab:start -->`` and ``<!-- colab:end -->``) with a badge per
notebook and the install command. Running it again rewrites the same text (it is idempotent), so ``--check`` can
guard the committed files. The address comes from ``--repo`` or, when that is left out, from
``[project.urls] Repository`` in ``pyproject.toml``, the one place it is kept (``--repo`` writes it there).
Without an address the notebooks carry no badge or install cell, and the README's block says how to add them::

    python -m calgrpo_lib.colab --repo OWNER/NAME [--branch main]     # or: make colab REPO=OWNER/NAME
    python -m calgrpo_lib.colab --check                               # exit 1 if a file is not as written
"""

from __future__ import annotations

import argparse
import re
import tomllib
from pathlib import Path

import nbformat

__all__ = ["BADGE_IMAGE", "INSTALL_TAG", "README_START", "README_END", "parse_repo", "repository_from_pyproject",
           "repository_from_pyproject_text", "set_repository", "install_spec", "install_cell_source", "colab_url",
           "badge_markdown", "readme_block", "add_colab", "main"]

BADGE_IMAGE = "https://colab.research.google.com/assets/colab-badge.svg"
INSTALL_TAG = "colab-install"  #: the tag of the install cell in a notebook's metadata
README_START, README_END = "<!-- colab:start -->", "<!-- colab:end -->"
_REPO = re.compile(r"^(?:https?://github\.com/)?([A-Za-z0-9_.-]+)/([A-Za-z0-9_.-]+?)(?:\.git)?/?$")
_BRANCH = re.compile(r"^[A-Za-z0-9_./-]+$")


def parse_repo(repo: str) -> str:
    """``OWNER/NAME`` from ``OWNER/NAME``, ``https://github.com/OWNER/NAME`` or ``....git``; ValueError otherwise."""
    m = _REPO.match(repo.strip()) if isinstance(repo, str) else None
    if m is None:
        raise ValueError(f"repo={repo!r} is not a GitHub repository: expected OWNER/NAME or https://github.com/OWNER/NAME")
    return f"{m.group(1)}/{m.group(2)}"


def repository_from_pyproject(pyproject: str | Path) -> str | None:
    """``OWNER/NAME`` from ``[project.urls] Repository`` of ``pyproject``, or None when it names none."""
    return repository_from_pyproject_text(Path(pyproject).read_text())


def repository_from_pyproject_text(text: str) -> str | None:
    """:func:`repository_from_pyproject` on the file's text."""
    urls = tomllib.loads(text).get("project", {}).get("urls", {})
    url = next((v for k, v in urls.items() if k.lower() in ("repository", "source", "source code")), None)
    return parse_repo(url) if url else None


def install_spec(url: str, extras: str = "gemini") -> str:
    """The PEP 508 direct reference pip accepts: ``calgrpo[extras] @ URL`` (``url`` like ``git+https://...git@main``).

    Not the old ``git+https://...#egg=calgrpo[gemini]``: current pip (26.x) refuses an egg fragment with extras.
    """
    return f"calgrpo[{extras}] @ {url}" if extras else f"calgrpo @ {url}"


def _git_url(repo: str, branch: str) -> str:
    return f"git+https://github.com/{parse_repo(repo)}.git@{branch}"


def install_cell_source(repo: str, branch: str = "main") -> str:
    """The first code cell of every notebook: installs the package on Colab, does nothing elsewhere."""
    spec = install_spec(_git_url(repo, branch))
    return ("# On Colab: install calgrpo from GitHub (about a minute). Anywhere else this cell does nothing.\n"
            "import subprocess\nimport sys\n\n"
            "if \"google.colab\" in sys.modules:\n"
            f"    spec = \"{spec}\"\n"
            "    subprocess.run([sys.executable, \"-m\", \"pip\", \"install\", \"-q\", spec], check=True)")


def colab_url(repo: str, notebook: str, branch: str = "main") -> str:
    """The address that opens ``notebooks/<notebook>`` of ``repo`` on Colab."""
    return f"https://colab.research.google.com/github/{parse_repo(repo)}/blob/{branch}/notebooks/{notebook}"


def badge_markdown(repo: str, notebook: str, branch: str = "main") -> str:
    """``[![Open In Colab](badge)](colab_url)``: the badge line a notebook carries under its title."""
    return f"[![Open In Colab]({BADGE_IMAGE})]({colab_url(repo, notebook, branch)})"


def readme_block(repo: str | None, notebooks: list[str], branch: str = "main") -> str:
    """The README's Colab block (markers included): a badge per notebook and the install line, or how to add them."""
    if repo is None:
        body = ("- **Colab**: not set up in this copy: it names no GitHub address (`[project.urls] Repository` in\n"
                "  `pyproject.toml`). `make colab REPO=OWNER/NAME` writes an *Open in Colab* badge into each notebook "
                "and here,\n  and a first cell that installs the package when a notebook runs on Colab.")
    else:
        badges = "\n".join(f"  - {nb}: {badge_markdown(repo, nb, branch)}" for nb in notebooks)
        body = (f"- **Colab**: open a notebook from its badge; its first cell runs\n"
                f"  `pip install \"{install_spec(_git_url(repo, branch))}\"` there (and nothing elsewhere).\n"
                "  Set `GEMINI_API_KEY` in Colab's *Secrets* panel to let notebook 02 call Gemini; choose a GPU "
                "runtime for the\n  real-model cells of notebook 04.\n" + badges)
    return f"{README_START}\n{body}\n{README_END}"


def _with_colab(nb: nbformat.NotebookNode, name: str, repo: str | None, branch: str) -> nbformat.NotebookNode:
    cells = [c for c in nb.cells if INSTALL_TAG not in c.get("metadata", {}).get("tags", [])]
    title = cells[0]
    if title.cell_type != "markdown":
        raise ValueError(f"notebook {name}: its first cell must be the markdown title, found a {title.cell_type} cell")
    lines = [line for line in title.source.split("\n") if BADGE_IMAGE not in line]
    if repo is not None:
        lines[1:1] = ["", badge_markdown(repo, name, branch)]
    title.source = re.sub(r"\n{3,}", "\n\n", "\n".join(lines))
    if repo is not None:
        cell = nbformat.v4.new_code_cell(install_cell_source(repo, branch), metadata={"tags": [INSTALL_TAG]})
        cell.id = INSTALL_TAG  # a fixed id: a re-run writes the same file
        cells.insert(1, cell)
    nb.cells = cells
    return nb


def set_repository(pyproject: str | Path, repo: str) -> bool:
    """Write ``Repository = "https://github.com/OWNER/NAME"`` under ``[project.urls]``; True if the file changed."""
    path, url = Path(pyproject), f"https://github.com/{parse_repo(repo)}"
    text = path.read_text()
    line = f'Repository = "{url}"'
    section = re.search(r"(?ms)^\[project\.urls\][ \t]*$(.*?)(?=^\[|\Z)", text)  # up to the next table
    if section is not None:
        body = section.group(1)
        new_body = (re.sub(r'(?m)^Repository\s*=.*$', line, body) if re.search(r"(?m)^Repository\s*=", body)
                    else "\n" + line + body)
        new = text[:section.start(1)] + new_body + text[section.end(1):]
    else:
        new = text.rstrip("\n") + f"\n\n[project.urls]\n{line}\n"
    if repository_from_pyproject_text(new) != parse_repo(repo):
        raise ValueError(f"could not write {line} into {path}: edit its [project.urls] by hand")
    if new != text:
        path.write_text(new)
    return new != text


def _check_branch(branch: str) -> None:
    if not isinstance(branch, str) or not _BRANCH.match(branch):
        raise ValueError(f"branch={branch!r} is not a branch name: letters, digits and _ . / - only")


def add_colab(root: str | Path, repo: str | None, branch: str = "main", *, check: bool = False) -> list[Path]:
    """Write (or with ``check=True`` only compare) the Colab badges, install cells and README block under ``root``.

    ``repo`` None removes them and writes the README's "not set up" text. Returns the files that changed (or, with
    ``check``, that would change).
    """
    root = Path(root)
    _check_branch(branch)
    repo = parse_repo(repo) if repo is not None else None
    paths = sorted((root / "notebooks").glob("[0-9]*.ipynb"))
    if not paths:
        raise FileNotFoundError(f"no notebooks in {root / 'notebooks'}: root={str(root)!r} must be the repository root")
    new: dict[Path, str] = {}
    for path in paths:
        nb = _with_colab(nbformat.read(path, as_version=4), path.name, repo, branch)
        new[path] = nbformat.writes(nb) + "\n"
    readme = root / "README.md"
    text = readme.read_text()
    if text.count(README_START) != 1 or text.count(README_END) != 1:
        raise ValueError(f"{readme} must hold {README_START} and {README_END} once each, around its Colab line")
    head, rest = text.split(README_START)
    new[readme] = head + readme_block(repo, [p.name for p in paths], branch) + rest.split(README_END, 1)[1]
    changed = [p for p, t in new.items() if p.read_text() != t]
    if not check:
        for p in changed:
            p.write_text(new[p])
    return changed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m calgrpo_lib.colab", description=__doc__.split("\n")[0])
    ap.add_argument("--repo", help="OWNER/NAME on GitHub (default: [project.urls] Repository in pyproject.toml)")
    ap.add_argument("--branch", default="main", help="the branch the badges open and the install cell installs")
    ap.add_argument("--root", default=".", help="the repository root (holds notebooks/, README.md, pyproject.toml)")
    ap.add_argument("--check", action="store_true", help="write nothing; exit 1 if a file would change")
    args = ap.parse_args(argv)
    pyproject = Path(args.root) / "pyproject.toml"
    try:
        if args.repo is not None and args.check:
            raise ValueError("--check compares with the address in pyproject.toml: leave --repo out")
        _check_branch(args.branch)
        if args.repo is not None:  # the address lives in pyproject.toml, so that --check (and CI) can find it
            set_repository(pyproject, args.repo)
        repo = repository_from_pyproject(pyproject)
        changed = add_colab(args.root, repo, args.branch, check=args.check)
    except (ValueError, FileNotFoundError) as e:
        ap.error(str(e))
    verb = "would change" if args.check else "changed"
    print(f"{verb}: {', '.join(str(p) for p in changed) or 'nothing'}" + ("" if repo else " (no repository address)"))
    return 1 if args.check and changed else 0


if __name__ == "__main__":
    raise SystemExit(main())
