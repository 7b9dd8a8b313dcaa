"""Rehearsal of every preset that names a hub model (issue 18, build 1), on a CPU, offline, in seconds.

The preset runs as it would for a researcher, with three things replaced: the model by ``tiny_like`` of the same
hub id (same classes, tokenizer, special tokens and chat template, random weights), GSM8K by the local files, and
the judge by a local server reached through the real client library (google-genai for ``gemini``, httpx for
``openai``) or by a tiny judge model (``local``); ``stepcheck`` is the fallback of them all. Only sizes change
(steps, batch, lengths, eval size, checkpoint interval); every other field is the preset's, and asserted so.

Each backend runs twice: straight through, and interrupted after step :data:`KILL_AFTER` then resumed; the
resumed run's metrics must repeat the straight run's, except the keys that measure time, and, on a step that was
cut in the middle and redone, the oracle's call / cache / retry counts (a reply the killed run already got comes
from the cache the second time). Through the CLI, the run is also stopped by SIGTERM while a step waits for the
judge, and by SIGKILL of a ``python -m calgrpo_lib train`` process. The fake judge answers from the response it is
sent, with faults mixed in (:class:`FaultyJudge`); each fault must show up in ``metrics.jsonl`` under its key.
At the end, two kill points that once broke a resume: a stop just after a step's optimizer step, and one
before a scheduled evaluation.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from contextlib import nullcontext
from pathlib import Path

import pytest
from oracle_http import ScriptedServer, Step, chat_reply, gemini_reply, minute_quota_error, solution_steps

from calgrpo_lib.cli import main as cli_main
from calgrpo_lib.config import PRESETS, preset
from calgrpo_lib.data import load_problems
from calgrpo_lib.rehearsal import tiny_like
from calgrpo_lib.trainer import Trainer

HUB_PRESETS = sorted(name for name, fields in PRESETS.items() if fields.get("model", "tiny") != "tiny")
BACKENDS = ("gemini", "openai", "local", "stepcheck")
#: what CI changes: sizes only
SIZES = {"max_steps": 3, "prompts_per_step": 2, "num_generations": 2, "max_new_tokens": 32, "eval_size": 4,
         "eval_every": 2, "save_every": 1, "microbatch_size": 2, "train_size": 64}
#: what a rehearsal replaces besides the sizes: model, data, device, run folder, judge
REPLACED = {"model", "data_path", "device", "output_dir", "oracle", "oracle_base_url", "oracle_model"}
KILL_AFTER = 1
ROOT = Path(__file__).resolve().parents[1]
FAKE_KEY = "AIza" + "FAKE-rehearsal-key-not-real-0000000"
#: metric keys that measure time, which no two runs share
TIME_KEYS = re.compile(r"^time_|latency")
#: oracle counts that differ where a step was cut inside its oracle phase and redone: the replies the killed run
#: got are cache hits the second time, and their rate-limit retries are not repeated
REDONE_KEYS = re.compile(r"^oracle_(calls|cache_hits|retries(_.*)?)$")


# ----------------------------------------------------------------------------------------- the fake judge


class FaultyJudge:
    """A judge that reads the response in the prompt and answers it, with faults mixed in.

    The first time it sees a response it gives it the next kind of :data:`KINDS` (so every kind is served once
    there are five wrong responses) and keeps that kind for it in every later run, so two runs that judge the same
    responses get the same replies whatever order the concurrent calls arrive in. ``new_run()`` forgets which
    responses were already answered once (the rate limit hits the first attempt of each response in a run).
    """

    KINDS = ("ok", "paraphrase", "correct_step", "malformed", "rate_limited")

    def __init__(self, backend: str) -> None:
        self.backend = backend
        self.kinds: dict[str, str] = {}
        self.served: Counter[str] = Counter()
        self.on_request = None  # called with each request before it is answered (the kill test sets it)
        self.new_run()

    def new_run(self) -> None:
        self.attempts: Counter[str] = Counter()

    def reply(self, text: str) -> dict:
        return gemini_reply(text) if self.backend == "gemini" else chat_reply(text)

    def __call__(self, k: int, request: dict) -> Step:
        if self.on_request is not None:
            self.on_request(request)
        steps = solution_steps(request)
        key = "\n".join(steps)
        kind = self.kinds.setdefault(key, self.KINDS[len(self.kinds) % len(self.KINDS)])
        self.attempts[key] += 1
        if kind == "rate_limited" and self.attempts[key] == 1:  # a per-minute limit: retry after the hinted wait
            self.served["rate_limited"] += 1
            body = minute_quota_error() if self.backend == "gemini" else {"error": {"message": "rate limit"}}
            return Step(429, body, headers={"Retry-After": "0"})
        self.served["answered_after_429" if kind == "rate_limited" else kind] += 1
        if kind == "malformed":
            return Step(200, self.reply("The second line looks wrong to me."))
        lines = [(len(s.strip()), n, s) for n, s in enumerate(steps) if s.strip()]
        if not lines:
            return Step(200, self.reply(json.dumps({"step": -1, "quote": "", "reason": "nothing to judge"})))
        _, n, line = max(lines)
        quote = _window(line)
        if kind == "paraphrase":  # same numbers, other words
            numbers = " ".join(re.findall(r"\d+", quote))
            quote = f"the amount it works out here {numbers} comes out wrong".replace("  ", " ")
        elif kind == "correct_step":  # the step as it should read: a number that the response did not write
            digits = [m.start() for m in re.finditer(r"\d", quote)]
            i = digits[-1] if digits else len(quote) // 2
            quote = quote[:i] + (str((int(quote[i]) + 1) % 10) if digits else "7") + quote[i + 1:]
        return Step(200, self.reply(json.dumps({"step": n, "quote": quote, "reason": f"{kind} reply"})))


def _window(line: str) -> str:
    """A short exact piece of ``line`` (at most 24 characters, trimmed of outer spaces)."""
    text = line.strip()
    start = max(0, len(text) // 2 - 12)
    return text[start:start + 24].strip() or text


#: each fault and the metrics.jsonl keys it must be counted under (any one of them, summed over the steps)
EXPECTED = {"paraphrase": ("oracle_unlocalized_quote_not_found",),
            "correct_step": ("oracle_unlocalized_quote_numbers_differ",),
            "malformed": ("oracle_unlocalized_malformed_reply",),
            "rate_limited": ("oracle_retries_http_429",),
            "ok": ("error_tokens",)}


# ----------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """One torch thread: these models are too small to share out, and on a busy 2-core runner two threads that
    wait on each other made a 50 ms evaluation take seconds."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def gsm8k_texts(gsm8k_dir: Path) -> list[str]:
    return [t for p in load_problems("gsm8k", "train", n=300, seed=1, path=gsm8k_dir) for t in (p.question, p.answer)]


@pytest.fixture(scope="module")
def models(tmp_path_factory, gsm8k_texts) -> dict[str, Path]:
    """``tiny_like`` of every hub model a preset names, and a Qwen-shaped judge for the ``local`` backend."""
    root = tmp_path_factory.mktemp("tiny_like")
    out = {PRESETS[name]["model"]: tiny_like(PRESETS[name]["model"], root / name, texts=gsm8k_texts, seed=0)
           for name in HUB_PRESETS}
    out["judge"] = tiny_like("Qwen/Qwen2.5-0.5B-Instruct", root / "judge", texts=gsm8k_texts, seed=1)
    return out


def _config(name: str, backend: str, folder: Path, data: Path, out: Path, url: str | None, judge: Path, **extra):
    oracle = {"gemini": {"oracle_base_url": url}, "openai": {"oracle_base_url": url, "oracle_model": "qwen2.5:7b"},
              "local": {"oracle_model": str(judge)}, "stepcheck": {}}[backend]
    return preset(name, model=str(folder), data_path=str(data), device="cpu", output_dir=str(out), oracle=backend,
                  **oracle, **SIZES, **extra)


def _records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _comparable(records: list[dict], redone: set[int] = frozenset()) -> list[dict]:
    out = []
    for r in records:
        keep = {k: v for k, v in r.items() if not TIME_KEYS.search(k)}
        if r["kind"] == "train" and r["step"] in redone:
            keep = {k: v for k, v in keep.items() if not REDONE_KEYS.match(k)}
            keep["oracle_judged"] = r.get("oracle_calls", 0) + r.get("oracle_cache_hits", 0)
        out.append(keep)
    return out


def _assert_same_run(straight: Path, resumed: Path, redone: set[int] = frozenset()) -> None:
    a, b = _records(straight), _records(resumed)
    assert [(r["kind"], r["step"]) for r in b] == [(r["kind"], r["step"]) for r in a]
    for ra, rb in zip(_comparable(a, redone), _comparable(b, redone)):
        assert rb == ra, f"{ra['kind']} record of step {ra['step']} differs after the resume"


class _Interrupt:
    """A callback that presses Ctrl-C once step ``after`` is logged."""

    def __init__(self, after: int) -> None:
        self.after = after

    def __call__(self, event: str, record: dict) -> None:
        if event == "step" and record["step"] == self.after:
            raise KeyboardInterrupt


def _check_preset_fields(name: str, config) -> None:
    """Every field the preset sets, other than what a rehearsal replaces and the sizes, is the preset's."""
    kept = {k: v for k, v in PRESETS[name].items() if k not in REPLACED | set(SIZES)}
    assert kept, "the preset sets nothing a rehearsal keeps"
    assert {k: config[k] for k in kept} == kept


# ------------------------------------------------------------------------------------------ tiny_like itself


def test_tiny_like_keeps_what_a_qwen_run_depends_on(models):
    from transformers import AutoConfig, AutoTokenizer

    from calgrpo_lib.policy import load_policy
    from calgrpo_lib.rewards import SOLUTION_INSTRUCTION, build_prompt

    folder = models["Qwen/Qwen2.5-0.5B-Instruct"]
    cfg = AutoConfig.from_pretrained(folder)
    assert (cfg.model_type, cfg.architectures, cfg.tie_word_embeddings) == ("qwen2", ["Qwen2ForCausalLM"], True)
    assert cfg.num_key_value_heads < cfg.num_attention_heads  # grouped-query attention, as 14 / 2 on the hub
    assert cfg.rope_parameters["rope_theta"] == 1_000_000.0 and cfg.max_position_embeddings == 32768
    model, tok = load_policy(folder, device="cpu")
    attn = model.model.layers[0].self_attn
    assert all(getattr(attn, n).bias is not None for n in ("q_proj", "k_proj", "v_proj")) and attn.o_proj.bias is None
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()  # tied
    assert type(AutoTokenizer.from_pretrained(folder)).__name__ == "Qwen2Tokenizer"
    assert (tok.eos_token, tok.pad_token, tok.bos_token) == ("<|im_end|>", "<|endoftext|>", None)
    assert model.generation_config.eos_token_id == tok.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"])
    prompt = build_prompt("Ann has 12 pens.", "chat", tok)
    assert prompt == ("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant."
                      f"<|im_end|>\n<|im_start|>user\nAnn has 12 pens.\n{SOLUTION_INSTRUCTION}<|im_end|>\n"
                      "<|im_start|>assistant\n")
    ids = tok(prompt)["input_ids"]
    assert ids[0] == tok.convert_tokens_to_ids("<|im_start|>")  # no BOS in front: Qwen adds none
    assert tok.convert_ids_to_tokens(tok("12 pens")["input_ids"])[:2] == ["1", "2"]  # one digit per token
    assert tok.decode(ids) == prompt


def test_tiny_like_llama_family_and_its_doubled_bos(tmp_path):
    from calgrpo_lib.policy import load_policy
    from calgrpo_lib.rewards import build_prompt
    from calgrpo_lib.sampling import generate

    folder = tiny_like("meta-llama/Llama-3.2-1B-Instruct", tmp_path / "llama", hidden_size=32, num_layers=1)
    with pytest.warns(UserWarning, match="pads with its EOS"):  # Llama 3 has no pad token: the loader says so
        model, tok = load_policy(folder, device="cpu")
    assert type(model).__name__ == "LlamaForCausalLM" and model.config.num_key_value_heads == 1
    prompt = build_prompt("Ann has 12 pens.", "chat", tok)
    assert prompt.startswith("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n")
    bos = tok.bos_token_id
    assert tok(prompt)["input_ids"][:2] == [bos, bos]  # the template's BOS and the tokenizer's
    g = generate(model, tok, [prompt], max_new_tokens=2, temperature=1.0, seed=0)
    assert (g.prompt_ids[0][g.prompt_mask[0].bool()] == bos).sum() == 1  # the sampler keeps one
    assert [w for w, _ in tok.backend_tokenizer.pre_tokenizer.pre_tokenize_str("12345")] == ["123", "45"]


def test_tiny_like_is_deterministic_and_reads_a_local_config(tmp_path):
    a = tiny_like("Qwen/Qwen2.5-7B-Instruct", tmp_path / "a", hidden_size=32, num_layers=1, seed=3)
    b = tiny_like("Qwen/Qwen2.5-7B-Instruct", tmp_path / "b", hidden_size=32, num_layers=1, seed=3)
    c = tiny_like("Qwen/Qwen2.5-7B-Instruct", tmp_path / "c", hidden_size=32, num_layers=1, seed=4)
    for name in ("model.safetensors", "tokenizer.json", "config.json", "generation_config.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert (a / "model.safetensors").read_bytes() != (c / "model.safetensors").read_bytes()
    config = json.loads((a / "config.json").read_text())
    assert config["tie_word_embeddings"] is False and config["dtype"] == "bfloat16"  # the 7B is untied
    d = tiny_like(a, tmp_path / "d", hidden_size=32, num_layers=1, seed=3)  # a local folder: its config.json
    assert json.loads((d / "config.json").read_text())["tie_word_embeddings"] is False


def test_tiny_like_pads_the_embedding_as_the_hub_does(tmp_path):
    from calgrpo_lib.policy import load_policy
    from calgrpo_lib.rehearsal import KNOWN_MODELS
    from calgrpo_lib.sampling import generate

    assert KNOWN_MODELS["Qwen/Qwen2.5-0.5B-Instruct"]["vocab_size"] == 151936
    folder = tiny_like("Qwen/Qwen2.5-0.5B-Instruct", tmp_path / "q", hidden_size=16, num_layers=1, embedding_rows=4096)
    model, tok = load_policy(folder, device="cpu")
    assert model.get_input_embeddings().weight.shape[0] == 4096 > len(tok)
    g = generate(model, tok, ["Question: 1 + 1?"], max_new_tokens=16, temperature=1.0, num_return_sequences=4,
                 seed=0)
    assert (g.completion_ids >= len(tok)).any()  # a random model samples rows past the tokenizer: they decode to ""
    assert all(isinstance(t, str) for t in g.texts)
    with pytest.raises(ValueError, match="embedding_rows=10 is fewer than the tokenizer's"):
        tiny_like("Qwen/Qwen2.5-0.5B-Instruct", tmp_path / "x", embedding_rows=10)


def test_family_of_gives_the_family_and_a_copy_of_the_hub_config_fields(tmp_path):
    from calgrpo_lib.rehearsal import FAMILIES, KNOWN_MODELS, family_of

    family, cfg = family_of("Qwen/Qwen2.5-7B-Instruct")
    assert family is FAMILIES["qwen2.5"] and cfg == KNOWN_MODELS["Qwen/Qwen2.5-7B-Instruct"]
    assert (cfg["model_type"], cfg["hidden_size"], cfg["tie_word_embeddings"], cfg["rope_theta"]) == \
        ("qwen2", 3584, False, 1_000_000.0)
    cfg["hidden_size"] = 1  # a copy: KNOWN_MODELS keeps the hub's numbers
    assert KNOWN_MODELS["Qwen/Qwen2.5-7B-Instruct"]["hidden_size"] == 3584
    family, cfg = family_of("meta-llama/Llama-3.1-8B-Instruct")  # a known prefix: the family's first known model
    assert family is FAMILIES["llama3"] and cfg == KNOWN_MODELS["meta-llama/Llama-3.2-1B-Instruct"]
    assert cfg["rope_scaling"]["rope_type"] == "llama3"  # as the hub's config.json has it
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text(json.dumps({"model_type": "qwen2", "hidden_size": 64}))
    with pytest.raises(ValueError, match=r"lacks \['num_hidden_layers', 'num_attention_heads', 'intermediate_size'\]"):
        family_of(tmp_path / "m")


def test_tiny_like_rejects_what_it_cannot_shape(tmp_path):
    with pytest.raises(ValueError, match=r"hub_id='gpt2' is not a model family.*Qwen/Qwen2.5-0.5B-Instruct"):
        tiny_like("gpt2", tmp_path / "x")
    with pytest.raises(ValueError, match="hidden_size=60 must be num_heads=4 times an even head size"):
        tiny_like("Qwen/Qwen2.5-0.5B-Instruct", tmp_path / "x", hidden_size=60)
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(ValueError, match="model_type='bert'"):
        tiny_like(tmp_path / "bert", tmp_path / "x")


# ------------------------------------------------------------------------------------------------ the runs


def _judged(steps: list[dict]) -> list[float]:
    """The oracle's items per step: every wrong answer of the step."""
    n = SIZES["prompts_per_step"] * SIZES["num_generations"]
    return [r["oracle_calls"] + r["oracle_cache_hits"] - round(n * (1 - r["accuracy"])) for r in steps]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", HUB_PRESETS)
def test_rehearsal_resumes_exactly_and_counts_every_fault(name, backend, models, gsm8k_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("GEMINI_API_KEY", FAKE_KEY)
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    judge = FaultyJudge(backend)
    remote = backend in ("gemini", "openai")
    with (ScriptedServer([judge], max_requests=400, max_seconds=120) if remote else nullcontext()) as srv:
        def config(run: str, **extra):
            return _config(name, backend, models[PRESETS[name]["model"]], gsm8k_dir, tmp_path / run,
                           srv.url if remote else None, models["judge"], **extra)

        straight = Trainer(config("straight"), progress=False).train()
        served = Counter(judge.served)  # what the straight run was served
        judge.new_run()
        cut = Trainer(config("cut"), callbacks=[_Interrupt(KILL_AFTER)], progress=False).train()
        resumed = Trainer(config("cut", resume=True), progress=False).train()

    assert not straight.interrupted and straight.steps_done == SIZES["max_steps"]
    assert cut.interrupted and cut.steps_done == KILL_AFTER and not resumed.interrupted
    assert straight.eval_before is not None and straight.eval_after is not None
    _check_preset_fields(name, straight.config.to_dict())
    state = json.loads((tmp_path / "cut" / "checkpoints" / "step-000003" / "trainer_state.json").read_text())
    _check_preset_fields(name, state["config"])  # the config that ran, as the checkpoint holds it
    assert {p.name for p in (tmp_path / "straight" / "checkpoints").iterdir()} == {
        f"step-{s:06d}" for s in range(1, SIZES["max_steps"] + 1)}
    _assert_same_run(tmp_path / "straight", tmp_path / "cut")

    steps = [r for r in _records(tmp_path / "straight") if r["kind"] == "train"]
    assert _judged(steps) == [0] * len(steps)  # every wrong answer was judged, by a call or from the cache
    totals = Counter()
    for r in steps:
        totals.update({k: v for k, v in r.items() if isinstance(v, (int, float))})
    assert totals["oracle_failures"] == totals["oracle_fallbacks"] == totals["oracle_abandoned"] == 0
    causes = sum(v for k, v in totals.items() if k.startswith("oracle_unlocalized_") and k != "oracle_unlocalized_rate")
    assert causes == totals["oracle_unlocalized"]  # every unlocalized verdict is counted under its cause
    if backend == "local":  # a random judge writes noise: unreadable replies, counted, never a crash
        assert totals["oracle_unlocalized_malformed_reply"] >= 1
    if not remote:
        return
    assert set(FaultyJudge.KINDS) <= set(served), f"the judge served {dict(served)}"
    for kind, keys in EXPECTED.items():
        assert sum(totals[k] for k in keys) >= 1, f"{kind} replies are not counted under any of {keys}"
    assert totals["oracle_retries_http_429"] == served["rate_limited"] == served["answered_after_429"]  # retried once
    assert totals["grad_norm"] > 0  # the ok quotes gave error spans: the policy trained, so the resume had weights
    # and optimizer state to restore


def test_llama_family_runs_the_preset(tmp_path, gsm8k_dir, gsm8k_texts):
    """A preset with a Llama 3 model in place of Qwen: BOS from both the template and the tokenizer, pad = EOS."""
    name = HUB_PRESETS[0]
    folder = tiny_like("meta-llama/Llama-3.2-1B-Instruct", tmp_path / "llama", texts=gsm8k_texts)
    config = _config(name, "stepcheck", folder, gsm8k_dir, tmp_path / "run", None, folder).replace(max_steps=2)
    with pytest.warns(UserWarning, match="pads with its EOS"):
        result = Trainer(config, progress=False).train()
    assert result.steps_done == 2 and result.eval_after is not None
    assert [r["step"] for r in result.history] == [1, 2]


def _cli_flags(name: str, folder: Path, data: Path, run: Path, *extra: str) -> list[str]:
    flags = ["train", "--preset", name, "--model", str(folder), "--data-path", str(data), "--device", "cpu",
             "--output-dir", str(run), *extra]
    for field, value in SIZES.items():
        flags += [f"--{field.replace('_', '-')}", str(value)]
    return flags


def test_cli_rehearsal_killed_inside_a_step_resumes_exactly(models, gsm8k_dir, tmp_path, monkeypatch):
    """The preset through the CLI, the judge through google-genai; SIGTERM arrives while step 2 waits for the judge
    (the checkpoint of step 1 is on disk), and ``--resume`` finishes the run as the straight run did."""
    name = HUB_PRESETS[0]
    folder = models[PRESETS[name]["model"]]
    monkeypatch.setenv("GEMINI_API_KEY", FAKE_KEY)
    judge = FaultyJudge("gemini")
    run = tmp_path / "cli"
    sent: list[int] = []
    once = threading.Lock()  # the fake judge serves concurrent requests: only one of them sends the signal

    def kill_once(request: dict) -> None:
        with once:
            if sent or not (run / "checkpoints" / f"step-{KILL_AFTER:06d}").is_dir():
                return
            sent.append(1)
        os.kill(os.getpid(), signal.SIGTERM)  # the trainer turns it into Ctrl-C (main thread)

    previous = signal.signal(signal.SIGTERM, lambda *a: None)  # outside the trainer, a stray SIGTERM is ignored
    try:
        with ScriptedServer([judge], max_requests=400, max_seconds=120) as srv:
            Trainer(_config(name, "gemini", folder, gsm8k_dir, tmp_path / "straight", srv.url, models["judge"]),
                    progress=False).train()
            judge.new_run()
            judge.on_request = kill_once
            flags = _cli_flags(name, folder, gsm8k_dir, run, "--oracle-base-url", srv.url)
            assert cli_main(flags) == 130  # interrupted: checkpoint written, told to --resume
            assert sent and len([r for r in _records(run) if r["kind"] == "train"]) == KILL_AFTER
            assert cli_main([*flags, "--resume"]) == 0
    finally:
        signal.signal(signal.SIGTERM, previous)
    _assert_same_run(tmp_path / "straight", run, redone={KILL_AFTER + 1})
    state = json.loads((run / "checkpoints" / "step-000003" / "trainer_state.json").read_text())
    _check_preset_fields(name, state["config"])
    assert state["config"]["oracle"] == PRESETS[name]["oracle"]  # the preset's own judge, through its own client
    assert FAKE_KEY.encode() not in b"".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())


def test_cli_rehearsal_survives_sigkill(models, gsm8k_dir, tmp_path):
    """``kill -9`` of the CLI process (no checkpoint on the way out) once step 1's checkpoint is on disk, then
    ``--resume``: the run ends as the straight run did, whatever step the kill landed in."""
    name = HUB_PRESETS[0]
    folder = models[PRESETS[name]["model"]]
    judge = FaultyJudge("openai")
    run = tmp_path / "cli"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    with ScriptedServer([judge], max_requests=400, max_seconds=120) as srv:
        Trainer(_config(name, "openai", folder, gsm8k_dir, tmp_path / "straight", srv.url, models["judge"]),
                progress=False).train()
        judge.new_run()
        flags = _cli_flags(name, folder, gsm8k_dir, run, "--oracle", "openai", "--oracle-base-url", srv.url,
                           "--oracle-model", "qwen2.5:7b")
        proc = subprocess.Popen([sys.executable, "-m", "calgrpo_lib", *flags], cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            if (run / "checkpoints" / f"step-{KILL_AFTER:06d}").is_dir():
                proc.kill()
                break
            time.sleep(0.005)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == -signal.SIGKILL, err.decode()[-2000:]
        assert cli_main([*flags, "--resume"]) == 0
    _assert_same_run(tmp_path / "straight", run, redone=set(range(KILL_AFTER + 1, SIZES["max_steps"] + 1)))


# ------------------------------------------------------------------------- kills that once broke a resume


class _KillAfterOptimizerStep:
    """A stop arriving in step ``after + 1`` just after its optimizer step, before the step is counted: a real
    SIGINT (Ctrl-C, held to the step's end) or a ``KeyboardInterrupt`` raised there by code (no checkpoint of that
    half-done state: the resume redoes the step from the newest checkpoint)."""

    def __init__(self, trainer: Trainer, after: int, how: str) -> None:
        self.trainer, self.after, self.how = trainer, after, how
        trainer.optimizer.register_step_post_hook(self)

    def __call__(self, *args) -> None:
        if self.trainer.step_count == self.after:
            if self.how == "signal":
                os.kill(os.getpid(), signal.SIGINT)
            else:
                raise KeyboardInterrupt


@pytest.mark.parametrize("how", ["signal", "raise"])
def test_kill_after_an_optimizer_step_resumes_exactly(models, gsm8k_dir, tmp_path, how):
    name = HUB_PRESETS[0]
    judge = FaultyJudge("openai")
    with ScriptedServer([judge], max_requests=400, max_seconds=120) as srv:
        def config(run: str, **extra):
            return _config(name, "openai", models[PRESETS[name]["model"]], gsm8k_dir, tmp_path / run, srv.url,
                           models["judge"], **extra)

        Trainer(config("straight"), progress=False).train()
        judge.new_run()
        cut = Trainer(config("cut"), progress=False)
        _KillAfterOptimizerStep(cut, KILL_AFTER, how)
        if how == "raise":
            with pytest.warns(UserWarning, match="interrupted inside a step's update"):
                assert cut.train().interrupted
        else:
            assert cut.train().interrupted
            assert (tmp_path / "cut" / "checkpoints" / f"step-{KILL_AFTER + 1:06d}").is_dir()  # the step finished
        Trainer(config("cut", resume=True), progress=False).train()
    _assert_same_run(tmp_path / "straight", tmp_path / "cut", redone={KILL_AFTER + 1})


def test_kill_before_a_scheduled_eval_resumes_exactly(models, gsm8k_dir, tmp_path):
    name = HUB_PRESETS[0]
    at = SIZES["eval_every"]

    def config(run: str, **extra):
        return _config(name, "stepcheck", models[PRESETS[name]["model"]], gsm8k_dir, tmp_path / run, None,
                       models["judge"], **extra)

    Trainer(config("straight"), progress=False).train()
    assert Trainer(config("cut"), callbacks=[_Interrupt(at)], progress=False).train().interrupted
    Trainer(config("cut", resume=True), progress=False).train()
    _assert_same_run(tmp_path / "straight", tmp_path / "cut")
