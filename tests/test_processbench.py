"""The ProcessBench evaluation, offline: the loader, the steps the oracle numbers, the metric, the step checker and a
scripted Gemini judge (through the real google-genai client, against a local server) on a small benchmark in
ProcessBench's format that these tests write, and the ``python -m calgrpo_lib.oracle evaluate`` command.

The fixture: 12 samples built from GSM8K test items, with known first errors. Five correct solutions (label -1):
four rewritten as prose (annotations dropped, ``#### n`` as "So the answer is n."), one as it is (item 13, whose
final line the step checker flags when it has no reference). Seven erroneous: five with one calculated result
changed by :func:`calgrpo_lib.arithmetic.corrupt_solution` (label: the corrupted step), two written by hand (a
wrong operation with right arithmetic, which the step checker cannot see; then the same with a later slip).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from oracle_http import ScriptedServer, Step, gemini_error, gemini_reply, solution_steps
from processbench_fixture import hand_f1, step_texts, write_benchmark

from calgrpo_lib.data import PROCESSBENCH_SPLITS, load_gsm8k, load_processbench
from calgrpo_lib.oracle import (
    OracleConfig,
    StepCheckOracle,
    Verdict,
    benchmark_response,
    benchmark_step,
    evaluate_processbench,
    gsm8k_references,
    harmonic_f1,
    processbench_items,
    step_offsets,
)
from calgrpo_lib.oracle.__main__ import main
from calgrpo_lib.steps import numbered_steps, split_steps

ROOT = Path(__file__).resolve().parents[1]
FAKE_KEY = "AIza" + "FAKE-test-key-do-not-use-0123456789"  # built at run time: no key-shaped literal in the repo
@pytest.fixture(scope="module")
def bench(gsm8k_dir: Path, tmp_path_factory) -> Path:
    """A folder holding gsm8k.json (a JSON list) and gsm8k.jsonl: the fixture benchmark."""
    return write_benchmark(gsm8k_dir, tmp_path_factory.mktemp("processbench"))


# ------------------------------------------------------------------------------------------------ loader


def test_the_fixture_has_known_labels(bench: Path):
    records = load_processbench("gsm8k", bench / "gsm8k.json")
    assert [r.label for r in records] == [-1, 4, -1, 2, 0, -1, 2, -1, 1, -1, 3, 0]
    assert [r.final_answer_correct for r in records] == [True, True, True, False, False, True, True, True, False,
                                                         True, True, False]
    assert records[0].steps[-1] == "So the answer is 3." and "<<" not in records[0].steps[0]
    assert all(r.split == "gsm8k" and r.erroneous == (r.label != -1) for r in records)


def test_load_json_list_jsonl_and_folder_agree(bench: Path, tmp_path: Path):
    as_list = load_processbench("gsm8k", bench / "gsm8k.json")
    assert load_processbench("gsm8k", bench / "gsm8k.jsonl") == as_list
    assert load_processbench("gsm8k", bench) == as_list  # the folder: gsm8k.json first
    only_jsonl = tmp_path / "copy"
    only_jsonl.mkdir()
    (only_jsonl / "gsm8k.jsonl").write_text((bench / "gsm8k.jsonl").read_text())
    assert load_processbench("gsm8k", only_jsonl) == as_list
    assert [r.id for r in load_processbench("gsm8k", bench, limit=3)] == [r.id for r in as_list[:3]]
    assert len(load_processbench("gsm8k", bench, limit=100)) == 12


def test_loader_errors_name_the_parameter_and_what_is_allowed(bench: Path, tmp_path: Path):
    with pytest.raises(ValueError, match=r"split='gsm9k' is not allowed; allowed: 'gsm8k', 'math'"):
        load_processbench("gsm9k", bench)
    with pytest.raises(ValueError, match=r"limit=0 is out of range"):
        load_processbench("gsm8k", bench, limit=0)
    with pytest.raises(FileNotFoundError, match=r"path=.*nothing\.json.*no such file"):
        load_processbench("gsm8k", tmp_path / "nothing.json")
    with pytest.raises(FileNotFoundError, match=r"no math\.json or math\.jsonl in that folder"):
        load_processbench("math", bench)
    with pytest.raises(ValueError, match=r"named for split 'gsm8k' but split='math'"):
        load_processbench("math", bench / "gsm8k.json")
    bad = json.loads((bench / "gsm8k.json").read_text())
    bad[2]["label"] = 7
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match=r"bad\.json, record 2: label=7; allowed: -1 \(no wrong step\) or a step"):
        load_processbench("gsm8k", tmp_path / "bad.json")
    (tmp_path / "bad.jsonl").write_text('{"problem": "p", "steps": ["a"], "label": -1}\n{not json\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl, line 2: not JSON"):
        load_processbench("gsm8k", tmp_path / "bad.jsonl")
    (tmp_path / "steps.jsonl").write_text('{"problem": "p", "steps": "one step", "label": -1}\n')
    with pytest.raises(ValueError, match=r"line 1: steps='one step'; allowed: a non-empty list of str"):
        load_processbench("gsm8k", tmp_path / "steps.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(ValueError, match=r"holds no ProcessBench record"):
        load_processbench("gsm8k", tmp_path / "empty.jsonl")


def test_offline_hub_is_refused_with_how_to_pass_a_path(monkeypatch):
    import datasets

    monkeypatch.delenv("CALGRPO_DATA_DIR", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: pytest.fail("the hub was asked"))
    with pytest.raises(RuntimeError, match=r"split='math': no path given and HF_HUB_OFFLINE is set.*--path"):
        load_processbench("math")


def test_hub_path_reads_records_from_datasets(bench: Path, monkeypatch):
    import datasets

    rows = json.loads((bench / "gsm8k.json").read_text())
    calls = []
    monkeypatch.delenv("CALGRPO_DATA_DIR", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: calls.append((a, k)) or rows)
    records = load_processbench("gsm8k", limit=5)
    assert calls == [(("Qwen/ProcessBench",), {"split": "gsm8k"})]
    assert records == load_processbench("gsm8k", bench, limit=5)


def test_data_dir_processbench_folder_is_used(bench: Path, tmp_path: Path, monkeypatch):
    (tmp_path / "processbench").mkdir()
    (tmp_path / "processbench" / "gsm8k.json").write_text((bench / "gsm8k.json").read_text())
    monkeypatch.setenv("CALGRPO_DATA_DIR", str(tmp_path))
    assert len(load_processbench("gsm8k")) == 12


# ------------------------------------------------------------------------------- what the oracle numbers


def test_the_response_splits_back_into_the_benchmark_steps(bench: Path):
    for r in load_processbench("gsm8k", bench):
        response, starts = benchmark_response(r.steps)
        assert step_texts(response) == list(r.steps)
        assert numbered_steps(response) == "\n".join(f"[{i}] {t}" for i, t in enumerate(r.steps))
        assert [response[s:s + len(t)] for s, t in zip(starts, r.steps)] == list(r.steps)
    steps = ["First we add\n2 + 2 = 4.", "Then:\n\n  $$x = 3$$\r\nso x\u2028is 3.", "Done."]
    response, _ = benchmark_response(steps)
    assert step_texts(response) == ["First we add 2 + 2 = 4.", "Then: $$x = 3$$ so x is 3.", "Done."]


def _at(step: int) -> Verdict:
    return Verdict("unlocalized", step=step, cause="empty_quote")


def test_steps_that_cannot_keep_their_number_are_mapped_back_by_offsets():
    from calgrpo_lib.data import ProcessBenchRecord

    one = ProcessBenchRecord("a", "q", ("We add 2 + 2 = 4. Then we double it: 4 * 2 = 8.",), 0)
    [item] = processbench_items([one])
    assert len(split_steps(item.response)) == 2  # split_steps cuts a single step at its sentences
    assert [benchmark_step(item, _at(k)) for k in (0, 1)] == [0, 0]
    blank = ProcessBenchRecord("b", "q", ("a = 1", "  \n ", "b = 2", "c = 3"), 2)
    [item] = processbench_items([blank])
    assert [benchmark_step(item, _at(k)) for k in (0, 1, 2)] == [0, 2, 3]
    assert benchmark_step(item, Verdict("no_error")) == -1
    assert benchmark_step(item, Verdict("failed", cause="timeout")) is None
    assert benchmark_step(item, _at(9)) is None


@settings(max_examples=150, deadline=None)
@given(st.lists(st.text(alphabet=st.sampled_from("ab1=+. \n\u2028\t"), max_size=12), min_size=1, max_size=6))
def test_every_oracle_step_maps_into_the_benchmark_step_holding_it(steps):
    from calgrpo_lib.data import ProcessBenchRecord

    [item] = processbench_items([ProcessBenchRecord("x", "q", tuple(steps), -1)])
    flat = [" ".join(re.split(r"\s*[\n\u2028]\s*", s)).strip() for s in steps]
    oracle_steps = split_steps(item.response)
    if sum(bool(t) for t in flat) >= 2 and all(flat):
        assert [s.text for s in oracle_steps] == flat  # the numbering is the benchmark's
    for s in oracle_steps:
        k = benchmark_step(item, _at(s.index))
        assert s.text in flat[k]


# ------------------------------------------------------------------------------------------------ metric


def test_f1_and_offsets_byhand_f1():
    assert harmonic_f1(0.5, 1.0) == pytest.approx(2 / 3) and harmonic_f1(0.0, 0.0) == 0.0
    labels = [2, 2, 2, 2, 2, -1, -1, -1]
    preds = [1, 2, 3, -1, None, -1, 0, None]
    assert step_offsets(labels, preds) == {
        "erroneous": {"too_early": 1, "right": 1, "too_late": 1, "missed": 1, "no_verdict": 1},
        "correct": {"right": 1, "false_alarm": 1, "no_verdict": 1}}


def test_step_checker_f1_equals_the_hand_computation(bench: Path):
    records = load_processbench("gsm8k", bench)
    report = evaluate_processbench(StepCheckOracle(), records, chunk_size=5, progress=False)
    labels = [r.label for r in records]
    preds = [v.predicted_step for v in report.verdicts]  # the fixture's numbering is the oracle's
    acc_e, acc_c, f1 = hand_f1(labels, preds)
    assert (report.error_accuracy, report.correct_accuracy, report.f1) == pytest.approx((acc_e, acc_c, f1))
    assert (acc_e, acc_c, f1) == pytest.approx((5 / 7, 4 / 5, 40 / 53))  # a false alarm (item 13), a miss
    assert report.offsets == {"erroneous": {"too_early": 0, "right": 5, "too_late": 1, "missed": 1, "no_verdict": 0},
                              "correct": {"right": 4, "false_alarm": 1, "no_verdict": 0}}
    assert len(report.verdicts) == 12 and report.reference == "none"
    assert all(v.backend == "stepcheck" for v in report.verdicts)


def test_gsm8k_reference_join_changes_what_the_step_checker_sees(bench: Path, gsm8k_dir: Path):
    records = load_processbench("gsm8k", bench)
    refs, joined = gsm8k_references(records, load_gsm8k("test", gsm8k_dir))
    assert joined == 12 and all("####" in r for r in refs)
    report = evaluate_processbench(StepCheckOracle(), records, references=refs, progress=False)
    # item 13's final answer is the reference's (no false alarm); the wrong-operation answer now contradicts the
    # reference: "no error" there becomes unlocalized, no verdict
    assert report.predictions[2] == -1 and report.predictions[4] is None
    assert report.f1 == pytest.approx(hand_f1(list(report.labels), list(report.predictions))[2])
    assert report.f1 == pytest.approx(5 / 6)
    from calgrpo_lib.data import ProcessBenchRecord

    stranger = ProcessBenchRecord("s", "How many legs has a spider?", ("8",), -1, split="gsm8k")
    assert gsm8k_references([stranger], load_gsm8k("test", gsm8k_dir)) == ([""], 0)


# ------------------------------------------------------------------------------- a scripted Gemini judge


def _script(records) -> tuple[dict[tuple[str, ...], str | int], list[str], list[str]]:
    """What the judge answers per sample (by its steps): a step, -1, "garbage" or "http_500"; and the kind of
    each erroneous and correct sample."""
    err_kinds, ok_kinds = [], []
    wanted_err = ["too_early", "too_late", "missed", "no_verdict"]
    wanted_ok = ["false_alarm", "no_verdict"]
    answers = {}
    for r in records:
        if r.label == -1:
            kind = wanted_ok.pop(0) if wanted_ok and len(ok_kinds) % 2 == 1 else "right"
            ok_kinds.append(kind)
            answers[r.steps] = {"right": -1, "false_alarm": 0, "no_verdict": "http_500"}[kind]
            continue
        fits = {"too_early": r.label >= 1, "too_late": r.label + 1 < len(r.steps), "missed": True,
                "no_verdict": True}
        kind = next((k for k in wanted_err if fits[k]), "right")
        if kind != "right":
            wanted_err.remove(kind)
        err_kinds.append(kind)
        answers[r.steps] = {"right": r.label, "too_early": r.label - 1, "too_late": r.label + 1, "missed": -1,
                            "no_verdict": "garbage"}[kind]
    assert not wanted_err and not wanted_ok, "the fixture cannot show every kind"
    return answers, err_kinds, ok_kinds


def _judge(answers):
    def reply(k: int, request: dict) -> Step:
        steps = solution_steps(request)
        answer = answers[tuple(steps)]
        if answer == "http_500":
            return Step(500, gemini_error(500, "INTERNAL", "boom"))
        if answer == "garbage":
            return Step(200, gemini_reply("I think something is off somewhere."))
        quote = steps[answer] if answer >= 0 else ""
        return Step(200, gemini_reply(json.dumps({"step": answer, "quote": quote, "reason": "scripted"})))

    return reply


def test_scripted_gemini_judge_report_equals_the_script(bench: Path, tmp_path: Path):
    pytest.importorskip("google.genai")
    from calgrpo_lib.oracle import GeminiOracle

    records = load_processbench("gsm8k", bench)
    answers, err_kinds, ok_kinds = _script(records)
    cfg = OracleConfig(retries=0, timeout_s=10.0, concurrency=4)
    with ScriptedServer([_judge(answers)], max_requests=40) as srv:
        oracle = GeminiOracle("gemini-test", api_key=FAKE_KEY, base_url=srv.url, config=cfg,
                              cache=tmp_path / "cache.sqlite")
        report = evaluate_processbench(oracle, records, chunk_size=5, progress=False)
        assert srv.count == 12
        again = evaluate_processbench(oracle, records, chunk_size=5, progress=False)
        assert srv.count == 14  # cached, but for the unreadable reply and the failed call, which are never cached
    acc_e = err_kinds.count("right") / len(err_kinds)
    acc_c = ok_kinds.count("right") / len(ok_kinds)
    assert (acc_e, acc_c) == (3 / 7, 3 / 5)
    assert report.f1 == pytest.approx(2 * acc_e * acc_c / (acc_e + acc_c)) == pytest.approx(0.5)
    assert report.offsets == {"erroneous": {"too_early": 1, "right": 3, "too_late": 1, "missed": 1, "no_verdict": 1},
                              "correct": {"right": 3, "false_alarm": 1, "no_verdict": 1}}
    assert report.statuses == {"ok": 6, "no_error": 4, "unlocalized": 1, "failed": 1}
    assert again.predictions == report.predictions and again.f1 == report.f1
    assert oracle.stats.cache_hits == 10


# ---------------------------------------------------------------------------------------- command line


def _env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}


def test_cli_evaluates_the_step_checker_on_the_fixture(bench: Path, tmp_path: Path):
    out = tmp_path / "out.json"
    cmd = [sys.executable, "-m", "calgrpo_lib.oracle", "evaluate", "--benchmark", "processbench", "--oracle",
           "stepcheck", "--path", str(bench / "gsm8k.json"), "--split", "gsm8k", "--limit", "8", "--json", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=_env(), cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    records = load_processbench("gsm8k", bench, limit=8)
    preds = [v.predicted_step for v in evaluate_processbench(StepCheckOracle(), records, progress=False).verdicts]
    acc_e, acc_c, f1 = hand_f1([r.label for r in records], preds)
    assert (acc_e, acc_c) == (3 / 4, 3 / 4)
    assert f"gsm8k: 8 samples | accuracy on 4 erroneous {acc_e:.1%} | on 4 correct {acc_c:.1%} | F1 {f1:.3f}" \
        in done.stdout
    assert f"average F1 over 1 split: {f1:.3f}" in done.stdout
    assert "reference given to the oracle: none" in done.stdout
    assert "too early" in done.stdout and "false alarm" in done.stdout
    data = json.loads(out.read_text())
    assert data["splits"]["gsm8k"]["f1"] == pytest.approx(f1) and data["average_f1"] == pytest.approx(f1)
    assert [s["predicted"] for s in data["splits"]["gsm8k"]["samples"]] == preds


def test_cli_bad_split_exits_2_naming_it(bench: Path):
    cmd = [sys.executable, "-m", "calgrpo_lib.oracle", "evaluate", "--path", str(bench), "--split", "gsm9k"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=120)
    assert done.returncode == 2
    assert "--split" in done.stderr and "'gsm9k'" in done.stderr and "gsm8k" in done.stderr


def test_cli_argument_and_data_errors_exit_2(bench: Path, tmp_path: Path, capsys):
    assert main(["evaluate", "--path", str(bench / "gsm8k.json"), "--split", "all"]) == 2
    assert "a file holds one split" in capsys.readouterr().err
    assert main(["evaluate", "--path", str(bench), "--split", "math", "--reference", "gsm8k"]) == 2
    assert "--reference gsm8k applies to the gsm8k split only" in capsys.readouterr().err
    assert main(["evaluate", "--path", str(tmp_path / "none.json"), "--split", "gsm8k"]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    assert main(["evaluate", "--path", str(bench), "--split", "gsm8k", "--oracle", "openai"]) == 2
    err = capsys.readouterr().err
    assert "oracle='openai' needs a judge model" in err and "--model" in err


def test_cli_gsm8k_reference_is_named_and_counted(bench: Path, gsm8k_dir: Path, capsys):
    code = main(["evaluate", "--path", str(bench), "--split", "gsm8k", "--reference", "gsm8k", "--gsm8k-path",
                 str(gsm8k_dir), "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0
    assert "reference given to the oracle: the GSM8K test solution of the same question" in out
    assert "reference: GSM8K test solution, 12/12 joined by question" in out
    assert f"average F1 over 1 split: {5 / 6:.3f}" in out


def test_cli_gemini_against_the_local_server(bench: Path, monkeypatch, capsys):
    pytest.importorskip("google.genai")
    records = load_processbench("gsm8k", bench)
    answers, _, _ = _script(records)
    monkeypatch.setenv("GEMINI_API_KEY", FAKE_KEY)
    with ScriptedServer([_judge(answers)], max_requests=40) as srv:
        code = main(["evaluate", "--benchmark", "processbench", "--oracle", "gemini", "--split", "gsm8k", "--path",
                     str(bench), "--base-url", srv.url, "--cache", "none", "--retries", "0", "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0 and srv.count == 12
    assert "F1 0.500" in out and "average F1 over 1 split: 0.500" in out
    assert FAKE_KEY not in out


def test_splits_are_the_four_subsets():
    assert PROCESSBENCH_SPLITS == ("gsm8k", "math", "olympiadbench", "omnimath")
