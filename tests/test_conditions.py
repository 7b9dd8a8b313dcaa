"""calgrpo_lib.conditions (experiment v2's grid) and run_experiment over conditions: the grid's fields and seeds,
argument checks, a tiny v2 grid run through the CLI with two worker processes, and its resume."""

import json

import pytest

from calgrpo_lib import conditions as C
from calgrpo_lib.config import GRPOConfig
from calgrpo_lib.experiment import PER_RUN_FIELDS, experiment_config, main, run_experiment

TINY = {"max_steps": 1, "prompts_per_step": 2, "num_generations": 2, "max_new_tokens": 32, "eval_size": 4,
        "train_size": 32, "eval_every": 1}


def test_grid_v2_conditions_and_seeds():
    grid = C.GRID_V2
    assert len(grid) == 12 and set(C.MAIN_CONDITIONS) <= set(grid)
    assert grid["cal_hybrid-result"] == {"credit_mode": "cal_hybrid", "span_granularity": "result"}
    # the controls are matched to cal_hybrid at the reference granularity, and so is the noise sweep
    for name in ("random_span", "uniform", "cal_hybrid-noise0.3", "cal_hybrid-noise0.6", "cal_hybrid-noise0.8"):
        assert grid[name]["span_granularity"] == grid["cal_hybrid-step"]["span_granularity"] == "step"
    assert C.condition_noise(grid["cal_hybrid-noise0.6"]) == pytest.approx(0.6)
    assert C.condition_noise(grid["cal_hybrid-step"]) == 0.0
    for fields in grid.values():  # every condition is a valid config
        GRPOConfig(**fields)
    conds, seeds = C.grid_v2()
    assert list(conds) == list(C.DEFAULT_V2) == [n for n in grid if n not in ("prefix-claim", "prefix-result")]
    assert sum(len(s) for s in seeds.values()) == 5 * 5 + 5 * 3  # 40 runs
    _, seeds = C.grid_v2(conditions=list(grid))
    assert sum(len(s) for s in seeds.values()) == 5 * 5 + 7 * 3  # the whole grid: 46 runs
    assert seeds["uniform"] == [0, 1, 2, 3, 4] and seeds["prefix-claim"] == [0, 1, 2]
    conds, seeds = C.grid_v2([7], [8], conditions=["sequence", "prefix-step"])
    assert seeds == {"sequence": [7], "prefix-step": [8]}
    assert set(PER_RUN_FIELDS) >= set(C.CONDITION_FIELDS)


def test_noise_rates_split_evenly():
    assert C.noise_rates(0.3) == {name: pytest.approx(0.1) for name in C.NOISE_FIELDS}
    with pytest.raises(ValueError, match="level"):
        C.noise_rates(1.5)


@pytest.mark.parametrize("conditions, match", [
    ({}, "empty"),
    ({"a": {"span_granularity": "step"}}, "no 'credit_mode'"),
    ({"a": {"credit_mode": "nope"}}, "credit_mode"),
    ({"a": {"credit_mode": "cal_hybrid", "learning_rate": 0.1}}, "learning_rate"),
    ({"a": {"credit_mode": "cal_hybrid", "span_granularity": "word"}}, "span_granularity"),
    ({"a": {"credit_mode": "cal_hybrid", "oracle_miss_rate": 2.0}}, "oracle_miss_rate"),
    ({"a/b": {"credit_mode": "cal_hybrid"}}, "without '/'"),
])
def test_check_conditions_names_the_problem(conditions, match):
    with pytest.raises(ValueError, match=match):
        C.check_conditions(conditions)


def test_grid_and_run_experiment_argument_checks(tmp_path):
    with pytest.raises(ValueError, match="conditions\\[0\\]"):
        C.grid_v2(conditions=["nope"])
    with pytest.raises(ValueError, match="main_seeds"):
        C.grid_v2([], [0])
    with pytest.raises(ValueError, match="exactly one of modes"):
        run_experiment(["sequence"], [0], conditions={"s": {"credit_mode": "sequence"}}, out=None)
    with pytest.raises(ValueError, match="no entry for condition"):
        run_experiment(seeds={"x": [0]}, conditions={"s": {"credit_mode": "sequence"}}, out=None)
    with pytest.raises(ValueError, match="jobs"):
        run_experiment(["sequence"], [0], out=None, jobs=0)
    with pytest.raises(ValueError, match="span_granularity"):  # a condition field is set per condition, not shared
        experiment_config(span_granularity="step")


def test_tiny_grid_v2_with_two_jobs_then_resume(tmp_path, capsys):
    """CI's tiny configuration of experiment v2: three of its conditions, two worker processes, one step each."""
    out, runs = tmp_path / "v2.json", tmp_path / "runs"
    argv = ["--grid", "v2", "--conditions", "sequence", "cal_hybrid-result", "cal_hybrid-noise0.8",
            "--main-seeds", "0", "--other-seeds", "1", "--max-steps", "1", "--prompts-per-step", "2",
            "--eval-every", "1", "--eval-size", "4", "--out", str(out), "--run-dir", str(runs), "--jobs", "2",
            "--no-progress"]
    assert main(argv) == 0
    data = json.loads(out.read_text())
    pairs = sorted((r["mode"], r["seed"]) for r in data["runs"])
    assert pairs == [("cal_hybrid-noise0.8", 1), ("cal_hybrid-result", 0), ("sequence", 0)]
    by = {r["mode"]: r for r in data["runs"]}
    assert by["cal_hybrid-result"]["condition"] == C.GRID_V2["cal_hybrid-result"]
    assert data["conditions"]["cal_hybrid-noise0.8"]["oracle_miss_rate"] == pytest.approx(0.8 / 3)
    assert by["sequence"]["history"][0]["oracle_calls"] == 0
    assert "span_granularity" not in data["config"] and data["config"]["eval_size"] == 4
    assert [p["step"] for p in by["sequence"]["eval_curve"]] == [0, 1]
    assert not (runs / "sequence-seed0" / "checkpoints").exists()
    for figure in ("step", "wall_time", "contrasts", "credit_quality"):  # the noisy condition has no paired seed
        assert (tmp_path / f"v2_{figure}.png").stat().st_size > 0
    # resume: the same command trains nothing new; a condition changed under the same name is refused
    stamp = [r["finished"] for r in data["runs"]]
    assert main(argv) == 0
    assert [r["finished"] for r in json.loads(out.read_text())["runs"]] == stamp
    with pytest.raises(ValueError, match="condition sequence"):
        run_experiment(seeds=[0], conditions={"sequence": {"credit_mode": "uniform"}}, out=out, run_dir=runs,
                       progress=False, **{**TINY, "eval_size": 4})


def test_condition_f1_falls_with_noise():
    f1 = {n: C.condition_f1(C.GRID_V2[n], 200) for n in ("cal_hybrid-step", "cal_hybrid-noise0.3",
                                                        "cal_hybrid-noise0.8")}
    assert f1["cal_hybrid-step"] == 1.0
    assert 1.0 > f1["cal_hybrid-noise0.3"] > f1["cal_hybrid-noise0.8"]
    assert 0.2 < f1["cal_hybrid-noise0.8"] < 0.45  # the sweep reaches down to F1 about 0.3


def test_oracle_quality_is_the_exact_and_the_noisy_conditions():
    grid = {n: C.GRID_V2[n] for n in ("sequence", "cal_hybrid-step", "random_span", "cal_hybrid-noise0.8")}
    quality = C.oracle_quality(grid)
    assert list(quality) == ["cal_hybrid-step", "cal_hybrid-noise0.8"]
    assert quality["cal_hybrid-step"] == 1.0
    assert quality["cal_hybrid-noise0.8"] == C.condition_f1(grid["cal_hybrid-noise0.8"]) < 0.5
