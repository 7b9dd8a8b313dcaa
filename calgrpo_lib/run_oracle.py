"""The oracle a run's config names: :func:`build_oracle`, with its reply cache in the run folder and the exact step
checker as the fallback of every judge (LLM or PRM), or in front of it with ``oracle_cascade``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .config import GRPOConfig

__all__ = ["build_oracle"]


def build_oracle(config: GRPOConfig) -> Any:
    """The oracle named by ``config.oracle`` (None for "none"), with its sqlite cache in the run folder
    (:func:`calgrpo_lib.oracle.backends.make_oracle`), wrapped in a
    :class:`~calgrpo_lib.oracle.noise.NoisyOracle` (seeded by ``config.seed``) when an ``oracle_*_rate`` is set."""
    from .oracle.noise import NoisyOracle

    oracle = _named_oracle(config)
    rates = {"miss_rate": config.oracle_miss_rate, "wrong_step_rate": config.oracle_wrong_step_rate,
             "correct_step_rate": config.oracle_correct_step_rate}
    if oracle is None or not any(rates.values()):
        return oracle
    return NoisyOracle(oracle, seed=config.seed, **rates)  # a worse oracle on purpose, for oracle-quality studies


def _named_oracle(config: GRPOConfig) -> Any:
    from .oracle.backends import make_oracle
    from .oracle.runner import OracleConfig
    from .oracle.stepcheck import StepCheckOracle

    if config.oracle == "none":
        return None
    if config.oracle == "stepcheck":  # exact and fast: no cache needed
        return make_oracle("stepcheck")
    run = OracleConfig(concurrency=config.oracle_concurrency, timeout_s=config.oracle_timeout_s,
                       batch_timeout_s=config.oracle_batch_timeout_s)
    cache = config.oracle_cache or str(Path(config.output_dir) / "oracle_cache.sqlite")
    return make_oracle(config.oracle, model=config.oracle_model, base_url=config.oracle_base_url, config=run,
                       cache=cache, fallback=StepCheckOracle(),  # the exact checker judges when a judge call fails
                       prm_interface=config.prm_interface, prm_threshold=config.prm_threshold,
                       trust_remote_code=config.oracle_trust_remote_code, cascade=config.oracle_cascade)
