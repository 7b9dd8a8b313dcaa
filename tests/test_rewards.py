import pytest

from calgrpo_lib.data import load_gsm8k
from calgrpo_lib.rewards import (
    batch_rewards,
    build_prompt,
    completion_reward,
    extract_answer,
    extract_number,
    format_reward,
    is_correct,
    parse_number,
)


@pytest.mark.parametrize("text, expected", [
    ("12 + 5 = 17\n#### 17", "17"),
    ("#### 3\n... later\n#### 1,234", "1,234"),
    ("<think>2+2=4</think> <answer> 4 </answer>", "4"),
    ("so the answer is \\boxed{\\frac{3}{4}}.", "\\frac{3}{4}"),
    ("first 3 then 7 apples.", "7"),
    ("costs $1,000.50 in total", "$1,000.50"),
    ("no number here", None),
    ("", None),
])
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize("s, value", [
    ("1,000", 1000.0), ("$5", 5.0), ("-3", -3.0), ("12.0", 12.0), ("50%", 50.0), ("3/4", 0.75),
    ("\\frac{3}{4}", 0.75), ("-\\frac{1}{2}", -0.5), ("72 clips", 72.0), ("$ 1,234.5.", 1234.5), ("\\$7", 7.0),
    ("1/0", None), ("3 or 4", None), ("abc", None), (None, None), ("", None),
])
def test_parse_number(s, value):
    assert parse_number(s) == value


def test_correctness_and_format_rewards():
    good = "12 + 5 = <<12+5=17>>17\n#### 17"
    assert is_correct(good, 17) and not is_correct(good, 18)
    assert format_reward(good) == 1.0
    assert format_reward("12 + 5 = 17") == 0.0
    assert format_reward("#### 17\n#### 17") == 0.0
    assert format_reward("#### seventeen") == 0.0
    r1 = "<think>12+5=17</think>\n<answer>17</answer>"
    assert format_reward(r1, "r1") == 1.0 and format_reward(good, "r1") == 0.0
    assert format_reward("<think>x</think><answer>n/a</answer>", "r1") == 0.0
    assert completion_reward(good, 17) == pytest.approx(1.0)
    assert completion_reward(good, 16) == pytest.approx(0.2)
    assert completion_reward("the answer is 17", 17) == pytest.approx(0.8)


def test_batch_rewards_weights_and_lengths():
    out = batch_rewards(["#### 1", "#### 2", "1"], [1, 1, 1], answer_weight=1.0, format_weight=0.5)
    assert out.correct == [1.0, 0.0, 1.0] and out.formatted == [1.0, 1.0, 0.0]
    assert out.total == [1.5, 0.5, 1.0]
    with pytest.raises(ValueError, match="texts has 1 items but targets has 2"):
        batch_rewards(["#### 1"], [1, 2])
    with pytest.raises(ValueError, match="format_weight=-1"):
        batch_rewards(["#### 1"], [1], format_weight=-1)
    with pytest.raises(ValueError, match="fmt='json'"):
        format_reward("x", "json")


def test_prompt_styles():
    assert build_prompt("What is 2+2?") == "Question: What is 2+2?\nAnswer:\n"
    assert build_prompt("Q", "r1_zero").endswith("User: Q\nAssistant: <think>")
    with pytest.raises(ValueError, match="style='chat' needs a tokenizer with a chat template"):
        build_prompt("Q", "chat")
    with pytest.raises(ValueError, match="style='fancy'"):
        build_prompt("Q", "fancy")


def test_chat_prompt_uses_the_tokenizer_template():
    class Tok:
        chat_template = "x"

        def apply_chat_template(self, messages, tokenize, add_generation_prompt):
            assert not tokenize and add_generation_prompt
            return "|".join(f"{m['role']}:{m['content']}" for m in messages)

    text = build_prompt("Q?", "chat", tokenizer=Tok(), system="Be exact.")
    assert text.startswith("system:Be exact.|user:Q?\nSolve it step by step")


@pytest.mark.parametrize("split, n", [("train", 7473), ("test", 1319)])
def test_extraction_round_trips_every_gsm8k_reference(gsm8k_dir, split, n):
    problems = load_gsm8k(split, gsm8k_dir)
    assert len(problems) == n
    mismatches = [p.id for p in problems
                  if extract_number(p.answer) != float(p.answer.rpartition("####")[2].strip().replace(",", ""))]
    assert mismatches == []
    assert all(format_reward(p.answer) == 1.0 for p in problems)
