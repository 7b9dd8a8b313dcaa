import re

import pytest

from calgrpo_lib.steps import split_steps
from calgrpo_lib.tasks import TaskConfig, generate_problems

ANNOTATION = re.compile(r"^(-?\d+) ([-+*/]) (-?\d+) = <<(-?\d+)([-+*/])(-?\d+)=(-?\d+)>>(-?\d+)$")


def check_solution(p) -> int:
    """Re-evaluate every annotation of a reference solution; return the number of mistakes."""
    mistakes, last = 0, None
    for line in p.steps:
        m = ANNOTATION.match(line)
        assert m, line
        a, op, b, a2, op2, b2, c, c2 = m.groups()
        a, b, c = int(a), int(b), int(c)
        value = {"+": a + b, "-": a - b, "*": a * b, "/": a / b}[op]
        ok = (a, op, b) == (int(a2), op2, int(b2)) and c == int(c2) == value
        mistakes += not ok
        last = c
    assert p.answer == "\n".join([*p.steps, f"#### {p.final}"])
    return mistakes + (last != p.final)


def test_ten_thousand_problems_have_no_arithmetic_mistakes():
    problems = generate_problems(10_000, seed=3)
    assert len({p.question for p in problems}) == 10_000
    assert sum(check_solution(p) for p in problems) == 0


def test_splits_share_no_question_and_seeds_reproduce():
    train = generate_problems(5_000, seed=1, split="train")
    test = generate_problems(2_000, seed=1, split="test")
    test_other_seed = generate_problems(2_000, seed=2, split="test")
    train_q = {p.question for p in train}
    assert not train_q & {p.question for p in test}
    assert not train_q & {p.question for p in test_other_seed}
    assert generate_problems(300, seed=1, split="test") == test[:300]
    again = generate_problems(5_000, seed=1, split="train")
    def as_bytes(problems):
        return "".join(p.question + p.answer for p in problems).encode()

    assert as_bytes(again) == as_bytes(train)
    assert generate_problems(50, seed=9) != generate_problems(50, seed=10)


@pytest.mark.parametrize("steps", [1, 2, 4, 6])
def test_step_count_knob(steps):
    for p in generate_problems(200, seed=0, config=TaskConfig(min_steps=steps, max_steps=steps)):
        assert len(p.steps) == steps
        assert check_solution(p) == 0


def test_operand_range_operations_and_exact_division():
    cfg = TaskConfig(operand_range=(5, 9), operations=("+", "/"), min_steps=3, max_steps=3)
    for p in generate_problems(300, seed=0, config=cfg):
        assert check_solution(p) == 0
        for line in p.steps:
            a, op, b = line.split(" ")[:3]
            assert op in "+/"
            if op == "+":
                assert 5 <= int(b) <= 9
            else:
                assert int(a) % int(b) == 0


def test_nesting_two_combines_two_chains():
    cfg = TaskConfig(nesting=2, min_steps=3, max_steps=5, max_digits=1)
    problems = generate_problems(200, seed=0, config=cfg)
    assert all(check_solution(p) == 0 for p in problems)
    assert all(" and " in p.question.split(".")[-1] or " than " in p.question for p in problems)


def test_wordings_knob_limits_phrasings():
    one = generate_problems(300, seed=0, config=TaskConfig(wordings=1))
    assert all(" has " in p.question.split(".")[0] for p in one)
    three = generate_problems(300, seed=0, config=TaskConfig(wordings=3))
    assert any(" starts with " in p.question for p in three)


def test_reference_solution_steps_are_lines():
    p = generate_problems(1, seed=0)[0]
    assert [s.text for s in split_steps(p.answer)] == [*p.steps, f"#### {p.final}"]


@pytest.mark.parametrize("kwargs, words", [
    (dict(min_steps=0), "min_steps=0"),
    (dict(max_steps=7), "max_steps=7"),
    (dict(min_steps=3, max_steps=2), "max_steps=2"),
    (dict(operand_range=(5, 4)), "operand_range=(5, 4)"),
    (dict(operand_range=(0, 4)), "operand_range=(0, 4)"),
    (dict(operations=()), "operations is empty"),
    (dict(operations=("+", "^")), "operations='^'"),
    (dict(operations=("-",)), "include '+' or '*'"),
    (dict(nesting=3), "nesting=3"),
])
def test_bad_config_names_the_field(kwargs, words):
    with pytest.raises((ValueError, TypeError), match=re.escape(words)):
        TaskConfig(**kwargs)


def test_bad_arguments_name_the_parameter():
    with pytest.raises(ValueError, match="split='dev'.*'train', 'test'"):
        generate_problems(3, split="dev")
    with pytest.raises(ValueError, match="n=-1"):
        generate_problems(-1)
    with pytest.raises(TypeError, match="seed='a'"):
        generate_problems(3, seed="a")
