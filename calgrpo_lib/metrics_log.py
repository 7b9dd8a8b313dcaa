"""Where the trainer's numbers go: one JSON line per record (``metrics.jsonl``), the same as a CSV table
(``metrics.csv``, rewritten so its columns always cover every key seen), and TensorBoard when it is installed.

W&B logging is on when ``wandb`` is installed and ``WANDB_PROJECT`` is set in the environment.
"""

from __future__ import annotations

import csv
import json
import os
import warnings
from pathlib import Path
from typing import Any

__all__ = ["MetricsLog"]


class MetricsLog:
    """Append-only metrics of a run in ``folder``; ``truncate_after(step)`` drops records of steps a resume redoes."""

    def __init__(self, folder: str | os.PathLike, *, tensorboard: bool = True) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.jsonl = self.folder / "metrics.jsonl"
        self.csv = self.folder / "metrics.csv"
        self.records: list[dict[str, Any]] = self._read_jsonl() if self.jsonl.exists() else []
        self._tb = self._wandb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(self.folder / "tensorboard"))
            except Exception:  # tensorboard not installed
                self._tb = None
        if os.environ.get("WANDB_PROJECT"):
            try:
                import wandb

                self._wandb = wandb.init(project=os.environ["WANDB_PROJECT"], dir=str(self.folder), resume="allow")
            except Exception:
                self._wandb = None

    def _read_jsonl(self) -> list[dict[str, Any]]:
        """The records of ``metrics.jsonl``. A last line cut short (a run killed while writing it) is dropped with a
        warning, and the file rewritten without it; an unreadable line before the last raises, naming it."""
        lines = self.jsonl.read_text(encoding="utf-8").splitlines()
        records = []
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as err:
                if any(rest.strip() for rest in lines[number:]):
                    raise ValueError(f"{os.fspath(self.jsonl)!r} line {number} is not a JSON record ({err}); allowed: "
                                     "one JSON object per line, as MetricsLog writes them") from None
                warnings.warn(f"{os.fspath(self.jsonl)!r}: its last line ({number}) is cut short, as by a run killed "
                              f"while writing it; dropped ({len(records)} records kept)", UserWarning, stacklevel=3)
                with open(self.jsonl, "w", encoding="utf-8") as f:
                    f.writelines(json.dumps(r) + "\n" for r in records)
        return records

    def log(self, record: dict[str, Any]) -> None:
        """Store one record (a flat dict with a ``step`` and a ``kind`` such as "train" or "eval")."""
        self.records.append(record)
        with open(self.jsonl, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        self._write_csv()
        step = int(record.get("step", 0))
        prefix = record.get("kind", "train")
        numbers = {k: v for k, v in record.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if self._tb is not None:
            for key, value in numbers.items():
                self._tb.add_scalar(f"{prefix}/{key}", value, step)
        if self._wandb is not None:
            self._wandb.log({f"{prefix}/{k}": v for k, v in numbers.items()}, step=step)

    def truncate_after(self, step: int) -> None:
        """Forget records with ``step`` greater than ``step`` (they will be produced again after a resume)."""
        self.records = [r for r in self.records if int(r.get("step", 0)) <= step]
        with open(self.jsonl, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in self.records)
        self._write_csv()

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [r for r in self.records if r.get("kind") == kind]

    def _write_csv(self) -> None:
        columns: list[str] = []
        for r in self.records:
            columns += [k for k in r if k not in columns]
        with open(self.csv, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(self.records)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()
