"""Hybrid rewards: the stratified mix, the two difficulty weightings and the RM-verifier agreement against hand
computations; a constant RM gives the verifier's advantages; the trainer scores with an RM, logs its metrics,
keeps the calibration in its checkpoints and resumes without a second warm-up."""

import json
import math
import os
import subprocess
import sys

import pytest
import torch

from calgrpo_lib.advantages import group_advantages
from calgrpo_lib.checkpoints import read_checkpoint_state
from calgrpo_lib.config import GRPOConfig
from calgrpo_lib.hybrid_rewards import (
    SpreadMean,
    difficulty_weights,
    group_spread,
    sigmoid_weight,
    stratified_reward,
    tanh_weight,
)
from calgrpo_lib.preflight import PreflightError, preflight
from calgrpo_lib.reward_model import RewardModel, RMCalibration
from calgrpo_lib.reward_model_eval import ranking_rate
from calgrpo_lib.scoring import CALIBRATION_FILE, RewardScorer
from calgrpo_lib.trainer import TIMING_KEYS, Trainer

RM_KEYS = ("rm_score_mean", "rm_score_std", "rm_r_hat_mean", "rm_reward_mean", "rm_calibration_low",
           "rm_calibration_high", "rm_sigma_bar", "rm_agreement", "weight_mean", "weight_std", "weight_min",
           "weight_max")


def test_stratified_reward_keeps_right_answers_above_wrong_ones():
    correct = torch.tensor([1.0, 0.0, 1.0, 0.0])
    r_hat = torch.tensor([0.0, 0.4, 1.0, 1.0])
    assert stratified_reward(correct, r_hat).tolist() == pytest.approx([0.5, 0.2, 1.0, 0.5])
    assert stratified_reward(correct, r_hat, 0.2, 0.1).tolist() == pytest.approx([0.8, 0.04, 1.0, 0.1])
    with pytest.raises(ValueError, match="correct_weight=1.5"):
        stratified_reward(correct, r_hat, 1.5)
    with pytest.raises(ValueError, match="equal shapes"):
        stratified_reward(correct, r_hat[:3])


@pytest.mark.parametrize("constant", [0.0, 0.3, 1.0])
def test_a_constant_reward_model_reduces_the_hybrid_reward_to_the_verifiers(constant):
    g = torch.Generator().manual_seed(0)
    correct = (torch.rand(64, generator=g) < 0.4).float()  # (N,) 8 groups of 8
    r_hat = torch.full((64,), constant)
    hybrid = stratified_reward(correct, r_hat)
    slope = 1 - 0.5 + 0.5 * constant - 0.5 * constant  # 1 - c + c*rho - u*rho
    assert torch.allclose(hybrid, 0.5 * constant + slope * correct)
    assert torch.allclose(group_advantages(hybrid, 8, scale="group"), group_advantages(correct, 8, scale="group"),
                          rtol=1e-3)  # the same up to the std's epsilon
    assert torch.allclose(group_advantages(hybrid, 8, scale="none"), slope * group_advantages(correct, 8, scale="none"))
    w = difficulty_weights(r_hat, 8, "sigmoid", sigma_bar=0.0)  # no spread anywhere: one weight for every group
    assert torch.allclose(w, torch.full((64,), 0.5 + 1.5 * 0.5))


def test_the_two_weightings_against_hand_computed_values():
    w = sigmoid_weight(torch.tensor([0.3, 0.1, 0.0]), sigma_bar=0.1, w_min=0.5, w_max=2.0, k=10.0)
    assert w.tolist() == pytest.approx([0.5 + 1.5 / (1 + math.exp(-2.0)), 1.25, 0.5 + 1.5 / (1 + math.exp(1.0))])
    assert tanh_weight(torch.tensor([0.0, 0.5, 1.0]), 0.5, 2.0).tolist() == pytest.approx(
        [0.5, 0.5 + 1.5 * math.tanh(0.125), 0.5 + 1.5 * math.tanh(1.0)])
    r_hat = torch.tensor([0.0, 1.0, 0.5, 0.5])  # groups of 2: spreads 0.5 and 0.0
    assert group_spread(r_hat, 2).tolist() == pytest.approx([0.5, 0.0])
    sig = difficulty_weights(r_hat, 2, "sigmoid", sigma_bar=0.25, w_min=1.0, w_max=3.0, k=4.0)
    hi, lo = 1 + 2 / (1 + math.exp(-1.0)), 1 + 2 / (1 + math.exp(1.0))
    assert sig.tolist() == pytest.approx([hi, hi, lo, lo])  # the group's weight on each of its rows
    assert difficulty_weights(r_hat, 2, "tanh", w_min=1.0, w_max=3.0).tolist() == pytest.approx(
        [1.0, 1 + 2 * math.tanh(1.0), 1 + 2 * math.tanh(0.125), 1 + 2 * math.tanh(0.125)])
    assert difficulty_weights(r_hat, 2, "none").tolist() == [1.0] * 4
    with pytest.raises(ValueError, match="scorer='cosine'"):
        difficulty_weights(r_hat, 2, "cosine")
    with pytest.raises(ValueError, match="w_max=0.1"):
        difficulty_weights(r_hat, 2, "tanh", w_min=0.5, w_max=0.1)
    with pytest.raises(ValueError, match="group_size=3"):
        difficulty_weights(r_hat, 3, "sigmoid")


def test_spread_mean_is_the_running_mean_of_every_group_so_far():
    spread = SpreadMean()
    assert spread.value == 0.0
    assert spread.update(torch.tensor([0.1, 0.3])) == pytest.approx(0.2)
    assert spread.update(torch.tensor([0.6])) == pytest.approx(1.0 / 3)
    assert (spread.total, spread.count) == (pytest.approx(1.0), 3)


def test_rm_agreement_counts_right_over_wrong_pairs_within_groups():
    scores = [3.0, 1.0, 2.0, 0.0, 5.0, 5.0, 1.0, 2.0]
    correct = [1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0]
    groups = [0, 0, 0, 0, 1, 1, 1, 1]
    # group 0: right {3, 0} vs wrong {1, 2}: 3>1, 3>2 win; 0<1, 0<2 lose -> 2 of 4; group 1: 5 vs 5 tie, 1 < 5, 2 < 5
    assert ranking_rate(scores, correct, groups)["rate"] == pytest.approx((2 + 0.5) / 7)
    assert ranking_rate(scores, [1.0] * 8, groups)["rate"] is None  # no mixed group


def test_config_validates_the_reward_fields():
    for field, value, match in [("reward", "learned", "reward='learned'"), ("reward_scorer", "cos", "reward_scorer"),
                                ("rm_warmup", 1, "rm_warmup=1"), ("rm_calibration", "z", "rm_calibration"),
                                ("rm_correct_weight", 1.2, "rm_correct_weight=1.2"), ("reward_model", " ", "empty"),
                                ("difficulty_w_max", 0.1, "difficulty_w_max=0.1"), ("difficulty_k", -1.0, "k=-1")]:
        with pytest.raises(ValueError, match=match):
            GRPOConfig(**{field: value})


def test_preflight_names_a_missing_reward_model_before_any_model_loads(tmp_path, no_model_load):
    config = GRPOConfig(reward="hybrid", reward_model=str(tmp_path / "no-such-rm"), output_dir=str(tmp_path / "run"))
    with pytest.raises(PreflightError, match="reward_model="):
        preflight(config)
    preflight(config.replace(reward="rule"))  # the rule reward needs no RM


@pytest.fixture(scope="module")
def random_rm(tmp_path_factory):
    """A randomly initialised Llama sequence classifier of the tiny policy's shape, with its tokenizer."""
    from transformers import AutoConfig, AutoTokenizer, LlamaForSequenceClassification

    from calgrpo_lib.policy import TINY_DIR

    torch.manual_seed(0)
    cfg = AutoConfig.from_pretrained(TINY_DIR, num_labels=1, hidden_size=64, intermediate_size=128,
                                     num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2, head_dim=32)
    folder = tmp_path_factory.mktemp("rm")
    LlamaForSequenceClassification(cfg).save_pretrained(folder)
    AutoTokenizer.from_pretrained(TINY_DIR).save_pretrained(folder)
    return folder


def _rm_config(tmp_path, **changes):
    base = dict(reward="hybrid", prompts_per_step=2, num_generations=4, max_new_tokens=32, eval_size=0,
                train_size=64, rm_warmup=8, save_every=1, max_steps=3, seed=5)
    return GRPOConfig(output_dir=str(tmp_path), **{**base, **changes})


def test_trainer_with_a_reward_model_logs_its_metrics_and_keeps_its_calibration(tmp_path, random_rm):
    trainer = Trainer(_rm_config(tmp_path / "a", reward_model=str(random_rm), reward_scorer="tanh"), progress=False)
    assert trainer.scorer.needs_warmup
    record = trainer.step()
    for key in RM_KEYS:
        assert key in record, key
    calibration = json.loads((tmp_path / "a" / CALIBRATION_FILE).read_text())
    assert calibration["method"] == "min_max" and calibration["num_samples"] == 8
    assert calibration["low"] <= calibration["high"]
    assert (record["rm_calibration_low"], record["rm_calibration_high"]) == (calibration["low"], calibration["high"])
    assert 0.5 <= record["weight_min"] <= record["weight_max"] <= 0.5 + 1.5 * math.tanh(1.0) + 1e-6
    saved = read_checkpoint_state(trainer.save_checkpoint())["reward_scorer"]
    assert RMCalibration.from_dict(saved["calibration"]) == trainer.scorer.calibration
    assert saved["spread_count"] == 2  # one step of two groups


def test_a_resumed_rm_run_repeats_the_uninterrupted_one_without_a_second_warm_up(tmp_path, random_rm, monkeypatch):
    reference = Trainer(_rm_config(tmp_path / "ref", reward_model=str(random_rm)), progress=False).train()
    first = Trainer(_rm_config(tmp_path / "run", reward_model=str(random_rm), max_steps=2), progress=False).train()
    assert first.steps_done == 2

    def no_second_warmup(*args, **kwargs):
        raise AssertionError("a resumed run calibrated the RM again")

    monkeypatch.setattr(RewardScorer, "warm_up", no_second_warmup)
    resumed = Trainer(_rm_config(tmp_path / "run", reward_model=str(random_rm), resume=True,
                                 allow_config_change=True), progress=False).train()
    expected = [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in reference.history]
    got = [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in resumed.history]
    assert got == expected  # rewards, weights (sigma_bar included), losses: step for step


def test_rm_reward_is_the_calibrated_score_and_rule_reward_needs_no_rm(tmp_path, random_rm):
    rm = RewardModel.load(str(random_rm), device="cpu")
    trainer = Trainer(_rm_config(tmp_path / "rm", reward="rm", reward_model=str(random_rm), reward_scorer="none"),
                      reward_model=rm, progress=False)
    rollout = trainer.rollout()
    scores = trainer.score(rollout)
    r_hat = trainer.scorer.calibration.normalize(rm.score([p.question for p in rollout.problems], rollout.texts))
    assert torch.allclose(scores.reward, r_hat) and torch.equal(scores.weights, torch.ones(8))
    assert torch.allclose(scores.advantages, group_advantages(r_hat, 4))
    rule = Trainer(_rm_config(tmp_path / "rule", reward="rule"), progress=False)
    assert rule.scorer.reward_model is None and rule.score(rollout).metrics == {}


@pytest.mark.parametrize("scorer", ["tanh", "sigmoid"])
def test_the_cli_trains_the_tiny_preset_on_the_hybrid_reward_with_the_shipped_rm(tmp_path, scorer):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "calgrpo_lib", "train", "--preset", "tiny", "--reward", "hybrid", "--reward-scorer",
           scorer, "--max-steps", "2", "--prompts-per-step", "4", "--num-generations", "4", "--max-new-tokens", "48",
           "--eval-size", "8", "--train-size", "64", "--rm-warmup", "16", "--output-dir", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"reward 'hybrid' with RM 'tiny-rm' (scorer {scorer!r})" in done.stdout
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train_records = [r for r in records if r["kind"] == "train"]
    assert len(train_records) == 2
    for record in train_records:
        for key in RM_KEYS:
            assert key in record, key
        assert record["rm_calibration_low"] < record["rm_calibration_high"]
    saved = json.loads((out / CALIBRATION_FILE).read_text())
    assert saved["reward_model"] == "tiny-rm" and saved["num_samples"] == 16
    assert all(0.5 <= r["weight_min"] <= r["weight_max"] <= 2.0 for r in train_records)  # in [w_min, w_max]
