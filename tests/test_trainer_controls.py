"""The trainer with the credit controls and a span granularity: two steps each on the tiny preset, the new metric
``span_not_narrowed`` logged, and random_span's spans repeated for the same (seed, step)."""

import json

import pytest
import torch

from calgrpo_lib.config import GRPOConfig
from calgrpo_lib.trainer import Trainer


@pytest.mark.parametrize("mode", ["random_span", "uniform"])
def test_two_steps_with_a_control_at_result_granularity(tmp_path, mode):
    config = GRPOConfig(max_steps=2, prompts_per_step=2, num_generations=4, max_new_tokens=48, eval_size=0,
                        train_size=64, output_dir=str(tmp_path), save_every=0, credit_mode=mode,
                        span_granularity="result", seed=1)
    trainer = Trainer(config, progress=False)
    result = trainer.train()
    assert result.steps_done == 2
    for record in result.history:
        assert isinstance(record["span_not_narrowed"], int) and record["span_not_narrowed"] >= 0
        assert record["span_not_narrowed"] <= record["oracle_calls"] + record["oracle_cache_hits"]
    logged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert all("span_not_narrowed" in r for r in logged if r["kind"] == "train")

    trainer.step_count = 0  # the phases of step 0 again: same rollout, same verdicts, same credit
    rollout = trainer.rollout()
    scores = trainer.score(rollout)
    located = trainer.localize(rollout, scores)
    first, _ = trainer.credit(rollout, scores, located)
    again, stats = trainer.credit(rollout, scores, located)
    assert torch.equal(first, again)
    mask = located.error_mask & scores.is_wrong[:, None]  # (N, T)
    extra = first - scores.advantages[:, None] * rollout.completion_mask  # (N, T) the push-down
    torch.testing.assert_close(extra.sum(dim=1), config.lam * config.negative_reward * mask.sum(dim=1).float())
    assert stats.num_error_tokens == int(mask.sum())


def test_oracle_noise_from_the_config_wraps_the_oracle_and_is_logged(tmp_path):
    from calgrpo_lib.oracle import NoisyOracle, StepCheckOracle
    from calgrpo_lib.run_oracle import build_oracle

    assert isinstance(build_oracle(GRPOConfig()), StepCheckOracle)  # no rates: the oracle itself
    noisy = build_oracle(GRPOConfig(oracle_miss_rate=0.5, oracle_correct_step_rate=0.25, seed=7))
    assert isinstance(noisy, NoisyOracle) and noisy.seed == 7 and isinstance(noisy.oracle, StepCheckOracle)
    assert noisy.rates == {"missed": 0.5, "wrong_step": 0.0, "correct_step": 0.25}
    with pytest.raises(ValueError, match=r"oracle_miss_rate=0.7 \+ oracle_wrong_step_rate=0.4 \+ "
                                         r"oracle_correct_step_rate=0.0 = 1.1; allowed: rates whose sum is <= 1"):
        GRPOConfig(oracle_miss_rate=0.7, oracle_wrong_step_rate=0.4)
    with pytest.raises(ValueError, match="oracle_wrong_step_rate=-0.1 is out of range"):
        GRPOConfig(oracle_wrong_step_rate=-0.1)
    with pytest.raises(ValueError, match="with oracle='none': there is no oracle to spoil"):
        GRPOConfig(oracle="none", credit_mode="sequence", oracle_miss_rate=0.1)

    config = GRPOConfig(max_steps=2, prompts_per_step=2, num_generations=4, max_new_tokens=48, eval_size=0,
                        train_size=64, output_dir=str(tmp_path), save_every=0, oracle_miss_rate=1.0, seed=1)
    result = Trainer(config, progress=False).train()
    assert result.steps_done == 2
    for record in result.history:  # every located error is missed: no error tokens, all sequence credit
        assert record.get("oracle_answered_by_oracle", 0) + record.get("oracle_answered_by_noise_missed", 0) > 0
        assert record.get("error_tokens", 0) == 0
