"""The oracle a run's config names: :func:`build_oracle`, with its reply cache in the run folder and the exact step
checker as the fallback of every LLM judge."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .config import GRPOConfig
from .policy import load_policy

__all__ = ["build_oracle"]


def build_oracle(config: GRPOConfig) -> Any:
    """The oracle named by ``config.oracle`` (None for "none"), with its sqlite cache in the run folder."""
    from . import oracle as oracles

    if config.oracle == "none":
        return None
    cache = config.oracle_cache or str(Path(config.output_dir) / "oracle_cache.sqlite")
    Path(cache).parent.mkdir(parents=True, exist_ok=True)
    if config.oracle == "stepcheck":  # exact and fast: no cache needed
        return oracles.StepCheckOracle()
    run = oracles.OracleConfig(concurrency=config.oracle_concurrency, timeout_s=config.oracle_timeout_s,
                               batch_timeout_s=config.oracle_batch_timeout_s)
    exact = oracles.StepCheckOracle()  # judges an item whenever a call of the LLM judge fails
    if config.oracle == "gemini":
        kwargs = {"model": config.oracle_model} if config.oracle_model else {}
        return oracles.GeminiOracle(**kwargs, base_url=config.oracle_base_url, config=run, cache=cache, fallback=exact)
    if config.oracle == "openai":
        if not config.oracle_model:
            raise ValueError("oracle='openai' needs oracle_model (the served model name, e.g. 'qwen2.5:7b')")
        base = config.oracle_base_url or "http://127.0.0.1:8000/v1"
        return oracles.OpenAICompatibleOracle(config.oracle_model, base, config=run, cache=cache, fallback=exact)
    if not config.oracle_model:
        raise ValueError("oracle='local' needs oracle_model (a hub id or local folder of a causal LM judge)")
    judge, judge_tok = load_policy(config.oracle_model)
    return oracles.LocalJudgeOracle(judge, judge_tok, config=run, cache=cache, fallback=exact)
