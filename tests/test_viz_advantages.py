"""The pictures of notebook 01: advantage and aggregation bars (advantage_plots.py), the credit-mode figure
(viz.py), and format_table (tables.py)."""

import pytest
import torch

from calgrpo_lib.advantage_plots import advantage_bars, advantage_widget, aggregation_bars
from calgrpo_lib.tables import format_table
from calgrpo_lib.viz import credit_modes_figure
from calgrpo_lib.widget_boxes import WIDGET_NOTE


def test_format_table_by_hand():
    text = format_table({"r": torch.tensor([1.0, -0.0]), "n": [3, 12]}, index=["a", "bb"], index_name="x", digits=2)
    assert text == "x       r   n\na   +1.00   3\nbb  +0.00  12"
    assert format_table({"v": [-0.0004]}, digits=3).endswith("+0.000")  # rounds to zero: no "-0.000"
    with pytest.raises(ValueError, match="column lengths"):
        format_table({"a": [1.0], "b": [1.0, 2.0]})
    with pytest.raises(ValueError, match="len\\(index\\)=1"):
        format_table({"a": [1.0, 2.0]}, index=["x"])


def _bar_heights(ax) -> list[float]:
    return [p.get_height() for p in ax.patches]


def test_advantage_bars_draws_the_given_values():
    rewards = torch.tensor([1.0, 0.0, 0.0])
    fig = advantage_bars(rewards, torch.tensor([1.2, -0.6, -0.6]))
    ax_r, ax_a = fig.axes
    assert _bar_heights(ax_r) == pytest.approx([1.0, 0.0, 0.0])
    assert _bar_heights(ax_a) == pytest.approx([1.2, -0.6, -0.6])
    grouped = advantage_bars(rewards, {"a": [1.0, 0.0, -1.0], "b": [2.0, 0.0, -2.0]})
    assert _bar_heights(grouped.axes[1]) == pytest.approx([1.0, 0.0, -1.0, 2.0, 0.0, -2.0])
    with pytest.raises(ValueError, match="len\\(advantages\\['advantage'\\]\\)=2"):
        advantage_bars(rewards, [1.0, 2.0])
    with pytest.raises(ValueError, match="rewards\\[1\\]=nan"):
        advantage_bars([1.0, float("nan")], [0.0, 0.0])


def test_advantage_widget_recomputes_on_change():
    widget = advantage_widget([1.0, 0.0, 0.0, 0.0])
    controls, image, _style = widget.children
    *sliders, use_std, std, eps, readout = controls.children
    assert readout.value == "<code>A = [+1.500, -0.500, -0.500, -0.500]</code>"
    first_png = image.value
    assert widget.static_png == first_png  # the static image shows the starting state
    use_std.value = False  # mean-centring only
    assert readout.value == "<code>A = [+0.750, -0.250, -0.250, -0.250]</code>"
    sliders[1].value = 1.0
    assert readout.value == "<code>A = [+0.500, +0.500, -0.500, -0.500]</code>"
    assert image.value != first_png and image.value[:4] == b"\x89PNG"
    # the layout: the controls keep a fixed column wider than their sliders, the figure wraps below when too narrow
    assert widget.layout.flex_flow == "row wrap" and controls.layout.min_width == "360px"
    assert repr(widget) == WIDGET_NOTE  # a renderer without the widget shows this, not the widget tree
    assert all(c.layout.width == "340px" for c in (*sliders, use_std, std, eps)) and image.layout.max_width == "100%"
    with pytest.raises(ValueError, match="len\\(rewards\\)=1"):
        advantage_widget([1.0])


def test_aggregation_bars_show_the_weights():
    mask = torch.arange(8)[None, :] < torch.tensor([2, 8])[:, None]
    fig = aggregation_bars(mask, max_completion_length=8, loss_types=("grpo", "dr_grpo"))
    per_token, total = fig.axes
    assert _bar_heights(per_token) == pytest.approx([1 / 4, 1 / 16, 1 / 16, 1 / 16])  # grpo bars, then dr_grpo
    assert _bar_heights(total) == pytest.approx([0.5, 0.5, 2 / 16, 8 / 16])


def test_credit_modes_figure_one_panel_per_mode():
    tokens = ["12", " +", " 5", "\n", "#### 17"]
    fig = credit_modes_figure(tokens, {"a": [0.0] * 5, "b": [-1.0, 0, 0, 0, 0.5]}, error_mask=[0, 1, 0, 0, 0])
    assert [ax.get_title(loc="left") for ax in fig.axes if ax.get_title(loc="left")] == ["a", "b"]
    four = {m: [0.0, -1.0, 0, 0, 0.5] for m in "abcd"}  # four modes: a 2 x 2 grid, as tall as two stacked panels
    grid = credit_modes_figure(tokens, four, error_mask=[0, 1, 0, 0, 0])
    panels = [ax for ax in grid.axes if ax.get_title(loc="left")]
    corners = [(round(ax.get_position().x0, 2), round(ax.get_position().y0, 2)) for ax in panels]
    assert len({x for x, _ in corners}) == 2 == len({y for _, y in corners})
    height = fig.get_size_inches()[1]
    assert grid.get_size_inches()[1] == pytest.approx(height)
    assert credit_modes_figure(tokens, four, ncols=1).get_size_inches()[1] == pytest.approx(2 * height)
    with pytest.raises(ValueError, match="ncols=5 is out of range"):
        credit_modes_figure(tokens, four, ncols=5)
    with pytest.raises(ValueError, match="values_by_mode=\\{\\} is empty"):
        credit_modes_figure(tokens, {})


def test_surrogate_curves_are_flat_exactly_where_the_clip_holds():
    from calgrpo_lib.advantage_plots import surrogate_curves

    fig, curves = surrogate_curves(epsilon=0.2, epsilon_high=0.28)
    ratio = curves["ratio"]
    for sign, outside in ((1, lambda r: r > 1.28 + 1e-9), (-1, lambda r: r < 0.8 - 1e-9)):
        obj, clipped = curves[sign]["objective"], curves[sign]["clipped"]
        assert clipped == [outside(r) for r in ratio]
        flat = {round(o, 9) for o, c in zip(obj, clipped) if c}
        assert flat == {round(sign * (1.28 if sign > 0 else 0.8), 9)}  # the objective stops moving there
        assert all(abs(o - sign * r) < 1e-12 for o, r, c in zip(obj, ratio, clipped) if not c and
                   (sign > 0 or r >= 0.8))
    assert len(fig.axes) == 2
    with pytest.raises(ValueError, match="epsilon=0.0"):
        surrogate_curves(epsilon=0.0)
