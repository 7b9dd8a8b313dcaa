"""The ProcessBench-format fixture the oracle tests share: 12 samples built from GSM8K test items, with known first
errors (see ``test_processbench``'s docstring), and the accuracies / F1 counted from scratch."""

from __future__ import annotations

import json
import re
from pathlib import Path

from calgrpo_lib.arithmetic import corrupt_solution
from calgrpo_lib.rewards import extract_answer, parse_number
from calgrpo_lib.steps import split_steps

JANET_WRONG_OP = ["Janet sells 16 - 3 = 13 duck eggs a day.",  # forgot the 4 muffin eggs: step 0 is wrong
                  "She makes 13 * 2 = $26 every day at the farmers' market.", "#### 26"]
JANET_LATER_SLIP = [JANET_WRONG_OP[0], "She makes 13 * 2 = $27 every day at the farmers' market.", "#### 27"]
# (kind, GSM8K test item): the order puts a false alarm and a miss of the step checker among the first 8
PLAN = [("prose", 1), ("corrupt", 5), ("as_is", 13), ("corrupt", 6), ("wrong_op", 0), ("prose", 2), ("corrupt", 7),
        ("prose", 3), ("corrupt", 8), ("prose", 4), ("corrupt", 9), ("later_slip", 0)]


def _prose(line: str) -> str:
    m = re.fullmatch(r"####\s*(.+)", line.strip())
    return f"So the answer is {m.group(1)}." if m else re.sub(r"<<[^<>]*>>", "", line).strip()


def step_texts(text: str) -> list[str]:
    return [s.text for s in split_steps(text)]


def fixture_records(gsm8k_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (gsm8k_dir / "test.jsonl").read_text().splitlines()[:14]]
    out = []
    for k, (kind, i) in enumerate(PLAN):
        question, answer = rows[i]["question"], rows[i]["answer"]
        label = -1
        if kind == "prose":
            steps = [_prose(line) for line in answer.splitlines() if line.strip()]
        elif kind == "as_is":
            steps = step_texts(answer)
        elif kind == "corrupt":
            c = corrupt_solution(answer, i, propagate=i % 2 == 0)
            steps, label = step_texts(c.text), c.step
        else:
            steps, label = list(JANET_WRONG_OP if kind == "wrong_op" else JANET_LATER_SLIP), 0
        final = parse_number(extract_answer(steps[-1])) == parse_number(extract_answer(answer))
        out.append({"id": f"gsm8k-fixture-{k}", "generator": f"fixture-{kind}", "problem": question,
                    "steps": steps, "final_answer_correct": final, "label": label})
    return out


def hand_f1(labels: list[int], preds: list[int | None]) -> tuple[float, float, float]:
    """acc on erroneous, acc on correct, F1, counted from scratch."""
    err = [(lab, p) for lab, p in zip(labels, preds) if lab != -1]
    ok = [p for lab, p in zip(labels, preds) if lab == -1]
    acc_e = sum(p == lab for lab, p in err) / len(err)
    acc_c = sum(p == -1 for p in ok) / len(ok)
    return acc_e, acc_c, (2 * acc_e * acc_c / (acc_e + acc_c) if acc_e + acc_c else 0.0)


def write_benchmark(gsm8k_dir: Path, folder: Path) -> Path:
    """``folder`` holding gsm8k.json (a JSON list) and gsm8k.jsonl: the fixture benchmark."""
    records = fixture_records(gsm8k_dir)
    (folder / "gsm8k.json").write_text(json.dumps(records, indent=1))
    (folder / "gsm8k.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return folder
