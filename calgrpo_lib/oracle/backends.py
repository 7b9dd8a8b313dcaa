"""One oracle from its name: :func:`make_oracle`, the one place a backend name becomes an object (a training run's
``run_oracle.build_oracle`` and the ``python -m calgrpo_lib.oracle`` command both call it), optionally behind the
exact step checker (``cascade=True``: a :class:`~calgrpo_lib.oracle.cascade.CascadeOracle`)."""

from __future__ import annotations

from pathlib import Path

from ..policy import load_policy
from .cascade import CascadeOracle
from .gemini import DEFAULT_GEMINI_MODEL, GeminiOracle
from .local import LocalJudgeOracle
from .openai_compat import OpenAICompatibleOracle
from .prm import PRMOracle
from .runner import Oracle, OracleConfig
from .stepcheck import FakeOracle, StepCheckOracle

__all__ = ["BACKENDS", "DEFAULT_OPENAI_BASE_URL", "make_oracle"]

BACKENDS = ("stepcheck", "gemini", "openai", "local", "prm", "fake")
DEFAULT_OPENAI_BASE_URL = "http://127.0.0.1:8000/v1"


def make_oracle(kind: str, *, model: str | None = None, base_url: str | None = None,
                config: OracleConfig | None = None, cache: str | Path | None = None, fallback: Oracle | None = None,
                latency_s: float = 0.2, prm_interface: str = "step_head", prm_threshold: float = 0.5,
                trust_remote_code: bool = False, cascade: bool = False) -> Oracle:
    """The oracle ``kind`` (:data:`BACKENDS`) with its call settings ``config``, reply ``cache`` (a sqlite path, its
    folder created; None: no cache) and ``fallback``. ``model`` is the judge: Gemini's model id (default
    :data:`~calgrpo_lib.oracle.gemini.DEFAULT_GEMINI_MODEL`), the served model name for ``openai``, a hub id or
    folder of a causal LM for ``local``, of a process reward model for ``prm`` (its ``prm_interface``, see
    :data:`~calgrpo_lib.oracle.prm.PRM_INTERFACES`, and ``prm_threshold``; ``trust_remote_code`` for a hub PRM
    whose head is the repository's own code, as Qwen2.5-Math-PRM's); ``base_url`` the ``gemini`` / ``openai``
    server (``openai`` default :data:`DEFAULT_OPENAI_BASE_URL`). ``stepcheck`` is exact and needs no cache or
    fallback; ``fake`` waits ``latency_s`` per call. ``cascade=True`` puts the exact step checker before the judge
    (:class:`~calgrpo_lib.oracle.cascade.CascadeOracle`, rule ``"earlier"``); not for ``stepcheck`` itself."""
    if kind not in BACKENDS:
        raise ValueError(f"oracle={kind!r} is not allowed; allowed: {', '.join(map(repr, BACKENDS))}")
    if not isinstance(cascade, bool):
        raise TypeError(f"cascade={cascade!r}; allowed: True or False")
    if kind == "stepcheck":
        if cascade:
            raise ValueError("cascade=True with oracle='stepcheck': the cascade puts the step checker before a "
                             f"judge; allowed: cascade=False, or a judge among {', '.join(map(repr, BACKENDS[1:]))}")
        return StepCheckOracle(config=config)
    judge = _judge(kind, model, base_url, config, cache, fallback, latency_s, prm_interface, prm_threshold,
                   trust_remote_code)
    return CascadeOracle(judge) if cascade else judge


def _judge(kind: str, model: str | None, base_url: str | None, config: OracleConfig | None,
           cache: str | Path | None, fallback: Oracle | None, latency_s: float, prm_interface: str,
           prm_threshold: float, trust_remote_code: bool) -> Oracle:
    if cache is not None:
        Path(cache).parent.mkdir(parents=True, exist_ok=True)
    common = {"config": config, "cache": cache, "fallback": fallback}
    if kind == "fake":
        return FakeOracle(latency_s, **common)
    if kind == "gemini":
        return GeminiOracle(model or DEFAULT_GEMINI_MODEL, base_url=base_url, **common)
    if not model:
        raise ValueError(f"oracle={kind!r} needs a judge model (oracle_model / --model: the served model name for "
                         "openai, e.g. 'qwen2.5:7b'; a hub id or local folder of a causal LM for local, of a "
                         "process reward model for prm)")
    if kind == "openai":
        return OpenAICompatibleOracle(model, base_url or DEFAULT_OPENAI_BASE_URL, **common)
    if kind == "prm":
        return PRMOracle.from_pretrained(model, prm_interface, trust_remote_code=trust_remote_code,
                                         threshold=prm_threshold, **common)
    judge, tokenizer = load_policy(model)
    return LocalJudgeOracle(judge, tokenizer, model_name=model, **common)
