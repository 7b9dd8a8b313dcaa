"""Pictures of a response's tokens for the notebooks: per-token credit as an HTML or a matplotlib heat map.

Credit is drawn on one diverging colour scale centred on 0 (red negative, white 0, blue positive), the oracle's
error span outlined in red: :func:`token_heatmap` (HTML, hover a token for its value; GitHub does not render it in
stored notebooks) and :func:`token_heatmap_figure` (the same as a figure) for one response,
:func:`credit_modes_figure` for one response under several credit modes, :func:`token_matrix_figure` for a batch.
Figures are matplotlib ``Figure`` objects built without pyplot: a notebook cell ending with one shows it once.

The helpers every picture module uses to check its inputs (:func:`as_list`, :func:`finite_numbers`) and to show a
figure as an image (:func:`figure_png`) live here too. A group's advantages are drawn by
:mod:`calgrpo_lib.advantage_plots`, training and experiment curves by :mod:`calgrpo_lib.curves`.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import Any

from .validation import check_choice, check_float, check_int, check_type
from .widget_boxes import noted_box

__all__ = ["token_heatmap", "token_heatmap_html", "token_heatmap_figure", "token_matrix_figure", "credit_modes_figure",
           "credit_browser", "credit_color", "text_color", "display_token",
           "as_list", "finite_numbers", "figure_png"]

_NEG_RGB = (202, 0, 32)  # end of the diverging scale for value = -vmax
_POS_RGB = (5, 113, 176)  # end of the diverging scale for value = +vmax
_ERROR_OUTLINE = "#7a0010"  # dark red: stays visible on a red (negative) background


# ------------------------------------------------------------------------------------------ inputs, images

def as_list(name: str, values: Any) -> list:
    """``values`` (a sequence, a 1-D tensor or an array; ``None`` for none) as a list; else a ``TypeError`` naming
    ``name``."""
    if values is None:
        return []
    if hasattr(values, "tolist"):  # torch tensor or numpy array
        values = values.tolist()
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise TypeError(f"{name} has type {type(values).__name__}; allowed: a sequence, a 1-D tensor or an array")
    return list(values)


def finite_numbers(name: str, values: Any) -> list[float]:
    """:func:`as_list` of finite numbers, as floats; else a ``ValueError`` naming the first bad entry."""
    vals = as_list(name, values)
    for i, v in enumerate(vals):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"{name}[{i}]={v!r} is not a finite number; allowed: finite numbers")
    return [float(v) for v in vals]


def figure_png(fig: Any) -> bytes:
    """The PNG bytes of a matplotlib figure (80 dpi): what an ``ipywidgets.Image`` or a redrawn display shows."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------- token heat map

def display_token(token: str) -> str:
    """Make whitespace visible: spaces become ``·``, newlines ``↵``, tabs ``→``; an empty token becomes ``∅``."""
    check_type("token", token, str)
    if token == "":
        return "∅"
    return token.replace(" ", "·").replace("\n", "↵").replace("\t", "→")


def credit_color(value: float | None, vmax: float) -> tuple[int, int, int]:
    """RGB of ``value`` on a white-centred diverging scale: ``-vmax`` red, ``0`` white, ``+vmax`` blue.

    ``None`` or NaN (no value, e.g. padding) is light grey; values beyond ``±vmax`` are clipped.
    """
    check_float("vmax", vmax, 0.0, None, low_open=True)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return (230, 230, 230)
    t = max(-1.0, min(1.0, float(value) / vmax))
    end = _NEG_RGB if t < 0 else _POS_RGB
    a = abs(t)
    return tuple(round(255 + (c - 255) * a) for c in end)  # type: ignore[return-value]


def text_color(rgb: tuple[int, int, int]) -> str:
    """``"#ffffff"`` on a dark background (relative luminance ``0.299 r + 0.587 g + 0.114 b`` below 140 of 255),
    else ``"#111111"``: token text stays readable on every colour of the scale."""
    r, g, b = rgb
    return "#ffffff" if 0.299 * r + 0.587 * g + 0.114 * b < 140 else "#111111"


def _checked_inputs(tokens: Any, values: Any, error_mask: Any) -> tuple[list[str], list, list[bool]]:
    toks = as_list("tokens", tokens)
    for i, t in enumerate(toks):
        if not isinstance(t, str):
            raise TypeError(f"tokens[{i}]={t!r} has type {type(t).__name__}; allowed: str")
    vals = as_list("values", values) if values is not None else [None] * len(toks)
    mask = [bool(m) for m in as_list("error_mask", error_mask)] if error_mask is not None else [False] * len(toks)
    for name, seq in (("values", vals), ("error_mask", mask)):
        if len(seq) != len(toks):
            raise ValueError(f"len({name})={len(seq)} differs from len(tokens)={len(toks)}; allowed: equal lengths")
    for i, v in enumerate(vals):
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise TypeError(f"values[{i}]={v!r} has type {type(v).__name__}; allowed: a number or None")
    return toks, vals, mask


def _auto_vmax(vals: list, vmax: float | None) -> float:
    if vmax is not None:
        check_float("vmax", vmax, 0.0, None, low_open=True)
        return float(vmax)
    finite = [abs(float(v)) for v in vals if v is not None and math.isfinite(float(v))]
    return max(finite, default=0.0) or 1.0


def _legend_html(vmax: float, has_error: bool) -> str:
    swatch = "display:inline-block;width:1.2em;height:0.9em;vertical-align:middle;margin:0 3px 0 9px;"
    items = [(f"rgb{credit_color(-vmax, vmax)}", f"-{vmax:.3g}"), ("rgb(255, 255, 255)", "0"),
             (f"rgb{credit_color(vmax, vmax)}", f"+{vmax:.3g}")]
    parts = [f'<span style="{swatch}background:{c};border:1px solid #999"></span>{label}' for c, label in items]
    if has_error:
        parts.append(f'<span style="{swatch}border:2px solid {_ERROR_OUTLINE}"></span>error span')
    return '<div style="font-size:0.8em;color:#444;margin-top:4px">' + "".join(parts) + "</div>"


def token_heatmap_html(tokens: Sequence[str], values: Sequence[float | None] | Any = None, *,
                       error_mask: Sequence[bool] | Any = None, vmax: float | None = None,
                       title: str | None = None, show_whitespace: bool = True, legend: bool = True) -> str:
    """The HTML string drawn by :func:`token_heatmap` (see there); useful to save a page or to test."""
    toks, vals, mask = _checked_inputs(tokens, values, error_mask)
    scale = _auto_vmax(vals, vmax)
    spans = []
    for i, (tok, val, err) in enumerate(zip(toks, vals, mask)):
        text = display_token(tok) if show_whitespace else tok
        outline = f"outline:2px solid {_ERROR_OUTLINE};outline-offset:-1px;" if err else ""
        tip = f"#{i} {tok!r}" + ("" if val is None else f" value={float(val):.4g}") + (" [error span]" if err else "")
        rgb = credit_color(val, scale)
        style = (f"background:rgb{rgb};color:{text_color(rgb)};{outline}padding:1px 1px;margin:1px 1px;"
                 "border-radius:2px;display:inline-block;white-space:pre")
        spans.append(f'<span class="calgrpo-token{" calgrpo-error" if err else ""}" title="{html.escape(tip)}" '
                     f'style="{style}">{html.escape(text)}</span>')
        if tok.endswith("\n"):
            spans.append("<br>")
    head = f'<div style="font-weight:bold;margin-bottom:3px">{html.escape(title)}</div>' if title else ""
    body = '<div style="font-family:monospace;line-height:1.9;color:#111">' + "".join(spans) + "</div>"
    foot = _legend_html(scale, any(mask)) if legend else ""
    return f'<div class="calgrpo-heatmap">{head}{body}{foot}</div>'


def token_heatmap(tokens: Sequence[str], values: Sequence[float | None] | Any = None, *,
                  error_mask: Sequence[bool] | Any = None, vmax: float | None = None,
                  title: str | None = None, show_whitespace: bool = True, legend: bool = True):
    """Show a response as coloured tokens: credit as background, the error span as a red outline.

    - ``tokens``: the token strings, one per position (e.g. ``text[s:e]`` for each offset, or
      ``tokenizer.convert_ids_to_tokens``).
    - ``values``: one number per token (advantage, reward, credit), ``None``/NaN for "no value" (grey); a 1-D
      tensor or array works. ``None`` for all grey.
    - ``error_mask``: one bool per token, True inside the error span (outlined in red).
    - ``vmax``: value that gets the full colour; default: the largest ``|value|``. The scale is centred on 0.
    - ``show_whitespace``: draw spaces as ``·`` and newlines as ``↵`` so token boundaries stay visible.

    Returns an ``IPython.display.HTML`` (its ``.data`` is the HTML string); end a notebook cell with it to show it.
    """
    from IPython.display import HTML

    return HTML(token_heatmap_html(tokens, values, error_mask=error_mask, vmax=vmax, title=title,
                                   show_whitespace=show_whitespace, legend=legend))


def _rows_of_tokens(toks: list[str], line_chars: int) -> list[list[int]]:
    rows: list[list[int]] = [[]]
    width = 0
    for i, tok in enumerate(toks):
        w = max(1, len(display_token(tok)))
        if rows[-1] and width + w > line_chars:
            rows.append([])
            width = 0
        rows[-1].append(i)
        width += w
        if tok.endswith("\n"):
            rows.append([])
            width = 0
    return [r for r in rows if r]


def token_heatmap_figure(tokens: Sequence[str], values: Sequence[float | None] | Any = None, *,
                         error_mask: Sequence[bool] | Any = None, vmax: float | None = None,
                         title: str | None = None, line_chars: int = 60, ax: Any = None):
    """The heat map of :func:`token_heatmap` as a matplotlib figure, for static renders (GitHub, PDF).

    Tokens are laid out left to right in rows of about ``line_chars`` characters (a new row after a newline token);
    each token is a box coloured by its value (red negative, blue positive) with a thick red edge inside the error
    span, and a colour bar shows the scale. Returns the ``Figure``; pass ``ax`` to draw into an existing axes.
    """
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    check_int("line_chars", line_chars, 10, None)
    toks, vals, mask = _checked_inputs(tokens, values, error_mask)
    scale = _auto_vmax(vals, vmax)
    rows = _rows_of_tokens(toks, line_chars)
    if ax is None:  # a bare Figure, not pyplot: a notebook shows it once, as the cell's value
        fig = Figure(figsize=(min(14.0, 0.13 * line_chars + 1.5), 0.42 * max(1, len(rows)) + 0.9))
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    for r, row in enumerate(rows):
        x = 0.0
        for i in row:
            label = display_token(toks[i])
            w = max(1, len(label))
            rgb = credit_color(vals[i], scale)
            face = tuple(c / 255 for c in rgb)
            edge, width = (_ERROR_OUTLINE, 2.2) if mask[i] else ("#bbbbbb", 0.5)
            ax.add_patch(Rectangle((x + 0.05, -r - 0.4), w - 0.1, 0.8, facecolor=face, edgecolor=edge, linewidth=width))
            ax.text(x + w / 2, -r, label, ha="center", va="center", family="monospace", fontsize=9,
                    color=text_color(rgb))
            x += w
    ax.set_xlim(-0.2, line_chars + 0.2)
    ax.set_ylim(-len(rows) + 0.45, 0.55)
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=10, loc="left")
    sm = ScalarMappable(norm=Normalize(-scale, scale), cmap=_credit_cmap())
    fig.colorbar(sm, ax=ax, orientation="vertical", fraction=0.03, pad=0.01, label="value")
    return fig


def _credit_cmap():
    from matplotlib.colors import LinearSegmentedColormap

    cmap = LinearSegmentedColormap.from_list(
        "calgrpo_credit", [tuple(c / 255 for c in rgb) for rgb in (_NEG_RGB, (255, 255, 255), _POS_RGB)])
    return cmap.with_extremes(bad=(230 / 255, 230 / 255, 230 / 255))


def _matrix(name: str, value: Any) -> Any:
    import numpy as np

    arr = np.asarray(value.detach().cpu() if hasattr(value, "detach") else value, dtype=float)
    if arr.ndim != 2:
        raise ValueError(f"{name} has shape {arr.shape}; allowed: a 2-D (responses, tokens) array or tensor")
    return arr


def token_matrix_figure(values_by_name: dict[str, Any], *, response_mask: Any = None, error_mask: Any = None,
                        vmax: float | None = None, ncols: int = 2, row_labels: Sequence[str] | None = None):
    """Per-token values of a whole batch, one panel per entry of ``values_by_name`` (e.g. one per credit mode).

    Each value is an ``(N, T)`` tensor or array (responses x token positions), drawn on the diverging scale of
    :func:`token_heatmap` (red negative, blue positive, shared ``vmax``); positions where ``response_mask`` is False
    (padding) are grey, and tokens where ``error_mask`` is True get a black dot. Returns a matplotlib ``Figure``.
    """
    import numpy as np
    from matplotlib.figure import Figure

    check_type("values_by_name", values_by_name, dict)
    if not values_by_name:
        raise ValueError("values_by_name={} is empty; allowed: a dict of name -> (N, T) values")
    check_int("ncols", ncols, 1, None)
    mats = {k: _matrix(f"values_by_name[{k!r}]", v) for k, v in values_by_name.items()}
    shape = next(iter(mats.values())).shape
    masks = {n: None if m is None else _matrix(n, m).astype(bool)
             for n, m in (("response_mask", response_mask), ("error_mask", error_mask))}
    for name, arr in [*mats.items(), *((n, m) for n, m in masks.items() if m is not None)]:
        if arr.shape != shape:
            raise ValueError(f"{name} has shape {arr.shape}; allowed: the shape of the first value, {shape}")
    if masks["response_mask"] is not None:
        mats = {k: np.where(masks["response_mask"], v, np.nan) for k, v in mats.items()}
    scale = _auto_vmax([float(x) for v in mats.values() for x in v[np.isfinite(v)].ravel()], vmax)
    nrows = -(-len(mats) // ncols)
    fig = Figure(figsize=(5.2 * min(ncols, len(mats)), 0.22 * shape[0] * nrows + 1.2), layout="constrained")
    axes = fig.subplots(nrows, min(ncols, len(mats)), squeeze=False).ravel()
    for ax, (name, mat) in zip(axes, mats.items()):
        im = ax.imshow(mat, cmap=_credit_cmap(), vmin=-scale, vmax=scale, aspect="auto", interpolation="nearest")
        if masks["error_mask"] is not None:
            rows, cols = np.nonzero(masks["error_mask"])
            ax.scatter(cols, rows, s=4, c="black", marker="o")
        ax.set_title(name, fontsize=10, loc="left")
        ax.set_xlabel("token position")
        ax.set_yticks(range(shape[0]), list(row_labels) if row_labels is not None else range(shape[0]), fontsize=7)
    for ax in axes[len(mats):]:
        ax.axis("off")
    fig.colorbar(im, ax=axes[: len(mats)].tolist(), fraction=0.03, pad=0.01, label="token advantage")
    return fig


def credit_browser(rows: Sequence[Sequence[str]], credit: dict[str, Any], *, response_mask: Any,
                   error_mask: Any = None, labels: Sequence[str] | None = None, row: int = 0, mode: str | None = None):
    """Browse a batch's token credit: a dropdown of responses and one of credit modes over the
    :func:`token_heatmap_html` of the picked response in the picked mode, on one colour scale for all.

    ``rows``: each response's token strings (its real tokens only, ``response_mask[i].sum()`` of them); ``credit``:
    mode -> ``(N, T)`` token advantages; ``response_mask`` / ``error_mask``: ``(N, T)`` bool; ``labels``: one per
    response (default ``response i``). Returns an ``ipywidgets.VBox`` (:func:`noted_box`, shown with a static image
    of its starting state) whose ``children`` begin ``(controls, heatmap)``;
    ``controls.children`` are the two dropdowns and ``heatmap`` an ``ipywidgets.HTML`` (its ``value`` is the HTML).
    """
    import ipywidgets as widgets

    check_type("credit", credit, dict)
    if not credit:
        raise ValueError("credit={} is empty; allowed: a dict of mode -> (N, T) token advantages")
    names = [f"response {i}" for i in range(len(rows))] if labels is None else [str(x) for x in labels]
    if len(names) != len(rows) or any(tuple(v.shape)[0] != len(rows) for v in credit.values()):
        shapes = [tuple(v.shape) for v in credit.values()]
        raise ValueError(f"{len(rows)} rows, {len(names)} labels, credit shapes {shapes}; allowed: one label and one "
                         "credit row per response")
    check_int("row", row, 0, len(rows) - 1)
    mode = next(iter(credit)) if mode is None else mode
    check_choice("mode", mode, credit)
    scale = _auto_vmax([float(v) for adv in credit.values() for v in adv[response_mask].flatten().tolist()], None)
    pick = widgets.Dropdown(options=[(name, i) for i, name in enumerate(names)], value=row, description="response")
    chosen = widgets.Dropdown(options=list(credit), value=mode, description="credit")
    heatmap = widgets.HTML()

    def redraw(_: Any = None) -> None:
        i, keep = pick.value, response_mask[pick.value]
        errors = None if error_mask is None else error_mask[i][keep]
        heatmap.value = token_heatmap_html(list(rows[i]), credit[chosen.value][i][keep], error_mask=errors,
                                           vmax=scale, title=f"{names[i]}, {chosen.value}")

    pick.observe(redraw, names="value")
    chosen.observe(redraw, names="value")
    redraw()
    keep = response_mask[row]
    start = token_heatmap_figure(list(rows[row]), credit[mode][row][keep], vmax=scale, title=f"{names[row]}, {mode}",
                                 error_mask=None if error_mask is None else error_mask[row][keep])
    return noted_box("VBox", [widgets.HBox([pick, chosen], layout=widgets.Layout(flex_flow="row wrap")), heatmap],
                     static_png=figure_png(start))


def credit_modes_figure(tokens: Sequence[str], values_by_mode: dict[str, Any], *, error_mask: Any = None,
                        vmax: float | None = None, line_chars: int = 30, ncols: int | None = None):
    """One :func:`token_heatmap_figure` per credit mode, on one shared colour scale, in a grid of ``ncols``
    columns (default: one column for up to three modes, else two, so that four or six modes fit a screen).

    ``values_by_mode`` maps a mode name to the per-token values of the same response (``len(tokens)`` each).
    Returns a matplotlib ``Figure``.
    """
    from matplotlib.figure import Figure

    check_type("values_by_mode", values_by_mode, dict)
    if not values_by_mode:
        raise ValueError("values_by_mode={} is empty; allowed: a dict of mode -> per-token values")
    n = len(values_by_mode)
    if ncols is None:
        ncols = 1 if n <= 3 else 2
    check_int("ncols", ncols, 1, n)
    nrows = math.ceil(n / ncols)
    all_values = [v for vals in values_by_mode.values() for v in finite_numbers("values", vals)]
    scale = _auto_vmax(all_values, vmax)
    lines = 1 + sum(1 for t in tokens if str(t).endswith("\n")) + len("".join(map(str, tokens))) // line_chars
    fig = Figure(figsize=(ncols * (0.14 * line_chars + 2.0), nrows * (0.42 * lines + 0.5)), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, (mode, vals) in zip(axes, values_by_mode.items()):
        token_heatmap_figure(tokens, vals, error_mask=error_mask, vmax=scale, title=mode, line_chars=line_chars,
                             ax=ax)
    for ax in axes[n:]:
        ax.axis("off")
    return fig
