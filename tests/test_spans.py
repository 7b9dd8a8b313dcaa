"""Tests of quote -> character span -> token mask (calgrpo_lib.quotes, calgrpo_lib.spans)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from calgrpo_lib.quotes import SpanMatch, find_quote, normalize_with_map
from calgrpo_lib.spans import (
    decode_responses,
    encode_responses,
    error_token_masks,
    span_to_token_mask,
    token_char_offsets,
    token_texts,
)
from calgrpo_lib.tasks import generate_problems
from calgrpo_lib.tokenizers_zoo import TOKENIZER_KINDS, corpus_texts, train_tokenizer

PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def tokenizers() -> dict:
    """One tokenizer per family, trained once on a small synthetic corpus."""
    texts = corpus_texts(200, seed=3)
    return {kind: train_tokenizer(kind, texts, vocab_size=400) for kind in TOKENIZER_KINDS}


# ------------------------------------------------------------------------------------- find_quote: exact, steps

SOLUTION = "12 + 5 = <<12+5=17>>17\n17 + 5 = <<17+5=22>>22\n17 * 2 = <<17*2=34>>34\n#### 34"


def test_exact_quote_is_found_verbatim() -> None:
    m = find_quote(SOLUTION, "17 + 5 = <<17+5=22>>22")
    assert (m.kind, m.score, m.ok) == ("exact", 100.0, True)
    assert SOLUTION[m.start:m.end] == "17 + 5 = <<17+5=22>>22"


@pytest.mark.parametrize("step", [0, 1, 2])
def test_duplicate_quote_prefers_the_named_step(step: int) -> None:
    line_start = [0, 23, 46][step]
    m = find_quote(SOLUTION, "17", step)
    assert m.kind == "exact" and m.in_step is True
    assert line_start <= m.start < line_start + 22 and SOLUTION[m.start:m.end] == "17"


def test_without_step_the_first_occurrence_wins() -> None:
    assert find_quote(SOLUTION, "34").start == SOLUTION.index("34")


def test_step_past_the_end_is_no_preference() -> None:
    m = find_quote(SOLUTION, "34", 9)
    assert m.start == SOLUTION.index("34") and m.in_step is None


def test_quote_only_in_another_step_is_found_nearest_and_flagged() -> None:
    m = find_quote(SOLUTION, "#### 34", 0)
    assert SOLUTION[m.start:m.end] == "#### 34" and m.in_step is False


def test_normalized_match_in_named_step_beats_exact_match_elsewhere() -> None:
    text = "Ava has 1000 coins.\nShe still has 1,000 coins.\n#### 1000"
    in_step1 = find_quote(text, "1000 coins", 1)
    assert (in_step1.kind, text[in_step1.start:in_step1.end]) == ("normalized", "1,000 coins")
    in_step0 = find_quote(text, "1000 coins", 0)
    assert (in_step0.kind, in_step0.start) == ("exact", text.index("1000 coins"))


def test_sentence_steps_of_a_one_line_answer_are_used() -> None:
    text = "Ben has 5 cards. He buys 5 more. So he has 10 cards."
    m = find_quote(text, "5", 1)
    assert m.start == text.index("buys 5") + 5 and m.in_step is True


# -------------------------------------------------------------------------- find_quote: paraphrases, formats

# (text, quote, expected original span text, kind)
PARAPHRASES = [
    ("Ava has 1,000 apples.", "1000 apples", "1,000 apples", "normalized"),
    ("Ben has 2500 coins.", "2,500 coins", "2500 coins", "normalized"),
    ("She sorts 1,234,567 beads.", "1234567 beads", "1,234,567 beads", "normalized"),
    ("a total of 12,500 stickers", "12500 Stickers", "12,500 stickers", "normalized"),
    ("So 12 × 4 = 48 marbles.", "\\(12 \\times 4 = 48\\)", "12 × 4 = 48", "normalized"),
    ("We get \\(12 \\times 4 = 48\\) marbles.", "12 * 4 = 48", "12 \\times 4 = 48", "normalized"),
    ("\\[ 7 \\times 8 = 56 \\]", "7 × 8 = 56", "7 \\times 8 = 56", "normalized"),
    ("Then 12 \\cdot 4 = 48.", "12*4=48", "12 \\cdot 4 = 48", "normalized"),
    ("Then 48 ÷ 4 = 12.", "48 / 4 = 12", "48 ÷ 4 = 12", "normalized"),
    ("Then $48 \\div 4 = 12$.", "48/4=12", "48 \\div 4 = 12", "normalized"),
    ("The total is $48$ now.", "total is 48", "total is $48", "normalized"),
    ("Each costs $5.00 here.", "each costs 5", "Each costs $5", "normalized"),
    ("The answer is 15.0 coins.", "answer is 15 coins", "answer is 15.0 coins", "normalized"),
    ("He said “I have 12” and left.", '"I have 12"', "I have 12", "normalized"),
    ("Ava’s apples: 12 + 5 = 17", "Ava's apples", "Ava’s apples", "normalized"),
    ("So 17 − 5 = 12 left.", "17 - 5 = 12", "17 − 5 = 12", "normalized"),
    ("Pages 10–20 are read.", "pages 10-20", "Pages 10–20", "normalized"),
    ("It is 12 — not 13.", "12 - not 13", "12 — not 13", "normalized"),
    ("12 + 5 = 17\n#### 17", "12  +  5 =  17", "12 + 5 = 17", "normalized"),
    ("12   +  5 = 17\nnext", "12 + 5 = 17", "12   +  5 = 17", "normalized"),
    ("12 + 5 = 17\n#### 17", "12+5=17", "12 + 5 = 17", "normalized"),
    ("She has 17 apples\nThen more.", "She has 17 apples.", "She has 17 apples", "normalized"),
    ("She has 17 apples. Then more.", "she has 17 apples", "She has 17 apples", "normalized"),
    ("12 + 5 = 17\n#### 17", "12 + 5 = 17.", "12 + 5 = 17", "normalized"),
    ("Ava has 12 apples.", "AVA HAS 12 APPLES", "Ava has 12 apples", "normalized"),
    ("12 + 5 = <<12+5=17>>17\n#### 17", "12 + 5 = 17", "12 + 5 = <<12+5=17>>17", "normalized"),
    ("12 + 5 = <<12+5=17>>17\n#### 17", "<<12 + 5 = 17>>", "<<12+5=17>>", "normalized"),
    ("837 + 12 = < < 837 + 12 = 859 > > 859", "<<837+12=859>>859", "< < 837 + 12 = 859 > > 859", "normalized"),
    ("837 + 12 = < < 837 + 12 = 859 > > 859", "837+12 = 859", "837 + 12 = < < 837 + 12 = 859 > > 859",
     "normalized"),
    ("She has 12\napples.", "has 12 apples", "has 12\napples", "normalized"),
    ("She has 12\u00a0apples.", "has 12 apples", "has 12\u00a0apples", "normalized"),
    ("She has 12\tapples.", "has  12 apples", "has 12\tapples", "normalized"),
    ("Ava has １２ apples.", "has 12 apples", "has １２ apples", "normalized"),
    ("1000 * 3 = <<1000*3=3000>>3000", "\\(1,000 \\times 3 = 3,000\\)", "1000 * 3 = <<1000*3=3000>>3000",
     "normalized"),
    ("So the total is 48 marbles.", "THE TOTAL IS 48.", "the total is 48", "normalized"),
    ("12 + 5 = 17\n#### 17", "12 + 5 = 17…", "12 + 5 = 17", "normalized"),
    ("x = 5 - 3 = 2", "x=5−3", "x = 5 - 3", "normalized"),
    ("Ava has 12 apples.", "'Ava has 12 apples'", "Ava has 12 apples", "normalized"),
    # a near miss with the same numbers; "17 * 3 = 53" (a different number) is rejected: tests/test_quotes.py
    ("17 * 3 = <<17*3=52>>52\n#### 52", "17 * 3 == 52", "17 * 3 = <<17*3=52>>52", "fuzzy"),
    ("Mia shares them equally among 4 bags and keeps one bag.", "Mia shares them equaly among 4 bags",
     "Mia shares them equally among 4 bags", "fuzzy"),
    ("Tom loses 7 shells, so he has 20 shells left.", "Tom looses 7 shells", "Tom loses 7 shells", "fuzzy"),
]


@pytest.mark.parametrize(("text", "quote", "expected", "kind"), PARAPHRASES)
def test_paraphrase_maps_to_the_original_span(text: str, quote: str, expected: str, kind: str) -> None:
    m = find_quote(text, quote)
    assert m.kind == kind, m
    assert text[m.start:m.end] == expected
    assert m.start == text.index(expected)


def test_paraphrase_table_is_large_enough() -> None:
    assert len(PARAPHRASES) >= 30


@pytest.mark.parametrize("quote", [
    "the cat sat on the mat",
    "Zoe bought 99 pencils at the store",
    "quantum chromodynamics",
    "How many stamps does Omar have",
    "xyz",
])
def test_unrelated_quote_is_rejected(quote: str) -> None:
    text = "Ava has 12 apples. Ava buys 5 more.\n12 + 5 = <<12+5=17>>17\n#### 17"
    m = find_quote(text, quote)
    assert not m.ok and m.reason == "not_found" and m.score < 85.0
    assert (m.start, m.end, m.kind) == (-1, -1, "none")


def test_fuzzy_threshold_decides() -> None:
    text = "17 * 3 = <<17*3=52>>52\n#### 52"
    score = find_quote(text, "17 * 3 == 52").score
    assert find_quote(text, "17 * 3 == 52", fuzzy_threshold=score).kind == "fuzzy"
    assert find_quote(text, "17 * 3 == 52", fuzzy_threshold=min(100.0, score + 0.5)).reason == "not_found"


@pytest.mark.parametrize("quote", ["", "   ", "\n"])
def test_empty_quote_fails_with_reason(quote: str) -> None:
    assert find_quote(SOLUTION, quote).reason == "empty_quote"


@pytest.mark.parametrize(("quote", "found"), [("=", True), (". ", False), ("“”", False)])
def test_punctuation_only_quote_matches_only_verbatim(quote: str, found: bool) -> None:
    m = find_quote(SOLUTION, quote)
    assert m.ok is found and (m.kind == "exact" if found else m.reason == "not_found")


def test_normalize_map_points_at_original_characters() -> None:
    text = "A\u00a0total:  \\(1,000 \\times 3\\)"
    norm, spans = normalize_with_map(text)
    assert norm == "a total:1000*3" and len(spans) == len(norm)
    assert [text[s:e] for s, e in spans[-6:]] == ["1", "0", "0", "0", "\\times", "3"]
    assert all(s1 <= s2 for (s1, _), (s2, _) in zip(spans, spans[1:]))


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"text": 3, "quote": "a"}, TypeError, "text=3"),
    ({"text": "a", "quote": None}, TypeError, "quote=None"),
    ({"text": "a", "quote": "a", "step": -1}, ValueError, "step=-1"),
    ({"text": "a", "quote": "a", "step": 1.0}, TypeError, "step=1.0"),
    ({"text": "a", "quote": "a", "fuzzy_threshold": 101}, ValueError, "fuzzy_threshold=101"),
])
def test_find_quote_rejects_bad_input(kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        find_quote(**kwargs)


# ------------------------------------------------------------------------ properties over tokenizer families

_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJ0123456789 .,+-*/=<>#\n" + "éü×€−“”😀"
_WORDS = [" apples", " has", "Ava", " buys", " more", "\n", " = ", "<<", ">>", "####", " 17", "12", " * ", " gives",
          " marbles", " equally", "."]
_TEXTS = st.lists(st.one_of(st.sampled_from(_WORDS), st.text(_ALPHABET, min_size=1, max_size=4)),
                  min_size=1, max_size=14).map("".join)


def _ids_strategy(tokenizer) -> st.SearchStrategy[list[int]]:
    canonical = _TEXTS.map(lambda t: tokenizer.backend_tokenizer.encode(t, add_special_tokens=False).ids)
    sampled = st.lists(st.integers(0, len(tokenizer) - 1), min_size=1, max_size=40)  # any ids a policy may emit
    return st.one_of(canonical, sampled)


def _check_mapping(tokenizer, ids: list[int], text: str, offsets: list, start: int, end: int) -> None:
    quote = text[start:end]
    m = find_quote(text, quote)
    assert m.kind == "exact" and text[m.start:m.end] == quote
    inside = span_to_token_mask(offsets, m.start, m.end)
    picked = [i for i, flag in enumerate(inside) if flag]
    assert picked, "an exact quote of a non-empty span covers at least one token"
    lo, hi = picked[0], picked[-1]
    gaps = [i for i in range(lo, hi + 1) if not inside[i] and offsets[i][1] > offsets[i][0]]
    assert not gaps, "the picked tokens are contiguous (special tokens aside)"
    assert min(offsets[i][0] for i in picked) <= m.start and max(offsets[i][1] for i in picked) >= m.end
    partial = [i for i in picked if offsets[i][0] < m.start or offsets[i][1] > m.end]
    assert set(partial) <= {lo, hi}, "at most one partial token at each end"
    decoded = tokenizer.backend_tokenizer.decode([ids[i] for i in picked], skip_special_tokens=True)
    assert quote.strip() in decoded


@pytest.mark.parametrize("kind", TOKENIZER_KINDS)
def test_exact_quotes_map_to_covering_tokens(tokenizers: dict, kind: str) -> None:
    tok = tokenizers[kind]

    @PROPERTY
    @given(ids=_ids_strategy(tok), data=st.data())
    def check(ids: list[int], data: st.DataObject) -> None:
        text, offsets = token_char_offsets(tok, ids)
        assume(text.strip())
        start = data.draw(st.integers(0, len(text) - 1))
        end = data.draw(st.integers(start + 1, len(text)))
        assume(text[start:end].strip())
        _check_mapping(tok, ids, text, offsets, start, end)

    check()


@pytest.mark.parametrize("kind", TOKENIZER_KINDS)
def test_offsets_tile_the_decoded_text(tokenizers: dict, kind: str) -> None:
    tok = tokenizers[kind]

    @PROPERTY
    @given(ids=_ids_strategy(tok))
    def check(ids: list[int]) -> None:
        text, offsets = token_char_offsets(tok, ids)
        assert len(offsets) == len(ids)
        spans = [(s, e) for s, e in offsets if e > s]
        covered = 0
        for s, e in spans:
            assert s <= covered, f"gap before {(s, e)} in {text!r}"
            covered = max(covered, e)
        assert covered == len(text)

    check()


@pytest.mark.parametrize("kind", TOKENIZER_KINDS)
def test_reencoding_and_incremental_decoding_agree_on_canonical_ids(tokenizers: dict, kind: str) -> None:
    tok = tokenizers[kind]
    for text in corpus_texts(30, seed=11):
        ids = tok.backend_tokenizer.encode(text, add_special_tokens=False).ids
        assert token_char_offsets(tok, ids, method="reencode") == token_char_offsets(tok, ids, method="incremental")


def test_reencode_refuses_non_canonical_ids(tokenizers: dict) -> None:
    tok = tokenizers["byte_bpe"]
    pieces = [tok.convert_tokens_to_ids(c) for c in "apples"]  # spelled letter by letter, not the merged token
    assert pieces != tok.backend_tokenizer.encode("apples").ids
    text, offsets = token_char_offsets(tok, pieces)
    assert text == "apples" and offsets == [(i, i + 1) for i in range(6)]
    with pytest.raises(ValueError, match="method='reencode'"):
        token_char_offsets(tok, pieces, method="reencode")


def test_split_multibyte_character_belongs_to_both_tokens(tokenizers: dict) -> None:
    tok = tokenizers["byte_bpe"]
    ids = tok.backend_tokenizer.encode("a café", add_special_tokens=False).ids
    text, offsets = token_char_offsets(tok, ids)
    e_acute = text.index("é")
    holders = [i for i, (s, e) in enumerate(offsets) if s <= e_acute < e]
    assert text == "a café" and len(holders) == 2  # "é" is two bytes, unseen in training: two byte tokens
    assert span_to_token_mask(offsets, e_acute, e_acute + 1) == [i in holders for i in range(len(ids))]
    assert token_char_offsets(tok, ids, method="incremental") == (text, offsets)  # prefix decoding agrees


def test_metaspace_and_wordpiece_spaces_go_to_the_next_token(tokenizers: dict) -> None:
    for kind in ("unigram", "wordpiece"):
        tok = tokenizers[kind]
        ids = tok.backend_tokenizer.encode("Ava has 12 apples", add_special_tokens=False).ids
        text, offsets = token_char_offsets(tok, ids)
        assert text == "Ava has 12 apples"
        owner = next(i for i, (s, e) in enumerate(offsets) if s <= text.index(" apples") < e)
        assert text[offsets[owner][0]:offsets[owner][1]].startswith(" ")


def test_special_tokens_get_empty_spans(tokenizers: dict) -> None:
    tok = tokenizers["byte_bpe"]
    body = tok.backend_tokenizer.encode("12 + 5 = 17", add_special_tokens=False).ids
    ids = [tok.pad_token_id, *body[:2], tok.eos_token_id, *body[2:], tok.eos_token_id]
    text, offsets = token_char_offsets(tok, ids)
    assert text == "12 + 5 = 17"
    assert offsets[0] == (0, 0) and offsets[-1] == (len(text), len(text))
    assert offsets[3][0] == offsets[3][1] == offsets[2][1]
    assert not any(span_to_token_mask(offsets, 0, len(text))[i] for i in (0, 3, len(ids) - 1))


def test_token_texts_are_pieces_of_the_text_and_special_names(tokenizers: dict) -> None:
    tok = tokenizers["unigram"]
    ids = [*tok.backend_tokenizer.encode("Ava has 12 apples", add_special_tokens=False).ids, tok.eos_token_id]
    pieces = token_texts(tok, ids)
    assert pieces[-1] == "<eos>" and "".join(pieces[:-1]) == "Ava has 12 apples"
    assert len(pieces) == len(ids)


def test_token_char_offsets_accepts_a_tensor_and_rejects_bad_ids(tokenizers: dict) -> None:
    tok = tokenizers["byte_bpe"]
    ids = tok.backend_tokenizer.encode("12 + 5", add_special_tokens=False).ids
    assert token_char_offsets(tok, torch.tensor(ids)) == token_char_offsets(tok, ids)
    with pytest.raises(ValueError, match="token_ids"):
        token_char_offsets(tok, torch.tensor([ids]))
    with pytest.raises(ValueError, match=r"token_ids\[1\]"):
        token_char_offsets(tok, [1, -3])
    with pytest.raises(ValueError, match="method"):
        token_char_offsets(tok, ids, method="prefix")
    with pytest.raises(TypeError, match="tokenizer"):
        token_char_offsets("gpt2", ids)


def test_span_to_token_mask_counts_partial_tokens_and_checks_bounds() -> None:
    offsets = [(0, 3), (3, 7), (7, 7), (7, 10)]
    assert span_to_token_mask(offsets, 2, 4) == [True, True, False, False]
    assert span_to_token_mask(offsets, 3, 7) == [False, True, False, False]
    assert span_to_token_mask(offsets, 7, 7) == [False] * 4
    with pytest.raises(ValueError, match="end"):
        span_to_token_mask(offsets, 5, 4)


# -------------------------------------------------------------------------------------------- batches


@pytest.mark.parametrize("kind", TOKENIZER_KINDS)
def test_every_exact_step_quote_of_a_batch_maps(tokenizers: dict, kind: str) -> None:
    tok = tokenizers[kind]
    problems = generate_problems(40, seed=5)
    ids, mask = encode_responses(tok, [p.answer for p in problems])
    texts = decode_responses(tok, ids, mask)
    quotes = [(s.text, s.index) for s in (_last_step(t) for t in texts)]
    err, stats = error_token_masks(tok, ids, mask, quotes, max_error_span_tokens=120)
    assert stats.hit_rate == 1.0 and stats.by_kind == {"exact": 40} and stats.num_in_named_step == 40
    assert (err & ~mask).sum() == 0 and err.any(dim=1).all()


def _last_step(text: str):
    from calgrpo_lib.steps import split_steps

    return split_steps(text)[-1]


def test_left_and_right_padding_give_the_same_mask(tokenizers: dict) -> None:
    tok = tokenizers["byte_bpe"]
    texts = ["12 + 5 = <<12+5=17>>17\n#### 17", "Ava has 3.\n3 * 4 = <<3*4=12>>12\n#### 12"]
    quotes = [("12 + 5", 0), ("3 * 4", 1)]
    right, rmask = encode_responses(tok, texts, width=40, side="right")
    left, lmask = encode_responses(tok, texts, width=40, side="left")
    assert right[0, 0] != tok.pad_token_id and left[0, 0] == tok.pad_token_id
    err_r, _ = error_token_masks(tok, right, rmask, quotes)
    err_l, _ = error_token_masks(tok, left, lmask, quotes)
    for i in range(2):
        assert err_r[i][rmask[i]].tolist() == err_l[i][lmask[i]].tolist()
        picked = right[i][err_r[i]].tolist()
        assert quotes[i][0] in tok.decode(picked)


def test_eos_and_padding_never_enter_the_mask(tokenizers: dict) -> None:
    tok = tokenizers["byte_bpe"]
    ids, mask = encode_responses(tok, ["12 + 5 = 17\n#### 17"], width=30)
    err, stats = error_token_masks(tok, ids, mask, [("12 + 5 = 17\n#### 17", 1)])
    eos_col = int(mask[0].sum()) - 1
    assert int(ids[0, eos_col]) == tok.eos_token_id and mask[0, eos_col]
    assert err[0, :eos_col].all() and not err[0, eos_col:].any()
    assert stats.num_mapped == 1


def test_encode_responses_cuts_long_rows_and_checks_input(tokenizers: dict) -> None:
    tok = tokenizers["wordpiece"]
    ids, mask = encode_responses(tok, ["Ava has 12 apples", "Ava"], width=3, side="left", add_eos=False)
    assert ids.shape == (2, 3) and mask.tolist() == [[True] * 3, [False, False, True]]
    with pytest.raises(ValueError, match="side"):
        encode_responses(tok, ["a"], side="middle")
    with pytest.raises(TypeError, match="texts\\[1\\]"):
        encode_responses(tok, ["a", 3])


def test_chat_markers_in_the_response_get_no_credit() -> None:
    tok = train_tokenizer("byte_bpe", corpus_texts(60, seed=2), vocab_size=320)
    tok.backend_tokenizer.add_special_tokens(["<|im_end|>"])
    end_id = tok.convert_tokens_to_ids("<|im_end|>")
    body = tok.backend_tokenizer.encode("12 + 5 = 17", add_special_tokens=False).ids
    ids = torch.tensor([[*body, end_id, tok.eos_token_id]])
    err, _ = error_token_masks(tok, ids, torch.ones_like(ids, dtype=torch.bool), [("5 = 17", None)])
    assert err[0, -2:].tolist() == [False, False] and err[0, :len(body)].any()


def test_too_long_span_falls_back_to_an_empty_row(tokenizers: dict) -> None:
    tok = tokenizers["byte_bpe"]
    text = "12 + 5 = <<12+5=17>>17\n17 * 3 = <<17*3=51>>51\n#### 51"
    ids, mask = encode_responses(tok, [text, text])
    quotes = [(text, None), ("17 * 3", 1)]
    err, stats = error_token_masks(tok, ids, mask, quotes, max_error_span_tokens=8)
    assert not err[0].any() and err[1].any()
    assert stats.failures == {"too_long": 1} and stats.num_mapped == 1 and stats.hit_rate == 0.5
    assert stats.matches[0].reason == "too_long" and not stats.matches[0].ok


def test_stats_count_kinds_failures_and_rows_without_quotes(tokenizers: dict) -> None:
    tok = tokenizers["wordpiece"]
    texts = ["Ava has 1000 apples .", "Ava has 12 apples .", "Ben has 3 cards .", "Ava has 5 apples ."]
    ids, mask = encode_responses(tok, texts, side="left")
    decoded = decode_responses(tok, ids, mask)
    quotes = [("1,000 apples", 0), ("Ava has 12", 0), None, ("the cat sat on the mat", None)]
    err, stats = error_token_masks(tok, ids, mask, quotes, texts=[decoded[0], "something else", decoded[2],
                                                                    decoded[3]])
    assert stats.by_kind == {"normalized": 1, "exact": 1} and stats.failures == {"not_found": 1}
    assert (stats.num_responses, stats.num_quotes, stats.num_mapped, stats.text_mismatches) == (4, 3, 2, 1)
    assert stats.matches[2] is None and not err[2].any() and not err[3].any()
    flat = stats.to_dict()
    assert flat["hit_rate"] == pytest.approx(2 / 3) and flat["hit_rate/normalized"] == pytest.approx(1 / 3)
    assert flat["fail/not_found"] == 1.0 and all(isinstance(v, float) for v in flat.values())


@pytest.mark.parametrize(("change", "error", "match"), [
    ({"completion_ids": [[1, 2]]}, TypeError, "completion_ids"),
    ({"completion_ids": torch.ones(2, 3, 4, dtype=torch.long)}, ValueError, "completion_ids"),
    ({"completion_ids": torch.ones(2, 3)}, ValueError, "dtype"),
    ({"completion_mask": torch.ones(2, 4, dtype=torch.bool)}, ValueError, "completion_mask"),
    ({"quotes": [None]}, ValueError, "len\\(quotes\\)"),
    ({"quotes": [("a", -1), None]}, ValueError, "quotes\\[0\\]"),
    ({"quotes": [(3, None), None]}, ValueError, "quotes\\[0\\]"),
    ({"quotes": ["a", None]}, ValueError, "quotes\\[0\\]"),
    ({"max_error_span_tokens": 0}, ValueError, "max_error_span_tokens"),
    ({"fuzzy_threshold": -1.0}, ValueError, "fuzzy_threshold"),
    ({"texts": ["a"]}, ValueError, "texts"),
])
def test_error_token_masks_rejects_bad_input(tokenizers: dict, change: dict, error: type, match: str) -> None:
    args = {"tokenizer": tokenizers["byte_bpe"], "completion_ids": torch.ones(2, 3, dtype=torch.long),
            "completion_mask": torch.ones(2, 3, dtype=torch.bool), "quotes": [None, None]}
    args.update(change)
    with pytest.raises(error, match=match):
        error_token_masks(**args)


def test_span_match_ok_property() -> None:
    assert SpanMatch(0, 1, "exact", 100.0).ok and not SpanMatch(-1, -1, "none", 0.0, "not_found").ok
