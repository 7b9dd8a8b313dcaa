"""The shipped tiny policy (offline load, held-out accuracy, group signal, exact offsets), the sampling primitive,
the build (deterministic, CLI) and the real-model path (a random tiny Qwen2 saved locally, loaded offline)."""

from __future__ import annotations

import hashlib
import time
import warnings

import pytest
import torch

from calgrpo_lib.cli import build_parser, main
from calgrpo_lib.policy import (
    EOS_TOKEN,
    TINY_DIR,
    load_policy,
    pick_device,
    pick_dtype,
)
from calgrpo_lib.rewards import build_prompt, is_correct
from calgrpo_lib.sampling import Generation, generate, greedy_accuracy, group_stats
from calgrpo_lib.spans import token_char_offsets
from calgrpo_lib.tasks import generate_problems


@pytest.fixture(scope="module")
def tiny():
    t0 = time.perf_counter()
    model, tok = load_policy("tiny", device="cpu")
    return model, tok, time.perf_counter() - t0


@pytest.fixture(scope="module")
def sampled(tiny):
    """1,000 completions at temperature 1: 125 held-out problems x G=8."""
    model, tok, _ = tiny
    problems = generate_problems(125, seed=0, split="test")
    prompts = [build_prompt(p.question) for p in problems]
    return problems, generate(model, tok, prompts, max_new_tokens=128, temperature=1.0, num_return_sequences=8,
                              seed=0, batch_size=250)


# ----------------------------------------------------------------------------------------------- shipped model


def test_tiny_loads_offline_fast_and_small(tiny):
    model, tok, seconds = tiny
    assert seconds < 5.0
    assert type(model).__name__ == "LlamaForCausalLM" and not model.training
    size = sum(f.stat().st_size for f in TINY_DIR.iterdir() if f.is_file())
    assert size <= 15e6
    assert 2e6 < sum(p.numel() for p in model.parameters()) < 5e6


def test_tiny_tokenizer_special_tokens(tiny):
    _, tok, _ = tiny
    ids = {tok.bos_token_id, tok.eos_token_id, tok.pad_token_id}
    assert len(ids) == 3 and None not in ids
    assert tok.eos_token == EOS_TOKEN and tok.padding_side == "left"
    assert tok("Question: x")["input_ids"][0] == tok.bos_token_id
    chat = tok.apply_chat_template([{"role": "user", "content": "Q?"}], tokenize=False, add_generation_prompt=True)
    assert chat == build_prompt("Q?")


def test_tiny_tokenizer_decodes_exactly_with_offsets(tiny):
    _, tok, _ = tiny
    problems = generate_problems(300, seed=5, split="train")
    texts = [build_prompt(p.question) + p.answer for p in problems] + [" two  spaces\n\n\ttab ", "çé ünïcode"]
    for text in texts:
        enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
        assert tok.decode(enc["input_ids"]) == text
        if text.isascii():
            assert [text[s:e] for s, e in enc["offset_mapping"]] == [tok.decode([i]) for i in enc["input_ids"]]


def test_tiny_held_out_accuracy_and_format(tiny):
    model, tok, _ = tiny
    result = greedy_accuracy(model, tok, generate_problems(512, seed=0, split="test"))
    assert result["n"] == 512
    assert 0.35 <= result["accuracy"] <= 0.65, result
    assert result["format_rate"] >= 0.95, result


def test_tiny_groups_hold_right_and_wrong_answers(sampled):
    problems, g = sampled
    right = [is_correct(t, problems[i // 8].final) for i, t in enumerate(g.texts)]
    mixed = sum(0 < sum(right[i: i + 8]) < 8 for i in range(0, len(right), 8)) / len(problems)
    assert mixed >= 0.5


def test_generated_tokens_map_to_exact_character_spans(tiny, sampled):
    """Every generated token but EOS covers an exact span of the decoded text; re-tokenizing usually agrees."""
    _, tok, _ = tiny
    _, g = sampled
    assert len(g.texts) == 1000
    same = 0
    for ids_row, mask, text in zip(g.completion_ids, g.completion_mask, g.texts):
        ids = ids_row[mask.bool()].tolist()
        content = [i for i in ids if i not in tok.all_special_ids]
        pieces = [tok.decode([i]) for i in content]
        assert "".join(pieces) == text
        decoded, offsets = token_char_offsets(tok, ids)  # what the span finder uses
        assert decoded == text
        assert [text[s:e] for (s, e), i in zip(offsets, ids) if i not in tok.all_special_ids] == pieces
        assert all(s == e for (s, e), i in zip(offsets, ids) if i in tok.all_special_ids)
        retok = tok(text, add_special_tokens=False, return_offsets_mapping=True)
        assert [text[s:e] for s, e in retok["offset_mapping"]] == [tok.decode([i]) for i in retok["input_ids"]]
        same += retok["input_ids"] == content
    assert same >= 0.95 * len(g.texts)


# ----------------------------------------------------------------------------------------------- generate


def test_generate_shapes_masks_and_eos(tiny):
    model, tok, _ = tiny
    prompts = [build_prompt(p.question) for p in generate_problems(3, seed=0, split="test")] + ["Question: 1"]
    g = generate(model, tok, prompts, max_new_tokens=40, temperature=0.7, top_p=0.9, num_return_sequences=2, seed=3)
    assert isinstance(g, Generation)
    n = len(prompts) * 2
    assert g.prompt_ids.shape == g.prompt_mask.shape and g.prompt_ids.shape[0] == n
    assert g.completion_ids.shape == g.completion_mask.shape and g.completion_ids.shape[0] == n
    assert g.completion_ids.shape[1] <= 40 and len(g.texts) == n and g.finished.shape == (n,)
    assert torch.equal(g.prompt_ids[0], g.prompt_ids[1])  # prompt-major order
    for ids, mask, pmask, done, text in zip(g.completion_ids, g.completion_mask, g.prompt_mask, g.finished, g.texts):
        length = int(mask.sum())
        assert mask[:length].all() and not mask[length:].any()  # contiguous, right-padded
        assert (ids[length:] == tok.pad_token_id).all()
        assert pmask[-1] == 1 and (pmask.cumsum(0) > 0).long().sum() == pmask.sum()  # left-padded
        assert bool(done) == (ids[length - 1].item() == tok.eos_token_id)
        assert (ids[: length - 1] != tok.eos_token_id).all()
        assert text == tok.decode(ids[:length].tolist(), skip_special_tokens=True)


def test_generate_is_reproducible_by_seed_and_greedy_is_batch_independent(tiny):
    model, tok, _ = tiny
    prompts = [build_prompt(p.question) for p in generate_problems(4, seed=2, split="test")]
    a = generate(model, tok, prompts, max_new_tokens=30, temperature=1.0, seed=11)
    b = generate(model, tok, prompts, max_new_tokens=30, temperature=1.0, seed=11)
    assert torch.equal(a.completion_ids, b.completion_ids) and a.texts == b.texts
    whole = generate(model, tok, prompts, max_new_tokens=30).texts
    one_by_one = [generate(model, tok, [p], max_new_tokens=30).texts[0] for p in prompts]
    assert whole == one_by_one


@pytest.mark.parametrize("kwargs, name", [({"temperature": -1.0}, "temperature"), ({"top_p": 0.0}, "top_p"),
                                          ({"max_new_tokens": 0}, "max_new_tokens"),
                                          ({"num_return_sequences": 0}, "num_return_sequences")])
def test_generate_rejects_bad_arguments(tiny, kwargs, name):
    model, tok, _ = tiny
    with pytest.raises(ValueError, match=name):
        generate(model, tok, ["Question: 1"], **kwargs)


def test_bad_arguments_name_the_parameter(tiny):
    model, tok, _ = tiny
    with pytest.raises(ValueError, match="prompts"):
        generate(model, tok, [])
    with pytest.raises(ValueError, match="problems"):
        greedy_accuracy(model, tok, ["not a problem"])
    with pytest.raises(ValueError, match="device"):
        pick_device("tpu")
    with pytest.raises(ValueError, match="dtype"):
        pick_dtype(torch.device("cpu"), "int8")
    with pytest.raises(TypeError, match="name_or_path"):
        load_policy(3)
    assert pick_dtype(torch.device("cpu")) == torch.float32


def test_group_stats_counts_groups(tiny):
    model, tok, _ = tiny
    s = group_stats(model, tok, generate_problems(4, seed=0, split="test"), group_size=3, max_new_tokens=16)
    assert s["n_groups"] == 4
    assert s["mixed_rate"] + s["all_right_rate"] + s["all_wrong_rate"] == pytest.approx(1.0)


# ----------------------------------------------------------------------------------------------- build


def test_build_cli_takes_none_for_the_task_s_own_hard_carry_share():
    def parse(*args):
        return build_parser().parse_args(["policy", "build", "--out", "x", *args])

    assert parse("--hard-carry-share", "none").hard_carry_share is None
    assert parse("--hard-carry-share", "0.25").hard_carry_share == 0.25
    assert parse().hard_carry_share == 0.4


def test_build_cli_is_deterministic_and_loadable(tmp_path):
    shas = []
    for name in ("a", "b"):
        assert main(["policy", "build", "--out", str(tmp_path / name), "--steps", "2", "--batch-size", "4",
                     "--no-eval"]) == 0
        shas.append(hashlib.sha256((tmp_path / name / "model.safetensors").read_bytes()).hexdigest())
    assert shas[0] == shas[1]
    model, tok = load_policy(tmp_path / "a")
    g = generate(model, tok, ["Question: 1"], max_new_tokens=3)
    assert g.completion_ids.shape[0] == 1


# ----------------------------------------------------------------------------------------------- real-model path

QWEN_TEMPLATE = (
    "{%- for message in messages -%}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>' + '\\n' }}{%- endfor -%}{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}"
    "{%- endif -%}"
)


def _qwen_like(tmp_path, with_pad: bool):
    """Save a random tiny Qwen2 and a Qwen-style chat tokenizer with save_pretrained, as a downloaded model is."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    texts = [p.question + "\n" + p.answer for p in generate_problems(200, seed=0, split="train")]
    raw.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=400, special_tokens=specials, show_progress=False,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<|im_end|>", chat_template=QWEN_TEMPLATE,
                                  pad_token="<|endoftext|>" if with_pad else None)
    eos_ids = [tok.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>")]
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      tie_word_embeddings=True, eos_token_id=eos_ids[0])
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(cfg)
    model.generation_config.eos_token_id = eos_ids
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    return eos_ids


def test_local_qwen2_chat_model_loads_through_load_policy(tmp_path):
    eos_ids = _qwen_like(tmp_path, with_pad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model, tok = load_policy(str(tmp_path), device="cpu")
    assert type(model).__name__ == "Qwen2ForCausalLM" and model.dtype == torch.float32
    assert tok.padding_side == "left" and tok.pad_token_id != tok.eos_token_id
    prompt = build_prompt("Ava has 3 apples. How many?", "chat", tok)
    assert prompt.endswith("<|im_start|>assistant\n")
    g = generate(model, tok, [prompt, "short"], max_new_tokens=12, temperature=1.0, num_return_sequences=2, seed=0)
    assert g.completion_ids.shape[0] == 4 and g.prompt_mask[2:].sum() < g.prompt_mask[:2].sum()
    for ids, mask, done in zip(g.completion_ids, g.completion_mask, g.finished):
        length = int(mask.sum())
        assert bool(done) == (ids[length - 1].item() in eos_ids)


def test_missing_pad_token_falls_back_to_unk_then_eos_with_a_warning(tmp_path):
    from transformers import AutoTokenizer

    from calgrpo_lib.policy import _ensure_pad_token

    _qwen_like(tmp_path, with_pad=False)
    _, tok = load_policy(tmp_path, device="cpu")  # this tokenizer has an unk token distinct from eos: pads with it
    assert tok.pad_token_id == tok.unk_token_id != tok.eos_token_id
    bare = AutoTokenizer.from_pretrained(tmp_path)
    bare.unk_token = None
    with pytest.warns(UserWarning, match="EOS"):
        _ensure_pad_token(bare)
    assert bare.pad_token_id == bare.eos_token_id


def test_unreachable_hub_id_says_how_to_pass_a_local_path(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # fail at once rather than retry
    with pytest.raises(OSError, match="local"):
        load_policy("no-such-org/no-such-model", device="cpu")


def test_missing_local_folder_is_named():
    with pytest.raises(FileNotFoundError, match="not a folder"):
        load_policy("./no/such/folder", device="cpu")


def test_constant_lr_build_of_k_steps_ends_where_a_longer_build_was_at_step_k():
    from transformers import LlamaForCausalLM

    from calgrpo_lib import policy_build as pb
    from calgrpo_lib.sft_data import encode_examples

    problems = generate_problems(24, seed=0, split="train")
    tok = pb.train_tokenizer([build_prompt(p.question) + p.answer for p in problems], vocab_size=400)
    examples = encode_examples(tok, problems)

    def weights_after(steps, at):
        cfg = pb.TinyBuildConfig(steps=steps, batch_size=4, train_problems=24, min_lr_ratio=1.0, warmup=1,
                                 hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)
        torch.manual_seed(0)
        model = LlamaForCausalLM(pb.tiny_llama_config(tok, cfg))
        seen = {}

        def snapshot(step):
            if step == at:
                seen["w"] = {k: v.clone() for k, v in model.state_dict().items()}
            return {}

        pb.sft(model, tok, examples, cfg, eval_fn=snapshot, eval_every=1, progress=False)
        return seen["w"]

    short, long = weights_after(3, 3), weights_after(5, 3)
    assert all(torch.equal(short[k], long[k]) for k in short)


def test_build_config_rejects_too_few_train_problems():
    from calgrpo_lib.policy_build import TinyBuildConfig

    with pytest.raises(ValueError, match="train_problems"):
        TinyBuildConfig(batch_size=32, train_problems=8)


def test_forgotten_carry_shift_is_ten_off_only_where_a_line_carries_or_borrows():
    from calgrpo_lib.arithmetic import forgotten_carry_shift

    assert forgotten_carry_shift(7, "+", 5) == -10 and forgotten_carry_shift(48, "+", 4) == -10
    assert forgotten_carry_shift(54, "-", 8) == 10
    assert [forgotten_carry_shift(*x) for x in ((41, "+", 8), (58, "-", 3), (8, "-", 5), (17, "*", 6), (18, "/", 9))] \
        == [0, 0, 0, 0, 0]


def test_dropped_carry_forgets_every_carry_and_the_checker_points_at_the_first():
    from calgrpo_lib.arithmetic import forgotten_carry_shift
    from calgrpo_lib.oracle import StepCheckOracle
    from calgrpo_lib.rewards import extract_answer
    from calgrpo_lib.sft_data import dropped_carry_answer, training_answers
    from calgrpo_lib.sft_data import misconception_applies as _misconception_applies

    def parse(step: str) -> tuple[int, str, int, int]:
        lhs, c = step.split(" = ")
        a, op, b = lhs.split(" ")
        return int(a), op, int(b), int(c.split(">>")[1])

    def true(a: int, op: str, b: int) -> int:
        return {"+": a + b, "-": a - b, "*": a * b, "/": a // b}[op]

    problems = generate_problems(400, seed=0, split="train")
    oracle, kinds, skipped, multi = StepCheckOracle(), {"+": 0, "-": 0}, 0, 0
    for p in problems:
        wrong = dropped_carry_answer(p)
        ref = [parse(s) for s in p.steps]
        if wrong is None:
            carries = any(forgotten_carry_shift(a, op, b) for a, op, b, _ in ref)
            assert _misconception_applies(p) == (not carries)
            skipped += carries
            continue
        assert _misconception_applies(p) and extract_answer(wrong) != p.final
        lines = [parse(s) for s in wrong.split("\n")[:-1]]
        assert [(op, b) for _, op, b, _ in lines] == [(op, b) for _, op, b, _ in ref]
        assert all(a == prev[3] for (a, *_), prev in zip(lines[1:], lines))  # the chain goes on from each result
        assert all(c == true(a, op, b) + forgotten_carry_shift(a, op, b) for a, op, b, c in lines)  # every line
        first = next(line for line in lines if forgotten_carry_shift(*line[:3]))
        verdict = oracle.judge(p.question, p.answer, wrong)
        assert verdict.localized and verdict.quote.startswith(f"{first[0]} {first[1]} {first[2]} =")
        assert verdict.quote.endswith(f">>{first[3]}")
        kinds[first[1]] += 1
        multi += sum(bool(forgotten_carry_shift(*line[:3])) for line in lines) >= 2
    assert kinds["+"] >= 50 and kinds["-"] >= 10 and skipped >= 5
    assert multi >= 5  # some answers forget two carries, not only the first
    plain = training_answers(problems, 0.2, 0)
    assert plain == training_answers(problems, 0.2, 0, carry_bug_rate=0.0)  # the old targets, draw for draw
    bugged = training_answers(problems, 0.0, 0, carry_bug_rate=1.0)
    assert sum(a != p.answer for a, p in zip(bugged, problems)) == sum(kinds.values())


def test_build_trains_only_on_problems_where_the_misconception_can_be_written_out():
    from calgrpo_lib.sft_data import misconception_applies as _misconception_applies
    from calgrpo_lib.sft_data import training_problems

    plain = training_problems(300, carry_bug_rate=0.0, hard_carry_share=None)
    assert plain == generate_problems(300, seed=0, split="train")
    assert not all(map(_misconception_applies, plain))  # the task alone draws some that do not fit
    bugged = training_problems(300, carry_bug_rate=0.6, hard_carry_share=None)
    assert len(bugged) == 300 and all(map(_misconception_applies, bugged))
    assert len({p.question for p in bugged}) == 300


def test_carry_kind_names_the_carry_a_line_needs():
    from calgrpo_lib.arithmetic import carry_kind

    assert [carry_kind(*x) for x in ((9, "+", 8), (24, "+", 9), (16, "-", 7), (54, "-", 8))] == \
        ["one-digit sum", "two-digit sum", "borrow", "borrow"]
    assert [carry_kind(*x) for x in ((4, "+", 5), (41, "+", 8), (58, "-", 3), (8, "-", 5), (17, "*", 6))] == [None] * 5


@pytest.mark.parametrize("share", [0.0, 0.4, 0.75])
def test_hard_carry_share_sets_the_share_of_problems_with_a_tens_carry_or_a_borrow(share):
    from calgrpo_lib.policy_build import TinyBuildConfig
    from calgrpo_lib.sft_data import has_hard_carry as _has_hard_carry
    from calgrpo_lib.sft_data import misconception_applies as _misconception_applies
    from calgrpo_lib.sft_data import training_problems

    cfg = TinyBuildConfig(hard_carry_share=share)

    def _training_problems(n, cfg):
        return training_problems(n, seed=cfg.seed, task=cfg.task, carry_bug_rate=cfg.carry_bug_rate,
                                 hard_carry_share=cfg.hard_carry_share)

    problems = _training_problems(400, cfg)
    assert len({p.question for p in problems}) == 400 and all(map(_misconception_applies, problems))
    assert sum(map(_has_hard_carry, problems)) == round(400 * share)
    assert problems == _training_problems(400, cfg)  # deterministic
    assert {p.question for p in problems} <= {p.question for p in generate_problems(40_000, seed=0, split="train")}
    task = generate_problems(4000, seed=0, split="train")  # the task's own share is far from 0.4
    assert 0.05 < sum(map(_has_hard_carry, task)) / len(task) < 0.2


def test_hard_carry_share_is_validated():
    from calgrpo_lib.policy_build import TinyBuildConfig

    for bad in (1.0, -0.1, "0.4"):
        with pytest.raises(ValueError, match=r"hard_carry_share=.*allowed: a number in \[0.0, 1.0\)"):
            TinyBuildConfig(hard_carry_share=bad)


def test_model_card_names_the_misconception_only_when_the_build_had_one(tmp_path):
    import json

    from calgrpo_lib.policy import TINY_DIR
    from calgrpo_lib.policy_build import write_model_card

    info = json.loads((TINY_DIR / "build_info.json").read_text())
    info["config"]["carry_bug_rate"], info["carry_dropped_examples"] = 0.0, 0
    plain = write_model_card(tmp_path, info).read_text()
    assert "Misconception" not in plain and "--carry-bug-rate 0.0 " in plain  # the rebuild command says so
    info["config"]["carry_bug_rate"], info["carry_dropped_examples"] = 0.6, 1234
    card = write_model_card(tmp_path, info).read_text()
    assert "Misconception: 1,234 of the targets (60%" in card and "--carry-bug-rate 0.6" in card
    assert f"Slips: {info['slipped_examples'] - 1234:,} of the targets" in card
    info["config"]["hard_carry_share"], info["hard_carry_examples"] = 0.4, 17920
    card = write_model_card(tmp_path, info).read_text()
    assert "Hard carries: 17,920 of the problems (40% asked" in card and "--hard-carry-share 0.4" in card
    info["config"]["hard_carry_share"] = None
    card = write_model_card(tmp_path, info).read_text()
    assert "Hard carries" not in card and "--hard-carry-share none" in card
