"""OpenAICompatibleOracle against a scripted server on 127.0.0.1, and LocalJudgeOracle with a tiny random model."""

from __future__ import annotations

import socket

import pytest
from oracle_http import GOOD_REPLY, QUESTION, REFERENCE, RESPONSE, ScriptedServer, Step, chat_reply

from calgrpo_lib.oracle import JudgeItem, LocalJudgeOracle, OpenAICompatibleOracle, OracleConfig

FAST = OracleConfig(retries=3, backoff_s=0.005, backoff_max_s=0.01, timeout_s=5.0)
SERVER_ERROR = {"error": {"message": "internal", "type": "server_error"}}


def test_openai_compatible_request_and_verdict(monkeypatch):
    monkeypatch.setenv("LOCAL_LLM_KEY", "sk-local-secret-123")
    with ScriptedServer([Step(200, chat_reply(GOOD_REPLY))]) as srv:
        oracle = OpenAICompatibleOracle("qwen2.5:7b", srv.url, api_key_env="LOCAL_LLM_KEY", config=FAST)
        v = oracle.judge(QUESTION, REFERENCE, RESPONSE)
    assert (v.status, v.step, v.quote, v.backend) == ("ok", 1, "48 - 24 = 25", "openai_compat")
    req = srv.requests[0]
    assert req["path"] == "/v1/chat/completions"
    assert req["headers"]["Authorization"] == "Bearer sk-local-secret-123"
    body = req["json"]
    assert body["model"] == "qwen2.5:7b" and body["temperature"] == 0.0
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["schema"]["required"] == ["step", "quote", "reason"]
    assert "sk-local-secret-123" not in repr(oracle)


def test_openai_compatible_retries_5xx_and_429_then_succeeds():
    slow_down = {"error": {"message": "slow down"}}
    script = [Step(500, SERVER_ERROR), Step(429, slow_down), Step(200, chat_reply(GOOD_REPLY))]
    with ScriptedServer(script) as srv:
        oracle = OpenAICompatibleOracle("m", srv.url + "/v1/", config=FAST, response_format="json_object")
        v = oracle.judge_batch([(QUESTION, REFERENCE, RESPONSE)])[0]
    assert v.status == "ok" and srv.count == 3
    assert srv.requests[0]["json"]["response_format"] == {"type": "json_object"}
    assert (oracle.stats.calls, oracle.stats.retries, dict(oracle.stats.failures)) == (1, 2, {})


def test_openai_compatible_faults_become_failed_verdicts():
    with ScriptedServer([Step(200, {"unexpected": True}), Step(400, {"error": "bad model"})]) as srv:
        oracle = OpenAICompatibleOracle("m", srv.url, config=OracleConfig(concurrency=1, retries=3))
        verdicts = oracle.judge_batch([(QUESTION, REFERENCE, RESPONSE), (QUESTION, REFERENCE, RESPONSE + " ")])
    assert [(v.status, v.cause) for v in verdicts] == [("failed", "bad_response"), ("failed", "http_400")]
    assert srv.count == 2  # neither is retried
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    refused = OpenAICompatibleOracle("m", f"http://127.0.0.1:{port}", config=FAST)
    v = refused.judge(QUESTION, REFERENCE, RESPONSE)
    assert (v.status, v.cause, refused.stats.retries) == ("failed", "connection_error", 3)


def _tiny_judge():
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator([QUESTION, REFERENCE, RESPONSE, GOOD_REPLY],
                            trainers.WordLevelTrainer(special_tokens=["<unk>", "<pad>", "<eos>"]))
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>",
                                                     eos_token="<eos>")
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, intermediate_size=64,
                                   num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                                   max_position_embeddings=128, pad_token_id=1, eos_token_id=2, bos_token_id=2)
    return transformers.LlamaForCausalLM(cfg).eval(), tokenizer


def test_local_judge_with_a_tiny_model_degrades_to_unlocalized():
    model, tokenizer = _tiny_judge()
    oracle = LocalJudgeOracle(model, tokenizer, model_name="tiny-random", max_new_tokens=24)
    verdicts = oracle.judge_batch([(QUESTION, REFERENCE, RESPONSE), (QUESTION, REFERENCE, RESPONSE + "\nok")])
    assert [v.status for v in verdicts] == ["unlocalized", "unlocalized"]
    assert {v.cause for v in verdicts} <= {"malformed_reply", "quote_not_found", "step_out_of_range", "empty_quote",
                                           "contradicts_reference"}
    assert oracle.stats.calls == 2 and not oracle.stats.failures
    text = oracle.prompt_text(oracle.prompt(JudgeItem(QUESTION, REFERENCE, RESPONSE)))
    assert "[2] After buying more" in text and len(tokenizer(text)["input_ids"]) > 128  # cut to fit the context


def test_local_judge_rejects_things_that_are_not_models():
    with pytest.raises(TypeError, match="model has type str"):
        LocalJudgeOracle("gpt2", lambda s: s)
