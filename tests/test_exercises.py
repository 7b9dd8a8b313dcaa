import pytest
import torch

from calgrpo_lib.advantages import group_advantages, rloo_advantages
from calgrpo_lib.credit import token_advantages
from calgrpo_lib.exercises import EXERCISES, check_exercise
from calgrpo_lib.oracle import harmonic_f1


def _f1(labels, preds):  # a learner's correct answer, written from the definition
    err = [p == lab for lab, p in zip(labels, preds) if lab != -1]
    ok = [p == -1 for lab, p in zip(labels, preds) if lab == -1]
    return harmonic_f1(sum(err) / len(err) if err else 0.0, sum(ok) / len(ok) if ok else 0.0)


def _cascade(checker, judge):  # the "earlier" rule, written from the cascade's docstring
    if checker == -1:
        return -1 if judge is None else judge
    return judge if judge is not None and 0 <= judge < checker else checker

def _prefix(a, m, e, w):  # prefix credit, written from credit.py's docstring
    first = torch.where(e.any(1), e.float().argmax(1), torch.full_like(a, m.shape[1], dtype=torch.long))  # (N,)
    before = torch.arange(m.shape[1])[None, :] < first[:, None]  # (N, T)
    spanned = (w & e.any(1))[:, None]  # (N, 1)
    split = torch.where(before, a.clamp(min=0)[:, None], a.clamp(max=0)[:, None])  # (N, T)
    return torch.where(spanned, split, a[:, None]) * m


def _weights(mask, loss_type, max_len):  # the loss weights, written from the formulas
    m = mask.float()
    if loss_type == "grpo":
        return m / (m.shape[0] * m.sum(1, keepdim=True).clamp(min=1))
    if loss_type == "bnpo":
        return m / m.sum().clamp(min=1)
    return m / (m.shape[0] * max_len)


def _split(prompts, g, processes, micro):
    share = prompts * g // processes
    return min(micro, share), share // min(micro, share)


LIBRARY = {  # the library's own functions, wrapped to the exercise signatures: they must pass
    "group_advantages": lambda r: group_advantages(r, r.shape[1]),
    "rloo": lambda r: rloo_advantages(r, r.shape[1]),
    "cal_hybrid": lambda a, m, e, w, lam: token_advantages(a, m, e, w, "cal_hybrid", lam=lam)[0],
    "processbench_f1": _f1,
    "cascade_step": _cascade,
    "uniform_control": lambda a, m, e, w, lam: token_advantages(a, m, e, w, "uniform", lam=lam)[0],
    "curve_auc": lambda steps, accs: sum((k1 - k0) * (a0 + a1) / 2 for k0, k1, a0, a1 in zip(
        steps, steps[1:], accs, accs[1:])) / (steps[-1] - steps[0]),
    "span_to_token_mask": lambda offsets, start, end: [s < end and e > start and e > s for s, e in offsets],
    "piece_offsets": lambda pieces: [(len("".join(pieces[:i])), len("".join(pieces[:i + 1])))
                                     for i in range(len(pieces))],
    "prefix_credit": _prefix,
    "loss_weights": _weights,
    "batch_split": _split,
    "pooled_hit_rate": lambda mapped, quotes: sum(mapped) / sum(quotes) if sum(quotes) else 0.0,
}


def test_every_exercise_has_a_passing_library_answer(capsys):
    assert set(LIBRARY) == set(EXERCISES)
    for name, fn in LIBRARY.items():
        assert check_exercise(name, fn, trials=10) is True
        assert capsys.readouterr().out.startswith(f"PASS {name}")


@pytest.mark.parametrize("name, wrong, message", [
    ("group_advantages", lambda r: (r - r.mean(1, keepdim=True)) / (r.std(1, keepdim=True, correction=0) + 1e-4),
     "values differ"),  # population std instead of unbiased
    ("group_advantages", lambda r: r - r.mean(1, keepdim=True), "values differ"),  # forgot the std
    ("rloo", lambda r: r - r.mean(1, keepdim=True), "values differ"),  # the mean includes the answer itself
    ("cal_hybrid", lambda a, m, e, w, lam: a[:, None] - lam * (e & w[:, None]).float(), "values differ"),  # padding
    ("cal_hybrid", lambda a, m, e, w, lam: a[:, None] * m, "values differ"),  # no extra push on the span
    ("rloo", lambda r: r.flatten(), "shape"),
    ("processbench_f1", lambda labels, preds: sum(p == lab for lab, p in zip(labels, preds)) / len(labels),
     "got"),  # plain accuracy over all samples
    ("processbench_f1", lambda labels, preds: (_f1(labels, preds) or 1.0) if all(
        lab == -1 for lab in labels) else _f1(labels, preds), "expected 0"),  # no erroneous sample: F1 is 0
    ("processbench_f1", lambda labels, preds: str(_f1(labels, preds)), "returned str"),
    ("cascade_step", lambda checker, judge: checker if checker != -1 else judge, "got"),  # the judge never wins
    ("cascade_step", lambda checker, judge: min(s for s in (checker, judge) if s is not None), "got"),  # -1 < step
    ("cascade_step", lambda checker, judge: float(checker), "expected the int"),
    ("rloo", lambda r: r.tolist(), "returned list"),
    ("uniform_control", lambda a, m, e, w, lam: token_advantages(a, m, e, w, "cal_hybrid", lam=lam)[0],
     "values differ"),  # the push-down on the span, not spread
    ("uniform_control", lambda a, m, e, w, lam: a[:, None] * m - lam * (e & w[:, None]).float().mean(1, keepdim=True),
     "values differ"),  # spread over T (padding included), not over the response
    ("curve_auc", lambda steps, accs: sum(accs) / len(accs), "got"),  # unweighted mean of the evaluations
    ("curve_auc", lambda steps, accs: sum((k1 - k0) * (a0 + a1) / 2 for k0, k1, a0, a1 in zip(
        steps, steps[1:], accs, accs[1:])), "got"),  # an area, not divided by the span
    ("span_to_token_mask", lambda offsets, start, end: [start <= s and e <= end and e > s for s, e in offsets],
     "got"),  # only tokens wholly inside
    ("span_to_token_mask", lambda offsets, start, end: [s < end and e > start for s, e in offsets],
     "got"),  # an empty (special) token inside the span enters the mask
    ("piece_offsets", lambda pieces: [(i, i + 1) for i in range(len(pieces))], "got"),  # token numbers, not chars
    ("piece_offsets", lambda pieces: [(len("".join(pieces[:i])), len("".join(pieces[:i + 1])))
                                      for i in range(len(pieces)) if pieces[i]], "items"),  # special tokens dropped
    ("prefix_credit", lambda a, m, e, w: _prefix(a.clamp(max=0), m, e, w) * (w & e.any(1))[:, None]
     + a[:, None] * m * ~(w & e.any(1))[:, None], "values differ"),  # a positive A_i of a wrong answer lost
    ("prefix_credit", lambda a, m, e, w: torch.where(e & w[:, None], a[:, None], a.clamp(min=0)[:, None]) * m,
     "values differ"),  # only the span itself punished, not what follows it
    ("loss_weights", lambda mask, loss_type, max_len: mask.float() / mask.float().sum().clamp(min=1),
     "values differ"),  # every loss type as bnpo
    ("loss_weights", lambda mask, loss_type, max_len: _weights(mask, loss_type, max_len) if loss_type != "grpo" else
     mask.float() / (mask.shape[0] * mask.float().sum(1, keepdim=True)), "values differ"),  # 0/0 on an empty answer
    ("batch_split", lambda prompts, g, processes, micro: (micro, prompts * g // processes // micro), "got"),  # no cap
    ("batch_split", lambda prompts, g, processes, micro: _split(prompts, g, 1, micro), "got"),  # processes ignored
    ("pooled_hit_rate", lambda mapped, quotes: sum(m / q for m, q in zip(mapped, quotes) if q) / len(quotes),
     "got"),  # the mean of per-process rates
    ("pooled_hit_rate", lambda mapped, quotes: sum(mapped) / sum(quotes), "raised ZeroDivisionError"),
])
def test_wrong_answers_fail_with_a_hint(capsys, name, wrong, message):
    assert check_exercise(name, wrong) is False
    out = capsys.readouterr().out
    assert out.startswith(f"FAIL {name}") and message in out and f"hint: {EXERCISES[name].hint}" in out


def test_a_stub_that_raises_is_reported_not_raised(capsys):
    def stub(rewards):
        raise NotImplementedError("write your solution here")

    assert check_exercise("group_advantages", stub) is False
    assert "raised NotImplementedError: write your solution here" in capsys.readouterr().out


def test_inputs_are_copied_for_the_learner(capsys):
    def in_place(rewards):  # correct, but mutates its argument
        rewards -= rewards.mean(dim=1, keepdim=True)
        return rewards * (rewards.shape[1] / (rewards.shape[1] - 1))

    assert check_exercise("rloo", in_place) is True


def test_checker_argument_errors():
    with pytest.raises(ValueError, match="name='ppo'"):
        check_exercise("ppo", lambda r: r)
    with pytest.raises(TypeError, match="user_fn=3 is not callable"):
        check_exercise("rloo", 3)
    with pytest.raises(ValueError, match="trials=0"):
        check_exercise("rloo", lambda r: r, trials=0)


def test_random_inputs_are_reproducible_and_varied():
    gen_a, gen_b = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    a = [EXERCISES["cal_hybrid"].make_inputs(gen_a) for _ in range(20)]
    b = [EXERCISES["cal_hybrid"].make_inputs(gen_b) for _ in range(20)]
    assert all(torch.equal(x[1], y[1]) and torch.equal(x[0], y[0]) for x, y in zip(a, b))
    assert any((~x[1]).any() for x in a)  # some padding, so forgetting the mask is caught
    assert any((x[2].any(dim=1) != x[3]).any() for x in a)  # some wrong answers without a span
