from hypothesis import given
from hypothesis import strategies as st

from calgrpo_lib.steps import numbered_steps, split_steps


def test_lines_are_steps_with_exact_offsets():
    text = "  12 + 5 = <<12+5=17>>17\n\n17 * 2 = <<17*2=34>>34  \n#### 34"
    steps = split_steps(text)
    assert [s.text for s in steps] == ["12 + 5 = <<12+5=17>>17", "17 * 2 = <<17*2=34>>34", "#### 34"]
    assert [s.index for s in steps] == [0, 1, 2]
    assert all(text[s.start:s.end] == s.text for s in steps)


def test_single_paragraph_splits_at_sentences_not_decimals():
    text = "She pays 2.5 dollars each. So 4 cost 10 dollars. The answer is 10."
    assert [s.text for s in split_steps(text)] == ["She pays 2.5 dollars each.", "So 4 cost 10 dollars.",
                                                 "The answer is 10."]


def test_numbered_rendering():
    assert numbered_steps("a\nb") == "[0] a\n[1] b"
    assert split_steps("") == [] and split_steps(" \n ") == []


@given(st.text(alphabet=st.sampled_from("ab1. \n=+"), max_size=60))
def test_offsets_always_index_the_original(text):
    steps = split_steps(text)
    assert all(text[s.start:s.end] == s.text and s.text == s.text.strip() and s.text for s in steps)
    assert all(a.end <= b.start for a, b in zip(steps, steps[1:]))
