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
