"""Conditions of an experiment: named sets of config fields, one per arm, and the grid of experiment v2.

A *condition* is a name and the config fields that make its runs differ from every other arm's (the fields of
:data:`CONDITION_FIELDS`: credit mode, span granularity, oracle noise); a run is a (condition, seed) pair. Plain
credit modes are conditions of one field (``"cal_hybrid"`` is ``{"credit_mode": "cal_hybrid"}``), which is what
:func:`mode_conditions` builds for ``--modes``.

Experiment v2 (:data:`GRID_V2`, :func:`grid_v2`) asks whether *localisation* helps, with the push-down's magnitude
held fixed. Its conditions, with ``step`` the reference granularity (what a judge's quote of a whole line gives):

- ``sequence``: plain GRPO (no oracle);
- ``cal_hybrid-<g>`` for each granularity ``g`` of ``step``, ``claim``, ``result`` (notebook 05, section 3);
- ``random_span`` and ``uniform``: ``cal_hybrid-step``'s total push-down at a random place / spread over the whole
  wrong answer (:mod:`calgrpo_lib.credit`);
- ``prefix-<g>``: the prefix mode at each granularity (the span only sets where the prefix ends);
- ``cal_hybrid-noise<p>``: ``cal_hybrid-step`` with an oracle spoiled at total rate ``p``
  (:func:`noise_rates`: ``p / 3`` each of missed, wrong step, correct step).

:data:`MAIN_CONDITIONS` are the contrasts the experiment is about (at least 5 seeds); the rest get fewer.
:data:`DEFAULT_V2` is the part of the grid that fits the time target (see there).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .config import NOISE_FIELDS
from .credit import CREDIT_MODES
from .granularity import SPAN_GRANULARITIES
from .validation import check_choice, check_float, check_type

__all__ = ["CONDITION_FIELDS", "NOISE_FIELDS", "BUDGET_V2", "GRID_V2", "MAIN_CONDITIONS", "DEFAULT_V2", "NOISE_LEVELS",
           "noise_rates", "check_conditions", "mode_conditions", "grid_v2", "condition_noise", "condition_f1",
           "oracle_quality"]

#: config fields a condition may set (everything else is shared by all runs of an experiment)
CONDITION_FIELDS = ("credit_mode", "span_granularity", *NOISE_FIELDS)
#: total noise rates of v2's noise sweep; on the synthetic task they give ProcessBench F1 of about 0.84 / 0.57 / 0.33
#: (measured per experiment with :func:`calgrpo_lib.oracle.evaluation.localization_quality`)
NOISE_LEVELS = (0.3, 0.6, 0.8)


def noise_rates(level: float) -> dict[str, float]:
    """The three NoisyOracle rates of total noise ``level`` in [0, 1], split evenly:
    ``oracle_miss_rate = oracle_wrong_step_rate = oracle_correct_step_rate = level / 3``."""
    check_float("level", level, 0.0, 1.0)
    return dict.fromkeys(NOISE_FIELDS, level / 3)


def condition_noise(fields: Mapping[str, Any]) -> float:
    """The total noise rate of a condition's fields (0 when it sets none)."""
    return float(sum(float(fields.get(name, 0.0)) for name in NOISE_FIELDS))


def condition_f1(fields: Mapping[str, Any], n: int = 400, *, seed: int = 0) -> float:
    """The ProcessBench F1 of a condition's oracle on the synthetic task: the exact step checker, wrapped in a
    :class:`~calgrpo_lib.oracle.noise.NoisyOracle` at the condition's noise rates (1.0 without noise), measured by
    :func:`~calgrpo_lib.oracle.evaluation.localization_quality` on ``n`` wrong and ``n`` right answers."""
    from .oracle.evaluation import localization_quality
    from .oracle.noise import NoisyOracle
    from .oracle.stepcheck import StepCheckOracle

    rates = {name.removeprefix("oracle_"): float(fields.get(name, 0.0)) for name in NOISE_FIELDS}
    return float(localization_quality(NoisyOracle(StepCheckOracle(), seed=seed, **rates), n).f1)


def oracle_quality(conditions: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """The credit-quality sweep of a grid's ``conditions`` (name -> fields): the measured oracle F1
    (:func:`condition_f1`) of ``cal_hybrid-step`` (the exact oracle) and of every condition with oracle noise, in the
    grid's order; the x axis of :func:`calgrpo_lib.contrasts.credit_quality_plot`."""
    check_type("conditions", conditions, Mapping)
    return {name: condition_f1(fields) for name, fields in conditions.items()
            if name == "cal_hybrid-step" or condition_noise(fields) > 0}


def _v2_conditions() -> dict[str, dict[str, Any]]:
    grid: dict[str, dict[str, Any]] = {"sequence": {"credit_mode": "sequence"}}
    for g in ("step", "claim", "result"):
        grid[f"cal_hybrid-{g}"] = {"credit_mode": "cal_hybrid", "span_granularity": g}
    for mode in ("random_span", "uniform"):
        grid[mode] = {"credit_mode": mode, "span_granularity": "step"}
    for g in ("step", "claim", "result"):
        grid[f"prefix-{g}"] = {"credit_mode": "prefix", "span_granularity": g}
    for level in NOISE_LEVELS:
        grid[f"cal_hybrid-noise{level:g}"] = {"credit_mode": "cal_hybrid", "span_granularity": "step",
                                              **noise_rates(level)}
    return grid


#: v2's budget per run, laid over the tiny preset: 100 steps of 8 prompts x 8 samples, greedy held-out accuracy on
#: 512 problems every 10 steps. Plain GRPO's gain slows within it (one seed, measured at 120 steps: accuracy
#: 0.56 -> 0.64 over the first 60 steps, 0.64 -> 0.69 over the next 60); notebook 05 shows the curves
BUDGET_V2: dict[str, Any] = {"max_steps": 100, "prompts_per_step": 8, "eval_every": 10, "eval_size": 512}
#: every condition of experiment v2, name -> config fields (see the module docstring)
GRID_V2: dict[str, dict[str, Any]] = _v2_conditions()
#: the contrasts v2 is about: plain GRPO, localised credit at the finest and the coarsest span, the two controls
MAIN_CONDITIONS = ("sequence", "cal_hybrid-result", "cal_hybrid-step", "random_span", "uniform")
#: what ``grid_v2()`` runs by default: all of :data:`GRID_V2` but ``prefix-claim`` and ``prefix-result``. Two runs at
#: a time on the 2-core machine took 399-470 s each (2026-12-02), so the 46 runs of the whole grid would take about
#: 46 * 415 / 2 s = 159 min, over the 150-minute target; the issue's cut order (noise levels beyond three, then
#: prefix granularities) drops those two: 40 runs, about 138 min. ``conditions=list(GRID_V2)`` runs everything.
DEFAULT_V2 = tuple(name for name in GRID_V2 if name not in ("prefix-claim", "prefix-result"))


def check_conditions(conditions: Any) -> dict[str, dict[str, Any]]:
    """``conditions`` checked: a non-empty mapping of names (non-empty str) to dicts of :data:`CONDITION_FIELDS`
    with valid values; each must set ``credit_mode``. Returns a plain dict copy (order kept)."""
    check_type("conditions", conditions, Mapping)
    if not conditions:
        raise ValueError("conditions={} is empty; allowed: a mapping of condition names to config fields")
    out: dict[str, dict[str, Any]] = {}
    for name, fields in conditions.items():
        if not isinstance(name, str) or not name or "/" in name:
            raise ValueError(f"condition name {name!r} is not allowed; allowed: a non-empty str without '/'")
        check_type(f"conditions[{name!r}]", fields, Mapping)
        unknown = sorted(set(fields) - set(CONDITION_FIELDS))
        if unknown:
            raise ValueError(f"conditions[{name!r}] sets {unknown}; allowed: fields of {list(CONDITION_FIELDS)}")
        if "credit_mode" not in fields:
            raise ValueError(f"conditions[{name!r}]={dict(fields)!r} has no 'credit_mode'; allowed: one of "
                             f"{', '.join(CREDIT_MODES)}")
        check_choice(f"conditions[{name!r}]['credit_mode']", fields["credit_mode"], CREDIT_MODES)
        if "span_granularity" in fields:
            check_choice(f"conditions[{name!r}]['span_granularity']", fields["span_granularity"], SPAN_GRANULARITIES)
        for noise in NOISE_FIELDS:
            if noise in fields:
                check_float(f"conditions[{name!r}][{noise!r}]", fields[noise], 0.0, 1.0)
        out[name] = dict(fields)
    return out


def mode_conditions(modes: Sequence[str]) -> dict[str, dict[str, Any]]:
    """One condition per credit mode, named after it: ``{mode: {"credit_mode": mode}}``."""
    check_type("modes", modes, (list, tuple))
    if len(set(modes)) != len(modes):
        raise ValueError(f"modes={list(modes)!r} repeats a mode; allowed: distinct modes")
    return check_conditions({mode: {"credit_mode": mode} for mode in modes})


def grid_v2(main_seeds: Sequence[int] = (0, 1, 2, 3, 4), other_seeds: Sequence[int] = (0, 1, 2), *,
            conditions: Sequence[str] | None = None) -> tuple[dict[str, dict[str, Any]], dict[str, list[int]]]:
    """Experiment v2's conditions and the seeds of each: :data:`MAIN_CONDITIONS` get ``main_seeds``, the others
    ``other_seeds``. ``conditions`` picks conditions of :data:`GRID_V2` by name (default: :data:`DEFAULT_V2`).
    Returns ``(conditions, seeds_by_condition)`` for :func:`calgrpo_lib.experiment.run_experiment`."""
    names = list(DEFAULT_V2) if conditions is None else list(conditions)
    for i, name in enumerate(names):
        check_choice(f"conditions[{i}]", name, tuple(GRID_V2))
    for label, seeds in (("main_seeds", main_seeds), ("other_seeds", other_seeds)):
        check_type(label, seeds, (list, tuple))
        if not seeds:
            raise ValueError(f"{label}={seeds!r} is empty; allowed: one or more ints >= 0")
    chosen = {name: dict(GRID_V2[name]) for name in names}
    return chosen, {name: list(main_seeds if name in MAIN_CONDITIONS else other_seeds) for name in names}
