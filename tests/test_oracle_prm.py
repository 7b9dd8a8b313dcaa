"""PRMOracle with tiny random process reward models of both shapes, offline.

Two models are built here, saved to folders and loaded back through ``PRMOracle.from_pretrained``: a
``Qwen2ForTokenClassification`` with two labels and ``<extra_0>`` as a special token (the Qwen2.5-Math-PRM shape,
``step_head``) and a ``LlamaForCausalLM`` whose vocabulary holds ``ки``, ``+`` and ``-`` (the Math-Shepherd shape,
``next_token``), both over a word-level tokenizer trained on the test texts. Their step scores are compared with
the recipe of each model card written out independently; the faults are those of the other backends.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from oracle_http import QUESTION, REFERENCE, RESPONSE
from processbench_fixture import hand_f1, write_benchmark

from calgrpo_lib.data import load_processbench
from calgrpo_lib.oracle import BackendError, JudgeItem, OracleConfig, ReplyCache, StepCheckOracle
from calgrpo_lib.oracle.evaluation import benchmark_response, evaluate_processbench
from calgrpo_lib.oracle.prm import PRM_INTERFACES, QWEN_PRM_SYSTEM, PRMOracle
from calgrpo_lib.steps import split_steps

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

SEP, TAG = "<extra_0>", "ки"
CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
TEXTS = [QUESTION, REFERENCE, RESPONSE, QWEN_PRM_SYSTEM, f"Step : {TAG} + - So the answer is",
         " ".join(str(i) for i in range(200))]
STEPS = [s.text for s in split_steps(RESPONSE)]
MARGIN_S = 0.5


def _tokenizer(special: list[str]):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(TEXTS, trainers.WordLevelTrainer(special_tokens=["<unk>", "<pad>", "<eos>", *special]))
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>",
                                                eos_token="<eos>")


def _small(**kw) -> dict:
    return dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                num_key_value_heads=2, max_position_embeddings=1024, initializer_range=0.3, pad_token_id=1, **kw)


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    """``{interface: folder}``: the two tiny PRMs saved with ``save_pretrained``."""
    root = tmp_path_factory.mktemp("prm")
    torch.manual_seed(0)
    qwen_tok = _tokenizer([SEP, "<|im_start|>", "<|im_end|>"])
    qwen_tok.chat_template = CHAT_TEMPLATE
    qwen = transformers.Qwen2ForTokenClassification(
        transformers.Qwen2Config(vocab_size=len(qwen_tok), num_labels=2, **_small()))
    shepherd_tok = _tokenizer([])
    shepherd = transformers.LlamaForCausalLM(transformers.LlamaConfig(vocab_size=len(shepherd_tok), **_small()))
    out = {}
    for interface, model, tok in (("step_head", qwen, qwen_tok), ("next_token", shepherd, shepherd_tok)):
        model.save_pretrained(root / interface)
        tok.save_pretrained(root / interface)
        out[interface] = root / interface
    return out


@pytest.fixture(scope="module")
def loaded(folders) -> dict[str, PRMOracle]:
    """``{interface: PRMOracle}`` loaded from the folders (tests build fresh oracles from their model/tokenizer)."""
    return {i: PRMOracle.from_pretrained(folders[i], i, device="cpu") for i in PRM_INTERFACES}


def _fresh(loaded, interface: str = "step_head", model=None, **kw) -> PRMOracle:
    base = loaded[interface]
    return PRMOracle(model if model is not None else base.hf_model, base.tokenizer, interface, **kw)


class Counting(torch.nn.Module):
    """Wraps a model: counts forwards, optionally sleeps or raises in them."""

    def __init__(self, inner, *, sleep_s: float = 0.0, fail: bool = False) -> None:
        super().__init__()
        self.inner, self.config, self.sleep_s, self.fail = inner, inner.config, sleep_s, fail
        self.forwards = 0
        self._count_lock = threading.Lock()

    def forward(self, **kwargs):
        with self._count_lock:
            self.forwards += 1
        time.sleep(self.sleep_s)
        if self.fail:
            raise RuntimeError("CUDA out of memory (simulated)")
        return self.inner(**kwargs)


def card_scores(interface: str, model, tokenizer, question: str, steps: list[str]) -> list[float]:
    """Each model card's recipe, written out: softmax at the separator (label 1) or over (+, -) at the tag."""
    if interface == "step_head":
        messages = [{"role": "system", "content": QWEN_PRM_SYSTEM}, {"role": "user", "content": question},
                    {"role": "assistant", "content": SEP.join(steps) + SEP}]
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
        ids = tokenizer.encode(text, return_tensors="pt")  # (1, T)
        with torch.no_grad():
            logits = model(input_ids=ids)[0]  # (1, T, 2)
        probs = torch.nn.functional.softmax(logits, dim=-1)[0]  # (T, 2)
        return probs[ids[0] == tokenizer.convert_tokens_to_ids(SEP), 1].tolist()
    text = f"{question} " + "\n".join(f"Step {k + 1}: {s} {TAG}" for k, s in enumerate(steps))
    ids = tokenizer.encode(text, return_tensors="pt")  # (1, T)
    good, bad = tokenizer.convert_tokens_to_ids(["+", "-"])
    with torch.no_grad():
        logits = model(ids).logits[:, :, [good, bad]]  # (1, T, 2)
    scores = logits.softmax(dim=-1)[0, :, 0]  # (T,)
    return scores[ids[0] == tokenizer.convert_tokens_to_ids(TAG)].tolist()


# ------------------------------------------------------------------------------------------- scores


@pytest.mark.parametrize("interface", PRM_INTERFACES)
def test_step_scores_equal_the_model_cards_recipe(loaded, interface):
    oracle = loaded[interface]
    scores = oracle.step_scores(QUESTION, STEPS)
    want = card_scores(interface, oracle.hf_model, oracle.tokenizer, QUESTION, STEPS)
    assert len(scores) == len(STEPS) == 4
    assert scores == pytest.approx(want, abs=1e-6)
    assert all(0.0 < s < 1.0 for s in scores) and max(scores) - min(scores) > 1e-3  # spread: not all 0.5
    assert oracle.step_scores(QUESTION, []) == []
    assert not oracle.hf_model.training and not any(p.requires_grad for p in oracle.hf_model.parameters())


def test_the_inputs_each_interface_reads(loaded):
    qwen, shepherd = loaded["step_head"], loaded["next_token"]
    text = qwen.prompt_text(QUESTION, ["a b", "c"])
    assert text.startswith("<|im_start|>system\n" + QWEN_PRM_SYSTEM) and "a b<extra_0>c<extra_0><|im_end|>" in text
    plain = PRMOracle(qwen.hf_model, _tokenizer([SEP]), "step_head")  # no chat template: plain lines
    assert plain.prompt_text("Q?", ["a", "b"]) == f"{QWEN_PRM_SYSTEM}\nQ?\na{SEP}b{SEP}"
    assert shepherd.prompt_text("Q?", ["a", "b ки"]) == "Q? Step 1: a ки\nStep 2: b   ки"  # a tag inside is blanked
    assert len(shepherd.step_scores(QUESTION + " ки", [STEPS[0] + " ки ки", STEPS[1]])) == 2  # one per step
    assert qwen.model.endswith("step_head") and shepherd.model.endswith("next_token")  # the folders' paths
    versions = {qwen.prompt_version, shepherd.prompt_version, _fresh(loaded, threshold=0.4).prompt_version}
    assert len(versions) == 3 and "step_head" in qwen.prompt_version and "tag=ки" in shepherd.prompt_version


# ------------------------------------------------------------------------------------------ verdicts


@pytest.mark.parametrize("interface", PRM_INTERFACES)
def test_the_verdict_names_the_first_step_below_the_threshold(loaded, interface):
    scores = loaded[interface].step_scores(QUESTION, STEPS)
    steps = split_steps(RESPONSE)
    for k in range(len(STEPS)):  # a threshold just above step k's score and below every earlier one, if any
        if any(s <= scores[k] for s in scores[:k]):
            continue
        above = min(scores[:k], default=1.0)
        threshold = (scores[k] + min(above, scores[k] + 1e-3)) / 2
        oracle = _fresh(loaded, interface, threshold=threshold)
        v = oracle.judge(QUESTION, REFERENCE, RESPONSE)
        assert (v.status, v.step, v.quote, v.span) == ("ok", k, STEPS[k], (steps[k].start, steps[k].end))
        assert v.reason == f"step score {scores[k]:.2f} < threshold {threshold:.2f}"
        assert (v.backend, v.model, v.cause) == ("prm", oracle.model, "")
    oracle = _fresh(loaded, interface, threshold=max(0.0, min(scores) - 1e-3))
    v = oracle.judge(QUESTION, "", RESPONSE)  # the PRM never sees the reference ...
    assert (v.status, v.step, v.reason) == ("no_error", None, f"every step scores >= {oracle.threshold:.2f} "
                                                              f"(lowest {min(scores):.2f})")
    v = oracle.judge(QUESTION, REFERENCE, RESPONSE)  # ... but validation does: 30 contradicts #### 29
    assert (v.status, v.cause) == ("unlocalized", "contradicts_reference")


# ------------------------------------------------------------------------------------------ validation


def test_arguments_are_validated_with_the_parameter_named(loaded):
    model, tok = loaded["step_head"].hf_model, loaded["step_head"].tokenizer
    with pytest.raises(ValueError, match=r"threshold=1.5 is out of range; allowed: a number in \[0.0, 1.0\]"):
        PRMOracle(model, tok, threshold=1.5)
    with pytest.raises(ValueError, match=r"threshold='0.5' is not a finite number"):
        PRMOracle(model, tok, threshold="0.5")
    with pytest.raises(ValueError, match=r"interface='value_head' is not allowed; allowed: 'step_head', 'next_token'"):
        PRMOracle(model, tok, "value_head")
    with pytest.raises(TypeError, match=r"model has type str; allowed: a torch.nn.Module"):
        PRMOracle("Qwen/Qwen2.5-Math-PRM-7B", tok)
    with pytest.raises(TypeError, match=r"tokenizer has type NoneType; allowed: a transformers tokenizer"):
        PRMOracle(model, None)
    with pytest.raises(ValueError, match=r"separator='<extra_0>' is not a single token of the tokenizer \(it "
                                         r"encodes to 3 tokens .*\); allowed: a string the tokenizer encodes as"):
        PRMOracle(model, loaded["next_token"].tokenizer, "step_head")  # a tokenizer lacking the separator
    with pytest.raises(ValueError, match=r"step_tag='<step>' is not a single token"):
        PRMOracle(loaded["next_token"].hf_model, loaded["next_token"].tokenizer, "next_token", step_tag="<step>")
    with pytest.raises(ValueError, match=r"good_token='correct' is not a single token .*the unknown token"):
        PRMOracle(loaded["next_token"].hf_model, loaded["next_token"].tokenizer, "next_token", good_token="correct")
    with pytest.raises(ValueError, match=r"good_token='\+' and bad_token='\+' are the same token"):
        PRMOracle(loaded["next_token"].hf_model, loaded["next_token"].tokenizer, "next_token", bad_token="+")
    with pytest.raises(TypeError, match=r"steps\[1\]=3 has type int; allowed: str"):
        loaded["step_head"].step_scores(QUESTION, ["a", 3])


def test_the_loader_checks_before_loading(folders, tmp_path: Path):
    with pytest.raises(ValueError, match=r"interface='value_head' is not allowed"):
        PRMOracle.from_pretrained(folders["step_head"], "value_head")
    with pytest.raises(FileNotFoundError, match=r"name_or_path='.*nothing' is not a folder"):
        PRMOracle.from_pretrained(tmp_path / "nothing")
    remote = tmp_path / "remote"  # Qwen2.5-Math-PRM's own head class: needs the repository's code
    remote.mkdir()
    for f in folders["step_head"].iterdir():
        (remote / f.name).write_bytes(f.read_bytes())
    cfg = json.loads((remote / "config.json").read_text())
    cfg["architectures"] = ["Qwen2ForProcessRewardModel"]
    (remote / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"architectures=\['Qwen2ForProcessRewardModel'\].*allowed: "
                                         r"trust_remote_code=True"):
        PRMOracle.from_pretrained(remote, device="cpu")
    oracle = PRMOracle.from_pretrained(folders["next_token"], "next_token", device="cpu", threshold=0.3)
    assert isinstance(oracle.hf_model, transformers.LlamaForCausalLM) and oracle.threshold == 0.3
    assert isinstance(PRMOracle.from_pretrained(folders["step_head"], device="cpu").hf_model,
                      transformers.Qwen2ForTokenClassification)


# --------------------------------------------------------------------------------------------- faults


def test_a_model_that_raises_gives_a_failed_verdict_or_the_fallbacks(loaded):
    model = Counting(loaded["step_head"].hf_model, fail=True)
    oracle = _fresh(loaded, model=model, config=OracleConfig(concurrency=1, retries=3, backoff_s=0.001))
    v = oracle.judge(QUESTION, REFERENCE, RESPONSE)
    assert (v.status, v.cause, v.backend) == ("failed", "model_error", "prm")
    assert (model.forwards, oracle.stats.retries, dict(oracle.stats.failures)) == (1, 0, {"model_error": 1})
    with pytest.raises(BackendError, match=r"model_error: RuntimeError: CUDA out of memory"):
        oracle.step_scores(QUESTION, STEPS)
    backed = _fresh(loaded, model=model, fallback=StepCheckOracle())
    v = backed.judge(QUESTION, REFERENCE, RESPONSE)
    assert (v.status, v.step, v.quote, v.backend, v.fallback_from) == ("ok", 1, "48 - 24 = 25", "stepcheck",
                                                                       "model_error")
    assert backed.stats.fallbacks == 1 and dict(backed.stats.failures) == {"model_error": 1}


def test_a_call_that_waits_for_the_model_past_its_time_runs_no_forward(loaded):
    model = Counting(loaded["step_head"].hf_model, sleep_s=0.5)
    cfg = OracleConfig(concurrency=2, timeout_s=0.3, batch_timeout_s=1.0, retries=0)
    oracle = _fresh(loaded, model=model, config=cfg)
    t0 = time.monotonic()
    verdicts = oracle.judge_batch([(QUESTION, REFERENCE, RESPONSE), (QUESTION, REFERENCE, RESPONSE + "\nok")])
    assert time.monotonic() - t0 <= 0.3 + MARGIN_S
    assert [(v.status, v.cause) for v in verdicts] == [("failed", "timeout")] * 2
    time.sleep(0.6)  # the first forward ends; the second call then finds no time left
    assert model.forwards == 1


def test_an_input_too_long_goes_to_the_fallback_without_a_forward(loaded):
    model = Counting(loaded["next_token"].hf_model)
    long_response = "\n".join(["She keeps 48 - 24 = 25 stickers."] * 150 + ["#### 25"])  # > 1024 tokens
    oracle = _fresh(loaded, "next_token", model=model, fallback=StepCheckOracle(),
                    config=OracleConfig(concurrency=1, retries=3))
    v = oracle.judge(QUESTION, REFERENCE, long_response)
    assert (v.status, v.step, v.backend, v.fallback_from) == ("ok", 0, "stepcheck", "input_too_long")
    assert (model.forwards, oracle.stats.retries, dict(oracle.stats.failures)) == (0, 0, {"input_too_long": 1})
    with pytest.raises(BackendError, match=r"input_too_long: \d+ tokens; .*max_position_embeddings=1024"):
        oracle.step_scores(QUESTION, [s.text for s in split_steps(long_response)])


def test_the_cache_makes_a_repeated_batch_cost_no_forward(loaded):
    model = Counting(loaded["step_head"].hf_model)
    cache = ReplyCache(":memory:")
    items = [JudgeItem(QUESTION, REFERENCE, RESPONSE.replace("Ava", f"Ava{i}")) for i in range(3)]
    oracle = _fresh(loaded, model=model, cache=cache)
    first = oracle.judge_batch(items)
    again = oracle.judge_batch(items)
    assert model.forwards == 3 and oracle.stats.cache_hits == 3 and all(v.cached for v in again)
    assert [(v.status, v.step) for v in again] == [(v.status, v.step) for v in first]
    other = _fresh(loaded, model=model, cache=cache, threshold=0.25)  # another threshold: another cache entry
    other.judge_batch(items)
    assert model.forwards == 6 and other.stats.cache_hits == 0


def test_a_concurrent_batch_gives_one_verdict_per_item_in_order(loaded):
    model = Counting(loaded["next_token"].hf_model)
    lines = RESPONSE.splitlines()
    items = [JudgeItem(QUESTION, "", "\n".join(lines[:n])) for n in range(1, 5)] + [JudgeItem(QUESTION, "", "")]
    threshold = sorted(s for it in items for s in loaded["next_token"].step_scores(QUESTION, [
        st.text for st in split_steps(it.response)]))[4]
    oracle = _fresh(loaded, "next_token", model=model, config=OracleConfig(concurrency=4), threshold=threshold)
    verdicts = oracle.judge_batch(items)
    assert len(verdicts) == len(items) and model.forwards == 4  # the empty response needs no forward
    for it, v in zip(items, verdicts):
        steps = split_steps(it.response)
        scores = oracle.step_scores(it.question, [s.text for s in steps])
        want = next((k for k, s in enumerate(scores) if s < threshold), -1)
        assert v.predicted_step == want and (want == -1 or v.quote == steps[want].text)
    assert {v.status for v in verdicts} == {"ok", "no_error"}


# ---------------------------------------------------------------------------------------- ProcessBench


@pytest.mark.parametrize("interface", PRM_INTERFACES)
def test_processbench_report_equals_a_hand_count_from_step_scores(loaded, interface, gsm8k_dir: Path,
                                                                  tmp_path: Path):
    records = load_processbench("gsm8k", write_benchmark(gsm8k_dir, tmp_path))
    scorer = loaded[interface]
    scores = []
    for r in records:
        steps = [s.text for s in split_steps(benchmark_response(r.steps)[0])]
        assert steps == list(r.steps)
        scores.append(scorer.step_scores(r.problem, steps))
    labels = [r.label for r in records]

    def preds(threshold: float) -> list[int]:
        return [next((k for k, s in enumerate(row) if s < threshold), -1) for row in scores]

    flat = sorted(s for row in scores for s in row)
    cuts = [(a + b) / 2 for a, b in zip(flat, flat[1:])]  # between two scores: no ties with the threshold
    threshold = max(cuts, key=lambda t: hand_f1(labels, preds(t))[2])  # the best threshold on this benchmark
    acc_e, acc_c, f1 = hand_f1(labels, preds(threshold))
    assert f1 > 0 and -1 in preds(threshold) and any(p >= 0 for p in preds(threshold))
    report = evaluate_processbench(_fresh(loaded, interface, threshold=threshold), records, progress=False)
    assert list(report.predictions) == preds(threshold)
    assert (report.error_accuracy, report.correct_accuracy, report.f1) == pytest.approx((acc_e, acc_c, f1))
    assert set(report.statuses) <= {"ok", "no_error"}


# ---------------------------------------------------------------------------- wiring: factory, CLI, training


def test_make_oracle_builds_a_prm_and_a_cascade_from_names(folders):
    from calgrpo_lib.oracle import CascadeOracle, make_oracle

    prm = make_oracle("prm", model=str(folders["next_token"]), prm_interface="next_token", prm_threshold=0.3)
    assert isinstance(prm, PRMOracle) and (prm.interface, prm.threshold) == ("next_token", 0.3)
    cascade = make_oracle("prm", model=str(folders["step_head"]), cascade=True, fallback=StepCheckOracle())
    assert isinstance(cascade, CascadeOracle) and isinstance(cascade.judge_oracle, PRMOracle)
    v = cascade.judge(QUESTION, REFERENCE, RESPONSE)  # the checker flags step 1; the PRM may flag step 0
    assert v.status == "ok" and v.step in (0, 1) and v.backend in ("stepcheck", "prm")
    with pytest.raises(ValueError, match="oracle='prm' needs a judge model"):
        make_oracle("prm")
    with pytest.raises(ValueError, match="cascade=True with oracle='stepcheck'"):
        make_oracle("stepcheck", cascade=True)


def test_cli_evaluates_a_prm_behind_the_step_checker(folders, gsm8k_dir: Path, tmp_path: Path, capsys):
    from calgrpo_lib.oracle.__main__ import main

    bench = write_benchmark(gsm8k_dir, tmp_path)
    out = tmp_path / "prm.json"
    rc = main(["evaluate", "--oracle", "prm", "--model", str(folders["step_head"]), "--path", str(bench),
               "--split", "gsm8k", "--cascade", "--threshold", "0.2", "--cache", "none", "--no-progress",
               "--json", str(out)])
    text = capsys.readouterr().out
    assert rc == 0 and "oracle cascade: stepcheck, then prm" in text and "answered by: " in text
    result = json.loads(out.read_text())
    stages = result["oracle_stats"]["answered_by"]
    assert result["cascade"] is True and sum(stages.values()) == 12 and set(stages) <= {"checker", "judge"}
    assert 0.0 <= result["splits"]["gsm8k"]["f1"] <= 1.0
    assert main(["evaluate", "--oracle", "stepcheck", "--cascade", "--path", str(bench), "--split", "gsm8k"]) == 2
    assert "cascade=True with oracle='stepcheck'" in capsys.readouterr().err


def test_a_training_run_judges_with_a_prm_behind_the_step_checker(folders, tmp_path: Path):
    from calgrpo_lib.config import GRPOConfig
    from calgrpo_lib.trainer import Trainer

    config = GRPOConfig(max_steps=2, prompts_per_step=2, num_generations=4, max_new_tokens=48, eval_size=0,
                        oracle="prm", oracle_model=str(folders["step_head"]), oracle_cascade=True,
                        prm_threshold=0.3, output_dir=str(tmp_path / "run"), save_every=0, device="cpu")
    result = Trainer(config, progress=False).train()
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if r.get("kind") == "train"]
    assert result.steps_done == 2 and len(steps) == 2
    for r in steps:
        n_wrong = round(8 * (1 - r["accuracy"]))
        answered = r.get("oracle_answered_by_checker", 0) + r.get("oracle_answered_by_judge", 0)
        assert answered == n_wrong  # every wrong answer got one verdict, from one of the stages
    assert (tmp_path / "run" / "oracle_cache.sqlite").is_file()  # the PRM's replies are cached in the run folder
    with pytest.raises(ValueError, match="oracle_cascade=True with oracle='stepcheck'"):
        GRPOConfig(oracle_cascade=True)
    with pytest.raises(ValueError, match="prm_interface='value' is not allowed"):
        GRPOConfig(prm_interface="value")
