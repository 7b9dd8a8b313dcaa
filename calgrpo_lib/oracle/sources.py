"""Where the oracle demos and benchmarks get problems: GSM8K when its files can be found, else the synthetic task.

:func:`find_data_dir` looks at ``$CALGRPO_DATA_DIR``, then at ``shared/data`` folders near the current directory
(``./shared/data``, ``../shared/data``, ``../../shared/data``: a notebook runs from ``notebooks/``), for a
``gsm8k/{split}.jsonl``. :func:`oracle_problems` loads from there, or generates synthetic problems (GSM8K-style
solutions too) when nothing is found, and says which it used.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

from ..data import DATA_DIR_ENV, load_gsm8k
from ..tasks import Problem, generate_problems
from ..validation import check_int

__all__ = ["find_data_dir", "oracle_problems", "CANDIDATE_DIRS"]

CANDIDATE_DIRS = ("shared/data", "../shared/data", "../../shared/data")


def find_data_dir(split: str = "test", start: str | os.PathLike | None = None) -> Path | None:
    """The folder holding ``gsm8k/{split}.jsonl``: ``$CALGRPO_DATA_DIR`` when set, else the first of
    :data:`CANDIDATE_DIRS` (relative to ``start``, default the current directory) that has it; else ``None``."""
    if os.environ.get(DATA_DIR_ENV):
        return Path(os.environ[DATA_DIR_ENV])
    base = Path(start) if start is not None else Path.cwd()
    for rel in CANDIDATE_DIRS:
        d = (base / rel).resolve()
        if (d / "gsm8k" / f"{split}.jsonl").is_file():
            return d
    return None


def oracle_problems(n: int | None = None, split: str = "test", seed: int = 0,
                    start: str | os.PathLike | None = None) -> tuple[list[Problem], str]:
    """``(problems, source)``: ``n`` GSM8K problems of ``split`` (shuffled by ``seed``; all when ``n`` is None) and
    ``"gsm8k"``, or ``n`` synthetic problems (default 64) and ``"synthetic"`` when no GSM8K file is found."""
    if n is not None:
        check_int("n", n, 1, None)
    data_dir = find_data_dir(split, start)
    if data_dir is not None and (data_dir / "gsm8k" / f"{split}.jsonl").is_file():
        problems = load_gsm8k(split, data_dir / "gsm8k")
        if n is not None:
            order = list(range(len(problems)))
            random.Random(seed).shuffle(order)
            problems = [problems[i] for i in order[:n]]
        return problems, "gsm8k"
    return generate_problems(n or 64, seed=seed, split=split), "synthetic"
