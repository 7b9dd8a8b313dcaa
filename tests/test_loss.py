import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from calgrpo_lib.loss import (
    accumulate_gradients,
    aggregate_loss,
    aggregation_weights,
    clipped_surrogate,
    completion_mask,
    entropy_from_logits,
    grpo_loss,
    k3_kl,
    masked_mean,
    masked_normalize,
    masked_sum,
    policy_gradient_loss,
    reinforce_loss,
    token_logprobs,
    train_step,
)

SETTINGS = settings(max_examples=40, deadline=None)
PAD, EOS = 0, 1  # deliberately different ids


# ------------------------------------------------------------------------------------------ masked reductions

def test_masked_reductions_by_hand():
    values = torch.tensor([[1.0, 2.0, float("nan")], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]])
    mask = torch.tensor([[True, True, False], [True, False, False], [False, False, False]])
    assert masked_sum(values, mask).item() == 7.0  # the NaN under the mask does not leak
    torch.testing.assert_close(masked_sum(values, mask, dim=1), torch.tensor([3.0, 4.0, 0.0]))
    torch.testing.assert_close(masked_mean(values, mask, dim=1), torch.tensor([1.5, 4.0, 0.0]))  # empty row -> 0
    assert masked_mean(values, mask).item() == pytest.approx(7 / 3)
    assert masked_normalize(values, mask, 10.0).item() == pytest.approx(0.7)
    assert masked_mean(values, torch.zeros_like(mask)).item() == 0.0
    with pytest.raises(ValueError, match="constant=0"):
        masked_normalize(values, mask, 0)
    with pytest.raises(TypeError, match="mask.dtype=torch.float32"):
        masked_sum(values, mask.float())
    with pytest.raises(ValueError, match="mask.shape=\\(3, 2\\)"):
        masked_sum(values, mask[:, :2])


# ---------------------------------------------------------------------------------- log-probs and the shift

def _known_logits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One row: prompt [2, 3], completion [3, EOS, PAD]; logits at position p are log of a known distribution.

    Positions that must not be read (0: predicts the prompt; 4: predicts past the end) hold NaN.
    """
    probs = torch.tensor([
        [0.25, 0.25, 0.25, 0.25],  # position 0 (unused; replaced by NaN below)
        [0.10, 0.20, 0.30, 0.40],  # position 1 predicts completion token 0 (id 3) -> 0.40
        [0.05, 0.50, 0.25, 0.20],  # position 2 predicts completion token 1 (EOS)  -> 0.50
        [0.60, 0.10, 0.20, 0.10],  # position 3 predicts completion token 2 (PAD)  -> 0.60
        [0.25, 0.25, 0.25, 0.25],  # position 4 (unused)
    ])
    logits = probs.log()[None].clone()  # (1, 5, 4)
    logits[0, 0] = float("nan")
    logits[0, 4] = float("nan")
    input_ids = torch.tensor([[2, 3, 3, EOS, PAD]])
    expected = torch.tensor([[0.40, 0.50, 0.60]]).log()
    return logits, input_ids, expected


def test_token_logprobs_shift_by_hand():
    logits, input_ids, expected = _known_logits()
    torch.testing.assert_close(token_logprobs(logits, input_ids, completion_start=2), expected)


def test_token_logprobs_with_logits_of_the_last_positions_only():
    logits, input_ids, expected = _known_logits()
    torch.testing.assert_close(token_logprobs(logits[:, 1:], input_ids, 2), expected)  # logits_to_keep = C + 1
    with pytest.raises(ValueError, match="at least the last 4 positions"):
        token_logprobs(logits[:, 2:], input_ids, 2)


def test_token_logprobs_temperature():
    logits, input_ids, _ = _known_logits()
    got = token_logprobs(logits, input_ids, 2, temperature=2.0)
    expected = torch.log_softmax(logits[0, 1:4] / 2.0, dim=-1)[[0, 1, 2], [3, EOS, PAD]]
    torch.testing.assert_close(got, expected[None])


def test_first_eos_stays_in_the_loss_and_pad_is_dropped():
    logits, input_ids, expected = _known_logits()
    mask = completion_mask(input_ids[:, 2:], eos_token_id=EOS)
    assert mask.tolist() == [[True, True, False]]
    total = masked_sum(token_logprobs(logits, input_ids, 2), mask)
    assert total.item() == pytest.approx(math.log(0.40) + math.log(0.50))


def test_completion_mask_cases():
    ids = torch.tensor([
        [5, 6, EOS, PAD, PAD],  # ends with EOS then pad (pad != eos)
        [EOS, PAD, PAD, PAD, PAD],  # empty answer: only the EOS counts
        [5, 6, 7, 8, 9],  # truncated: no EOS, all count
        [5, EOS, 7, EOS, PAD],  # tokens after the first EOS never count
    ])
    assert completion_mask(ids, EOS).int().tolist() == [[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [1] * 5, [1, 1, 0, 0, 0]]
    same = torch.tensor([[5, 6, 0, 0]])  # pad == eos == 0: the first 0 is the EOS and stays in
    assert completion_mask(same, 0).int().tolist() == [[1, 1, 1, 0]]
    with pytest.raises(TypeError, match="completion_ids.dtype=torch.float32"):
        completion_mask(ids.float(), EOS)
    with pytest.raises(ValueError, match="eos_token_id=-1"):
        completion_mask(ids, -1)


def test_token_logprobs_bad_inputs():
    logits, input_ids, _ = _known_logits()
    with pytest.raises(ValueError, match="completion_start=0"):
        token_logprobs(logits, input_ids, 0)
    with pytest.raises(ValueError, match="completion_start=5"):
        token_logprobs(logits, input_ids, 5)
    with pytest.raises(TypeError, match="input_ids.dtype=torch.float32"):
        token_logprobs(logits, input_ids.float(), 2)
    with pytest.raises(ValueError, match="allowed: \\(N, K, V\\) and \\(N, L\\)"):
        token_logprobs(logits[0], input_ids, 2)
    with pytest.raises(ValueError, match="temperature=0"):
        token_logprobs(logits, input_ids, 2, temperature=0)


def test_entropy_from_logits():
    assert entropy_from_logits(torch.zeros(7)).item() == pytest.approx(math.log(7))
    assert entropy_from_logits(torch.tensor([100.0, 0.0, 0.0])).item() == pytest.approx(0.0, abs=1e-6)
    logits = torch.randn(3, 4, 11, generator=torch.Generator().manual_seed(0))
    expected = torch.distributions.Categorical(logits=logits).entropy()
    torch.testing.assert_close(entropy_from_logits(logits), expected)
    torch.testing.assert_close(entropy_from_logits(logits, temperature=0.5),
                               torch.distributions.Categorical(logits=logits / 0.5).entropy())


# --------------------------------------------------------------------------------------------- objectives

def test_clipped_surrogate_by_hand():
    ratio = torch.tensor([[1.5, 0.5, 1.1, 1.5, 0.5]])
    adv = torch.tensor([[1.0, -1.0, 1.0, -1.0, 1.0]])
    logp = ratio.log().requires_grad_()
    loss, clipped = clipped_surrogate(logp, torch.zeros_like(logp), adv, epsilon=0.2)
    # 1.5 * +1 -> clipped to 1.2; 0.5 * -1 -> clipped to -0.8; 1.1 inside; 1.5 * -1 and 0.5 * +1: min keeps rho*A
    torch.testing.assert_close(loss, torch.tensor([[-1.2, 0.8, -1.1, 1.5, -0.5]]))
    assert clipped.tolist() == [[True, True, False, False, False]]
    loss.sum().backward()
    assert torch.all(logp.grad[clipped] == 0) and torch.all(logp.grad[~clipped] != 0)
    loss_high, clipped_high = clipped_surrogate(ratio.log(), torch.zeros(1, 5), adv, epsilon=0.2, epsilon_high=0.6)
    assert loss_high[0, 0].item() == pytest.approx(-1.5) and not clipped_high[0, 0]
    assert clipped_high[0, 1]  # the low side still clips at 1 - epsilon


def test_clipped_surrogate_broadcasts_sequence_advantages():
    logp = torch.tensor([[0.1, 0.2], [0.0, -0.1]])
    per_seq, _ = clipped_surrogate(logp, torch.zeros_like(logp), torch.tensor([1.0, -2.0]))
    per_tok, _ = clipped_surrogate(logp, torch.zeros_like(logp), torch.tensor([[1.0, 1.0], [-2.0, -2.0]]))
    torch.testing.assert_close(per_seq, per_tok)
    with pytest.raises(ValueError, match="advantages.shape=\\(3,\\)"):
        clipped_surrogate(logp, logp, torch.zeros(3))
    with pytest.raises(ValueError, match="epsilon=1.5"):
        clipped_surrogate(logp, logp, torch.zeros(2), epsilon=1.5)


@SETTINGS
@given(st.floats(0.05, 0.5), st.floats(0.0, 0.6), st.floats(0.01, 0.99), st.floats(-3, 3))
def test_property_clip_inactive_inside_the_trust_region(epsilon, extra_high, position, advantage):
    eps_high = epsilon + extra_high
    # strictly inside (1 - eps, 1 + eps_high): exactly on an edge, exp(log(ratio)) may round to just outside it
    ratio = (1 - epsilon) + position * (epsilon + eps_high)
    logp = torch.tensor([[math.log(ratio)]], dtype=torch.float64)
    loss, clipped = clipped_surrogate(logp, torch.zeros_like(logp), torch.tensor([advantage], dtype=torch.float64),
                                      epsilon=epsilon, epsilon_high=eps_high)
    assert not clipped.any()
    assert loss.item() == pytest.approx(-ratio * advantage, rel=1e-9, abs=1e-12)


def test_k3_by_hand_and_as_an_estimator():
    assert k3_kl(torch.tensor([0.3]), torch.tensor([0.3])).item() == 0.0
    assert k3_kl(torch.tensor([0.0]), torch.tensor([math.log(2.0)])).item() == pytest.approx(1 - math.log(2.0))
    gen = torch.Generator().manual_seed(0)
    p, q = torch.tensor([0.6, 0.3, 0.1]), torch.tensor([0.2, 0.5, 0.3])
    samples = torch.multinomial(p, 200_000, replacement=True, generator=gen)  # tokens drawn from the policy p
    estimate = k3_kl(p.log()[samples], q.log()[samples]).mean().item()
    assert estimate == pytest.approx((p * (p / q).log()).sum().item(), rel=0.03)  # unbiased for KL(p || q)


@SETTINGS
@given(st.lists(st.tuples(st.floats(-20, 5), st.floats(-20, 5)), min_size=1, max_size=20))
def test_property_k3_is_non_negative(pairs):
    logp, ref = torch.tensor(pairs, dtype=torch.float64).T
    assert torch.all(k3_kl(logp, ref) >= 0)


# ------------------------------------------------------------------------------------------- aggregation

LENGTHS_MASK = torch.tensor([[True, False, False, False], [True, True, True, False]])  # lengths 1 and 3
PER_TOKEN = torch.tensor([[2.0, 9.0, 9.0, 9.0], [1.0, 1.0, 1.0, 9.0]])  # 9 = padding, must never count


@pytest.mark.parametrize("loss_type, kwargs, expected", [
    ("grpo", {}, (2 + 1) / 2),  # mean of per-sequence means
    ("bnpo", {}, 5 / 4),  # token mean
    ("dapo", {}, 5 / 4),
    ("dapo", {"num_items_in_batch": 10}, 5 / 10),
    ("dr_grpo", {"max_completion_length": 4}, 5 / (2 * 4)),
    ("dr_grpo", {"max_completion_length": 10}, 5 / (2 * 10)),
])
def test_aggregate_by_hand(loss_type, kwargs, expected):
    assert aggregate_loss(PER_TOKEN, LENGTHS_MASK, loss_type, **kwargs).item() == pytest.approx(expected)


def test_length_bias_of_aggregation_weights():
    grpo = aggregation_weights(LENGTHS_MASK, "grpo")
    assert grpo[0, 0].item() == pytest.approx(1 / 2) and grpo[1, 0].item() == pytest.approx(1 / 6)
    assert grpo.sum().item() == pytest.approx(1.0)
    dr = aggregation_weights(LENGTHS_MASK, "dr_grpo", max_completion_length=4)
    assert torch.all(dr[LENGTHS_MASK] == 1 / 8)  # every token weighs the same, whatever its answer's length
    for loss_type in ("grpo", "bnpo", "dapo"):
        assert torch.all(aggregation_weights(LENGTHS_MASK, loss_type)[~LENGTHS_MASK] == 0)


def test_aggregation_bad_inputs():
    with pytest.raises(ValueError, match="max_completion_length=None with loss_type='dr_grpo'"):
        aggregate_loss(PER_TOKEN, LENGTHS_MASK, "dr_grpo")
    with pytest.raises(ValueError, match="max_completion_length=3 is out of range"):
        aggregate_loss(PER_TOKEN, LENGTHS_MASK, "dr_grpo", max_completion_length=3)
    with pytest.raises(ValueError, match="loss_type='ppo'"):
        aggregate_loss(PER_TOKEN, LENGTHS_MASK, "ppo")
    with pytest.raises(ValueError, match="num_items_in_batch=0"):
        aggregate_loss(PER_TOKEN, LENGTHS_MASK, "dapo", num_items_in_batch=0)
    with pytest.raises(ValueError, match="per_token_loss.shape=\\(2, 3\\)"):
        aggregate_loss(PER_TOKEN[:, :3], LENGTHS_MASK, "grpo")


def test_grpo_loss_on_policy_is_the_weighted_policy_gradient():
    logp = torch.tensor([[-1.0, -2.0, -3.0, -4.0], [-0.5, -0.5, -0.5, -0.5]], requires_grad=True)
    adv = torch.tensor([1.0, -2.0])
    loss, metrics = grpo_loss(logp, None, adv, LENGTHS_MASK)
    assert loss.item() == pytest.approx(-(1.0 + -2.0) / 2)  # ratio 1: -mean_i mean_t A_i
    loss.backward()
    expected_grad = -aggregation_weights(LENGTHS_MASK, "grpo") * adv[:, None]
    torch.testing.assert_close(logp.grad, expected_grad)
    assert metrics["clip_fraction"] == 0.0 and metrics["ratio_mean"] == pytest.approx(1.0)
    assert metrics["mean_abs_advantage"] == pytest.approx((1 * 1 + 3 * 2) / 4)
    assert set(metrics) == {"loss", "clip_fraction", "clip_fraction_low", "clip_fraction_high", "ratio_mean",
                            "mean_abs_advantage"}


def test_grpo_loss_kl_entropy_and_clip_metrics():
    mask = torch.tensor([[True, True, True, True]])
    logp = torch.tensor([[math.log(1.5), math.log(0.5), 0.0, 0.0]])
    adv = torch.tensor([[1.0, -1.0, 1.0, 0.0]])
    ref = torch.tensor([[0.0, 0.0, math.log(2.0), 0.0]])
    entropy = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    base, m0 = grpo_loss(logp, torch.zeros_like(logp), adv, mask, ref_logp=ref, entropy=entropy)
    with_kl, m1 = grpo_loss(logp, torch.zeros_like(logp), adv, mask, ref_logp=ref, beta=0.1)
    kl = k3_kl(logp, ref).mean().item()
    assert m0["kl"] == pytest.approx(kl) and m0["entropy"] == pytest.approx(2.5)
    assert with_kl.item() - base.item() == pytest.approx(0.1 * kl)
    assert m0["clip_fraction"] == pytest.approx(0.5)  # tokens 0 (high side) and 1 (low side)
    assert m0["clip_fraction_low"] == pytest.approx(0.25) and m0["clip_fraction_high"] == pytest.approx(0.25)
    with pytest.raises(ValueError, match="beta=0.1 but ref_logp=None"):
        grpo_loss(logp, None, adv, mask, beta=0.1)


def test_policy_gradient_and_reinforce_by_hand():
    logp = torch.tensor([[-1.0, -2.0, 9.0, 9.0], [-1.0, -1.0, -1.0, 9.0]], requires_grad=True)
    mask = torch.tensor([[True, True, False, False], [True, True, True, False]])  # sums: -3 and -3
    rewards = torch.tensor([1.0, 0.0])
    pg, pg_metrics = policy_gradient_loss(logp, mask, rewards)
    assert pg.item() == pytest.approx(-(1.0 * -3.0 + 0.0) / 2)
    assert pg_metrics["reward_mean"] == 0.5
    rb, rb_metrics = reinforce_loss(logp, mask, rewards)  # baseline = 0.5
    assert rb.item() == pytest.approx(-(0.5 * -3.0 + -0.5 * -3.0) / 2)
    assert rb_metrics["mean_abs_advantage"] == 0.5
    rb.backward()
    torch.testing.assert_close(logp.grad, torch.tensor([[-0.25, -0.25, 0, 0], [0.25, 0.25, 0.25, 0]]))
    flat, _ = reinforce_loss(logp, mask, torch.tensor([1.0, 1.0]))
    assert flat.item() == 0.0  # equal rewards: no signal once the baseline is subtracted
    fixed, _ = reinforce_loss(logp, mask, rewards, baseline=1.0)
    assert fixed.item() == pytest.approx(-(0.0 + -1.0 * -3.0) / 2)
    with pytest.raises(ValueError, match="baseline.shape=\\(3,\\)"):
        reinforce_loss(logp, mask, rewards, baseline=torch.zeros(3))


# ---------------------------------------------------------------------------------- gradient accumulation

VOCAB, START = 6, 2


def _batch(seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, VOCAB, (5, 7), generator=gen)
    ids[0, 3], ids[1, 5], ids[3, 2] = EOS, EOS, EOS  # answers of different lengths (3 is empty)
    comp = ids[:, START:]
    mask = completion_mask(comp, EOS)
    ids[:, START:] = torch.where(mask, comp, torch.full_like(comp, PAD))
    return {"input_ids": ids, "mask": mask, "advantages": torch.randn(5, generator=gen)}


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Embedding(VOCAB, VOCAB)  # a bigram LM: logits of the next token = row of the current token


def _loss_fn(loss_type: str, **kwargs):
    def fn(model, mb):
        logp = token_logprobs(model(mb["input_ids"]), mb["input_ids"], START)
        return grpo_loss(logp, None, mb["advantages"], mb["mask"], loss_type=loss_type, **kwargs)
    return fn


@pytest.mark.parametrize("loss_type, accumulation, use_total", [
    ("grpo", "mean", False), ("dr_grpo", "mean", False), ("dapo", "sum", True)])
def test_accumulated_gradient_equals_full_batch_gradient(loss_type, accumulation, use_total):
    batch = _batch()
    kwargs = {"max_completion_length": 5} if loss_type == "dr_grpo" else {}
    if use_total:
        kwargs["num_items_in_batch"] = int(batch["mask"].sum())
    grads = []
    for microbatch_size in (5, 2):  # one pass, then 2 + 2 + 1 rows
        model = _model()
        metrics = accumulate_gradients(model, batch, _loss_fn(loss_type, **kwargs), microbatch_size=microbatch_size,
                                       accumulation=accumulation)
        grads.append(model.weight.grad.clone())
        assert metrics["num_microbatches"] == (1 if microbatch_size == 5 else 3)
    assert grads[0].abs().sum() > 0
    torch.testing.assert_close(grads[0], grads[1])


def test_bnpo_is_a_per_microbatch_token_mean():
    batch = _batch()
    grads = []
    for microbatch_size in (5, 2):
        model = _model()
        accumulate_gradients(model, batch, _loss_fn("bnpo"), microbatch_size=microbatch_size)
        grads.append(model.weight.grad.clone())
    assert not torch.allclose(grads[0], grads[1])  # microbatches with different token counts weigh differently


def test_train_step_updates_and_clips():
    batch = _batch()
    model = _model()
    before = model.weight.detach().clone()
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    metrics = train_step(model, opt, batch, _loss_fn("grpo"), microbatch_size=2, max_grad_norm=1e-3)
    assert metrics["grad_norm"] > 1e-3
    assert (model.weight.detach() - before).norm().item() == pytest.approx(1e-3, rel=1e-4)
    assert {"loss", "clip_fraction", "num_microbatches", "grad_norm"} <= set(metrics)


def test_accumulate_bad_inputs():
    model = _model()
    batch = _batch()
    with pytest.raises(ValueError, match="dim-0 sizes"):
        accumulate_gradients(model, {**batch, "advantages": torch.zeros(4)}, _loss_fn("grpo"), microbatch_size=2)
    with pytest.raises(ValueError, match="microbatch_size=0"):
        accumulate_gradients(model, batch, _loss_fn("grpo"), microbatch_size=0)
    with pytest.raises(ValueError, match="accumulation='avg'"):
        accumulate_gradients(model, batch, _loss_fn("grpo"), microbatch_size=2, accumulation="avg")
    with pytest.raises(ValueError, match="loss of shape \\(2,\\)"):
        accumulate_gradients(model, batch, lambda m, mb: (m.weight[:2, 0], {}), microbatch_size=2)
    with pytest.raises(ValueError, match="batch=\\{\\} is empty"):
        accumulate_gradients(model, {}, _loss_fn("grpo"), microbatch_size=2)


def test_token_logprobs_dtypes():
    logits, input_ids, expected = _known_logits()
    assert token_logprobs(logits.double(), input_ids, 2).dtype == torch.float64  # no silent downcast
    half = token_logprobs(logits.bfloat16(), input_ids, 2)
    assert half.dtype == torch.float32
    torch.testing.assert_close(half, expected, atol=0.02, rtol=0.02)
