import re

import pytest

from calgrpo_lib.cli import build_parser, config_from_args, main
from calgrpo_lib.config import CREDIT_MODE_CHOICES, PRESETS, GRPOConfig, lr_at_step, preset, process_batch_split
from calgrpo_lib.credit import CREDIT_MODES


@pytest.mark.parametrize("field, value, allowed", [
    ("num_generations", 1, "an int >= 2"),
    ("beta", -0.1, "a number >= 0"),
    ("epsilon", 0.0, "a number > 0"),
    ("epsilon", -1.0, "a number > 0"),
    ("credit_mode", "dense", "'sequence', 'cal_sparse', 'cal_hybrid', 'prefix'"),
    ("max_new_tokens", 0, "an int >= 1"),
    ("min_new_tokens", -1, "an int >= 0"),
    ("top_p", 1.5, "a number in (0.0, 1.0]"),
    ("loss_type", "ppo", "'grpo', 'dr_grpo', 'dapo', 'bnpo'"),
    ("learning_rate", float("nan"), "a number > 0"),
    ("lr_scheduler_type", "step", "'constant', 'linear', 'cosine'"),
    ("output_dir", "", "a folder of its own for the run"),  # '' resolved to '.', whose checkpoints a new run deleted
    ("output_dir", ".", "a folder of its own for the run"),
    ("model", "", "'tiny', a hub id or a local model folder"),
    ("data_path", 123, "str or NoneType"),
    ("oracle_cache", 1.5, "str or NoneType"),
    ("extra", [1], "dict"),
])
def test_bad_values_name_field_value_and_allowed(field, value, allowed):
    with pytest.raises((ValueError, TypeError)) as info:
        GRPOConfig(**{field: value})
    message = str(info.value)
    assert f"{field}={value!r}" in message and allowed in message


def test_lr_schedules_start_at_learning_rate_and_end_at_zero():
    def lrs(kind: str) -> list[float]:
        cfg = GRPOConfig(learning_rate=1e-3, max_steps=10, lr_scheduler_type=kind)
        return [lr_at_step(cfg, s) for s in range(11)]

    assert lrs("constant") == [1e-3] * 11
    linear, cosine = lrs("linear"), lrs("cosine")
    assert linear[0] == cosine[0] == 1e-3 and linear[10] == 0.0 and cosine[10] == pytest.approx(0.0, abs=1e-12)
    assert linear[5] == pytest.approx(5e-4) and cosine[5] == pytest.approx(5e-4)
    assert cosine[2] > linear[2] and cosine[8] < linear[8]  # cosine stays high longer, then falls faster
    assert all(a > b for a, b in zip(linear[:10], linear[1:])) and all(a > b for a, b in zip(cosine[:10], cosine[1:]))


def test_cross_field_checks():
    with pytest.raises(ValueError, match="epsilon_high=0.1 is out of range"):
        GRPOConfig(epsilon=0.2, epsilon_high=0.1)
    with pytest.raises(ValueError, match="credit_mode='cal_hybrid' needs an oracle"):
        GRPOConfig(oracle="none")
    GRPOConfig(oracle="none", credit_mode="sequence")


def test_min_new_tokens_above_max_new_tokens_names_the_field():
    with pytest.raises(ValueError) as info:
        GRPOConfig(max_new_tokens=32, min_new_tokens=33)
    assert "min_new_tokens=33" in str(info.value) and "an int in [0, max_new_tokens=32]" in str(info.value)
    with pytest.raises(ValueError, match="min_new_tokens=65"):
        preset("tiny", min_new_tokens=65)  # the preset's max_new_tokens is 64
    assert GRPOConfig(max_new_tokens=32, min_new_tokens=32).min_new_tokens == 32
    assert GRPOConfig().min_new_tokens == 0
    args = build_parser().parse_args(["train", "--min-new-tokens", "64"])
    assert config_from_args(args).min_new_tokens == 64
    assert main(["train", "--min-new-tokens", "65"]) == 2


def test_presets_and_replace():
    assert set(PRESETS) >= {"tiny", "tiny-gpu", "qwen-gsm8k"}
    assert preset("tiny") == GRPOConfig()
    assert preset("qwen-gsm8k").model.startswith("Qwen/")
    assert preset("tiny", seed=3).seed == 3
    with pytest.raises(ValueError, match=re.escape("unknown config field(s) ['sed']")):
        GRPOConfig().replace(sed=3)
    with pytest.raises(ValueError, match="preset='big'"):
        preset("big")
    assert GRPOConfig(prompts_per_step=4, num_generations=6).batch_size == 24


def test_credit_modes_agree_with_the_math():
    assert CREDIT_MODE_CHOICES == CREDIT_MODES


def test_every_field_is_a_flag():
    args = build_parser().parse_args(["train", "--preset", "tiny", "--learning-rate", "1e-3", "--no-resume",
                                      "--epsilon-high", "0.3", "--oracle-model", "none", "--extra", '{"a": 1}'])
    config = config_from_args(args)
    assert (config.learning_rate, config.resume, config.epsilon_high, config.oracle_model) == (1e-3, False, 0.3, None)
    assert config.extra == {"a": 1}
    help_text = build_parser()._subparsers._group_actions[0].choices["train"].format_help()
    for name in GRPOConfig.__dataclass_fields__:
        assert "--" + name.replace("_", "-") in help_text


def test_cli_reports_bad_values_before_any_model_work(capsys):
    assert main(["train", "--num-generations", "1"]) == 2
    assert "num_generations=1" in capsys.readouterr().err
    assert main(["train", "--print-config", "--seed", "4"]) == 0
    assert '"seed": 4' in capsys.readouterr().out


def test_an_interrupted_cli_run_says_so_and_exits_non_zero(tmp_path, monkeypatch, capsys):
    from calgrpo_lib.trainer import TrainResult

    def interrupted_train(config, **kwargs):
        return TrainResult(config, 3, None, None, interrupted=True)

    monkeypatch.setattr("calgrpo_lib.trainer.train", interrupted_train)
    assert main(["train", "--output-dir", str(tmp_path / "run")]) == 130
    err = capsys.readouterr().err
    assert "interrupted after step 3" in err and str(tmp_path / "run") in err and "--resume" in err


def test_resume_and_overwrite_together_are_refused():
    with pytest.raises(ValueError, match="resume=True and overwrite=True contradict each other"):
        GRPOConfig(resume=True, overwrite=True)
    config = GRPOConfig(resume=True)
    with pytest.raises(ValueError, match="contradict"):
        config.overwrite = True
    assert config.overwrite is False


def test_the_cli_reports_the_oracle_faults_of_a_run(tmp_path, monkeypatch, capsys):
    from calgrpo_lib.trainer import TrainResult

    summary = {"calls": 9, "cache_hits": 2, "retries": 3, "fallbacks": 4, "abandoned": 1, "failures": 4,
               "failures_by_cause": {"http_503": 3, "deadline": 1}, "retries_by_cause": {"http_503": 3},
               "unlocalized": 1, "unlocalized_by_cause": {"quote_numbers_differ": 1}, "stopped": "quota_exhausted"}

    def finished_train(config, **kwargs):
        return TrainResult(config, 2, None, None, oracle_summary=summary)

    monkeypatch.setattr("calgrpo_lib.trainer.train", finished_train)
    assert main(["train", "--output-dir", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "oracle: 9 calls, 2 cache hits, 3 retries, 4 fallbacks; failures {'http_503': 3, 'deadline': 1}" in out
    assert "'quote_numbers_differ': 1" in out and "stopped: quota_exhausted" in out


def test_process_batch_split_divides_a_step_over_processes_and_microbatches():
    assert process_batch_split(16, 8, 1, 64) == (64, 2)  # the tiny preset alone: 2 microbatches of 64
    assert process_batch_split(16, 8, 2, 64) == (64, 1)
    assert process_batch_split(16, 8, 8, 64) == (16, 1)  # a process's share caps the microbatch
    assert process_batch_split(7, 8, 7, 4) == (4, 2)
    with pytest.raises(ValueError, match="16 \\* 8 does not split over 7 processes"):
        process_batch_split(16, 8, 7, 16)
    with pytest.raises(ValueError, match="microbatch_size=6 does not divide the 16 completions"):
        process_batch_split(16, 8, 8, 6)
    with pytest.raises(ValueError, match="num_processes"):
        process_batch_split(16, 8, 0, 16)
