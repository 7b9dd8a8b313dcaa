"""Pictures of a group's rewards and advantages (notebook 01): bar charts, a live widget, the length bias of each
loss aggregation, and the clipped surrogate against the probability ratio (notebook 04).

:func:`advantage_bars` draws one group's rewards ``r_i`` and the advantages ``A_i`` they give (one method, or several
side by side); :func:`advantage_widget` redraws it as sliders move the rewards; :func:`aggregation_bars` draws the
per-token and total weight each ``loss_type`` gives responses of different lengths; :func:`surrogate_curves` draws
the PPO-clip objective of one token against its ratio, for a positive and a negative advantage. Figures are matplotlib
``Figure`` objects built without pyplot; bars of one method are coloured by sign on the scale of
:func:`calgrpo_lib.viz.credit_color` (blue positive, red negative).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .validation import check_float, check_int, check_type
from .viz import as_list, credit_color, figure_png, finite_numbers
from .widget_boxes import noted_box

__all__ = ["advantage_bars", "advantage_widget", "aggregation_bars", "surrogate_curves"]

_PALETTE = ("#0571b0", "#e66101", "#5e3c99", "#1a9641")  # one colour per series of grouped bars


def _series(advantages: Any, size: int) -> dict[str, list[float]]:
    named = advantages if isinstance(advantages, dict) else {"advantage": advantages}
    series = {str(k): finite_numbers(f"advantages[{k!r}]", v) for k, v in named.items()}
    for k, v in series.items():
        if len(v) != size:
            raise ValueError(f"len(advantages[{k!r}])={len(v)} differs from len(rewards)={size}; allowed: equal")
    if not series:
        raise ValueError("advantages={} is empty; allowed: a tensor or a dict of name -> tensor")
    return series


def advantage_bars(rewards: Sequence[float] | Any, advantages: Any, *, labels: Sequence[str] | None = None,
                   title: str | None = None):
    """Two bar charts for one group: its rewards (with the group mean dashed) and the advantages they give.

    ``advantages`` is a 1-D tensor/list (bars coloured by sign: blue positive, red negative) or a dict
    ``name -> values`` drawn as grouped bars (e.g. ``{"GRPO": ..., "RLOO": ...}``). Returns a matplotlib ``Figure``.
    """
    from matplotlib.figure import Figure

    r = finite_numbers("rewards", rewards)
    series = _series(advantages, len(r))
    names = [f"#{i}" for i in range(len(r))] if labels is None else [str(x) for x in as_list("labels", labels)]
    fig = Figure(figsize=(9.0, 3.0), layout="constrained")
    ax_r, ax_a = fig.subplots(1, 2)
    x = list(range(len(r)))
    ax_r.bar(x, r, color="#888888")
    ax_r.axhline(sum(r) / len(r), color="k", linestyle="--", linewidth=1, label="group mean")
    ax_r.set_title("rewards $r_i$", fontsize=10)
    ax_r.legend(fontsize=8, loc="best")
    width = 0.8 / len(series)
    for k, (name, values) in enumerate(series.items()):
        xs = [i - 0.4 + width * (k + 0.5) for i in x]
        colors = ([tuple(c / 255 for c in credit_color(1.0 if v >= 0 else -1.0, 1.0)) for v in values]
                  if len(series) == 1 else _PALETTE[k % len(_PALETTE)])
        bars = ax_a.bar(xs, values, width=width, color=colors, label=name)
        ax_a.bar_label(bars, fmt="%+.2f", fontsize=7, padding=1)
    ax_a.axhline(0.0, color="k", linewidth=0.8)
    ax_a.set_title("advantages $A_i$", fontsize=10)
    if len(series) > 1:
        ax_a.legend(fontsize=8, loc="best")
    for ax in (ax_r, ax_a):
        ax.set_xticks(x, names)
        ax.margins(y=0.2)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


def advantage_widget(rewards: Sequence[float] = (1.0, 0.0, 0.0, 0.0), *, eps: float = 1e-4):
    """Sliders for each group member's reward, a std on/off switch, the std convention and ``eps``.

    Every change recomputes :func:`calgrpo_lib.advantages.group_advantages` and redraws :func:`advantage_bars`
    (as a PNG in an ``ipywidgets.Image``) and a one-line readout. Returns the widget box (:func:`noted_box`, shown
    with a static image of its starting state); its ``children`` begin ``(controls, image)``, the controls being the
    sliders, the switch, the dropdown, the eps slider, the readout.
    """
    import ipywidgets as widgets
    import torch

    from .advantages import STD_CONVENTIONS, group_advantages

    start = finite_numbers("rewards", rewards)
    check_int("len(rewards)", len(start), 2, 16)
    check_float("eps", eps, 1e-8, 1.0)
    sliders = [widgets.FloatSlider(value=v, min=-1.0, max=2.0, step=0.05, description=f"r{i}")
               for i, v in enumerate(start)]
    use_std = widgets.Checkbox(value=True, description="divide by group std")
    std = widgets.Dropdown(options=STD_CONVENTIONS, value="unbiased", description="std")
    eps_slider = widgets.FloatLogSlider(value=eps, base=10, min=-8, max=0, step=0.5, description="eps",
                                        readout_format=".0e")
    readout = widgets.HTML()
    image = widgets.Image(format="png")

    def redraw(_: Any = None) -> None:
        r = torch.tensor([s.value for s in sliders], dtype=torch.float64)
        adv = group_advantages(r, len(sliders), scale="group" if use_std.value else "none", std=std.value,
                               eps=eps_slider.value)
        image.value = figure_png(advantage_bars(r, adv))
        readout.value = "<code>A = [" + ", ".join(f"{a:+.3f}" for a in adv.tolist()) + "]</code>"

    for control in (*sliders, use_std, std, eps_slider):
        control.observe(redraw, names="value")
    redraw()
    # The controls keep their width (sliders, dropdown and readout fully visible); the figure takes the rest of the
    # row and scales down, and below about 1024 px it wraps under the controls instead of covering them.
    for control in (*sliders, use_std, std, eps_slider):
        control.layout = widgets.Layout(width="340px")
    controls = widgets.VBox([*sliders, use_std, std, eps_slider, readout],
                            layout=widgets.Layout(flex="0 0 360px", min_width="360px"))
    image.layout = widgets.Layout(flex="1 1 480px", min_width="0", max_width="100%", height="auto",
                                  object_fit="contain")
    return noted_box("HBox", [controls, image], static_png=image.value,
                     layout=widgets.Layout(flex_flow="row wrap", align_items="flex-start", width="100%"))


def aggregation_bars(mask: Any, *, max_completion_length: int, loss_types: Sequence[str] = ("grpo", "bnpo", "dr_grpo"),
                     labels: Sequence[str] | None = None):
    """The length bias of each ``loss_type``: per-token weight (left) and total weight (right) of each response.

    ``mask`` is the ``(N, T)`` bool response mask of a toy batch; the weights are those of
    :func:`calgrpo_lib.loss.aggregation_weights`. Returns a matplotlib ``Figure``.
    """
    import torch
    from matplotlib.figure import Figure

    from .loss import aggregation_weights

    check_type("mask", mask, torch.Tensor)
    lengths = mask.sum(dim=1).tolist()
    names = [f"len {n}" for n in lengths] if labels is None else [str(x) for x in as_list("labels", labels)]
    fig = Figure(figsize=(9.0, 3.0), layout="constrained")
    ax_tok, ax_tot = fig.subplots(1, 2)
    width = 0.8 / len(loss_types)
    for k, loss_type in enumerate(loss_types):
        w = aggregation_weights(mask, loss_type, max_completion_length=max_completion_length)  # (N, T)
        per_token = (w.sum(dim=1) / mask.sum(dim=1).clamp(min=1)).tolist()
        xs = [i - 0.4 + width * (k + 0.5) for i in range(len(lengths))]
        ax_tok.bar(xs, per_token, width=width, color=_PALETTE[k % len(_PALETTE)], label=loss_type)
        ax_tot.bar(xs, w.sum(dim=1).tolist(), width=width, color=_PALETTE[k % len(_PALETTE)], label=loss_type)
    ax_tok.set_title("weight of each token", fontsize=10)
    ax_tot.set_title("total weight of the response", fontsize=10)
    for ax in (ax_tok, ax_tot):
        ax.set_xticks(range(len(lengths)), names)
        ax.legend(fontsize=8)
    return fig


def surrogate_curves(*, epsilon: float = 0.2, epsilon_high: float | None = None, ratio_range: tuple[float, float] =
                     (0.4, 1.6), points: int = 241):
    """The PPO-clip objective ``min(rho A, clip(rho, 1 - eps, 1 + eps_high) A)`` of one token against its ratio
    ``rho``, for ``A = +1`` (left) and ``A = -1`` (right), computed by :func:`calgrpo_lib.loss.clipped_surrogate`
    (the objective is minus its loss); the unclipped ``rho A`` dashed, the clipped region shaded (zero gradient).
    Returns ``(figure, curves)``: ``curves`` maps ``"ratio"`` and, per advantage ``+1`` / ``-1``, ``"objective"`` and
    ``"clipped"`` to plain lists, for checks next to the figure."""
    import torch
    from matplotlib.figure import Figure

    from .loss import clipped_surrogate

    check_float("epsilon", epsilon, 0.0, 1.0, low_open=True, high_open=True)
    low, high = ratio_range
    check_float("ratio_range[0]", low, 0.0, None, low_open=True)
    check_float("ratio_range[1]", high, low, None, low_open=True)
    check_int("points", points, 3, None)
    ratio = torch.linspace(low, high, points, dtype=torch.float64)  # (P,)
    curves: dict[Any, Any] = {"ratio": ratio.tolist()}
    fig = Figure(figsize=(9.0, 3.0), layout="constrained")
    for ax, sign in zip(fig.subplots(1, 2, sharey=True), (1.0, -1.0)):
        adv = torch.full((points,), sign, dtype=torch.float64)  # (P,)
        loss, clipped = clipped_surrogate(ratio.log()[:, None], torch.zeros(points, 1, dtype=torch.float64), adv,
                                          epsilon=epsilon, epsilon_high=epsilon_high)  # (P, 1) each
        objective = (-loss[:, 0]).tolist()
        curves[int(sign)] = {"objective": objective, "clipped": clipped[:, 0].tolist()}
        ax.plot(curves["ratio"], (ratio * sign).tolist(), "--", color="#888888", lw=1, label=r"$\rho A$ (unclipped)")
        ax.plot(curves["ratio"], objective, color=_PALETTE[0 if sign > 0 else 1], lw=2, label="clipped objective")
        ax.fill_between(curves["ratio"], 0, 1, where=clipped[:, 0].tolist(), transform=ax.get_xaxis_transform(),
                        color="#dddddd", label="clipped: no gradient")
        ax.axvline(1.0, color="black", lw=0.5)
        ax.set_title(f"advantage A = {sign:+.0f}", fontsize=10)
        ax.set_xlabel(r"ratio $\rho = \pi_\theta / \pi_{old}$")
        ax.legend(fontsize=8, loc="upper left" if sign > 0 else "upper right")
    return fig, curves
