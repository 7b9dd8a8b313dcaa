import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from calgrpo_lib.advantages import (
    group_advantages,
    num_zero_spread_groups,
    rloo_advantages,
    zero_spread_groups,
)

SETTINGS = settings(max_examples=40, deadline=None)


def test_group_scaled_by_hand():
    # rewards 1, 0, 0, 0: mean 0.25, squared deviations sum to 0.75; unbiased std sqrt(0.75 / 3) = 0.5
    r = torch.tensor([1.0, 0.0, 0.0, 0.0])
    std_unbiased = math.sqrt((0.75**2 + 3 * 0.25**2) / 3)  # 0.5
    std_population = math.sqrt((0.75**2 + 3 * 0.25**2) / 4)  # 0.4330
    expected_u = torch.tensor([0.75, -0.25, -0.25, -0.25]) / (std_unbiased + 1e-4)
    expected_p = torch.tensor([0.75, -0.25, -0.25, -0.25]) / (std_population + 1e-4)
    torch.testing.assert_close(group_advantages(r, 4), expected_u)
    torch.testing.assert_close(group_advantages(r, 4, std="population"), expected_p)
    torch.testing.assert_close(group_advantages(r, 4, eps=0.0), torch.tensor([1.5, -0.5, -0.5, -0.5]))


def test_scale_none_is_mean_centred():
    r = torch.tensor([[3.0, 1.0], [0.0, 2.0]])
    torch.testing.assert_close(group_advantages(r, 2, scale="none"), torch.tensor([[1.0, -1.0], [-1.0, 1.0]]))


def test_batch_scale_uses_group_mean_and_batch_std():
    r = torch.tensor([1.0, 0.0, 4.0, 2.0])  # groups (1, 0) and (4, 2)
    batch_std = r.std().item()  # unbiased over all four: sqrt(8.75 / 3)
    expected = torch.tensor([0.5, -0.5, 1.0, -1.0]) / (batch_std + 1e-4)
    torch.testing.assert_close(group_advantages(r, 2, scale="batch"), expected)
    pop = r.std(correction=0).item()
    torch.testing.assert_close(group_advantages(r, 2, scale="batch", std="population"),
                               torch.tensor([0.5, -0.5, 1.0, -1.0]) / (pop + 1e-4))


def test_rloo_by_hand():
    r = torch.tensor([1.0, 0.0, 0.0, 0.0])
    # answer 0: 1 - mean(0, 0, 0) = 1; answer 1: 0 - mean(1, 0, 0) = -1/3
    torch.testing.assert_close(rloo_advantages(r, 4), torch.tensor([1.0, -1 / 3, -1 / 3, -1 / 3]))


def test_zero_spread_groups_are_zero_and_counted():
    # 0.1 * 3 / 3 != 0.1 in floating point: the explicit zeroing matters
    r = torch.tensor([[0.1, 0.1, 0.1], [1.0, 0.0, 1.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    for scale in ("group", "batch", "none"):
        adv = group_advantages(r, 3, scale=scale, eps=0.0)
        assert torch.all(adv[0] == 0) and torch.all(adv[2] == 0)
        assert torch.all(adv[1] != 0)
    assert torch.all(rloo_advantages(r, 3)[[0, 2]] == 0)
    assert zero_spread_groups(r, 3).tolist() == [True, False, True]
    assert num_zero_spread_groups(r.flatten(), 3) == 2


def test_tiny_spread_blows_up_with_small_eps():
    r = torch.tensor([1.0, 1.0 + 1e-6], dtype=torch.float64)
    assert group_advantages(r, 2, eps=1e-12).abs().max() > 0.7  # noise turned into a full +-0.71 signal
    assert group_advantages(r, 2, eps=1e-4).abs().max() < 0.01  # eps damps it


def test_shapes_preserved_and_int_rewards_accepted():
    flat = torch.tensor([1, 0, 1, 1, 0, 0])
    assert group_advantages(flat, 3).shape == (6,)
    assert group_advantages(flat.reshape(2, 3), 3).shape == (2, 3)
    assert group_advantages(flat, 3).dtype == torch.get_default_dtype()
    torch.testing.assert_close(group_advantages(flat, 3).reshape(2, 3), group_advantages(flat.reshape(2, 3), 3))


@pytest.mark.parametrize("rewards, g, match", [
    (torch.tensor([1.0, 0.0, 1.0]), 2, "not divisible by num_generations=2"),
    (torch.tensor([1.0, float("nan")]), 2, "non-finite value nan at index \\(1,\\)"),
    (torch.tensor([1.0, float("inf")]), 2, "non-finite"),
    (torch.zeros(2, 3), 2, "G == num_generations"),
    (torch.zeros(2, 2, 2), 2, "allowed: \\(B \\* G,\\) or \\(B, G\\)"),
    (torch.zeros(0), 2, "B >= 1"),
])
def test_bad_rewards(rewards, g, match):
    with pytest.raises(ValueError, match=match):
        group_advantages(rewards, g)


def test_bad_arguments():
    r = torch.zeros(4)
    with pytest.raises(ValueError, match="num_generations=1"):
        group_advantages(r, 1)
    with pytest.raises(TypeError, match="rewards="):
        group_advantages([1.0, 0.0], 2)
    with pytest.raises(ValueError, match="scale='std'.*'group', 'batch', 'none'"):
        group_advantages(r, 2, scale="std")
    with pytest.raises(ValueError, match="std='biased'"):
        group_advantages(r, 2, std="biased")
    with pytest.raises(ValueError, match="eps=-1"):
        group_advantages(r, 2, eps=-1.0)
    with pytest.raises(ValueError, match="non-finite"):
        rloo_advantages(torch.tensor([0.0, float("nan")]), 2)


rewards_groups = st.integers(1, 5).flatmap(lambda b: st.integers(2, 6).flatmap(lambda g: st.tuples(
    st.just(g), st.lists(st.one_of(st.sampled_from([0.0, 1.0]), st.floats(-10, 10)), min_size=b * g,
                         max_size=b * g))))


@SETTINGS
@given(rewards_groups, st.sampled_from(["group", "batch", "none"]), st.sampled_from(["unbiased", "population"]))
def test_property_group_sums_are_zero(data, scale, std):
    g, values = data
    r = torch.tensor(values, dtype=torch.float64)
    adv = group_advantages(r, g, scale=scale, std=std).reshape(-1, g)
    torch.testing.assert_close(adv.sum(dim=1), torch.zeros(adv.shape[0], dtype=torch.float64), atol=1e-8, rtol=0)
    assert torch.isfinite(adv).all()


@SETTINGS
@given(rewards_groups)
def test_property_rloo_is_rescaled_mean_centring(data):
    g, values = data
    r = torch.tensor(values, dtype=torch.float64)
    expected = g / (g - 1) * group_advantages(r, g, scale="none")
    torch.testing.assert_close(rloo_advantages(r, g), expected, atol=1e-9, rtol=1e-9)


@SETTINGS
@given(rewards_groups, st.integers(0, 4))
def test_property_groups_do_not_interact(data, group_to_change):
    g, values = data
    r = torch.tensor(values, dtype=torch.float64).reshape(-1, g)
    b = group_to_change % r.shape[0]
    changed = r.clone()
    changed[b] = changed[b] * 2 + 1
    keep = torch.arange(r.shape[0]) != b
    torch.testing.assert_close(group_advantages(r, g)[keep], group_advantages(changed, g)[keep])
