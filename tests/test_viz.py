"""Tests of the token heat map (calgrpo_lib.viz)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

from calgrpo_lib.viz import (  # noqa: E402
    credit_browser,
    credit_color,
    display_token,
    figure_png,
    text_color,
    token_heatmap,
    token_heatmap_figure,
    token_heatmap_html,
    token_matrix_figure,
)
from calgrpo_lib.widget_boxes import STATIC_CLASS, WIDGET_NOTE, noted_box  # noqa: E402

TOKENS = ["12", " +", " 5", " =", " 18", "\n", "<eos>"]
VALUES = [0.0, 0.0, 0.0, -0.5, -1.0, None, float("nan")]
ERROR = [False, False, False, True, True, False, False]


def test_heatmap_has_one_span_per_token_and_outlines_the_error_span() -> None:
    html = token_heatmap_html(TOKENS, VALUES, error_mask=ERROR)
    assert html.count('class="calgrpo-token') == len(TOKENS)
    assert html.count("calgrpo-error") == 2
    assert "&lt;eos&gt;" in html and "<eos>" not in html  # token text is escaped
    assert "·18" in html and "↵" in html  # whitespace made visible
    assert "<br>" in html  # a newline token ends the line


def test_heatmap_returns_displayable_html() -> None:
    obj = token_heatmap(TOKENS, torch.tensor([0.1] * len(TOKENS)), title="t")
    assert obj.data == token_heatmap_html(TOKENS, [0.1] * len(TOKENS), title="t")
    assert obj._repr_html_().startswith('<div class="calgrpo-heatmap">')


def test_diverging_scale_is_centred_on_zero() -> None:
    assert credit_color(0.0, 1.0) == (255, 255, 255)
    red, blue = credit_color(-1.0, 1.0), credit_color(1.0, 1.0)
    assert red[0] > red[2] and blue[2] > blue[0]
    assert credit_color(-5.0, 1.0) == red  # clipped
    assert credit_color(None, 1.0) == credit_color(float("nan"), 1.0) == (230, 230, 230)
    with pytest.raises(ValueError, match="vmax"):
        credit_color(0.1, 0.0)


def test_display_token_shows_whitespace() -> None:
    assert display_token(" a\n\t") == "·a↵→" and display_token("") == "∅"


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"values": [1.0]}, ValueError, "len\\(values\\)"),
    ({"error_mask": [True]}, ValueError, "len\\(error_mask\\)"),
    ({"values": ["a"] * len(TOKENS)}, TypeError, "values\\[0\\]"),
    ({"values": 3}, TypeError, "values"),
    ({"vmax": -1.0}, ValueError, "vmax"),
])
def test_heatmap_rejects_bad_input(kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        token_heatmap_html(TOKENS, **kwargs)


def test_heatmap_rejects_non_string_tokens() -> None:
    with pytest.raises(TypeError, match="tokens\\[1\\]"):
        token_heatmap_html(["a", 3], [0.0, 0.0])


def test_figure_draws_one_box_per_token_with_red_edges_on_the_span() -> None:
    fig = token_heatmap_figure(TOKENS, VALUES, error_mask=ERROR, title="t", line_chars=12)
    ax = fig.axes[0]
    assert len(ax.patches) == len(TOKENS) and len(ax.texts) == len(TOKENS)
    thick = [p for p in ax.patches if p.get_linewidth() > 1]
    assert len(thick) == 2


def test_matrix_figure_has_one_panel_per_mode_and_greys_padding() -> None:
    values = torch.tensor([[0.5, -1.0, 0.0], [0.2, 0.2, 0.2]])
    resp = torch.tensor([[True, True, False], [True, True, True]])
    err = torch.tensor([[False, True, False], [False, False, False]])
    fig = token_matrix_figure({"sequence": values, "cal": -values}, response_mask=resp, error_mask=err)
    panels = [ax for ax in fig.axes if ax.get_title(loc="left") in ("sequence", "cal")]
    assert len(panels) == 2
    shown = panels[0].images[0].get_array()
    assert shown.mask[0, 2] and not shown.mask[0, 1]  # padding is masked out (drawn grey)
    assert len(panels[0].collections[0].get_offsets()) == 1  # one error dot
    with pytest.raises(ValueError, match="response_mask"):
        token_matrix_figure({"a": values}, response_mask=torch.ones(3, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="empty"):
        token_matrix_figure({})


def test_token_text_is_light_on_dark_colours_and_dark_on_light_ones() -> None:
    assert text_color(credit_color(-1.0, 1.0)) == text_color(credit_color(1.0, 1.0)) == "#ffffff"  # full red, blue
    assert text_color(credit_color(0.0, 1.0)) == text_color(credit_color(None, 1.0)) == "#111111"  # white, grey
    html = token_heatmap_html(TOKENS, VALUES, error_mask=ERROR)
    assert html.count("color:#ffffff") == 1 and html.count("color:#111111") == len(TOKENS) - 1  # only -1.0 is dark
    fig = token_heatmap_figure(TOKENS, VALUES, error_mask=ERROR)
    assert [t.get_color() for t in fig.axes[0].texts].count("#ffffff") == 1


def test_credit_browser_redraws_the_picked_response_and_mode() -> None:
    mask = torch.tensor([[True, True, False], [True, True, True]])  # (2, 3)
    errors = torch.tensor([[False, False, False], [False, True, False]])
    credit = {"sequence": torch.tensor([[0.5, 0.5, 0.0], [-0.5, -0.5, -0.5]]),
              "cal_hybrid": torch.tensor([[0.5, 0.5, 0.0], [-0.5, -1.0, -0.5]])}
    browser = credit_browser([["a", "b"], ["x", "y", "z"]], credit, response_mask=mask, error_mask=errors,
                             labels=["right", "wrong"], row=1, mode="cal_hybrid")
    assert repr(browser) == WIDGET_NOTE and browser._repr_mimebundle_()["text/plain"] == WIDGET_NOTE  # no widget tree
    (pick, mode), heatmap = browser.children[0].children, browser.children[1]
    first = heatmap.value
    assert "wrong, cal_hybrid" in first and first.count("calgrpo-error") == 1 and first.count("calgrpo-token") == 3
    mode.value = "sequence"
    assert heatmap.value != first and "wrong, sequence" in heatmap.value and "value=-1" not in heatmap.value
    pick.value = 0
    assert "right, sequence" in heatmap.value and heatmap.value.count("calgrpo-token") == 2  # padding left out
    # its static image is the starting state (response 1 in cal_hybrid), not what the controls show now
    again = credit_browser([["a", "b"], ["x", "y", "z"]], credit, response_mask=mask, error_mask=errors,
                           labels=["right", "wrong"], row=0, mode="sequence")
    assert browser.static_png[:4] == b"\x89PNG" and again.static_png != browser.static_png
    with pytest.raises(ValueError, match="mode='prefix' is not allowed; allowed: 'sequence', 'cal_hybrid'"):
        credit_browser([["a", "b"], ["x", "y", "z"]], credit, response_mask=mask, mode="prefix")


def test_a_noted_box_displays_its_static_image_then_itself(monkeypatch) -> None:
    import base64

    import ipywidgets as widgets

    shown: list[dict] = []
    monkeypatch.setattr("IPython.display.display", lambda *objs, raw=False: shown.extend(objs) if raw else None)
    png = figure_png(token_heatmap_figure(TOKENS, VALUES, error_mask=ERROR))
    box = noted_box("VBox", [widgets.Label("x")], static_png=png)
    box._ipython_display_()  # what IPython calls to display it
    static, live = shown
    assert base64.b64decode(static["image/png"]) == png and set(static) == {"image/png", "text/plain"}
    assert live["application/vnd.jupyter.widget-view+json"]["model_id"] == box.model_id
    assert live["text/plain"] == WIDGET_NOTE
    # the hiding rule rides in a hidden last child, and targets this box's class
    style = box.children[-1]
    assert STATIC_CLASS in box._dom_classes and f".{STATIC_CLASS}" in style.value and style.layout.display == "none"
    shown.clear()
    plain = noted_box("HBox", [widgets.Label("y")])
    plain._ipython_display_()
    assert len(shown) == 1 and len(plain.children) == 1 and STATIC_CLASS not in plain._dom_classes
    with pytest.raises(ValueError, match="static_png is str 'x.png'; allowed: the bytes of a PNG image"):
        noted_box("HBox", [], static_png="x.png")
