"""The shipped tiny outcome reward model (offline load, its card's numbers reproduced, better than chance at ranking),
the RewardModel wrapper and its errors, the calibration, the metrics by hand, and the build (deterministic, CLI)."""

from __future__ import annotations

import hashlib
import json
import math

import pytest
import torch

from calgrpo_lib.cli import main
from calgrpo_lib.policy import EOS_TOKEN, load_policy
from calgrpo_lib.reward_model import TINY_RM_DIR, RewardModel, RMCalibration, calibrate, render_pair
from calgrpo_lib.reward_model_build import RMBuildConfig, build_tiny_reward_model
from calgrpo_lib.reward_model_eval import (
    SAMPLE_LINES,
    ranking_rate,
    read_heldout,
    rm_metrics,
    wilson_interval,
    wrong_kind,
)
from calgrpo_lib.rewards import build_prompt

TINY_BUILD = dict(train_problems=8, train_samples=2, heldout_problems=4, heldout_samples=2, steps=2, batch_size=4,
                  warmup=1)


@pytest.fixture(scope="module")
def rm() -> RewardModel:
    return RewardModel.load("tiny-rm", device="cpu")


@pytest.fixture(scope="module")
def info() -> dict:
    return json.loads((TINY_RM_DIR / "build_info.json").read_text())


@pytest.fixture(scope="module")
def heldout() -> list[dict]:
    return read_heldout(TINY_RM_DIR / "heldout.jsonl")


# ----------------------------------------------------------------------------------------------- the shipped model


def test_the_shipped_model_loads_offline(monkeypatch, rm) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # its load time is measured by bench/reward_model.py, not here
    loaded = RewardModel.load("tiny-rm", device="cpu")
    assert isinstance(loaded, RewardModel)
    assert loaded.model.config.num_labels == 1
    assert type(loaded.model).__name__ == "LlamaForSequenceClassification"
    assert next(loaded.model.parameters()).dtype == torch.float32


def test_rescoring_the_sample_reproduces_the_recorded_scores_and_the_card(rm, info, heldout) -> None:
    sample = heldout[:SAMPLE_LINES]
    assert len(sample) == SAMPLE_LINES
    scores = rm.score([r["question"] for r in sample], [r["response"] for r in sample])
    recorded = torch.tensor([r["score"] for r in sample])
    assert torch.allclose(scores, recorded, atol=1e-4), (scores - recorded).abs().max()
    acc = sum((s > 0) == (r["label"] > 0.5) for s, r in zip(scores.tolist(), sample)) / len(sample)
    assert acc == info["heldout_sample"]["accuracy"]
    card = (TINY_RM_DIR / "README.md").read_text()
    assert f"{100 * acc:.1f}% ({round(acc * SAMPLE_LINES)} of {SAMPLE_LINES})" in card
    overall = rm_metrics(heldout, [r["score"] for r in heldout])
    assert overall["accuracy"] == pytest.approx(info["heldout"]["accuracy"])
    assert f"**{100 * overall['accuracy']:.1f}%** of {len(heldout)}" in card
    assert info["weights_sha256"] == hashlib.sha256((TINY_RM_DIR / "model.safetensors").read_bytes()).hexdigest()
    assert info["weights_sha256"][:16] in card


def test_the_held_out_answers_come_from_test_problems_and_both_labels(heldout) -> None:
    from calgrpo_lib.tasks import generate_problems

    train = {p.question for p in generate_problems(2000, seed=0, split="train")}
    assert not {r["question"] for r in heldout} & train
    labels = [r["label"] for r in heldout]
    assert 0.2 < sum(labels) / len(labels) < 0.8


def test_it_ranks_a_right_answer_above_a_wrong_one_more_often_than_chance(heldout, info) -> None:
    rank = ranking_rate([r["score"] for r in heldout], [r["label"] for r in heldout], [r["group"] for r in heldout])
    assert rank == {k: v for k, v in info["heldout"]["ranking"].items() if k != "groups_won_95"}
    low, _ = wilson_interval(rank["groups_won"], rank["groups_won"] + rank["groups_lost"])
    assert rank["rate"] > 0.6 and low > 0.5, rank  # groups are independent: a sign test over them


# ----------------------------------------------------------------------------------------------- RewardModel


def _tiny_classifier(num_labels: int):
    from transformers import LlamaConfig, LlamaForSequenceClassification

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=523, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64, num_labels=num_labels)
    return LlamaForSequenceClassification(cfg)


def test_reward_model_errors(rm) -> None:
    with pytest.raises(ValueError, match="questions has 2 items but responses has 1"):
        rm.score(["a", "b"], ["c"])
    _, tok = load_policy("tiny", device="cpu")
    with pytest.raises(ValueError, match="num_labels=3"):
        RewardModel(_tiny_classifier(3), tok)
    with pytest.raises(ValueError, match="batch_size"):
        RewardModel(_tiny_classifier(1), tok, batch_size=0)
    with pytest.raises(FileNotFoundError, match="reward_model='./no/such/folder' is not a folder"):
        RewardModel.load("./no/such/folder")
    with pytest.raises(TypeError, match="reward_model"):
        RewardModel.load(3)
    assert rm.score([], []).shape == (0,)


def test_two_labels_score_the_log_odds_of_good() -> None:
    _, tok = load_policy("tiny", device="cpu")
    two = RewardModel(_tiny_classifier(2), tok)
    enc = two.encode(["q"], ["r"])
    logits = two.model(**enc).logits
    assert torch.allclose(two.score(["q"], ["r"]), logits[:, 1] - logits[:, 0], atol=1e-6)


def test_the_pair_is_rendered_with_the_chat_template_and_tokenised_as_in_training(rm) -> None:
    assert render_pair(rm.tokenizer, "How many?", "#### 3") == f"Question: How many?\nAnswer:\n#### 3{EOS_TOKEN}"

    class Plain:
        chat_template = None

    assert render_pair(Plain(), "How many?", "#### 3") == build_prompt("How many?", "plain") + "#### 3"
    questions, responses = ["Tom has 3 cats. How many?", "Q"], ["3 + 0 = <<3+0=3>>3\n#### 3", "#### 1"]
    enc = rm.encode(questions, responses)  # what the build trains on
    assert enc["input_ids"][0, -1] == rm.tokenizer.eos_token_id  # right padded, the longer row ends in EOS
    assert rm.tokenizer.bos_token_id not in enc["input_ids"][:, 0].tolist()  # the template adds no BOS
    with torch.no_grad():
        trained_on = rm.model(**enc).logits[:, 0]
    assert torch.allclose(trained_on, rm.score(questions, responses), atol=1e-5)


# ----------------------------------------------------------------------------------------------- calibration, metrics


def test_calibrate_by_hand() -> None:
    mm = calibrate([1.0, 2.0, 3.0, 5.0], "min_max")
    assert (mm.method, mm.low, mm.high, mm.num_samples) == ("min_max", 1.0, 5.0, 4)
    assert torch.allclose(mm.normalize(torch.tensor([1.0, 3.0, 5.0, 9.0, -4.0])),
                          torch.tensor([0.0, 0.5, 1.0, 1.0, 0.0]))
    ms = calibrate(torch.tensor([1.0, 2.0, 3.0, 5.0]), "mean_std")
    std = math.sqrt((1.75 ** 2 + 0.75 ** 2 + 0.25 ** 2 + 2.25 ** 2) / 4)
    assert ms.low == pytest.approx(2.75) and ms.high == pytest.approx(std)
    out = ms.normalize(torch.tensor([2.75, 5.0, -1e6, 1e6]))
    assert out[0] == pytest.approx(0.5) and out[1] == pytest.approx(1 / (1 + math.exp(-2.25 / std)))
    assert ((out >= 0) & (out <= 1)).all()
    for c in (mm, ms):
        assert RMCalibration.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    with pytest.raises(ValueError, match="scores has 1 values"):
        calibrate([1.0])
    with pytest.raises(ValueError, match="scores"):
        calibrate([1.0, float("nan")])
    with pytest.raises(ValueError, match="method"):
        calibrate([1.0, 2.0], "rank")
    with pytest.raises(ValueError, match="method"):
        RMCalibration.from_dict({"method": "x", "low": 0, "high": 1, "num_samples": 2})


def test_ranking_rate_and_wilson_by_hand() -> None:
    scores = [3, 1, 2, 5, 5, 0, 1, 4]
    labels = [1, 0, 0, 1, 0, 1, 1, 0]
    groups = [0, 0, 0, 1, 1, 2, 2, 3]  # 0: right above both wrongs; 1: a tie; 2 all right, 3 all wrong: skipped
    rank = ranking_rate(scores, labels, groups)
    assert rank == {"rate": 2.5 / 3, "pairs": 3, "mixed_groups": 2, "groups_won": 1, "groups_lost": 0,
                    "groups_tied": 1}
    assert ranking_rate([1, 2], [1, 1], [0, 0])["rate"] is None
    low, high = wilson_interval(8, 10)
    assert (round(low, 4), round(high, 4)) == (0.4902, 0.9433)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    rows = [{"label": y, "group": g, "response": "#### 1"} for y, g in zip(labels, groups)]
    m = rm_metrics(rows, scores)
    assert m["accuracy"] == pytest.approx(3 / 8)  # every score but 0 is > 0: the rights 3, 5, 1 hit, the 0 missed
    assert m["true_positive_rate"] == pytest.approx(3 / 4) and m["true_negative_rate"] == pytest.approx(0.0)


def test_wrong_kind() -> None:
    assert wrong_kind("2 + 3 = <<2+3=5>>5\n5 * 2 = <<5*2=10>>10\n#### 10") == "consistent"
    assert wrong_kind("6 + 9 = <<6+9=5>>5\n#### 5") == "miscalculated"
    assert wrong_kind("8 / 2 = <<8/2=3>>3\n#### 3") == "miscalculated"
    assert wrong_kind("2 + 3 = <<2+3=5>>5\n5 *") == "malformed"


# ----------------------------------------------------------------------------------------------- the build


def test_a_tiny_build_is_deterministic_and_loads(tmp_path, capsys) -> None:
    a = build_tiny_reward_model(tmp_path / "a", RMBuildConfig(**TINY_BUILD), progress=False)
    flags = [x for k, v in TINY_BUILD.items() for x in ("--" + k.replace("_", "-"), str(v))]
    assert main(["reward-model", "build", "--out", str(tmp_path / "b"), "--quiet", *flags]) == 0
    b = json.loads((tmp_path / "b" / "build_info.json").read_text())
    assert a["weights_sha256"] == b["weights_sha256"]
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (tmp_path / "b" / "model.safetensors").read_bytes()
    assert a["config"] == b["config"] == {**RMBuildConfig().__dict__, **TINY_BUILD}
    rows = read_heldout(tmp_path / "a" / "heldout.jsonl")
    assert len(rows) == 8 and {"group", "question", "response", "label", "score"} <= set(rows[0])
    loaded = RewardModel.load(tmp_path / "a", device="cpu")
    assert torch.allclose(loaded.score([r["question"] for r in rows], [r["response"] for r in rows]),
                          torch.tensor([r["score"] for r in rows]), atol=1e-4)
    card = (tmp_path / "a" / "README.md").read_text()
    assert f"reward-model build --out {tmp_path / 'a'} --train-problems 8" in card
    capsys.readouterr()
    assert main(["reward-model", "eval", "--model", str(tmp_path / "a")]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["accuracy"] == pytest.approx(a["heldout"]["accuracy"])
    assert main(["reward-model", "eval", "--model", str(tmp_path / "a"), "--heldout", str(tmp_path / "none")]) == 2
    assert "is not a file" in capsys.readouterr().err


def test_the_build_config_checks_its_fields() -> None:
    with pytest.raises(ValueError, match="steps"):
        RMBuildConfig(steps=0)
    with pytest.raises(ValueError, match="temperature"):
        RMBuildConfig(temperature=0.0)
    with pytest.raises(TypeError, match="train_samples"):
        RMBuildConfig(train_samples=2.0)
