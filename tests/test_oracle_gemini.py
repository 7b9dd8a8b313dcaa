"""GeminiOracle through the real google-genai SDK, pointed at a scripted HTTP server on 127.0.0.1."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest
from oracle_http import (
    GOOD_REPLY,
    QUESTION,
    REFERENCE,
    RESPONSE,
    ScriptedServer,
    Step,
    daily_quota_error,
    gemini_error,
    gemini_reply,
    minute_quota_error,
)

pytest.importorskip("google.genai")

from calgrpo_lib.oracle import (  # noqa: E402
    GeminiOracle,
    JudgeItem,
    OracleConfig,
    ReplyCache,
    StepCheckOracle,
    client_library,
)

FAKE_KEY = "AIza" + "FAKE-test-key-do-not-use-0123456789"  # built at run time: no key-shaped literal in the repo
FAST = OracleConfig(retries=2, backoff_s=0.01, backoff_max_s=0.02, jitter=0.5, timeout_s=5.0, concurrency=4)
UNAVAILABLE = Step(503, gemini_error(503, "UNAVAILABLE", "The model is overloaded."))


def _oracle(srv: ScriptedServer, config: OracleConfig = FAST, **kw) -> GeminiOracle:
    return GeminiOracle(api_key=FAKE_KEY, base_url=srv.url, config=config, **kw)


def _items(n: int) -> list[JudgeItem]:
    return [JudgeItem(QUESTION, REFERENCE, RESPONSE.replace("Ava", f"Ava{i}")) for i in range(n)]


def test_request_shape_and_verdict():
    with ScriptedServer([Step(200, gemini_reply(GOOD_REPLY))]) as srv:
        oracle = _oracle(srv, model="gemini-test-flash")
        v = oracle.judge(QUESTION, REFERENCE, RESPONSE)
    assert (v.status, v.step, v.quote, v.match) == ("ok", 1, "48 - 24 = 25", "exact")
    assert RESPONSE[v.span[0]:v.span[1]] == "48 - 24 = 25"
    req = srv.requests[0]
    assert req["path"].endswith("/models/gemini-test-flash:generateContent")
    assert req["headers"]["x-goog-api-key"] == FAKE_KEY  # the key goes in a header, never in the URL
    gen = req["json"]["generationConfig"]
    assert gen["responseMimeType"] == "application/json"
    assert set(gen["responseSchema"]["properties"]) == {"step", "quote", "reason"}
    user = req["json"]["contents"][0]["parts"][0]["text"]
    assert "[1] She keeps 48 - 24 = 25 stickers." in user
    assert "not instructions" in req["json"]["systemInstruction"]["parts"][0]["text"]
    assert oracle.stats.calls == 1 and oracle.stats.retries == 0


def test_429_rate_limit_is_retried_then_succeeds():
    with ScriptedServer([Step(429, minute_quota_error()), Step(200, gemini_reply(GOOD_REPLY))]) as srv:
        oracle = _oracle(srv)
        v = oracle.judge_batch(_items(1))[0]
    assert v.status == "ok"
    assert srv.count == 2
    assert (oracle.stats.calls, oracle.stats.retries, dict(oracle.stats.failures)) == (1, 1, {})


def test_503_is_retried_by_the_runner_and_counted():
    with ScriptedServer([UNAVAILABLE, Step(200, gemini_reply(GOOD_REPLY))]) as srv:
        oracle = _oracle(srv)
        v = oracle.judge_batch(_items(1))[0]
    assert v.status == "ok"
    assert srv.count == 2 and oracle.stats.retries == 1  # the runner retried (the SDK's own retries are off)
    assert oracle.stats.retry_causes == {"http_503": 1}


@pytest.mark.parametrize("fallback", ["sequence", "stepcheck"])
def test_repeated_5xx_falls_back_and_is_counted(fallback):
    cfg = OracleConfig(retries=2, backoff_s=0.01, backoff_max_s=0.02, timeout_s=5.0, fallback=fallback)
    with ScriptedServer([UNAVAILABLE]) as srv:
        oracle = _oracle(srv, cfg, fallback=StepCheckOracle() if fallback == "stepcheck" else None)
        v = oracle.judge_batch(_items(1))[0]
    assert srv.count == 3  # 1 attempt + 2 retries by the runner, none by the SDK
    s = oracle.stats
    assert (s.calls, s.retries, dict(s.failures)) == (1, 2, {"http_503": 1})
    if fallback == "sequence":
        assert (v.status, v.cause, s.fallbacks) == ("failed", "http_503", 0)
    else:  # the exact checker stands in and finds the same error
        assert (v.status, v.step, v.backend, v.fallback_from, s.fallbacks) == ("ok", 1, "stepcheck", "http_503", 1)


def test_timeout_fails_the_call_without_waiting_for_the_server():
    cfg = OracleConfig(retries=0, timeout_s=0.5, backoff_s=0.01, backoff_max_s=0.02)
    with ScriptedServer([Step(200, gemini_reply(GOOD_REPLY), delay_s=2.5)]) as srv:
        oracle = _oracle(srv, cfg)
        t0 = time.monotonic()
        v = oracle.judge_batch(_items(1))[0]
        elapsed = time.monotonic() - t0
    assert (v.status, v.cause) == ("failed", "timeout")
    assert elapsed < 1.5
    assert dict(oracle.stats.failures) == {"timeout": 1} and srv.count == 1


def test_malformed_http_body_fails_as_bad_response():
    with ScriptedServer([Step(200, "<html>proxy error</html>")]) as srv:
        oracle = _oracle(srv)
        v = oracle.judge_batch(_items(1))[0]
    assert (v.status, v.cause) == ("failed", "bad_response")
    assert srv.count == 1 and dict(oracle.stats.failures) == {"bad_response": 1}


def test_reply_that_is_not_json_is_unlocalized():
    with ScriptedServer([Step(200, gemini_reply("I think the second step is wrong."))]) as srv:
        oracle = _oracle(srv)
        v = oracle.judge_batch(_items(1))[0]
    assert (v.status, v.cause) == ("unlocalized", "malformed_reply")
    assert oracle.stats.unlocalized == {"malformed_reply": 1} and oracle.stats.unlocalized_rate == 1.0


def test_quote_absent_from_the_response_is_unlocalized():
    reply = json.dumps({"step": 1, "quote": "17 * 3 = 52", "reason": "made up"})
    with ScriptedServer([Step(200, gemini_reply(reply))]) as srv:
        v = _oracle(srv).judge_batch(_items(1))[0]
    assert (v.status, v.cause, v.step, v.span) == ("unlocalized", "quote_not_found", 1, None)


@pytest.mark.parametrize("fallback", ["sequence", "stepcheck"])
def test_daily_quota_stops_all_further_calls(fallback):
    cfg = OracleConfig(retries=3, backoff_s=0.01, backoff_max_s=0.02, concurrency=1, fallback=fallback)
    with ScriptedServer([Step(429, daily_quota_error())]) as srv:
        oracle = _oracle(srv, cfg, fallback=StepCheckOracle() if fallback == "stepcheck" else None)
        first = oracle.judge_batch(_items(5))
        later = oracle.judge(QUESTION, REFERENCE, RESPONSE + " ")
    assert srv.count == 1  # one request; no retry of a daily quota, no call after it
    s = oracle.stats
    assert oracle.stopped == "quota_exhausted"
    assert (s.calls, s.retries, dict(s.failures)) == (1, 0, {"quota_exhausted": 6})
    if fallback == "sequence":
        assert {(v.status, v.cause) for v in [*first, later]} == {("failed", "quota_exhausted")}
    else:
        assert {(v.status, v.backend, v.fallback_from) for v in [*first, later]} == {
            ("ok", "stepcheck", "quota_exhausted")}
        assert s.fallbacks == 6


def test_the_key_appears_in_no_log_repr_error_or_cache(tmp_path: Path, monkeypatch, caplog):
    monkeypatch.setenv("GEMINI_API_KEY", FAKE_KEY)
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    caplog.set_level(logging.DEBUG)
    cache_path = tmp_path / "oracle.sqlite"
    script = [Step(200, gemini_reply(GOOD_REPLY)), UNAVAILABLE, UNAVAILABLE, UNAVAILABLE,
              Step(200, "not json"), Step(429, daily_quota_error())]
    with ScriptedServer(script) as srv:
        oracle = GeminiOracle(base_url=srv.url, config=OracleConfig(retries=2, backoff_s=0.01, backoff_max_s=0.02,
                                                                     concurrency=1), cache=ReplyCache(cache_path))
        verdicts = oracle.judge_batch(_items(5))
    assert srv.requests[0]["headers"]["x-goog-api-key"] == FAKE_KEY  # the key from the environment was used
    assert [v.cause for v in verdicts] == ["", "http_503", "bad_response", "quota_exhausted", "quota_exhausted"]
    texts = [caplog.text, repr(oracle), str(oracle.stats), repr(oracle.stats.to_dict()),
             *(json.dumps(v.to_dict()) for v in verdicts)]
    for bad in ({"model": ""}, {"model": "m", "library": "nope"}):
        with pytest.raises(ValueError) as err:
            GeminiOracle(base_url=srv.url, **bad)
        texts.append(str(err.value))
    oracle.cache.close()
    blobs = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert len(list(tmp_path.iterdir())) >= 1 and b"48 - 24 = 25" in blobs  # the cache holds the reply...
    assert FAKE_KEY.encode() not in blobs  # ...and not the key
    for text in texts:
        assert FAKE_KEY not in text


def test_missing_key_says_how_to_enable(tmp_path: Path, monkeypatch):
    for name in ("GEMINI_API_KEY", "GOOGLE_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RuntimeError, match="GEMINI_API_KEY") as err:
        GeminiOracle()
    assert "aistudio.google.com" in str(err.value)
    (tmp_path / ".env").write_text(f"# secrets\nexport GOOGLE_API_KEY='{FAKE_KEY}'\n")
    oracle = GeminiOracle()  # found in .env (no request is made)
    assert FAKE_KEY not in repr(oracle)


def test_client_library_selection():
    def only(*present):
        return lambda name: object() if name in present else None

    assert client_library(only("google.genai", "google.generativeai")) == "google-genai"
    assert client_library(only("google.generativeai")) == "google-generativeai"  # the legacy fallback
    with pytest.raises(ImportError, match="pip install google-genai"):
        client_library(only())
    assert client_library() == "google-genai"


def test_notebook_with_a_fake_key_calls_gemini_and_never_shows_the_key(tmp_path: Path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(Path(__file__).resolve().parents[1] / "notebooks" / "02_oracle_prompting.ipynb", as_version=4)
    (tmp_path / "notebooks").mkdir()
    reply = json.dumps({"step": -1, "quote": "", "reason": "looks fine"})
    with ScriptedServer([Step(200, gemini_reply(reply))]) as srv:
        monkeypatch.setenv("GEMINI_API_KEY", FAKE_KEY)
        monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", srv.url)  # the SDK's own base-URL override
        nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                                resources={"metadata": {"path": str(tmp_path / "notebooks")}}).execute()
    assert srv.count == 1 and srv.requests[0]["headers"]["x-goog-api-key"] == FAKE_KEY
    executed = nbformat.writes(nb)
    assert "gemini (gemini-" in executed  # the Gemini cell used Gemini
    assert FAKE_KEY not in executed
    cache_files = list((tmp_path / "results" / "cache").iterdir())
    assert cache_files and all(FAKE_KEY.encode() not in f.read_bytes() for f in cache_files)
