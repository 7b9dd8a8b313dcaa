"""Chaos test (issue 22, build 8): a short training run against a fake Gemini judge that serves every fault.

The judge is the scripted server of ``oracle_http``, reached through the real google-genai SDK. Request ``k`` gets
the ``k``-th entry of :data:`CYCLE` (repeating) until request :data:`QUOTA_AT`, which is a daily-quota 429: the
oracle stops, and every later item goes to the exact fallback. A good reply quotes the longest step of the response
it reads in the prompt; a near miss quotes it with one visible digit changed. Asserted: every step runs, no near
miss became an ``ok`` verdict, every fault is counted by cause in ``metrics.jsonl``, and no step's oracle time
exceeds the batch deadline.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from oracle_http import ScriptedServer, Step, daily_quota_error, gemini_error, gemini_reply, minute_quota_error

pytest.importorskip("google.genai")

from calgrpo_lib.config import GRPOConfig  # noqa: E402
from calgrpo_lib.oracle import GeminiOracle, OracleConfig, ReplyCache, StepCheckOracle  # noqa: E402
from calgrpo_lib.quotes import normalize_with_map  # noqa: E402
from calgrpo_lib.trainer import Trainer  # noqa: E402

FAKE_KEY = "AIza" + "FAKE-chaos-key-do-not-use-000000000"
TIMEOUT_S, DEADLINE_S, MARGIN_S = 1.5, 2.0, 0.75
CYCLE = ("good", "retry_after", "http_503", "hang", "html", "oversized", "near_miss", "not_json", "good")
QUOTA_AT = 10
# what each scripted fault must show up as in metrics.jsonl (any one of the keys, summed over the steps)
EXPECTED = {"retry_after": ("retries_http_429", "failures_http_429"),
            "http_503": ("retries_http_503", "failures_http_503"),
            "hang": ("failures_deadline", "failures_timeout"),
            "html": ("failures_bad_response",), "oversized": ("failures_reply_too_large",),
            "not_json": ("unlocalized_malformed_reply",),
            "near_miss": ("unlocalized_quote_numbers_differ", "unlocalized_quote_not_found"),
            "quota": ("failures_quota_exhausted",)}


def _steps(request: dict) -> list[str]:
    """The numbered steps of the response to judge, as the prompt shows them."""
    user = request["json"]["contents"][0]["parts"][0]["text"]
    block = user.rsplit("### Your task", 1)[1].split("<solution>\n", 1)[1].split("\n</solution>", 1)[0]
    return [re.sub(r"^\[\d+\] ", "", line) for line in block.splitlines()]


def _near_miss(text: str) -> str | None:
    """``text`` with its last digit outside ``<<...>>`` annotations changed, or None when it has none."""
    visible = [m.start() for m in re.finditer(r"\d", re.sub(r"<<[^>]*>>", lambda m: "#" * len(m.group()), text))]
    if not visible:
        return None
    i = visible[-1]
    return text[:i] + str((int(text[i]) + 1) % 10) + text[i + 1:]


def _reply(steps: list[str], near_miss: bool) -> dict:
    with_digits = [(len(s), n, s) for n, s in enumerate(steps) if re.search(r"\d", s)]
    if not with_digits:
        return gemini_reply(json.dumps({"step": -1, "quote": "", "reason": "sent:"}))
    _, n, quote = max(with_digits)
    quote = (_near_miss(quote) or quote) if near_miss else quote
    return gemini_reply(json.dumps({"step": n, "quote": quote, "reason": f"sent:{quote}"}))


def _judge(served: list[str]):
    def route(k: int, request: dict) -> Step:
        kind = "quota" if k >= QUOTA_AT else CYCLE[k % len(CYCLE)]
        served.append(kind)
        if kind == "quota":
            return Step(429, daily_quota_error())
        if kind == "retry_after":
            return Step(429, minute_quota_error(), headers={"Retry-After": "1"})
        if kind == "http_503":
            return Step(503, gemini_error(503, "UNAVAILABLE", "The model is overloaded."))
        if kind == "hang":
            return Step(200, _reply(_steps(request), False), delay_s=3 * DEADLINE_S)
        if kind == "html":
            return Step(200, "<html>502 proxy error</html>")
        if kind == "oversized":
            return Step(200, gemini_reply(json.dumps({"step": 0, "quote": "x", "reason": "y" * 2_000_000})))
        if kind == "not_json":
            return Step(200, gemini_reply("I think the second step is wrong."))
        return Step(200, _reply(_steps(request), kind == "near_miss"))

    return route


class RecordingTrainer(Trainer):
    """A trainer that keeps every step's oracle verdicts."""

    def localize(self, rollout, scores):
        located = super().localize(rollout, scores)
        self.seen = [*getattr(self, "seen", []), *(v for v in located.verdicts if v is not None)]
        return located


def _numbers(text: str) -> list[str]:
    return re.findall(r"\d+(?:\.\d+)?", normalize_with_map(text)[0])


def test_training_survives_every_oracle_fault(tmp_path: Path):
    served: list[str] = []
    cfg = OracleConfig(concurrency=4, timeout_s=TIMEOUT_S, batch_timeout_s=DEADLINE_S, retries=2, backoff_s=0.01,
                       backoff_max_s=0.05, fallback="stepcheck")
    config = GRPOConfig(max_steps=5, prompts_per_step=4, num_generations=4, max_new_tokens=40, eval_size=0,
                        train_size=64, save_every=0, seed=0, oracle="gemini", output_dir=str(tmp_path / "run"))
    with ScriptedServer([_judge(served)], max_requests=200, max_seconds=120) as srv:
        oracle = GeminiOracle(api_key=FAKE_KEY, base_url=srv.url, config=cfg, fallback=StepCheckOracle(),
                              cache=ReplyCache(tmp_path / "oracle.sqlite"))
        trainer = RecordingTrainer(config, oracle=oracle, progress=False)
        result = trainer.train()
        requests = srv.count

    assert result.steps_done == 5 and not result.interrupted
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if r["kind"] == "train"]
    assert [r["step"] for r in steps] == [1, 2, 3, 4, 5]

    judged = [v for v in trainer.seen if v.status == "ok" and v.backend == "gemini"]
    assert judged, "the fake judge's good replies should give ok verdicts"
    for v in judged:  # the judge wrote the quote it sent into the reason: its numbers must be those of the text
        assert _numbers(v.reason.removeprefix("sent:")) == _numbers(v.quote), f"a near miss became ok: {v}"

    assert set(served) == set(CYCLE) | {"quota"}, f"the run made {requests} requests; every fault must be served"
    assert served.count("quota") <= cfg.concurrency  # only calls already in flight met the quota; none came later
    totals: dict[str, float] = {}
    for r in steps:
        for k, v in r.items():
            if k.startswith("oracle_"):
                totals[k] = totals.get(k, 0) + v
    for fault, keys in EXPECTED.items():
        assert sum(totals.get(f"oracle_{k}", 0) for k in keys) >= 1, f"{fault} is not counted as any of {keys}"
    stopped = [r["oracle_stopped"] for r in steps]
    assert stopped[-1] == 1.0 and stopped == sorted(stopped)  # the quota stop shows from its step on, and stays
    assert steps[stopped.index(1.0)].get("oracle_failures_quota_exhausted", 0) >= 1
    assert totals["oracle_fallbacks"] >= totals["oracle_failures"] >= 4  # each failed item got the exact verdict

    summary = json.loads((Path(result.config.output_dir) / "oracle_summary.json").read_text())
    assert summary == json.loads(json.dumps(result.oracle_summary))  # the run's report, also on disk
    assert summary["stopped"] == "quota_exhausted" and summary["fallbacks"] == totals["oracle_fallbacks"]
    for cause, n in summary["failures_by_cause"].items():  # the run's totals are the sums of the steps' counts
        assert totals.get(f"oracle_failures_{cause}", 0) == n, cause

    for r in steps:
        assert r["time_oracle"] <= DEADLINE_S + MARGIN_S, f"step {r['step']} spent {r['time_oracle']:.2f}s"

    assert FAKE_KEY.encode() not in b"".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())
