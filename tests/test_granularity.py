"""Span granularity (calgrpo_lib.quotes.narrow_span, error_token_masks(granularity=...), GRPOConfig.span_granularity):
an error span is brought to its whole step, its claim, or only the wrong number it states."""

from __future__ import annotations

import pytest
import torch

from calgrpo_lib.config import GRPOConfig
from calgrpo_lib.granularity import SPAN_GRANULARITIES, narrow_span
from calgrpo_lib.quotes import find_quote
from calgrpo_lib.spans import encode_responses, error_token_masks, span_to_token_mask, token_char_offsets
from calgrpo_lib.tokenizers_zoo import corpus_texts, train_tokenizer

ANNOTATED = "12 + 5 = <<12+5=17>>17\n48 + 4 = <<48+4=42>>42\n42 * 2 = <<42*2=84>>84\n#### 84"
LINE = "48 + 4 = <<48+4=42>>42"


def _narrow(text: str, quote: str, granularity: str, occurrence: int = 0) -> tuple[str, bool, int]:
    start = -1
    for _ in range(occurrence + 1):
        start = text.index(quote, start + 1)
    s, e, reached = narrow_span(text, start, start + len(quote), granularity)
    return text[s:e], reached, s


def test_the_granularities():
    assert SPAN_GRANULARITIES == ("quote", "step", "claim", "result")


@pytest.mark.parametrize("quote", [LINE, "42", "<<48+4=42>>", "= <<48+4"])  # the step checker's quote, sub-spans
def test_annotated_step(quote):
    text = ANNOTATED
    assert _narrow(text, quote, "step")[:2] == (LINE, True)
    assert _narrow(text, quote, "claim")[:2] == (LINE, True)
    got, reached, start = _narrow(text, quote, "result")
    assert (got, reached) == ("42", True)
    assert start == text.index("=42>>") + 1  # the 42 inside the annotation, where the wrong number is first written


def test_annotation_right_but_another_number_shown():
    text = "48 + 4 = <<48+4=52>>42 pens\n#### 42"
    got, reached, start = _narrow(text, "48 + 4", "result")
    assert (got, reached, start) == ("42", True, text.index(">>42") + 2)  # the shown number is the wrong one


def test_plain_equation_in_a_sentence():
    text = "Ava starts with 48 pens. She buys 4, so she has 48 + 4 = 42 pens. She gives 2 away."
    step = "She buys 4, so she has 48 + 4 = 42 pens."
    assert _narrow(text, "48 + 4 = 42", "step")[:2] == (step, True)
    assert _narrow(text, step, "claim")[:2] == ("48 + 4 = 42", True)  # an LLM quote of the whole step
    got, reached, start = _narrow(text, step, "result")
    assert (got, reached, start) == ("42", True, text.index("= 42") + 2)


def test_prose_claim():
    text = "Ben has 5 boxes.\nEach box holds 3 cards, so 5 times 3 is 16 cards.\n#### 16"
    assert _narrow(text, "5 times 3 is 16", "claim")[:2] == ("5 times 3 is 16", True)
    assert _narrow(text, "Each box holds 3 cards, so 5 times 3 is 16 cards.", "result")[:2] == ("16", True)


def test_the_wrong_claim_of_a_step_with_two():
    text = "5 + 3 = 8 and 8 * 2 = 17\n#### 17"
    assert _narrow(text, text.splitlines()[0], "claim")[:2] == ("8 * 2 = 17", True)
    assert _narrow(text, "5 + 3 = 8 and", "claim")[:2] == ("5 + 3 = 8", True)  # the only claim the quote overlaps
    assert _narrow(text, "17", "result", 0)[:2] == ("17", True)


def test_a_quote_with_no_claim_falls_back_to_its_step():
    text = "Kim has 7 cards.\nShe forgot the cards in her bag, 12 + 3 = 15.\n#### 15"
    step = "She forgot the cards in her bag, 12 + 3 = 15."
    for granularity in ("claim", "result"):
        assert _narrow(text, "forgot the cards", granularity)[:2] == (step, False)


def test_two_right_claims_and_no_wrong_one_cannot_be_told_apart():
    text = "2 + 3 = 5 and 5 * 2 = 10\n#### 10"
    assert _narrow(text, text.splitlines()[0], "claim")[:2] == (text.splitlines()[0], False)


def test_a_claim_that_holds_keeps_an_operand_quote():
    text = "12 + 7 = <<12+7=19>>19\n#### 19"  # the step checker quotes an ungrounded operand alone: "7"
    assert _narrow(text, "7", "claim")[:2] == ("12 + 7 = <<12+7=19>>19", True)
    assert _narrow(text, "7", "result")[:2] == ("7", True)
    assert _narrow(text, "12 + 7", "result")[:2] == ("12 + 7 = <<12+7=19>>19", False)  # no wrong number: the claim


def test_final_answer_line():
    assert _narrow(ANNOTATED, "#### 84", "claim")[:2] == ("#### 84", True)
    got, reached, start = _narrow(ANNOTATED, "#### 84", "result")
    assert (got, reached, start) == ("84", True, ANNOTATED.rindex("84"))


def test_a_span_in_the_gap_between_steps_goes_to_the_next_step():
    text = "1 + 1 = 2\n\n2 + 2 = 5"
    s, e, reached = narrow_span(text, 9, 12, "step")
    assert (text[s:e], reached) == ("2 + 2 = 5", True)


def test_bad_arguments():
    with pytest.raises(ValueError, match="granularity='token' is not allowed; allowed: 'quote', 'step', 'claim'"):
        narrow_span("1 + 1 = 3", 0, 3, "token")
    with pytest.raises(ValueError, match="end=2 is out of range"):
        narrow_span("1 + 1 = 3", 2, 2, "step")
    with pytest.raises(ValueError, match="start=40 is out of range"):
        narrow_span("1 + 1 = 3", 40, 41, "step")
    with pytest.raises(ValueError, match="span_granularity='token' is not allowed"):
        GRPOConfig(span_granularity="token")
    assert GRPOConfig().span_granularity == "quote"


# ------------------------------------------------------------------------------------------ token masks


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer("byte_bpe", corpus_texts(200, seed=3), vocab_size=400)


def test_error_token_masks_narrow_before_mapping_and_count_what_could_not(tok):
    texts = [ANNOTATED, "Kim has 7 cards.\nShe forgot the cards in her bag.\n#### 7", ANNOTATED]
    ids, mask = encode_responses(tok, texts)
    quotes = [(LINE, 1), ("forgot the cards", 1), None]
    plain, plain_stats = error_token_masks(tok, ids, mask, quotes)
    assert plain_stats.not_narrowed == 0 and plain_stats.to_dict()["not_narrowed"] == 0.0
    for granularity, expect in (("step", LINE), ("claim", LINE), ("result", "42")):
        err, stats = error_token_masks(tok, ids, mask, quotes, granularity=granularity)
        assert stats.not_narrowed == (1 if granularity != "step" else 0)
        m = stats.matches[0]
        assert texts[0][m.start:m.end] == expect and m.kind == "exact"
        start = texts[0].index("=42>>") + 1 if granularity == "result" else texts[0].index(LINE)
        _, offsets = token_char_offsets(tok, ids[0][mask[0]])
        assert err[0][mask[0]].tolist() == span_to_token_mask(offsets, start, start + len(expect))
        assert 0 < int(err[0].sum()) < int(mask[0].sum())
        fallback = stats.matches[1]  # no claim: its whole step
        assert texts[1][fallback.start:fallback.end] == "She forgot the cards in her bag."
        assert not err[2].any()
    stepped = error_token_masks(tok, ids, mask, quotes, granularity="step")[0]
    assert torch.equal(stepped[0], plain[0]) and stepped[1].sum() > plain[1].sum()  # row 0's quote was its step
    with pytest.raises(ValueError, match="granularity='word'"):
        error_token_masks(tok, ids, mask, quotes, granularity="word")


def test_the_default_keeps_the_quote_and_step_widens_it():
    text = "Ava has 48 pens.\nShe buys 4 more, so 48 + 4 = 42.\n#### 42"
    m = find_quote(text, "48 + 4 = 42", 1)
    s, e, reached = narrow_span(text, m.start, m.end, GRPOConfig().span_granularity)  # "quote": as the oracle said
    assert (text[s:e], reached) == ("48 + 4 = 42", True)
    s, e, _ = narrow_span(text, m.start, m.end, "step")
    assert text[s:e] == "She buys 4 more, so 48 + 4 = 42."
