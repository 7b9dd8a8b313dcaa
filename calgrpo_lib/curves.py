"""Curves for the notebooks: a GRPO run's reward and accuracy over its steps, live while it trains, and the
held-out accuracy of each credit mode in a CAL vs GRPO experiment.

- :func:`training_curves` draws a run from the trainer's records (as in ``metrics.jsonl``): "train" records need
  ``step``, ``reward_mean`` and ``accuracy``, "eval" records ``step`` and ``accuracy``. :class:`TrainingPlot` is a
  ``Trainer`` callback that redraws that figure in place as records arrive (the trainer draws nothing).
- :func:`metric_curves` draws any logged metrics of a run, one panel each: the trainer's records or TRL's
  ``trainer.state.log_history`` (any records with a ``step``).
- :func:`experiment_curves` draws a results dict written by :func:`calgrpo_lib.experiment.run_experiment`: its
  "runs" hold "mode", "seed" and an "eval_curve" of ``{"step", "accuracy", "wall_time_s"}`` points.

Figures are matplotlib ``Figure`` objects built without pyplot: a notebook cell ending with one shows it once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .tables import runs_by_mode
from .validation import check_choice, check_int, check_type
from .viz import figure_png

__all__ = ["moving_average", "training_curves", "metric_curves", "TrainingPlot", "TRAINING_CURVE_LABELS",
           "experiment_curves", "EXPERIMENT_COLORS"]


# ------------------------------------------------------------------------------- training curves (notebook 04)

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


def moving_average(values: list[float], window: int) -> list[float]:
    """The trailing mean of the last ``window`` values at each position (fewer at the start)."""
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
            ax.plot(steps, moving_average(values, smooth), color=color, linewidth=2, label=labels[f"{key}_smooth"])
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


def metric_curves(records: Sequence[dict[str, Any]], keys: Sequence[str], *, labels: dict[str, str] | None = None,
                  smooth: int = 10, ncols: int = 3, title: str | None = None):
    """One panel per metric in ``keys``, over the steps: the per-step value (thin) and its moving average over
    ``smooth`` steps (thick). ``records``: dicts with ``step`` (our ``metrics.jsonl``, TRL's ``log_history``);
    records without a key are skipped for that panel, and a key no record has raises ``ValueError``. ``labels``:
    a panel title per key (default: the key). Returns a matplotlib ``Figure``."""
    from matplotlib.figure import Figure

    check_type("records", records, (list, tuple))
    check_type("keys", keys, (list, tuple))
    check_int("smooth", smooth, 1, None)
    check_int("ncols", ncols, 1, None)
    rows = [r for r in records if isinstance(r, dict) and "step" in r]
    missing = [k for k in keys if not any(k in r for r in rows)]
    if not keys or missing:
        raise ValueError(f"keys={list(keys)}: {missing or 'empty'} not in any record with a step; allowed: keys of "
                         f"the records, e.g. {sorted({k for r in rows for k in r})[:12]}")
    ncols = min(ncols, len(keys))
    nrows = -(-len(keys) // ncols)
    fig = Figure(figsize=(3.6 * ncols, 2.6 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).flatten()
    for ax, key in zip(axes, keys):
        points = sorted((r["step"], float(r[key])) for r in rows if key in r)
        steps, values = [p[0] for p in points], [p[1] for p in points]
        ax.plot(steps, values, color="#5e3c99", alpha=0.35, linewidth=1, marker="." if len(points) < 8 else None)
        if smooth > 1 and len(values) > 1:
            ax.plot(steps, moving_average(values, smooth), color="#5e3c99", linewidth=2)
        ax.set_title((labels or {}).get(key, key), fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    for ax in axes[len(keys):]:
        ax.set_visible(False)
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

        image = Image(data=figure_png(self.figure()))
        if self._handle is None:
            self._handle = display(image, display_id=True)
        else:
            self._handle.update(image)


# ---------------------------------------------------------------------- CAL vs GRPO experiment (notebook 05)

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
