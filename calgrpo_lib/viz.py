"""Pictures for notebooks: per-token heat maps (and, later, advantage plots).

This module is shared: each section is self-contained. Keep functions of other sections when editing one.

Token heat map
--------------
``token_heatmap(tokens, values, error_mask=...)`` renders a response token by token as coloured HTML spans: the
background is a diverging colour scale centred on 0 (red = negative credit, blue = positive, white = 0), tokens
inside the oracle's error span get a red outline, and hovering a token shows its index and value. It returns an
``IPython.display.HTML`` object, so a notebook cell that ends with the call shows it. GitHub does not render such
HTML in stored notebooks, so ``token_heatmap_figure`` draws the same picture with matplotlib for static renders.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import Any

from .validation import check_choice, check_float, check_int, check_type

__all__ = ["token_heatmap", "token_heatmap_html", "token_heatmap_figure", "token_matrix_figure", "credit_color",
           "display_token", "format_table", "advantage_bars", "advantage_widget", "aggregation_bars",
           "credit_modes_figure"]

_NEG_RGB = (202, 0, 32)  # end of the diverging scale for value = -vmax
_POS_RGB = (5, 113, 176)  # end of the diverging scale for value = +vmax
_ERROR_OUTLINE = "#7a0010"  # dark red: stays visible on a red (negative) background


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


def _as_list(name: str, values: Any) -> list:
    if values is None:
        return []
    if hasattr(values, "tolist"):  # torch tensor or numpy array
        values = values.tolist()
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise TypeError(f"{name} has type {type(values).__name__}; allowed: a sequence, a 1-D tensor or an array")
    return list(values)


def _checked_inputs(tokens: Any, values: Any, error_mask: Any) -> tuple[list[str], list, list[bool]]:
    toks = _as_list("tokens", tokens)
    for i, t in enumerate(toks):
        if not isinstance(t, str):
            raise TypeError(f"tokens[{i}]={t!r} has type {type(t).__name__}; allowed: str")
    vals = _as_list("values", values) if values is not None else [None] * len(toks)
    mask = [bool(m) for m in _as_list("error_mask", error_mask)] if error_mask is not None else [False] * len(toks)
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
        style = (f"background:rgb{credit_color(val, scale)};{outline}padding:1px 1px;margin:1px 1px;"
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
            face = tuple(c / 255 for c in credit_color(vals[i], scale))
            edge, width = (_ERROR_OUTLINE, 2.2) if mask[i] else ("#bbbbbb", 0.5)
            ax.add_patch(Rectangle((x + 0.05, -r - 0.4), w - 0.1, 0.8, facecolor=face, edgecolor=edge, linewidth=width))
            ax.text(x + w / 2, -r, label, ha="center", va="center", family="monospace", fontsize=9)
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


# ------------------------------------------------------------------------- advantages, aggregation (notebook 01)
# Functions of this section: format_table, advantage_bars, advantage_widget, aggregation_bars, credit_modes_figure.
# They build matplotlib ``Figure`` objects directly (no pyplot state): a notebook cell ending with one shows it once.

def _numbers(name: str, values: Any) -> list[float]:
    vals = _as_list(name, values)
    for i, v in enumerate(vals):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"{name}[{i}]={v!r} is not a finite number; allowed: finite numbers")
    return [float(v) for v in vals]


def _cell(value: Any, digits: int) -> str:
    if isinstance(value, float):
        text = f"{value:+.{digits}f}"
        return text.replace("-", "+", 1) if float(text) == 0 else text  # no "-0.000"
    return str(value)


def format_table(columns: dict[str, Any], *, index: Sequence[str] | None = None, index_name: str = "",
                 digits: int = 3) -> str:
    """A plain-text table: one column per entry of ``columns`` (lists or 1-D tensors of equal length).

    Floats are printed with a sign and ``digits`` decimals (``-0`` shows as ``+0``), other values with ``str``;
    ``index`` labels the rows (default ``0, 1, ...``). Deterministic, so a notebook can check its printed output.
    """
    check_type("columns", columns, dict)
    check_int("digits", digits, 0, 12)
    cols = {str(k): _as_list(f"columns[{k!r}]", v) for k, v in columns.items()}
    lengths = {k: len(v) for k, v in cols.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"column lengths {lengths} differ; allowed: equal lengths")
    n = next(iter(lengths.values()), 0)
    labels = [str(i) for i in range(n)] if index is None else [str(i) for i in _as_list("index", index)]
    if len(labels) != n:
        raise ValueError(f"len(index)={len(labels)} differs from the column length {n}; allowed: equal lengths")
    table = [[index_name, *cols]] + [[labels[r], *(_cell(v[r], digits) for v in cols.values())] for r in range(n)]
    widths = [max(len(row[c]) for row in table) for c in range(len(table[0]))]
    lines = ["  ".join(cell.rjust(w) if c else cell.ljust(w) for c, (cell, w) in enumerate(zip(row, widths)))
             for row in table]
    return "\n".join(line.rstrip() for line in lines)


def _series(advantages: Any, size: int) -> dict[str, list[float]]:
    named = advantages if isinstance(advantages, dict) else {"advantage": advantages}
    series = {str(k): _numbers(f"advantages[{k!r}]", v) for k, v in named.items()}
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

    r = _numbers("rewards", rewards)
    series = _series(advantages, len(r))
    names = [f"#{i}" for i in range(len(r))] if labels is None else [str(x) for x in _as_list("labels", labels)]
    fig = Figure(figsize=(9.0, 3.0), layout="constrained")
    ax_r, ax_a = fig.subplots(1, 2)
    x = list(range(len(r)))
    ax_r.bar(x, r, color="#888888")
    ax_r.axhline(sum(r) / len(r), color="k", linestyle="--", linewidth=1, label="group mean")
    ax_r.set_title("rewards $r_i$", fontsize=10)
    ax_r.legend(fontsize=8, loc="best")
    width = 0.8 / len(series)
    palette = ["#0571b0", "#e66101", "#5e3c99", "#1a9641"]
    for k, (name, values) in enumerate(series.items()):
        xs = [i - 0.4 + width * (k + 0.5) for i in x]
        colors = ([tuple(c / 255 for c in (_POS_RGB if v >= 0 else _NEG_RGB)) for v in values] if len(series) == 1
                  else palette[k % len(palette)])
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


def _png(fig: Any) -> bytes:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    return buf.getvalue()


def advantage_widget(rewards: Sequence[float] = (1.0, 0.0, 0.0, 0.0), *, eps: float = 1e-4):
    """Sliders for each group member's reward, a std on/off switch, the std convention and ``eps``.

    Every change recomputes :func:`calgrpo_lib.advantages.group_advantages` and redraws :func:`advantage_bars`
    (as a PNG in an ``ipywidgets.Image``) and a one-line readout. Returns the widget box; its ``children`` are
    ``(controls, image)``, the controls being the sliders, the switch, the dropdown, the eps slider, the readout.
    """
    import ipywidgets as widgets
    import torch

    from .advantages import STD_CONVENTIONS, group_advantages

    start = _numbers("rewards", rewards)
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
        image.value = _png(advantage_bars(r, adv))
        readout.value = "<code>A = [" + ", ".join(f"{a:+.3f}" for a in adv.tolist()) + "]</code>"

    for control in (*sliders, use_std, std, eps_slider):
        control.observe(redraw, names="value")
    redraw()
    controls = widgets.VBox([*sliders, use_std, std, eps_slider, readout])
    return widgets.HBox([controls, image])


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
    names = [f"len {n}" for n in lengths] if labels is None else [str(x) for x in _as_list("labels", labels)]
    fig = Figure(figsize=(9.0, 3.0), layout="constrained")
    ax_tok, ax_tot = fig.subplots(1, 2)
    width = 0.8 / len(loss_types)
    palette = ["#0571b0", "#e66101", "#5e3c99", "#1a9641"]
    for k, loss_type in enumerate(loss_types):
        w = aggregation_weights(mask, loss_type, max_completion_length=max_completion_length)  # (N, T)
        per_token = (w.sum(dim=1) / mask.sum(dim=1).clamp(min=1)).tolist()
        xs = [i - 0.4 + width * (k + 0.5) for i in range(len(lengths))]
        ax_tok.bar(xs, per_token, width=width, color=palette[k % len(palette)], label=loss_type)
        ax_tot.bar(xs, w.sum(dim=1).tolist(), width=width, color=palette[k % len(palette)], label=loss_type)
    ax_tok.set_title("weight of each token", fontsize=10)
    ax_tot.set_title("total weight of the response", fontsize=10)
    for ax in (ax_tok, ax_tot):
        ax.set_xticks(range(len(lengths)), names)
        ax.legend(fontsize=8)
    return fig


def credit_modes_figure(tokens: Sequence[str], values_by_mode: dict[str, Any], *, error_mask: Any = None,
                        vmax: float | None = None, line_chars: int = 30):
    """One :func:`token_heatmap_figure` per credit mode, stacked, on one shared colour scale.

    ``values_by_mode`` maps a mode name to the per-token values of the same response (``len(tokens)`` each).
    Returns a matplotlib ``Figure``.
    """
    from matplotlib.figure import Figure

    check_type("values_by_mode", values_by_mode, dict)
    if not values_by_mode:
        raise ValueError("values_by_mode={} is empty; allowed: a dict of mode -> per-token values")
    all_values = [v for vals in values_by_mode.values() for v in _numbers("values", vals)]
    scale = _auto_vmax(all_values, vmax)
    lines = 1 + sum(1 for t in tokens if str(t).endswith("\n")) + len("".join(map(str, tokens))) // line_chars
    fig = Figure(figsize=(0.14 * line_chars + 2.0, len(values_by_mode) * (0.42 * lines + 0.5)), layout="constrained")
    for ax, (mode, vals) in zip(fig.subplots(len(values_by_mode), 1, squeeze=False)[:, 0], values_by_mode.items()):
        token_heatmap_figure(tokens, vals, error_mask=error_mask, vmax=scale, title=mode, line_chars=line_chars,
                             ax=ax)
    return fig


# ------------------------------------------------------------------------------- training curves (notebook 04)
# Functions of this section: training_curves, TrainingPlot. Records are the trainer's metrics dicts (as in
# ``metrics.jsonl``): "train" records need ``step``, ``reward_mean`` and ``accuracy``; "eval" records ``step`` and
# ``accuracy``. The trainer draws nothing; a notebook passes ``TrainingPlot()`` to ``Trainer(callbacks=[...])``.

__all__ += ["training_curves", "TrainingPlot", "TRAINING_CURVE_LABELS"]

#: label of each line :func:`training_curves` draws, by role (tests and notebooks find the lines by these)
TRAINING_CURVE_LABELS = {
    "reward": "train reward (per step)", "reward_smooth": "train reward (moving average)",
    "accuracy": "train accuracy, sampled (per step)", "accuracy_smooth": "train accuracy (moving average)",
    "eval": "held-out accuracy, greedy",
}


def _records(name: str, records: Any, keys: tuple[str, ...]) -> list[dict[str, Any]]:
    check_type(name, records, (list, tuple))
    for i, r in enumerate(records):
        check_type(f"{name}[{i}]", r, dict)
        missing = [k for k in keys if k not in r]
        if missing:
            raise ValueError(f"{name}[{i}] lacks {missing}; allowed: records with keys {list(keys)} (the trainer's "
                             f"metrics)")
    return sorted(records, key=lambda r: r["step"])


def _moving_average(values: list[float], window: int) -> list[float]:
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v - (values[i - window] if i >= window else 0.0)
        out.append(total / min(i + 1, window))
    return out


def training_curves(history: Sequence[dict[str, Any]], evals: Sequence[dict[str, Any]] | None = None, *,
                    smooth: int = 10, total_steps: int | None = None, title: str | None = None):
    """The curves of a GRPO run: train reward (left) and accuracy (right) per step, held-out accuracy at each eval.

    - ``history``: the run's "train" records (``TrainResult.history``), or all records of ``metrics.jsonl`` when
      ``evals`` is None (then split by their ``kind``);
    - ``evals``: the "eval" records (``TrainResult.evals``): greedy accuracy on the held-out problems, drawn with
      markers on the right panel (step 0 is the policy before training);
    - ``smooth``: window of the moving average drawn over the noisy per-step values (1 = none);
    - ``total_steps``: fix the x axis to ``[0, total_steps]`` (a live plot does not jump as it grows).

    Line labels are :data:`TRAINING_CURVE_LABELS`. Returns a matplotlib ``Figure``.
    """
    from matplotlib.figure import Figure

    if evals is None:
        check_type("history", history, (list, tuple))
        evals = [r for r in history if isinstance(r, dict) and r.get("kind") == "eval"]
        history = [r for r in history if not (isinstance(r, dict) and r.get("kind") == "eval")]
    train = _records("history", history, ("step", "reward_mean", "accuracy"))
    held_out = _records("evals", evals, ("step", "accuracy"))
    check_int("smooth", smooth, 1, None)
    if total_steps is not None:
        check_int("total_steps", total_steps, 1, None)
    labels = TRAINING_CURVE_LABELS
    fig = Figure(figsize=(10.0, 3.4), layout="constrained")
    ax_r, ax_a = fig.subplots(1, 2)
    steps = [r["step"] for r in train]
    for ax, key, color in ((ax_r, "reward", "#5e3c99"), (ax_a, "accuracy", "#e66101")):
        values = [float(r[key if key == "accuracy" else "reward_mean"]) for r in train]
        ax.plot(steps, values, color=color, alpha=0.35, linewidth=1, label=labels[key])
        if smooth > 1 and values:
            ax.plot(steps, _moving_average(values, smooth), color=color, linewidth=2, label=labels[f"{key}_smooth"])
    ax_a.plot([r["step"] for r in held_out], [float(r["accuracy"]) for r in held_out], color="#0571b0", marker="o",
              linewidth=2, label=labels["eval"])
    ends = held_out[:1] + held_out[1:][-1:]  # first and last evaluation: label their values
    for r, side in zip(ends, ("left", "right")):
        ax_a.annotate(f"{r['accuracy']:.1%}", (r["step"], r["accuracy"]), textcoords="offset points", xytext=(0, 7),
                      ha=side, fontsize=8, color="#0571b0")
    ax_r.set_title("reward (mean over the batch)", fontsize=10)
    ax_a.set_title("accuracy", fontsize=10)
    ax_a.set_ylim(-0.02, 1.05)
    for ax in (ax_r, ax_a):
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if total_steps is not None:
            ax.set_xlim(0, total_steps)
        if ax.get_lines():
            ax.legend(fontsize=8, loc="best")
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


class TrainingPlot:
    """A live :func:`training_curves` figure, redrawn in place while a run trains: a ``Trainer`` callback.

    ``Trainer(config, callbacks=[TrainingPlot(total_steps=config.max_steps)]).train()`` shows one figure below the
    cell and replaces it (IPython ``display_id``) every ``every`` steps and after every evaluation; the last
    evaluation (after the final step) draws the final picture. ``show=False`` only collects the records (tests).
    The records seen are in ``history`` and ``evals``; :meth:`figure` draws them.
    """

    def __init__(self, *, total_steps: int | None = None, every: int = 5, smooth: int = 10,
                 title: str | None = None, show: bool = True) -> None:
        check_int("every", every, 1, None)
        check_int("smooth", smooth, 1, None)
        if total_steps is not None:
            check_int("total_steps", total_steps, 1, None)
        check_type("show", show, bool)
        self.total_steps, self.every, self.smooth, self.title, self.show = total_steps, every, smooth, title, show
        self.history: list[dict[str, Any]] = []
        self.evals: list[dict[str, Any]] = []
        self.redraws = 0
        self._handle: Any = None

    def __call__(self, event: str, record: dict[str, Any]) -> None:
        """Take one trainer record (``event`` "step" or "eval"; others are ignored) and redraw when due."""
        check_type("record", record, dict)
        if event == "step":
            self.history.append(record)
            due = record.get("step", 0) % self.every == 0 or record.get("step") == self.total_steps
        elif event == "eval":
            self.evals.append(record)
            due = True
        else:
            return
        if due:
            self.redraw()

    def figure(self):
        """The figure of the records seen so far (a matplotlib ``Figure``)."""
        step = self.history[-1]["step"] if self.history else 0
        title = self.title or "GRPO training"
        title += f" · step {step}" + (f"/{self.total_steps}" if self.total_steps else "")
        return training_curves(self.history, self.evals, smooth=self.smooth, total_steps=self.total_steps,
                               title=title)

    def redraw(self) -> None:
        """Draw the figure now (as a PNG), replacing the previous drawing of this plot."""
        self.redraws += 1
        if not self.show:
            return
        from IPython.display import Image, display

        image = Image(data=_png(self.figure()))
        if self._handle is None:
            self._handle = display(image, display_id=True)
        else:
            self._handle.update(image)


# ---------------------------------------------------------------------- CAL vs GRPO experiment (notebook 05)
# Functions of this section: experiment_curves. ``results`` is the dict written by
# ``calgrpo_lib.experiment.run_experiment``: its "runs" hold "mode", "seed" and an "eval_curve" of
# {"step", "accuracy", "wall_time_s"} points.

__all__ += ["experiment_curves", "EXPERIMENT_COLORS"]

#: line colour of each credit mode in :func:`experiment_curves` (other modes cycle through the palette below)
EXPERIMENT_COLORS = {"sequence": "#444444", "cal_sparse": "#e66101", "cal_hybrid": "#0571b0", "prefix": "#1a9641"}
_EXTRA_COLORS = ("#5e3c99", "#ca0020", "#b8860b", "#4dac26")


def experiment_curves(results: dict[str, Any], x: str = "step", *, title: str | None = None, ax: Any = None):
    """Held-out accuracy of each credit mode over training: the mean over seeds as a line, min-max as a band.

    Points are grouped by evaluation step across a mode's seeds (equal budgets: every seed is evaluated at the
    same steps). At step ``k``, with ``acc_s(k)`` the accuracy of seed ``s``, the line is ``mean_s acc_s(k)`` and
    the band spans ``[min_s acc_s(k), max_s acc_s(k)]``. ``x="step"`` draws against ``k``; ``x="wall_time"``
    against ``mean_s wall_time_s(k)``, the seeds' mean training wall time up to step ``k`` (seconds). Returns a
    matplotlib ``Figure``; pass ``ax`` to draw into an existing axes.
    """
    from matplotlib.figure import Figure

    check_choice("x", x, ("step", "wall_time"))
    from .experiment import runs_by_mode

    by_mode = runs_by_mode(results, keys=("mode", "eval_curve"))
    if ax is None:
        fig = Figure(figsize=(7.0, 4.0), layout="constrained")
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    extra = iter(_EXTRA_COLORS * 4)
    for mode, runs in by_mode.items():
        points: dict[int, list[dict[str, Any]]] = {}
        for run in runs:
            for p in run["eval_curve"]:
                points.setdefault(int(p["step"]), []).append(p)
        steps = sorted(points)
        acc = [[float(p["accuracy"]) for p in points[k]] for k in steps]
        xs = (steps if x == "step"
              else [sum(float(p["wall_time_s"]) for p in points[k]) / len(points[k]) for k in steps])
        color = EXPERIMENT_COLORS.get(mode) or next(extra)
        ax.fill_between(xs, [min(a) for a in acc], [max(a) for a in acc], color=color, alpha=0.18, linewidth=0)
        ax.plot(xs, [sum(a) / len(a) for a in acc], color=color, marker="o", markersize=3, linewidth=2,
                label=f"{mode} ({len(runs)} seed{'s' if len(runs) != 1 else ''})")
    low, high = ax.get_ylim()
    if high - low < 0.1:  # flat curves: show at least 10 points of accuracy
        middle = (low + high) / 2
        ax.set_ylim(middle - 0.05, middle + 0.05)
    ax.set_xlabel("step" if x == "step" else "training wall time (s)")
    ax.set_ylabel("held-out accuracy (greedy)")
    ax.grid(alpha=0.3)
    if ax.get_lines():
        ax.legend(fontsize=8, loc="best", title="mean, band = min-max over seeds", title_fontsize=8)
    ax.set_title(title or f"accuracy vs {'step' if x == 'step' else 'wall time'}", fontsize=10)
    return fig
