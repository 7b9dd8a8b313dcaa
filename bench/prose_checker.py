"""Benchmark: the exact step checker on GSM8K solutions written as prose, with and without its prose reader.

Every GSM8K test reference is reworded as prose without calculator annotations
(:func:`calgrpo_lib.prose_solutions.reword_solution`: "9 * 2 = $<<9*2=18>>18" -> "9 times 2 is $18") and gets one
injected arithmetic mistake (:func:`calgrpo_lib.prose_solutions.prose_mistake`: one calculated result changed by
:func:`calgrpo_lib.arithmetic.corrupt_solution`, then reworded), once without and once with propagating the wrong
value to the later steps. The same corruptions are also judged on the original annotated text, for comparison.
The checker (:func:`calgrpo_lib.oracle.check_solution`, full reference given) runs with ``prose=False`` and
``prose=True`` on each. Printed per row:

- false alarms on the correct solutions (any step flagged), with a 95% Wilson interval;
- first-error accuracy on the solutions with a mistake (predicted step == injected step), and how the others
  went: flagged too early, too late, or missed (no error found).

Run ``python bench/prose_checker.py [--limit N] [--seed 0] [--json out.json]``; GSM8K is read from
``$CALGRPO_DATA_DIR`` (or a ``shared/data`` folder nearby). The full test split (1,319 problems) takes about a
minute on a 2-core CPU, so ``--limit`` is only for quick looks.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import Counter

from calgrpo_lib.arithmetic import corrupt_solution
from calgrpo_lib.data import find_data_dir, load_gsm8k
from calgrpo_lib.oracle import check_solution
from calgrpo_lib.prose_solutions import prose_mistake, reword_solution
from calgrpo_lib.reward_model_eval import wilson_interval


def outcome(question: str, reference: str, text: str, step: int | None, prose: bool) -> str:
    """``ok``/``false_alarm`` for a correct text (``step`` None), else ``right``/``too_early``/``too_late``/
    ``missed``."""
    err = check_solution(question, reference, text, prose=prose)
    if step is None:
        return "ok" if err is None else "false_alarm"
    if err is None:
        return "missed"
    return "right" if err.step == step else "too_early" if err.step < step else "too_late"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--limit", type=int, default=None, help="first N test problems (default: all 1,319)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="write the numbers to this file")
    args = ap.parse_args(argv)
    data_dir = find_data_dir("test")
    if data_dir is None:
        sys.exit("GSM8K not found: set CALGRPO_DATA_DIR to a folder holding gsm8k/test.jsonl")
    problems = load_gsm8k("test", data_dir / "gsm8k")[:args.limit]
    t0 = time.perf_counter()
    correct: dict[str, list[str]] = {"prose": [], "annotated": []}
    mistakes: dict[tuple[str, bool], list[tuple[str, int]]] = {}
    for i, p in enumerate(problems):
        correct["prose"].append(reword_solution(p.answer, random.Random(f"{args.seed}/{i}")))
        correct["annotated"].append(p.answer)
        for propagate in (False, True):
            key = f"{args.seed}/{i}/{propagate}"
            pm = prose_mistake(p.answer, random.Random(key), propagate=propagate)
            c = corrupt_solution(p.answer, random.Random(key), propagate=propagate)  # the same corruption
            if pm is not None and c is not None:
                mistakes.setdefault(("prose", propagate), []).append((i, *pm))
                mistakes.setdefault(("annotated", propagate), []).append((i, c.text, c.step))
    t_build = time.perf_counter() - t0

    rows = []
    for text in ("prose", "annotated"):
        for prose in (False, True):
            fa = Counter(outcome(p.question, p.answer, t, None, prose) for p, t in zip(problems, correct[text]))
            row = {"text": text, "prose_reader": prose, "n_correct": len(problems), "false_alarms": fa["false_alarm"]}
            lo, hi = wilson_interval(fa["false_alarm"], len(problems))
            row.update(false_alarm_rate=fa["false_alarm"] / len(problems), false_alarm_ci95=[lo, hi])
            for propagate in (False, True):
                cases = mistakes.get((text, propagate), [])
                got = Counter(outcome(problems[i].question, problems[i].answer, t, s, prose) for i, t, s in cases)
                row[f"mistakes_propagate_{propagate}"] = {
                    "n": len(cases), "accuracy": got["right"] / len(cases) if cases else 0.0,
                    **{k: got[k] for k in ("right", "too_early", "too_late", "missed")}}
            rows.append(row)
    wall = time.perf_counter() - t0

    print(f"GSM8K test, {len(problems)} problems (seed {args.seed}); reference solution given to the checker")
    head = ("text", "prose reader", "false alarms (95% CI)", "mistake", "n", "first-error acc", "early", "late",
            "missed")
    print(" | ".join(head))
    for r in rows:
        fa = (f"{r['false_alarms']}/{r['n_correct']} = {r['false_alarm_rate']:.2%} "
              f"[{r['false_alarm_ci95'][0]:.2%}, {r['false_alarm_ci95'][1]:.2%}]")
        for propagate in (False, True):
            m = r[f"mistakes_propagate_{propagate}"]
            kind = "propagated" if propagate else "one slip"
            print(" | ".join([r["text"], "on" if r["prose_reader"] else "off", fa, kind, str(m["n"]),
                              f"{m['accuracy']:.2%}", str(m["too_early"]), str(m["too_late"]), str(m["missed"])]))
            fa = ""
    print(f"time {wall:.1f}s (building the texts {t_build:.1f}s)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"problems": len(problems), "seed": args.seed, "wall_s": wall, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
