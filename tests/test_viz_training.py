"""The training curves of curves.py (notebook 04): the static figure and the live-plot callback."""

import pytest
from matplotlib.figure import Figure

from calgrpo_lib.curves import TRAINING_CURVE_LABELS, TrainingPlot, metric_curves, training_curves


def _train(step: int) -> dict:
    return {"kind": "train", "step": step, "reward_mean": 0.1 * step, "accuracy": 0.05 * step}


def _eval(step: int, accuracy: float) -> dict:
    return {"kind": "eval", "step": step, "accuracy": accuracy, "format_rate": 1.0, "n": 32}


def _lines(fig: Figure) -> dict[str, tuple[list, list]]:
    return {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for ax in fig.axes
            for line in ax.get_lines()}


def test_training_curves_draws_the_records():
    history = [_train(s) for s in (3, 1, 2)]  # any order: drawn by step
    fig = training_curves(history, [_eval(0, 0.25), _eval(3, 0.5)], smooth=2, total_steps=10)
    lines = _lines(fig)
    assert set(lines) == set(TRAINING_CURVE_LABELS.values())
    assert lines[TRAINING_CURVE_LABELS["reward"]] == ([1, 2, 3], pytest.approx([0.1, 0.2, 0.3]))
    assert lines[TRAINING_CURVE_LABELS["accuracy_smooth"]][1] == pytest.approx([0.05, 0.075, 0.125])
    assert lines[TRAINING_CURVE_LABELS["eval"]] == ([0, 3], [0.25, 0.5])
    assert fig.axes[0].get_xlim() == (0, 10)


def test_training_curves_splits_metrics_jsonl_records_by_kind():
    records = [_eval(0, 0.2), _train(1), _train(2), _eval(2, 0.4)]
    lines = _lines(training_curves(records, smooth=1))
    assert lines[TRAINING_CURVE_LABELS["reward"]][0] == [1, 2]
    assert lines[TRAINING_CURVE_LABELS["eval"]][0] == [0, 2]
    assert TRAINING_CURVE_LABELS["reward_smooth"] not in lines  # smooth=1: no moving average
    assert isinstance(training_curves([], []), Figure)  # nothing yet: empty panels


def test_metric_curves_draws_one_panel_per_key_by_step():
    log = [{"step": 2, "reward": 0.4, "cal/error_tokens": 9.0}, {"step": 1, "reward": 0.2},  # TRL's log_history
           {"train_runtime": 3.0}, {"step": 3, "reward": 0.6, "cal/error_tokens": 7.0}]
    fig = metric_curves(log, ["reward", "cal/error_tokens"], labels={"reward": "mean reward"}, smooth=2)
    shown = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in shown] == ["mean reward", "cal/error_tokens"]
    raw, smooth = shown[0].get_lines()
    assert list(raw.get_xdata()) == [1, 2, 3] and list(raw.get_ydata()) == pytest.approx([0.2, 0.4, 0.6])
    assert list(smooth.get_ydata()) == pytest.approx([0.2, 0.3, 0.5])
    assert list(shown[1].get_lines()[0].get_xdata()) == [2, 3]  # records without the key are skipped
    assert len(metric_curves(log, ["reward"] * 4, ncols=3).axes) == 6  # 2 rows of 3, two hidden
    with pytest.raises(ValueError, match="'entropy'.*allowed: keys of the records"):
        metric_curves(log, ["reward", "entropy"])


def test_training_curves_names_a_missing_key():
    with pytest.raises(ValueError, match=r"history\[0\] lacks \['reward_mean'\]"):
        training_curves([{"step": 1, "accuracy": 0.5}], [])
    with pytest.raises(ValueError, match="smooth"):
        training_curves([], [], smooth=0)


def test_training_plot_is_a_callback_that_redraws_in_place():
    plot = TrainingPlot(total_steps=4, every=2, show=False)
    plot("eval", _eval(0, 0.1))
    for s in range(1, 5):
        plot("step", _train(s))
    plot("checkpoint", {"step": 4})  # unknown events are ignored
    plot("eval", _eval(4, 0.3))
    assert len(plot.history) == 4 and len(plot.evals) == 2
    assert plot.redraws == 4  # eval at 0, steps 2 and 4, final eval
    fig = plot.figure()
    assert "step 4/4" in fig.get_suptitle()
    assert _lines(fig)[TRAINING_CURVE_LABELS["eval"]][1] == [0.1, 0.3]


def test_training_plot_displays_and_updates_one_output(monkeypatch):
    shown = []

    class Handle:
        def update(self, obj):
            shown.append(("update", obj))

    def fake_display(obj, display_id=False):
        shown.append(("display", obj))
        return Handle()

    monkeypatch.setattr("IPython.display.display", fake_display)
    plot = TrainingPlot(every=1)
    plot("step", _train(1))
    plot("step", _train(2))
    assert [kind for kind, _ in shown] == ["display", "update"]
    assert shown[0][1].data[:8] == b"\x89PNG\r\n\x1a\n"
