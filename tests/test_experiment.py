"""calgrpo_lib.experiment (notebook 05), its summaries (calgrpo_lib.tables) and curves (calgrpo_lib.curves):
summaries of a hand-made results dict, argument checks, the incremental results file (a real two-run experiment,
then fake trainers that count what is trained), the CLI and the curves."""

import copy
import json

import pytest
from matplotlib.figure import Figure

from calgrpo_lib import experiment
from calgrpo_lib.curves import experiment_curves
from calgrpo_lib.experiment import describe_results, experiment_config, find_results, load_results, run_experiment
from calgrpo_lib.tables import COST_COLUMNS, reach_text, steps_to_reach, summary_table, summary_text, target_accuracy
from calgrpo_lib.trainer import TrainResult

TINY = {"max_steps": 1, "prompts_per_step": 2, "num_generations": 2, "max_new_tokens": 32, "eval_size": 4,
        "train_size": 32}


def _run(mode, seed, curve, train_time_s, oracle_calls=0.0, oracle_time=0.0):
    points = [{"step": s, "accuracy": a, "wall_time_s": w} for s, a, w in curve]
    return {"mode": mode, "seed": seed, "steps": 4, "accuracy_before": curve[0][1], "accuracy_after": curve[-1][1],
            "eval_curve": points, "train_time_s": train_time_s, "oracle_calls_per_step": oracle_calls,
            "oracle_time_per_step_s": oracle_time}


# Binary fractions throughout, so means and comparisons are exact.
RESULTS = {"format": experiment.RESULTS_FORMAT, "config": {}, "runs": [
    _run("sequence", 0, [(0, 0.25, 0.0), (2, 0.25, 1.0), (4, 0.25, 2.0)], 2.0),
    _run("sequence", 1, [(0, 0.25, 0.0), (2, 0.5, 1.5), (4, 0.75, 3.0)], 3.0),
    _run("cal_hybrid", 1, [(0, 0.25, 0.0), (2, 0.375, 1.5), (4, 0.375, 3.0)], 3.0, 4.0, 0.25),
    _run("cal_hybrid", 0, [(0, 0.25, 0.0), (2, 0.5, 1.25), (4, 0.875, 2.5)], 2.5, 6.0, 0.125),
]}


def test_summary_table_exact_values():
    table = summary_table(RESULTS)
    assert list(table) == ["sequence", "cal_hybrid"]  # order of first appearance
    assert table["sequence"] == pytest.approx(
        {"seeds": 2, "before": 0.25, "final_mean": 0.5, "final_min": 0.25, "final_max": 0.75, "gain": 0.25,
         "train_time_s": 2.5, "time_per_step_s": 0.625, "oracle_calls_per_step": 0.0, "oracle_time_per_step_s": 0.0,
         "oracle_share": 0.0})
    assert table["cal_hybrid"] == pytest.approx(
        {"seeds": 2, "before": 0.25, "final_mean": 0.625, "final_min": 0.375, "final_max": 0.875, "gain": 0.375,
         "train_time_s": 2.75, "time_per_step_s": 0.6875, "oracle_calls_per_step": 5.0,
         "oracle_time_per_step_s": 0.1875, "oracle_share": 0.1875 / 0.6875})
    text = summary_text(RESULTS).splitlines()
    assert text[0].split() == ["mode", "seeds", "before", "final_mean", "final_min", "final_max", "gain",
                               "train_time_s"]
    assert text[2].split() == ["cal_hybrid", "2", "+0.250", "+0.625", "+0.375", "+0.875", "+0.375", "+2.750"]
    assert summary_text(RESULTS, COST_COLUMNS).splitlines()[0].split() == ["mode", *COST_COLUMNS]


def test_steps_to_reach_plain_grpo_final_accuracy():
    assert target_accuracy(RESULTS) == 0.5
    assert steps_to_reach(RESULTS) == {"sequence": {0: None, 1: 2}, "cal_hybrid": {0: 2, 1: None}}
    assert steps_to_reach(RESULTS, by="wall_time") == {"sequence": {0: None, 1: 1.5},
                                                       "cal_hybrid": {0: 1.25, 1: None}}
    assert steps_to_reach(RESULTS, "cal_hybrid") == {"sequence": {0: None, 1: 4}, "cal_hybrid": {0: 4, 1: None}}
    assert steps_to_reach(RESULTS, target=0.25)["cal_hybrid"] == {0: 0, 1: 0}
    lines = reach_text(RESULTS).splitlines()
    assert lines[0].split() == ["mode", "seed", "0", "seed", "1"]
    assert lines[1].split() == ["sequence", "never", "2"]


def test_experiment_budget_lies_over_the_tiny_preset_and_yields_to_overrides():
    from calgrpo_lib.config import preset

    config, tiny = experiment_config(), preset("tiny")
    assert (config.max_steps, config.prompts_per_step) == (50, 8) == tuple(experiment.BUDGET.values())
    assert (tiny.max_steps, tiny.prompts_per_step) != (50, 8)  # the budget is the experiment's own
    assert config.replace(max_steps=tiny.max_steps, prompts_per_step=tiny.prompts_per_step) == tiny
    assert experiment_config(prompts_per_step=4, max_steps=3).prompts_per_step == 4
    args = experiment.build_parser().parse_args(["--prompts-per-step", "4", "--max-steps", "3"])
    assert (args.prompts_per_step, args.max_steps) == (4, 3)


def test_describe_results_names_the_budget_and_config_changes():
    today = experiment_config()
    shared = experiment._shared(experiment_config(max_steps=today.max_steps + 1, eval_every=today.eval_every + 1))
    lines = describe_results({**RESULTS, "config": shared}).splitlines()
    assert lines[0] == "2 modes (sequence, cal_hybrid) x seeds [0, 1]: 4 runs"
    b, g = today.prompts_per_step, today.num_generations
    assert lines[1].startswith(f"each run: {today.max_steps + 1} steps x {b} prompts x {g} samples = "
                               f"{(today.max_steps + 1) * b * g} completions")
    assert lines[-1] == (f"config vs today's experiment_config(): eval_every={today.eval_every + 1} (today: "
                         f"{today.eval_every}), max_steps={today.max_steps + 1} (today: {today.max_steps})")
    same = describe_results({**RESULTS, "config": experiment._shared(today)})
    assert same.endswith("config vs today's experiment_config(): the same")


def test_summaries_reject_bad_arguments():
    with pytest.raises(ValueError, match=r"target_mode='prefix' is not allowed; allowed: 'sequence', 'cal_hybrid'"):
        steps_to_reach(RESULTS, "prefix")
    with pytest.raises(ValueError, match=r"by='time' is not allowed; allowed: 'step', 'wall_time'"):
        steps_to_reach(RESULTS, by="time")
    with pytest.raises(ValueError, match=r"results\['runs'\]\[0\] lacks \['seed'"):
        summary_table({"runs": [{"mode": "sequence"}]})
    with pytest.raises(ValueError, match=r"results has no 'runs' list"):
        summary_table({"config": {}})
    with pytest.raises(ValueError, match=r"columns\[0\]='wall' is not allowed"):
        summary_text(RESULTS, ["wall"])


@pytest.mark.parametrize("modes, seeds, overrides, error, match", [
    (["bogus"], [0], {}, ValueError, r"modes\[0\]='bogus' is not allowed; allowed: 'sequence', 'cal_sparse'"),
    ([], [0], {}, ValueError, r"modes=\[\] is empty; allowed: one or more of 'sequence'"),
    ("sequence", [0], {}, TypeError, r"modes='sequence' has type str; allowed: list or tuple"),
    (["sequence", "sequence"], [0], {}, ValueError, r"repeats a mode"),
    (["sequence"], [], {}, ValueError, r"seeds=\[\] is empty; allowed: one or more ints >= 0"),
    (["sequence"], [-1], {}, ValueError, r"seeds\[0\]=-1 is out of range; allowed: an int >= 0"),
    (["sequence"], [0], {"credit_mode": "prefix"}, ValueError, r"\['credit_mode'\] are set per run"),
    (["sequence"], [0], {"max_step": 3}, ValueError, r"unknown config field\(s\) \['max_step'\]"),
    (["sequence"], [0], {"eval_size": 0}, ValueError, r"eval_size=0 leaves nothing to evaluate"),
])
def test_run_experiment_rejects_bad_arguments(tmp_path, modes, seeds, overrides, error, match):
    with pytest.raises(error, match=match):
        run_experiment(modes, seeds, out=tmp_path / "r.json", run_dir=tmp_path / "runs", progress=False, **overrides)
    assert not (tmp_path / "r.json").exists()


def _fake_train(calls, interrupt_at=None):
    """A stand-in for trainer.train that records (mode, seed) and returns a one-step result at once."""
    def train(config, **kwargs):
        calls.append((config.credit_mode, config.seed))
        if len(calls) == interrupt_at:
            raise KeyboardInterrupt
        step = {"step": 1, "reward_mean": 0.5, "accuracy": 0.5, "time_step": 0.25, "time_oracle": 0.0}
        return TrainResult(config, 1, {"accuracy": 0.25}, {"accuracy": 0.5}, [step],
                           [{"step": 0, "accuracy": 0.25}, {"step": 1, "accuracy": 0.5}], 0.5)
    return train


def test_results_are_saved_after_each_run_and_reruns_skip_them(tmp_path, monkeypatch):
    out, runs = tmp_path / "results" / "r.json", tmp_path / "runs"
    first = run_experiment(["sequence", "cal_hybrid"], [0], out=out, run_dir=runs, progress=False, **TINY)
    stored = load_results(out)
    assert stored == json.loads(json.dumps(first))
    assert [(r["mode"], r["seed"]) for r in stored["runs"]] == [("sequence", 0), ("cal_hybrid", 0)]
    assert stored["config"]["max_steps"] == 1 and "credit_mode" not in stored["config"]
    for run in stored["runs"]:
        assert [p["step"] for p in run["eval_curve"]] == [0, 1] and run["eval_curve"][0]["wall_time_s"] == 0.0
        assert run["eval_curve"][-1]["wall_time_s"] == pytest.approx(run["train_time_s"])
        assert run["eval_curve"][-1]["accuracy"] == run["accuracy_after"] and len(run["history"]) == 1
        assert not (runs / f"{run['mode']}-seed0" / "checkpoints").exists()
    assert stored["runs"][0]["oracle_calls_per_step"] == 0.0  # plain GRPO never asks the oracle

    calls = []
    monkeypatch.setattr("calgrpo_lib.trainer.train", _fake_train(calls))
    again = run_experiment(["sequence", "cal_hybrid"], [0, 1], out=out, run_dir=runs, progress=False, **TINY)
    assert calls == [("sequence", 1), ("cal_hybrid", 1)]  # seed 0 runs were skipped
    assert again["runs"][:2] == stored["runs"] and load_results(out) == json.loads(json.dumps(again))

    calls.clear()
    run_experiment(["sequence", "cal_hybrid"], [0, 1], out=out, run_dir=runs, progress=False, **TINY)
    assert calls == []
    with pytest.raises(ValueError, match=r"holds runs of another config \(max_steps: 1 -> 2\).*overwrite=True"):
        run_experiment(["sequence"], [0], out=out, run_dir=runs, progress=False, **{**TINY, "max_steps": 2})
    fresh = run_experiment(["prefix"], [3], out=out, run_dir=runs, progress=False, overwrite=True,
                           **{**TINY, "max_steps": 2})
    assert [(r["mode"], r["seed"]) for r in load_results(out)["runs"]] == [("prefix", 3)] == \
        [(r["mode"], r["seed"]) for r in fresh["runs"]]


def test_a_run_interrupted_earlier_is_trained_again_in_its_folder(tmp_path):
    """The trainer refuses a folder holding another run unless told; an experiment starts the run a Ctrl-C stopped
    from scratch in the same folder (emptied first), without refusing and without resuming."""
    folder = tmp_path / "runs" / "sequence-seed0"
    (folder / "checkpoints" / "step-000001").mkdir(parents=True)
    (folder / "metrics.jsonl").write_text('{"kind": "train", "step": 1}\n')
    results = run_experiment(["sequence"], [0], out=None, run_dir=tmp_path / "runs", progress=False, **TINY)
    assert [(r["mode"], r["seed"], r["steps"]) for r in results["runs"]] == [("sequence", 0, 1)]
    assert [json.loads(line)["kind"] for line in (folder / "metrics.jsonl").read_text().splitlines()] == \
        ["eval", "train", "eval"]


def test_the_run_folder_switches_are_not_part_of_the_shared_config(tmp_path, monkeypatch):
    """``overwrite`` / ``allow_config_change`` (like ``resume``) say how a run treats its folder, not what it learns:
    a results file written before they existed still continues, and they cannot be overridden."""
    out, calls = tmp_path / "r.json", []
    monkeypatch.setattr("calgrpo_lib.trainer.train", _fake_train(calls))
    stored = run_experiment(["sequence"], [0], out=out, run_dir=tmp_path / "runs", progress=False, **TINY)
    assert not {"resume", "overwrite", "allow_config_change"} & set(stored["config"])
    run_experiment(["sequence"], [0, 1], out=out, run_dir=tmp_path / "runs", progress=False, **TINY)
    assert calls == [("sequence", 0), ("sequence", 1)]
    with pytest.raises(ValueError, match=r"\['overwrite'\] are set per run"):
        experiment_config(overwrite=True)


def test_an_interrupted_experiment_keeps_the_finished_runs(tmp_path, monkeypatch):
    out, calls = tmp_path / "r.json", []
    monkeypatch.setattr("calgrpo_lib.trainer.train", _fake_train(calls, interrupt_at=2))
    with pytest.raises(KeyboardInterrupt):
        run_experiment(["sequence", "prefix"], [0], out=out, run_dir=tmp_path / "runs", progress=False, **TINY)
    assert [(r["mode"], r["seed"]) for r in load_results(out)["runs"]] == [("sequence", 0)]
    assert find_results("r.json", start=tmp_path) == out
    assert find_results("r.json", start=tmp_path / "notebooks") == out  # a notebook looks one folder up too
    assert find_results("missing.json", start=tmp_path) is None
    # outside the repository: a path under results/ falls back to the copy that comes with the package
    package = tmp_path / "site-packages" / "calgrpo_lib"
    (package / "results").mkdir(parents=True)
    (package / "results" / "published.json").write_text("{}")
    monkeypatch.setattr("calgrpo_lib.results_file.files", lambda name: package if name == "calgrpo_lib" else None)
    published = package / "results" / "published.json"
    assert find_results("results/published.json", start=tmp_path / "elsewhere") == published
    assert find_results("published.json", start=tmp_path / "elsewhere") is None  # only paths under results/
    assert find_results("results/missing.json", start=tmp_path / "elsewhere") is None


def test_cli_prints_the_tables_and_saves_the_figures(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("calgrpo_lib.trainer.train", _fake_train([]))
    out = tmp_path / "res" / "exp.json"
    code = experiment.main(["--modes", "sequence", "cal_sparse", "--seeds", "0", "--max-steps", "1", "--out",
                            str(out), "--run-dir", str(tmp_path / "runs"), "--no-progress"])
    printed = capsys.readouterr().out
    assert code == 0 and "final_mean" in printed and "oracle_calls_per_step" in printed and "seed 0" in printed
    assert (tmp_path / "res" / "exp_step.png").stat().st_size > 0
    assert (tmp_path / "res" / "exp_wall_time.png").stat().st_size > 0
    assert experiment.main(["--modes", "nope", "--out", str(out)]) == 2
    assert "modes[0]='nope'" in capsys.readouterr().err


def test_experiment_curves_draws_mean_and_band():
    results = copy.deepcopy(RESULTS)
    fig = experiment_curves(results, x="step")
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    lines = {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in ax.get_lines()}
    assert lines == {"sequence (2 seeds)": ([0, 2, 4], [0.25, 0.375, 0.5]),
                     "cal_hybrid (2 seeds)": ([0, 2, 4], [0.25, 0.4375, 0.625])}
    assert len(ax.collections) == 2  # one min-max band per mode
    wall = experiment_curves(results, x="wall_time").axes[0].get_lines()[1]
    assert list(wall.get_xdata()) == [0.0, 1.375, 2.75]
    assert results == RESULTS  # input untouched
    with pytest.raises(ValueError, match=r"x='epoch' is not allowed; allowed: 'step', 'wall_time'"):
        experiment_curves(RESULTS, x="epoch")
