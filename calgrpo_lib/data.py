"""Problem sets: GSM8K (local JSONL or the Hugging Face hub) and the synthetic task, as one record type.

``load_gsm8k(split, path)`` looks, in order, at ``path`` (a ``.jsonl`` file or a folder holding ``{split}.jsonl``),
then ``$CALGRPO_DATA_DIR/gsm8k/{split}.jsonl``, then the hub (``datasets.load_dataset("openai/gsm8k", "main")``).

Where the oracle demos and benchmarks get problems: :func:`find_data_dir` looks at ``$CALGRPO_DATA_DIR``, then at
``shared/data`` folders near the current directory (``./shared/data``, ``../shared/data``, ``../../shared/data``: a
notebook runs from ``notebooks/``), for a ``gsm8k/{split}.jsonl``; :func:`oracle_problems` loads GSM8K from there,
or generates synthetic problems (GSM8K-style solutions too) when nothing is found, and says which it used.

ProcessBench (``Qwen/ProcessBench``, one split per subset: :data:`PROCESSBENCH_SPLITS`) is what the oracles are
benchmarked on: :func:`load_processbench` reads a split as :class:`ProcessBenchRecord` s (a problem, a solution's
steps and ``label``, the 0-based index of the earliest wrong step or -1) from ``path`` (a JSON list, a JSONL file,
or a folder holding ``{split}.json`` / ``{split}.jsonl``: a snapshot of the hub repository), then from
``$CALGRPO_DATA_DIR/processbench/`` when that folder exists, else from the hub, which ``HF_HUB_OFFLINE`` forbids.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass
from pathlib import Path

from .rewards import parse_number
from .tasks import SPLITS, Problem, TaskConfig, generate_problems
from .validation import check_choice, check_int

__all__ = ["load_gsm8k", "gsm8k_problem", "gsm8k_file", "read_gsm8k_file", "load_problems", "TASKS", "DATA_DIR_ENV",
           "find_data_dir", "oracle_problems", "CANDIDATE_DIRS", "PROCESSBENCH_SPLITS", "PROCESSBENCH_HUB_ID",
           "ProcessBenchRecord", "processbench_record", "load_processbench"]

TASKS = ("synthetic", "gsm8k")
DATA_DIR_ENV = "CALGRPO_DATA_DIR"
CANDIDATE_DIRS = ("shared/data", "../shared/data", "../../shared/data")
_HOW_TO_GET = ("Get the data with `datasets.load_dataset('openai/gsm8k', 'main')` on a machine with a network, "
               "or download train.jsonl/test.jsonl from github.com/openai/grade-school-math into a folder and pass "
               f"path=FOLDER or set {DATA_DIR_ENV}=PARENT (files at PARENT/gsm8k/{{split}}.jsonl).")


def gsm8k_problem(record: dict, id: str = "") -> Problem:
    """Turn one GSM8K record ``{"question", "answer"}`` into a :class:`Problem`."""
    answer = record["answer"]
    body, sep, final_text = answer.rpartition("####")
    final = parse_number(final_text)
    if not sep or final is None:
        raise ValueError(f"GSM8K record {id or record.get('question', '')[:40]!r} has no '#### n' final answer")
    steps = tuple(line.strip() for line in body.splitlines() if line.strip())
    final_value: int | float = int(final) if float(final).is_integer() else final
    return Problem(record["question"], answer, steps, final_value, id=id, source="gsm8k")


def gsm8k_file(split: str, path: str | os.PathLike | None = None) -> Path | None:
    """The local GSM8K file of ``split``: from ``path`` (a file, or a folder holding ``{split}.jsonl``), else from
    ``$CALGRPO_DATA_DIR``; ``None`` when neither is set (the hub is then the source). Raises ``FileNotFoundError``,
    naming what was looked at, when ``path`` or the variable is set but the file is not there."""
    check_choice("split", split, SPLITS)
    if path is not None:
        p = Path(path)
        p = p / f"{split}.jsonl" if p.is_dir() else p
        if not p.is_file():
            raise FileNotFoundError(f"path={str(path)!r}: no GSM8K file at {p}. {_HOW_TO_GET}")
        return p
    if os.environ.get(DATA_DIR_ENV):
        p = Path(os.environ[DATA_DIR_ENV]) / "gsm8k" / f"{split}.jsonl"
        if not p.is_file():
            raise FileNotFoundError(f"{DATA_DIR_ENV}={os.environ[DATA_DIR_ENV]!r}: no GSM8K file at {p}. {_HOW_TO_GET}")
        return p
    return None


def read_gsm8k_file(file: str | os.PathLike, split: str = "train") -> list[Problem]:
    """The problems of a GSM8K JSONL file (one ``{"question", "answer"}`` object per line; blank lines skipped).

    A line that is not such an object, or whose answer has no ``#### n``, raises ``ValueError`` naming the file and
    the line number; so does a file with no record at all."""
    file = Path(file)
    problems = []
    with open(file, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{os.fspath(file)}, line {number}"
            try:
                record = json.loads(line)
            except ValueError as e:
                raise ValueError(f"{where}: not JSON ({e}); allowed: one JSON object with 'question' and 'answer' "
                                 "per line") from None
            if not isinstance(record, dict) or not all(isinstance(record.get(k), str) for k in ("question", "answer")):
                raise ValueError(f"{where}: {line.strip()[:60]!r} is not an object with str 'question' and 'answer'")
            try:
                problems.append(gsm8k_problem(record, id=f"gsm8k-{split}-{len(problems)}"))
            except ValueError as e:
                raise ValueError(f"{where}: {e}") from None
    if not problems:
        raise ValueError(f"{os.fspath(file)} holds no GSM8K record; allowed: a JSONL file with one object per line")
    return problems


def load_gsm8k(split: str = "train", path: str | os.PathLike | None = None) -> list[Problem]:
    """GSM8K ``split`` ("train": 7473 problems, "test": 1319) as a list of :class:`Problem`."""
    local = gsm8k_file(split, path)
    if local is not None:
        return read_gsm8k_file(local, split)
    try:
        import datasets

        records = list(datasets.load_dataset("openai/gsm8k", "main", split=split))
    except Exception as e:  # no network, no cache, hub offline
        raise RuntimeError(f"could not load GSM8K split={split!r} from the Hugging Face hub ({type(e).__name__}: "
                           f"{e}). {_HOW_TO_GET}") from e
    return [gsm8k_problem(r, id=f"gsm8k-{split}-{i}") for i, r in enumerate(records)]


def load_problems(task: str = "synthetic", split: str = "train", n: int | None = None, seed: int = 0,
                  config: TaskConfig | None = None, path: str | os.PathLike | None = None) -> list[Problem]:
    """``n`` problems of ``task`` ("synthetic" or "gsm8k"); GSM8K is shuffled by ``seed`` before taking ``n``."""
    check_choice("task", task, TASKS)
    if task == "synthetic":
        check_int("n", n if n is not None else 512, 1, None)
        return generate_problems(n if n is not None else 512, seed=seed, split=split, config=config)
    problems = load_gsm8k(split, path)
    if n is None:
        return problems
    check_int("n", n, 1, None)
    order = list(range(len(problems)))
    random.Random(seed).shuffle(order)
    return [problems[i] for i in order[:n]]


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
        return load_problems("gsm8k", split, n, seed, path=data_dir / "gsm8k"), "gsm8k"
    return generate_problems(n or 64, seed=seed, split=split), "synthetic"


# ------------------------------------------------------------------------------------------ ProcessBench

PROCESSBENCH_SPLITS = ("gsm8k", "math", "olympiadbench", "omnimath")
PROCESSBENCH_HUB_ID = "Qwen/ProcessBench"
_PB_LOCAL = ("a JSON list of records, a JSONL file (one record per line), or a folder holding {split}.json or "
             "{split}.jsonl (the files of the hub repository " + PROCESSBENCH_HUB_ID + ")")


@dataclass(frozen=True)
class ProcessBenchRecord:
    """One ProcessBench sample: a ``problem``, a solution as ``steps`` and ``label``, the 0-based index of its
    earliest erroneous step (``-1`` when every step is correct); ``final_answer_correct`` is ``None`` when the file
    does not say."""

    id: str
    problem: str
    steps: tuple[str, ...]
    label: int
    final_answer_correct: bool | None = None
    generator: str = ""
    split: str = ""

    @property
    def erroneous(self) -> bool:
        """True when some step is wrong (``label != -1``)."""
        return self.label != -1


def processbench_record(record: dict, split: str = "", where: str = "record", index: int = 0) -> ProcessBenchRecord:
    """Check one ProcessBench record (a dict with ``problem``, ``steps``, ``label``; ``id`` (default
    ``{split}-{index}``), ``generator``, ``final_answer_correct`` optional) and return it as a
    :class:`ProcessBenchRecord`; ``ValueError`` names ``where``, the field, its value and what is allowed."""
    if not isinstance(record, dict):
        raise ValueError(f"{where}: {str(record)[:60]!r} is not an object; allowed: an object with 'problem', "
                         "'steps' and 'label'")
    problem, steps, label = record.get("problem"), record.get("steps"), record.get("label")
    if not isinstance(problem, str) or not problem.strip():
        raise ValueError(f"{where}: problem={str(problem)[:60]!r}; allowed: a non-empty str")
    if not isinstance(steps, (list, tuple)) or not steps or not all(isinstance(t, str) for t in steps):
        raise ValueError(f"{where}: steps={str(steps)[:60]!r}; allowed: a non-empty list of str")
    if isinstance(label, bool) or not isinstance(label, int) or not -1 <= label < len(steps):
        raise ValueError(f"{where}: label={label!r}; allowed: -1 (no wrong step) or a step index 0..{len(steps) - 1}")
    final = record.get("final_answer_correct")
    if final is not None and not isinstance(final, bool):
        raise ValueError(f"{where}: final_answer_correct={final!r}; allowed: true, false or absent")
    rid = str(record.get("id") or f"{split or 'record'}-{index}")
    return ProcessBenchRecord(rid, problem, tuple(steps), label, final, str(record.get("generator") or ""), split)


def _processbench_file(split: str, path: str | os.PathLike) -> Path:
    p = Path(path)
    if p.is_dir():
        found = [p / f"{split}{ext}" for ext in (".json", ".jsonl") if (p / f"{split}{ext}").is_file()]
        if not found:
            raise FileNotFoundError(f"path={os.fspath(path)!r}: no {split}.json or {split}.jsonl in that folder; "
                                    f"allowed: {_PB_LOCAL}")
        return found[0]
    if not p.is_file():
        raise FileNotFoundError(f"path={os.fspath(path)!r}: no such file or folder; allowed: {_PB_LOCAL}")
    stem = p.name.split(".")[0].lower()
    if stem in PROCESSBENCH_SPLITS and stem != split:
        raise ValueError(f"path={os.fspath(path)!r} is named for split {stem!r} but split={split!r}; allowed: the "
                         f"file of that split, or a folder holding {split}.json")
    return p


def _read_processbench_file(file: Path, split: str) -> list[ProcessBenchRecord]:
    text = file.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except ValueError as e:
            raise ValueError(f"{os.fspath(file)}: not a JSON list ({e}); allowed: {_PB_LOCAL}") from None
        located = [(f"{os.fspath(file)}, record {i}", r) for i, r in enumerate(rows)]
    else:
        located = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                located.append((f"{os.fspath(file)}, line {number}", json.loads(line)))
            except ValueError as e:
                raise ValueError(f"{os.fspath(file)}, line {number}: not JSON ({e}); allowed: {_PB_LOCAL}") from None
    if not located:
        raise ValueError(f"{os.fspath(file)} holds no ProcessBench record; allowed: {_PB_LOCAL}")
    return [processbench_record(r, split, where, i) for i, (where, r) in enumerate(located)]


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")


def load_processbench(split: str = "gsm8k", path: str | os.PathLike | None = None,
                      limit: int | None = None) -> list[ProcessBenchRecord]:
    """The first ``limit`` records (all when ``None``) of ProcessBench ``split`` (400 for gsm8k, 1000 for each of
    the others), from ``path``, else ``$CALGRPO_DATA_DIR/processbench/`` when that folder exists, else the hub
    (see the module docstring). Raises ``ValueError`` for a bad split, limit or record, ``FileNotFoundError`` for a
    missing file, ``RuntimeError`` when the hub is needed but offline or unreachable."""
    check_choice("split", split, PROCESSBENCH_SPLITS)
    if limit is not None:
        check_int("limit", limit, 1, None)
    env_dir = Path(os.environ[DATA_DIR_ENV]) / "processbench" if os.environ.get(DATA_DIR_ENV) else None
    if path is None and env_dir is not None and env_dir.is_dir():
        path = env_dir
    if path is not None:
        records = _read_processbench_file(_processbench_file(split, path), split)
    elif _hub_offline():
        raise RuntimeError(f"split={split!r}: no path given and HF_HUB_OFFLINE is set, so ProcessBench cannot come "
                           f"from the hub ({PROCESSBENCH_HUB_ID}); pass path=FILE_OR_FOLDER (--path on the command "
                           f"line) with a local copy: {_PB_LOCAL}")
    else:
        try:
            import datasets

            rows = list(datasets.load_dataset(PROCESSBENCH_HUB_ID, split=split))
        except Exception as e:  # no network, no cache, hub down
            raise RuntimeError(f"could not load ProcessBench split={split!r} from the Hugging Face hub "
                               f"({type(e).__name__}: {e}); pass path=FILE_OR_FOLDER (--path) with a local copy: "
                               f"{_PB_LOCAL}") from e
        records = [processbench_record(r, split, f"{PROCESSBENCH_HUB_ID}:{split}[{i}]", i) for i, r in enumerate(rows)]
    return records[:limit] if limit is not None else records
