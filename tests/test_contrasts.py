"""calgrpo_lib.contrasts: area under the curve, interpolated steps to reach, seed-paired differences with bootstrap
intervals, on hand-made results whose answers are worked out by hand (binary fractions, so exact)."""

import pytest

from calgrpo_lib.contrasts import contrast_text, curve_auc, mean_curve, paired_differences, reach_step, run_metrics


def _run(mode, seed, accs, steps=(0, 10, 20)):
    return {"mode": mode, "seed": seed, "accuracy_before": accs[0], "accuracy_after": accs[-1],
            "eval_curve": [{"step": k, "accuracy": a, "wall_time_s": 0.0} for k, a in zip(steps, accs)]}


RESULTS = {"config": {}, "runs": [
    _run("sequence", 0, [0.5, 0.5, 0.75]), _run("sequence", 1, [0.5, 0.75, 0.75]),
    _run("cal", 0, [0.5, 0.75, 0.875]), _run("cal", 1, [0.5, 0.5, 0.625]),
    _run("only_seed2", 2, [0.5, 0.5, 0.5]),
]}


def test_auc_and_reach_by_hand():
    run = _run("x", 0, [0.5, 0.5, 0.75])
    assert curve_auc(run) == (10 * 0.5 + 10 * 0.625) / 20  # trapezoids over 20 steps: 0.5625
    assert reach_step(run, 0.625) == 15.0  # halfway between step 10 (0.5) and step 20 (0.75)
    assert reach_step(run, 0.5) == 0.0 and reach_step(run, 0.8) is None
    assert run_metrics(run, 0.75) == {"final": 0.75, "auc": 0.5625, "reach": 20.0}
    with pytest.raises(ValueError, match="two or more evaluations"):
        curve_auc(_run("x", 0, [0.5], steps=(0,)))


def test_paired_differences_by_hand():
    final = paired_differences(RESULTS, "final", n_boot=2000)
    assert final["cal"]["diffs"] == {0: 0.125, 1: -0.125} and final["cal"]["mean"] == 0.0
    # two differences: a resampled mean is -0.125, 0 or +0.125, so the 95% interval is their range
    assert (final["cal"]["low"], final["cal"]["high"]) == (-0.125, 0.125)
    assert final["only_seed2"] == {"n": 0, "mean": None, "low": None, "high": None, "diffs": {}}
    # target = plain GRPO's mean final accuracy 0.75: sequence reaches it at steps 20 (seed 0) and 10 (seed 1); cal
    # at step 10 (seed 0) and never (seed 1, 0.625 at most), so only seed 0 is paired
    reach = paired_differences(RESULTS, "reach")
    assert reach["cal"]["diffs"] == {0: 10.0 - 20.0} and reach["cal"]["low"] == reach["cal"]["high"] == -10.0
    auc = paired_differences(RESULTS, "auc")
    assert auc["cal"]["diffs"][0] == pytest.approx((10 * 0.625 + 10 * 0.8125) / 20 - 0.5625)
    assert paired_differences(RESULTS, "final", n_boot=500) == paired_differences(RESULTS, "final", n_boot=500)


def test_contrast_text_and_checks():
    lines = contrast_text(RESULTS, "final", n_boot=200).splitlines()
    assert lines[0].split() == ["final", "-", "sequence", "n", "mean", "low", "high"]
    assert lines[1].split() == ["cal", "2", "+0.000", "-0.125", "+0.125"]
    assert lines[2].split() == ["only_seed2", "0", "n/a", "n/a", "n/a"]
    with pytest.raises(ValueError, match="metric"):
        paired_differences(RESULTS, "median")
    with pytest.raises(ValueError, match="baseline"):
        paired_differences(RESULTS, baseline="nope")
    with pytest.raises(ValueError, match="level"):
        paired_differences(RESULTS, level=1.5)


def test_contrast_and_credit_quality_plots_draw_the_intervals():
    from calgrpo_lib.contrasts import contrast_plot, credit_quality_plot

    fig = contrast_plot(RESULTS, "final", n_boot=200)
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == ["cal (2 seeds)"]  # only_seed2 has no seed in common with sequence: not drawn
    bar = ax.get_lines()[0]
    assert list(bar.get_xdata()) == [-12.5, 12.5]  # the interval, in points
    fig = credit_quality_plot(RESULTS, {"cal": 1.0, "only_seed2": 0.5}, n_boot=200)
    line = [ln for ln in fig.axes[0].get_lines() if ln.get_label() == "mean paired difference"][0]
    assert list(line.get_xdata()) == [1.0] and list(line.get_ydata()) == [0.0]


def test_select_conditions_keeps_the_named_runs_in_order():
    from calgrpo_lib.results_file import select_conditions

    results = {**RESULTS, "conditions": {"sequence": {"credit_mode": "sequence"}, "cal": {"credit_mode": "cal_hybrid"},
                                         "only_seed2": {"credit_mode": "uniform"}}}
    part = select_conditions(results, ["cal", "sequence"])
    assert [(r["mode"], r["seed"]) for r in part["runs"]] == [("cal", 0), ("cal", 1), ("sequence", 0), ("sequence", 1)]
    assert set(part["conditions"]) == {"cal", "sequence"} and len(results["runs"]) == 5  # the input is untouched
    assert "only_seed2" not in paired_differences(part, "final")
    with pytest.raises(ValueError, match=r"names\[1\]='nope' is not allowed; allowed: 'sequence', 'cal', 'only_seed2'"):
        select_conditions(results, ["cal", "nope"])


def test_mean_curve_averages_the_seeds_step_by_step():
    assert mean_curve(RESULTS, "cal") == {0: 0.5, 10: 0.625, 20: 0.75}
    assert mean_curve(RESULTS, "only_seed2") == {0: 0.5, 10: 0.5, 20: 0.5}
    with pytest.raises(ValueError, match="condition"):
        mean_curve(RESULTS, "nope")
