"""Token-level credit: turn one advantage per answer into one advantage per token.

Plain GRPO gives every token of an answer the same advantage, so a wrong answer whose first five steps were right
is pushed down everywhere. With an oracle that points at the erroneous span, we can be more precise. Inputs, for
``N`` responses padded to ``T`` tokens:

- ``seq_adv``       float ``(N,)``  the group-relative advantage ``A_i`` of each response (see ``advantages.py``);
- ``response_mask`` bool  ``(N, T)`` ``m_it``: True on the response's real tokens (False on padding);
- ``error_mask``    bool  ``(N, T)`` ``e_it``: True on the tokens of the oracle's error span (subset of ``m``);
- ``is_wrong``      bool  ``(N,)``   True for wrong answers. ``error_mask`` rows of correct answers are ignored.

Modes (``CREDIT_MODES``), with ``n_i = sum_t e_it`` and ``R-`` = ``negative_reward``:

- ``sequence``   ``A_it = A_i * m_it``                                 plain GRPO (the broadcast);
- ``cal_sparse`` correct: ``A_it = 0``; wrong: ``A_it = R- / n_i * e_it``. The published CAL design. Correct
  answers get nothing and wrong tokens outside the span get nothing: all positive signal is gone, the model is
  only ever told what not to say. Kept as the worked example of that failure;
- ``cal_hybrid`` ``A_it = A_i * m_it + lam * R- * e_it * wrong_i``     the group signal everywhere, plus an extra
  push-down on the error span of wrong answers;
- ``prefix``     wrong: ``A_it = max(A_i, 0) * m_it`` before the first error token, ``min(A_i, 0) * m_it`` from it
  on; correct: ``A_i * m_it``. "Save the good prefix": the steps before the mistake are not punished (a wrong
  answer's ``A_i`` is usually negative, so its prefix gets 0); the mistake and everything after it carry the
  negative part. ``max + min = A_i``, so a wrong answer with ``A_i > 0`` (possible with partial rewards) still
  gets its positive part, on the prefix.

Two controls, each giving a wrong answer with a span the same extra push-down in total as ``cal_hybrid``
(``sum_t (A_it - A_i * m_it) = lam * R- * n_i``), but not on the span; they tell whether it matters *where* the
push-down goes. With ``L_i = sum_t m_it`` (the response's length) and ``u_i`` uniform in ``{0, ..., L_i - n_i}``:

- ``random_span`` ``A_it = A_i * m_it + lam * R- * s_it * wrong_i``    ``s_it`` True on ``n_i`` consecutive response
  tokens starting at its token number ``u_i`` (0-based, padding skipped): a span of the error span's length at a
  random place in the same response (it may overlap the error span). ``u_i = floor(U_i * (L_i - n_i + 1))`` with
  ``U_i`` the ``i``-th of ``N`` uniform draws from ``generator`` (``torch.rand``): a seeded generator repeats them;
- ``uniform``     ``A_it = A_i * m_it + lam * R- * (n_i / L_i) * m_it * wrong_i``    the push-down spread evenly
  over every token of the response.

A wrong answer whose ``error_mask`` row is all False (the oracle or the span mapping failed) falls back to
``sequence`` for that response, in every mode; :class:`CreditStats` counts these fallbacks. Every row is computed
from its own inputs only (and, in ``random_span``, the ``i``-th draw), so an empty or truncated response cannot
leak credit into another member of its group, and padding (``m_it = False``) always gets exactly 0.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from .validation import check_choice, check_float, check_type

__all__ = ["CREDIT_MODES", "BASE_CREDIT_MODES", "CONTROL_MODES", "CreditStats", "token_advantages"]

BASE_CREDIT_MODES = ("sequence", "cal_sparse", "cal_hybrid", "prefix")  #: the four modes of the notebooks' figures
CONTROL_MODES = ("random_span", "uniform")  #: cal_hybrid's push-down, elsewhere: where does it help?
CREDIT_MODES = BASE_CREDIT_MODES + CONTROL_MODES


@dataclass(frozen=True)
class CreditStats:
    """Counts and sizes describing one call of :func:`token_advantages` (all plain Python numbers)."""

    num_responses: int
    num_wrong: int
    num_wrong_with_span: int  # wrong answers with a non-empty error span (used by every mode but "sequence")
    num_fallback: int  # wrong answers without a span, given sequence credit (0 in mode "sequence")
    num_response_tokens: int
    num_error_tokens: int  # error-span tokens of wrong answers
    mean_abs_token_advantage: float  # mean |A_it| over response tokens (0 when there are none)
    frac_negative_tokens: float  # share of response tokens with A_it < 0

    def to_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}


def _check_inputs(seq_adv: torch.Tensor, response_mask: torch.Tensor, error_mask: torch.Tensor,
                  is_wrong: torch.Tensor) -> None:
    for name, value in (("seq_adv", seq_adv), ("response_mask", response_mask), ("error_mask", error_mask),
                        ("is_wrong", is_wrong)):
        check_type(name, value, torch.Tensor)
    for name, value in (("response_mask", response_mask), ("error_mask", error_mask), ("is_wrong", is_wrong)):
        if value.dtype != torch.bool:
            raise TypeError(f"{name}.dtype={value.dtype}; allowed: torch.bool")
    if not seq_adv.is_floating_point():
        raise TypeError(f"seq_adv.dtype={seq_adv.dtype}; allowed: a floating dtype")
    if response_mask.dim() != 2:
        raise ValueError(f"response_mask.shape={tuple(response_mask.shape)}; allowed: (N, T)")
    n = response_mask.shape[0]
    for name, value, shape in (("seq_adv", seq_adv, (n,)), ("is_wrong", is_wrong, (n,)),
                               ("error_mask", error_mask, tuple(response_mask.shape))):
        if tuple(value.shape) != shape:
            raise ValueError(f"{name}.shape={tuple(value.shape)}; allowed: {shape} to match "
                             f"response_mask.shape={tuple(response_mask.shape)}")
    if not torch.isfinite(seq_adv).all():
        raise ValueError(f"seq_adv={seq_adv.tolist()} contains a non-finite value; allowed: finite numbers")
    outside = error_mask & ~response_mask
    if outside.any():
        row, col = torch.nonzero(outside)[0].tolist()
        raise ValueError(f"error_mask[{row}, {col}] is True where response_mask is False; allowed: error tokens "
                         f"inside the response only")


def token_advantages(seq_adv: torch.Tensor, response_mask: torch.Tensor, error_mask: torch.Tensor,
                     is_wrong: torch.Tensor, mode: str, *, negative_reward: float = -1.0,
                     lam: float = 1.0, generator: torch.Generator | None = None) -> tuple[torch.Tensor, CreditStats]:
    """Per-token advantages ``(N, T)`` (dtype of ``seq_adv``) and their :class:`CreditStats`.

    See the module docstring for the formula of each ``mode`` in ``CREDIT_MODES``. ``negative_reward`` (``R-``,
    must be <= 0) is the credit an error span receives in ``cal_sparse`` (spread over its tokens) and, times
    ``lam`` (>= 0), the extra per-token push-down in ``cal_hybrid`` (and, moved, in the controls). ``generator``
    draws the spans of ``random_span`` (``None``: torch's default generator); other modes draw nothing.
    """
    check_choice("mode", mode, CREDIT_MODES)
    check_float("negative_reward", negative_reward, None, 0.0)
    check_float("lam", lam, 0.0, None)
    if generator is not None:
        check_type("generator", generator, torch.Generator)
    _check_inputs(seq_adv, response_mask, error_mask, is_wrong)

    m = response_mask.to(seq_adv.dtype)  # (N, T)
    has_span = error_mask.any(dim=1)  # (N,)
    use_span = is_wrong & has_span  # (N,) wrong answers whose span we use
    e = (error_mask & use_span[:, None]).to(seq_adv.dtype)  # (N, T) error tokens of those answers only
    broadcast = seq_adv[:, None] * m  # (N, T) plain GRPO

    if mode == "sequence":
        adv = broadcast
    elif mode == "cal_sparse":
        n_err = e.sum(dim=1, keepdim=True).clamp(min=1.0)  # (N, 1)
        adv = negative_reward * e / n_err  # (N, T): R- / n_i on the span
        fallback = is_wrong & ~has_span
        adv = torch.where(fallback[:, None], broadcast, adv)  # oracle failed -> sequence credit
    elif mode == "cal_hybrid":
        adv = broadcast + lam * negative_reward * e  # (N, T)
    elif mode == "random_span":
        n_err = (error_mask & use_span[:, None]).sum(dim=1)  # (N,) int n_i (0 where the span is not used)
        length = response_mask.sum(dim=1)  # (N,) int L_i
        device = generator.device if generator is not None else "cpu"
        draws = torch.rand(m.shape[0], generator=generator, device=device, dtype=torch.float64)  # (N,) U_i
        start = (draws.to(length.device) * (length - n_err + 1)).floor().long()  # (N,) u_i
        start = torch.minimum(start, length - n_err)  # (N,) U_i < 1, but float rounding must not push past the end
        rank = response_mask.long().cumsum(dim=1) - 1  # (N, T) index of each response token in its response
        s = response_mask & (rank >= start[:, None]) & (rank < (start + n_err)[:, None])  # (N, T) n_i tokens
        adv = broadcast + lam * negative_reward * (s & use_span[:, None]).to(m.dtype)  # (N, T)
    elif mode == "uniform":
        share = e.sum(dim=1, keepdim=True) / m.sum(dim=1, keepdim=True).clamp(min=1.0)  # (N, 1) n_i / L_i
        adv = broadcast + lam * negative_reward * share * m  # (N, T); share is 0 where the span is not used
    else:  # prefix
        from_error = e.cumsum(dim=1) > 0  # (N, T) True at and after the first error token
        before = seq_adv.clamp(min=0.0)[:, None] * m  # (N, T) max(A_i, 0)
        after = seq_adv.clamp(max=0.0)[:, None] * m  # (N, T) min(A_i, 0)
        split = torch.where(from_error, after, before)
        adv = torch.where(use_span[:, None], split, broadcast)

    adv = torch.where(response_mask, adv, torch.zeros_like(adv)) + 0.0  # padding exactly 0 (and -0.0 -> 0.0)
    num_tokens = int(response_mask.sum().item())
    stats = CreditStats(
        num_responses=int(response_mask.shape[0]),
        num_wrong=int(is_wrong.sum().item()),
        num_wrong_with_span=int(use_span.sum().item()),
        num_fallback=0 if mode == "sequence" else int((is_wrong & ~has_span).sum().item()),
        num_response_tokens=num_tokens,
        num_error_tokens=int(e.sum().item()),
        mean_abs_token_advantage=float(adv.abs().sum().item() / num_tokens) if num_tokens else 0.0,
        frac_negative_tokens=float(((adv < 0) & response_mask).sum().item() / num_tokens) if num_tokens else 0.0,
    )
    return adv, stats
