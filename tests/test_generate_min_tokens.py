"""``min_new_tokens`` of ``policy.generate`` and ``GRPOConfig``: stop tokens are forbidden before that many tokens,
bad values fail naming the parameter, and ``0`` samples exactly as before."""

from __future__ import annotations

import pytest
import torch

from calgrpo_lib.config import GRPOConfig
from calgrpo_lib.policy import load_policy
from calgrpo_lib.rewards import build_prompt
from calgrpo_lib.rollout import sample_rollouts
from calgrpo_lib.sampling import _stop_ids, generate
from calgrpo_lib.tasks import generate_problems


@pytest.fixture(scope="module")
def tiny():
    return load_policy("tiny", device="cpu")


@pytest.fixture(scope="module")
def prompts():
    return [build_prompt(p.question) for p in generate_problems(4, seed=0, split="test")]


def _first_stop(ids: torch.Tensor, length: int, stop: list[int]) -> int | None:
    hits = [i for i in range(length) if ids[i].item() in stop]
    return hits[0] if hits else None


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_every_row_has_at_least_min_new_tokens_before_its_stop_token(tiny, prompts, temperature):
    model, tok = tiny
    stop = _stop_ids(model, tok)
    free = generate(model, tok, prompts, max_new_tokens=48, temperature=temperature, num_return_sequences=4, seed=1)
    k = int(free.completion_lengths.max()) - 1  # longer than most unconstrained completions: the mask must act
    assert k >= 2 and bool(free.finished.any())
    g = generate(model, tok, prompts, max_new_tokens=48, temperature=temperature, num_return_sequences=4, seed=1,
                 min_new_tokens=k)
    assert (g.completion_lengths >= k).all()
    for ids, length, done in zip(g.completion_ids, g.completion_lengths.tolist(), g.finished):
        first = _first_stop(ids, length, stop)
        assert first is None or first >= k  # at least k tokens before the stop token
        assert bool(done) == (first is not None and first == length - 1)


def test_min_equal_to_max_gives_every_row_exactly_max_tokens(tiny, prompts):
    model, tok = tiny
    g = generate(model, tok, prompts, max_new_tokens=24, temperature=1.0, num_return_sequences=3, seed=0,
                 min_new_tokens=24)
    assert g.completion_ids.shape == (12, 24) and bool(g.completion_mask.all())
    assert not bool(g.finished.any())


def test_zero_samples_exactly_as_the_default(tiny, prompts):
    model, tok = tiny
    a = generate(model, tok, prompts, max_new_tokens=32, temperature=1.0, num_return_sequences=2, seed=5)
    b = generate(model, tok, prompts, max_new_tokens=32, temperature=1.0, num_return_sequences=2, seed=5,
                 min_new_tokens=0)
    assert torch.equal(a.completion_ids, b.completion_ids) and a.texts == b.texts


@pytest.mark.parametrize("value, error, allowed", [
    (-1, ValueError, "an int >= 0"),
    (9, ValueError, "an int in [0, max_new_tokens=8]"),
    (2.0, TypeError, "an int"),
    (True, TypeError, "an int"),
])
def test_bad_min_new_tokens_names_the_parameter_value_and_allowed(tiny, value, error, allowed):
    model, tok = tiny
    with pytest.raises(error) as info:
        generate(model, tok, ["Question: 1"], max_new_tokens=8, min_new_tokens=value)
    assert f"min_new_tokens={value!r}" in str(info.value) and allowed in str(info.value)


def test_config_min_new_tokens_reaches_the_rollouts(tiny):
    model, tok = tiny
    config = GRPOConfig(prompts_per_step=2, num_generations=2, max_new_tokens=16, min_new_tokens=16, eval_size=0,
                        credit_mode="sequence", oracle="none")
    rollout = sample_rollouts(model, tok, generate_problems(2, seed=0, split="train"), config, seed=0)
    assert rollout.completion_ids.shape == (4, 16) and bool(rollout.completion_mask.all())
