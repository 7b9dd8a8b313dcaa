import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from calgrpo_lib.credit import BASE_CREDIT_MODES, CREDIT_MODES, CreditStats, token_advantages

SETTINGS = settings(max_examples=40, deadline=None)


def _masks(lengths: list[int], spans: list[tuple[int, int] | None], t: int) -> tuple[torch.Tensor, torch.Tensor]:
    pos = torch.arange(t)[None, :]
    response = pos < torch.tensor(lengths)[:, None]  # (N, T)
    error = torch.zeros_like(response)
    for i, span in enumerate(spans):
        if span is not None:
            error[i, span[0]:span[1]] = True
    return response, error


@pytest.fixture
def toy():
    # row 0 correct (4 tokens); row 1 wrong, span at tokens 2..3; row 2 wrong, oracle failed; row 3 empty and wrong
    response, error = _masks([4, 6, 3, 0], [None, (2, 4), None, None], t=6)
    seq_adv = torch.tensor([1.0, -0.5, -0.5, -0.5])
    is_wrong = torch.tensor([False, True, True, True])
    return seq_adv, response, error, is_wrong


SEQ = [[1.0, 1, 1, 1, 0, 0], [-0.5] * 6, [-0.5, -0.5, -0.5, 0, 0, 0], [0.0] * 6]
EXPECTED = {
    "sequence": SEQ,
    "cal_sparse": [[0.0] * 6, [0, 0, -0.5, -0.5, 0, 0], SEQ[2], SEQ[3]],  # -1 spread over 2 error tokens
    "cal_hybrid": [SEQ[0], [-0.5, -0.5, -2.5, -2.5, -0.5, -0.5], SEQ[2], SEQ[3]],  # lam=2: extra -2 on the span
    "prefix": [SEQ[0], [0, 0, -0.5, -0.5, -0.5, -0.5], SEQ[2], SEQ[3]],  # prefix max(-0.5, 0) = 0
    "uniform": [SEQ[0], [-0.5 - 2 * 2 / 6] * 6, SEQ[2], SEQ[3]],  # lam=2, n=2 of L=6: -2/3 on every token
    "random_span": [SEQ[0], [-0.5, -0.5, -0.5, -2.5, -2.5, -0.5], SEQ[2], SEQ[3]],  # seed 0: U_1=0.708 -> tokens 3..4
}


@pytest.mark.parametrize("mode", CREDIT_MODES)
def test_modes_by_hand(toy, mode):
    rng = torch.Generator().manual_seed(0)
    adv, stats = token_advantages(*toy, mode, negative_reward=-1.0, lam=2.0, generator=rng)
    torch.testing.assert_close(adv, torch.tensor(EXPECTED[mode]))
    assert stats.num_responses == 4 and stats.num_wrong == 3 and stats.num_wrong_with_span == 1
    assert stats.num_fallback == (0 if mode == "sequence" else 2)
    assert stats.num_response_tokens == 13 and stats.num_error_tokens == 2
    assert stats.mean_abs_token_advantage == pytest.approx(adv.abs().sum().item() / 13)
    assert stats.frac_negative_tokens == pytest.approx((adv < 0).sum().item() / 13)
    assert set(stats.to_dict()) == set(CreditStats.__dataclass_fields__)


def test_the_four_base_modes_come_first_then_the_controls():
    assert BASE_CREDIT_MODES == ("sequence", "cal_sparse", "cal_hybrid", "prefix")
    assert CREDIT_MODES == (*BASE_CREDIT_MODES, "random_span", "uniform")


def test_prefix_keeps_positive_part_of_a_wrong_answer():
    response, error = _masks([5], [(2, 3)], t=5)
    adv, _ = token_advantages(torch.tensor([0.3]), response, error, torch.tensor([True]), "prefix")
    torch.testing.assert_close(adv, torch.tensor([[0.3, 0.3, 0.0, 0.0, 0.0]]))


def test_error_mask_of_correct_answers_is_ignored():
    response, error = _masks([3], [(0, 2)], t=3)
    for mode in ("cal_hybrid", "prefix"):
        adv, stats = token_advantages(torch.tensor([0.7]), response, error, torch.tensor([False]), mode)
        torch.testing.assert_close(adv, torch.full((1, 3), 0.7))
        assert stats.num_error_tokens == 0
    adv, _ = token_advantages(torch.tensor([0.7]), response, error, torch.tensor([False]), "cal_sparse")
    assert torch.all(adv == 0)


def test_no_negative_zero_in_output(toy):
    adv, _ = token_advantages(*toy, "cal_sparse")
    assert not torch.any(torch.signbit(adv) & (adv == 0))


def test_dtype_follows_seq_adv(toy):
    seq_adv, response, error, is_wrong = toy
    adv, _ = token_advantages(seq_adv.double(), response, error, is_wrong, "cal_hybrid")
    assert adv.dtype == torch.float64


def test_bad_inputs(toy):
    seq_adv, response, error, is_wrong = toy
    with pytest.raises(ValueError, match="mode='dense'.*'sequence', 'cal_sparse'"):
        token_advantages(seq_adv, response, error, is_wrong, "dense")
    with pytest.raises(TypeError, match="response_mask.dtype=torch.int64"):
        token_advantages(seq_adv, response.long(), error, is_wrong, "sequence")
    with pytest.raises(TypeError, match="seq_adv.dtype=torch.int64"):
        token_advantages(seq_adv.long(), response, error, is_wrong, "sequence")
    with pytest.raises(ValueError, match="error_mask.shape=\\(4, 5\\)"):
        token_advantages(seq_adv, response, error[:, :5], is_wrong, "sequence")
    with pytest.raises(ValueError, match="seq_adv.shape=\\(3,\\)"):
        token_advantages(seq_adv[:3], response, error, is_wrong, "sequence")
    with pytest.raises(ValueError, match="error_mask\\[2, 5\\] is True where response_mask is False"):
        bad = error.clone()
        bad[2, 5] = True
        token_advantages(seq_adv, response, bad, is_wrong, "prefix")
    with pytest.raises(ValueError, match="non-finite"):
        token_advantages(torch.tensor([1.0, float("nan"), 0, 0]), response, error, is_wrong, "sequence")
    with pytest.raises(ValueError, match="negative_reward=1.0"):
        token_advantages(seq_adv, response, error, is_wrong, "cal_sparse", negative_reward=1.0)
    with pytest.raises(ValueError, match="lam=-0.5"):
        token_advantages(seq_adv, response, error, is_wrong, "cal_hybrid", lam=-0.5)
    with pytest.raises(TypeError, match="error_mask=None"):
        token_advantages(seq_adv, response, None, is_wrong, "sequence")


@st.composite
def credit_batches(draw):
    """Random (seq_adv, response_mask, error_mask, is_wrong): right padding, spans inside responses."""
    n, t = draw(st.integers(1, 6)), draw(st.integers(1, 10))
    lengths = draw(st.lists(st.integers(0, t), min_size=n, max_size=n))
    spans = []
    for length in lengths:
        a = draw(st.integers(0, max(length - 1, 0)))
        b = draw(st.integers(a, length))
        spans.append((a, b) if draw(st.booleans()) else None)
    response, error = _masks(lengths, spans, t)
    seq_adv = torch.tensor(draw(st.lists(st.floats(-3, 3), min_size=n, max_size=n)))
    is_wrong = torch.tensor(draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    return seq_adv, response, error & is_wrong[:, None], is_wrong


@SETTINGS
@given(credit_batches(), st.sampled_from(CREDIT_MODES), st.floats(0, 3))
def test_property_padding_is_zero_and_sequence_is_broadcast(batch, mode, lam):
    seq_adv, response, error, is_wrong = batch
    adv, stats = token_advantages(seq_adv, response, error, is_wrong, mode, lam=lam)
    assert adv.shape == response.shape
    assert torch.all(adv[~response] == 0)
    if mode == "sequence":
        torch.testing.assert_close(adv, seq_adv[:, None].expand_as(adv) * response)
    assert stats.num_wrong_with_span + (stats.num_fallback if mode != "sequence" else 0) <= stats.num_wrong


@SETTINGS
@given(credit_batches(), st.sampled_from(CREDIT_MODES), st.integers(0, 5), st.integers(0, 10))
def test_property_no_cross_response_leakage(batch, mode, row, new_length):
    """Truncating (or emptying) one response and changing its advantage leaves every other row unchanged."""
    seq_adv, response, error, is_wrong = batch
    j = row % response.shape[0]
    cut = min(new_length, response.shape[1])
    response2, error2, seq_adv2 = response.clone(), error.clone(), seq_adv.clone()
    response2[j, cut:] = False
    error2[j, cut:] = False
    seq_adv2[j] = seq_adv2[j] * -3 + 1
    before, _ = token_advantages(seq_adv, response, error, is_wrong, mode, generator=torch.Generator().manual_seed(1))
    after, _ = token_advantages(seq_adv2, response2, error2, is_wrong, mode, generator=torch.Generator().manual_seed(1))
    # random_span: the i-th draw goes to row i, so the same seed gives the other rows the same spans
    others = torch.arange(response.shape[0]) != j
    torch.testing.assert_close(before[others], after[others])
    assert torch.all(after[j, cut:] == 0)


@SETTINGS
@given(credit_batches(), st.floats(0, 3), st.floats(-2, 0))
def test_property_mode_formulas(batch, lam, negative_reward):
    seq_adv, response, error, is_wrong = batch
    spans = is_wrong & error.any(dim=1)
    seq, _ = token_advantages(seq_adv, response, error, is_wrong, "sequence")
    hybrid, _ = token_advantages(seq_adv, response, error, is_wrong, "cal_hybrid", lam=lam,
                                 negative_reward=negative_reward)
    torch.testing.assert_close(hybrid - seq, lam * negative_reward * (error & spans[:, None]).float())
    sparse, _ = token_advantages(seq_adv, response, error, is_wrong, "cal_sparse", negative_reward=negative_reward)
    if spans.any():  # each used span receives exactly negative_reward in total
        torch.testing.assert_close(sparse[spans].sum(dim=1), torch.full((int(spans.sum()),), negative_reward))
    assert torch.all(sparse[~is_wrong] == 0)
    prefix, _ = token_advantages(seq_adv, response, error, is_wrong, "prefix")
    torch.testing.assert_close(prefix[~spans], seq[~spans])
    for i in torch.nonzero(spans).flatten().tolist():
        first = int(torch.nonzero(error[i])[0])
        n_i = int(response[i].sum())
        assert torch.all(prefix[i, :first] == max(seq_adv[i].item(), 0.0))
        assert torch.all(prefix[i, first:n_i] == min(seq_adv[i].item(), 0.0))
