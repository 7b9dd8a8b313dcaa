"""The two controls of cal_hybrid (calgrpo_lib.credit): random_span and uniform give a wrong answer the same total
extra push-down, lam * R- * n_i, elsewhere than on its error span."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from calgrpo_lib.credit import CONTROL_MODES, CREDIT_MODES, token_advantages

SETTINGS = settings(max_examples=60, deadline=None)


@st.composite
def batches(draw):
    """Random batches with left or right padding; spans inside responses; some wrong answers without a span."""
    n, t = draw(st.integers(1, 7)), draw(st.integers(1, 12))
    response = torch.zeros(n, t, dtype=torch.bool)
    error = torch.zeros(n, t, dtype=torch.bool)
    left = draw(st.booleans())
    for i in range(n):
        length = draw(st.integers(0, t))
        lo = t - length if left else 0
        response[i, lo:lo + length] = True
        if length and draw(st.booleans()):
            a = draw(st.integers(0, length - 1))
            b = draw(st.integers(a + 1, length))
            error[i, lo + a:lo + b] = True
    seq_adv = torch.tensor(draw(st.lists(st.floats(-3, 3), min_size=n, max_size=n)), dtype=torch.float64)
    is_wrong = torch.tensor(draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    return seq_adv, response, error, is_wrong


def _extra(adv: torch.Tensor, seq_adv: torch.Tensor, response: torch.Tensor) -> torch.Tensor:
    """Per response, the total extra push-down: sum_t (A_it - A_i * m_it)."""
    return (adv - seq_adv[:, None] * response).sum(dim=1)  # (N,)


def test_the_controls_are_credit_modes():
    assert set(CONTROL_MODES) == {"random_span", "uniform"} and set(CONTROL_MODES) <= set(CREDIT_MODES)


@SETTINGS
@given(batches(), st.floats(0, 3), st.floats(-2, 0), st.integers(0, 2**31))
def test_controls_push_down_as_much_as_cal_hybrid(batch, lam, negative_reward, seed):
    seq_adv, response, error, is_wrong = batch
    kw = {"lam": lam, "negative_reward": negative_reward}
    hybrid, hs = token_advantages(*batch, "cal_hybrid", **kw)
    used = is_wrong & error.any(dim=1)  # (N,)
    for mode in CONTROL_MODES:
        adv, stats = token_advantages(*batch, mode, generator=torch.Generator().manual_seed(seed), **kw)
        torch.testing.assert_close(_extra(adv, seq_adv, response), _extra(hybrid, seq_adv, response))
        assert torch.all(adv[~response] == 0)  # padding stays 0
        torch.testing.assert_close(adv[~used], (seq_adv[:, None] * response)[~used])  # fallback rows: sequence
        assert (stats.num_fallback, stats.num_wrong_with_span, stats.num_error_tokens) == (
            hs.num_fallback, hs.num_wrong_with_span, hs.num_error_tokens)


@SETTINGS
@given(batches(), st.integers(0, 2**31))
def test_random_span_is_n_consecutive_response_tokens_and_repeats_with_its_seed(batch, seed):
    seq_adv, response, error, is_wrong = batch
    lam, neg = 1.0, -1.0
    adv, _ = token_advantages(*batch, "random_span", generator=torch.Generator().manual_seed(seed))
    again, _ = token_advantages(*batch, "random_span", generator=torch.Generator().manual_seed(seed))
    torch.testing.assert_close(adv, again)
    pushed = (adv - seq_adv[:, None] * response) != 0  # (N, T) the random span's tokens
    for i in range(response.shape[0]):
        n_i = int(error[i].sum()) if is_wrong[i] else 0
        assert int(pushed[i].sum()) == n_i
        assert torch.all(response[i][pushed[i]])  # inside the response
        if n_i:
            ranks = torch.nonzero(pushed[i][response[i]]).flatten()  # positions among the response's tokens
            assert ranks.tolist() == list(range(int(ranks[0]), int(ranks[0]) + n_i))  # contiguous
            torch.testing.assert_close(adv[i][pushed[i]] - seq_adv[i], torch.full((n_i,), lam * neg,
                                                                                 dtype=adv.dtype))


def test_random_span_starts_anywhere_uniformly():
    """One wrong answer of 10 tokens with a 3-token span: the random span starts at 0..7, each about as often."""
    response = torch.ones(1, 10, dtype=torch.bool)
    error = torch.zeros(1, 10, dtype=torch.bool)
    error[0, 4:7] = True
    rng = torch.Generator().manual_seed(0)
    starts = []
    for _ in range(1600):
        adv, _ = token_advantages(torch.tensor([-0.5]), response, error, torch.tensor([True]), "random_span",
                                  generator=rng)
        starts.append(int(torch.nonzero(adv[0] < -0.5)[0]))
    counts = [starts.count(k) for k in range(8)]
    assert sum(counts) == 1600 and all(150 <= c <= 250 for c in counts), counts  # 200 each; sd 13


def test_uniform_spreads_the_push_down_over_the_response():
    response = torch.tensor([[True] * 4 + [False] * 2, [False] * 1 + [True] * 5])  # right and left padding
    error = torch.tensor([[False, True, False, False, False, False], [False, False, True, True, False, False]])
    adv, _ = token_advantages(torch.tensor([-0.5, -0.5]), response, error, torch.tensor([True, True]), "uniform",
                              lam=0.5, negative_reward=-1.0)
    torch.testing.assert_close(adv, torch.tensor([[-0.5 - 0.5 / 4] * 4 + [0.0, 0.0],
                                                  [0.0] + [-0.5 - 0.5 * 2 / 5] * 5]))


def test_generator_must_be_a_generator():
    response = torch.ones(1, 3, dtype=torch.bool)
    with pytest.raises(TypeError, match="generator=3 has type int; allowed: Generator"):
        token_advantages(torch.tensor([0.0]), response, response, torch.tensor([True]), "random_span", generator=3)
