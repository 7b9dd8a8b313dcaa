"""CALGRPOTrainer: CAL token credit inside TRL's GRPOTrainer, on the shipped tiny policy, offline and on the CPU.

Each trainer runs one step (or one batch) of 2 prompts x 4 completions of at most 48 tokens at temperature 1.5: the
tiny policy's answers are 39-46 tokens, so most of them end; many are wrong, with a span the step checker finds, and
the groups have a spread (at temperature 1 the tiny policy often writes the same answer four times).
"""

from __future__ import annotations

import ast
import copy
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

trl = pytest.importorskip("trl")
peft = pytest.importorskip("peft")

import torch  # noqa: E402

from calgrpo_lib.credit import token_advantages  # noqa: E402
from calgrpo_lib.data import load_problems  # noqa: E402
from calgrpo_lib.oracle import BackendError, FakeOracle, StepCheckOracle  # noqa: E402
from calgrpo_lib.policy import load_policy  # noqa: E402
from calgrpo_lib.rewards import is_correct  # noqa: E402
from calgrpo_lib.spans import decode_responses, error_token_masks  # noqa: E402
from calgrpo_lib.trl_engine import (  # noqa: E402
    SUPPORTED_TRL,
    CALGRPOConfig,
    CALGRPOTrainer,
    problems_dataset,
    reward_func,
    trl_config,
    trl_trainer,
)

ROOT = Path(__file__).resolve().parents[1]
PROMPTS, G, T = 2, 4, 48
# TRL 1.16 reads `model.is_gradient_checkpointing` (deprecated in transformers 5.24) around generation: TRL's call,
# not ours
pytestmark = pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Any:
    """One torch thread: the 3M-parameter policy gains nothing from more, and on a busy 2-CPU runner two threads make
    generation about ten times slower. Restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def policy() -> tuple[Any, Any]:
    return load_policy("tiny", device="cpu")


@pytest.fixture(scope="module")
def dataset() -> Any:
    return problems_dataset(load_problems("synthetic", "train", n=PROMPTS, seed=0))


def _args(tmp_path: Path, **changes: Any) -> dict[str, Any]:
    return {"output_dir": str(tmp_path / "out"), "use_cpu": True, "bf16": False, "report_to": [],
            "save_strategy": "no", "disable_tqdm": True, "dataloader_pin_memory": False,
            "per_device_train_batch_size": PROMPTS * G, "num_generations": G, "max_completion_length": T,
            "max_steps": 1, "logging_steps": 1, "activation_checkpointing": False, "seed": 0, "learning_rate": 1e-3,
            "loss_type": "dapo", "beta": 0.0, "temperature": 1.5, **changes}


def _trainer(cls: type, policy: tuple[Any, Any], dataset: Any, config: Any, **kwargs: Any) -> Any:
    model, tok = policy
    return cls(model=copy.deepcopy(model), reward_funcs=reward_func(), args=config, train_dataset=dataset,
               processing_class=tok, **kwargs)


def _generation_batch(dataset: Any) -> list[dict[str, Any]]:
    """The rows TRL's repeat sampler gives one generation batch: each prompt G times in a row."""
    return [dict(dataset[i]) for i in range(len(dataset)) for _ in range(G)]


def _logged(trainer: Any) -> dict[str, float]:
    return next(r for r in trainer.state.log_history if "loss" in r)


# ------------------------------------------------------------------------------------------------ the config


def test_the_config_checks_our_fields_by_name(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="credit_mode='bogus'"):
        CALGRPOConfig(**_args(tmp_path, credit_mode="bogus"))
    with pytest.raises(ValueError, match="needs an oracle"):
        CALGRPOConfig(**_args(tmp_path, credit_mode="cal_hybrid", oracle="none"))
    with pytest.raises(ValueError, match="negative_reward=0.5"):
        CALGRPOConfig(**_args(tmp_path, negative_reward=0.5))
    with pytest.raises(ValueError, match="target_column=''"):
        CALGRPOConfig(**_args(tmp_path, target_column=""))
    config = CALGRPOConfig(**_args(tmp_path, credit_mode="prefix", lam=0.25))
    assert (config.credit_mode, config.lam, config.credit_config().credit_mode) == ("prefix", 0.25, "prefix")
    assert "credit_mode" in config.to_dict()  # TRL's own serialisation keeps our fields


def test_the_trainer_needs_a_cal_config(tmp_path: Path, policy: tuple[Any, Any], dataset: Any) -> None:
    with pytest.raises(TypeError, match="allowed: CALGRPOConfig"):
        _trainer(CALGRPOTrainer, policy, dataset, trl.GRPOConfig(**_args(tmp_path)))


def test_only_trl_engine_imports_trl_at_top_level() -> None:
    offenders = []
    for path in sorted((ROOT / "calgrpo_lib").rglob("*.py")):
        for node in ast.parse(path.read_text()).body:  # top-level statements only
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            if any(n.split(".")[0] == "trl" for n in names) and path.name != "trl_engine.py":
                offenders.append(str(path.relative_to(ROOT)))
    assert not offenders
    assert "trl_engine" not in (ROOT / "calgrpo_lib" / "__init__.py").read_text()


def test_the_trl_extra_pins_the_supported_versions() -> None:
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    pin = f"trl{SUPPORTED_TRL}"
    assert extras["trl"] == [pin]
    assert pin in extras["dev"]
    assert re.search(rf"^\s*- {re.escape(pin)}$", (ROOT / "environment.yml").read_text(), flags=re.M)


# --------------------------------------------------------------------------------------- sequence == TRL


def test_sequence_credit_gives_trls_loss_and_gradients(tmp_path: Path, policy: tuple[Any, Any],
                                                       dataset: Any) -> None:
    plain = _trainer(trl.GRPOTrainer, policy, dataset, trl.GRPOConfig(**_args(tmp_path / "plain")))
    ours = _trainer(CALGRPOTrainer, policy, dataset,
                    CALGRPOConfig(**_args(tmp_path / "ours", credit_mode="sequence", oracle="none")))
    assert ours.oracle is None  # sequence credit asks no oracle
    batches = []
    for trainer in (plain, ours):
        trainer.model.train()
        trainer.current_gradient_accumulation_steps = 1  # set by Trainer's loop; _compute_loss reads it
        torch.manual_seed(0)
        batches.append(trainer._generate_and_score_completions(_generation_batch(dataset)))
    a, b = batches
    assert torch.equal(a["completion_ids"], b["completion_ids"])  # the same batch
    assert a["advantages"].abs().sum() > 0  # some group has a spread, so the loss has a gradient
    assert a["advantages"].shape == (PROMPTS * G,) and b["advantages"].shape == a["completion_ids"].shape
    mask = b["completion_mask"].bool()  # (B, T)
    assert torch.equal(b["advantages"], torch.where(mask, a["advantages"][:, None], 0.0))  # the broadcast
    for loss_type in ("dapo", "grpo", "dr_grpo", "bnpo"):  # every aggregation of the clipped loss
        grads = []
        for trainer, batch in ((plain, a), (ours, b)):
            trainer.loss_type = loss_type  # the attribute _compute_loss reads (set from args.loss_type)
            trainer.model.zero_grad()
            loss = trainer._compute_loss(trainer.model, batch)
            loss.backward()
            grads.append((loss.detach(), [p.grad.clone() for p in trainer.model.parameters() if p.requires_grad]))
        (loss_a, grads_a), (loss_b, grads_b) = grads
        torch.testing.assert_close(loss_b, loss_a, rtol=1e-6, atol=1e-7)
        assert any(g.abs().sum() > 0 for g in grads_a)
        for ga, gb in zip(grads_a, grads_b):
            torch.testing.assert_close(gb, ga, rtol=1e-5, atol=1e-7)


# ------------------------------------------------------------------------------------- CAL modes, captured


@pytest.mark.parametrize("mode", ["cal_sparse", "cal_hybrid", "prefix"])
def test_the_loss_receives_token_advantages_of_the_mode(mode: str, tmp_path: Path, policy: tuple[Any, Any],
                                                        dataset: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    generated: list[dict[str, Any]] = []  # TRL's own batch, before our credit
    received: list[dict[str, Any]] = []  # what TRL's loss gets
    trl_generate = trl.GRPOTrainer._generate_and_score_completions

    def capture_generation(self: Any, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        out = trl_generate(self, inputs)
        generated.append({**{k: v.clone() for k, v in out.items() if torch.is_tensor(v)}, "inputs": list(inputs)})
        return out

    monkeypatch.setattr(trl.GRPOTrainer, "_generate_and_score_completions", capture_generation)
    config = CALGRPOConfig(**_args(tmp_path, credit_mode=mode, negative_reward=-1.0, lam=0.5))
    trainer = _trainer(CALGRPOTrainer, policy, dataset, config)
    trl_loss = trainer._compute_loss

    def capture_loss(model: Any, inputs: dict[str, Any]) -> torch.Tensor:
        received.append({k: v.clone() for k, v in inputs.items() if torch.is_tensor(v)})
        return trl_loss(model, inputs)

    monkeypatch.setattr(trainer, "_compute_loss", capture_loss)
    trainer.train()
    assert len(generated) == 1 and len(received) == 1

    # independently: the same completions, a fresh exact oracle, the library's span mapping and credit
    gen, tok = generated[0], policy[1]
    ids, mask = gen["completion_ids"], gen["completion_mask"].bool()  # (B, T)
    texts = decode_responses(tok, ids, mask)
    rows = gen["inputs"]
    is_wrong = torch.tensor([not is_correct(t, r["final"]) for t, r in zip(texts, rows)])  # (B,)
    wrong = torch.nonzero(is_wrong).flatten().tolist()
    verdicts = StepCheckOracle().judge_batch([(rows[i]["question"], rows[i]["answer"], texts[i]) for i in wrong])
    quotes: list[Any] = [None] * len(texts)
    for i, v in zip(wrong, verdicts):
        quotes[i] = (v.quote, v.step) if v.localized else None
    error_mask, _ = error_token_masks(tok, ids, mask, quotes, max_error_span_tokens=config.max_error_span_tokens)
    expected, stats = token_advantages(gen["advantages"], mask, error_mask, is_wrong, mode, negative_reward=-1.0,
                                       lam=0.5)  # (B, T)
    assert stats.num_error_tokens > 0  # the test means something: spans were found and used
    last = trainer.last_batch  # what the trainer keeps of its last batch, for inspection
    assert last.texts == texts and torch.equal(last.token_advantages, expected) and torch.equal(last.is_wrong, is_wrong)
    assert torch.equal(last.error_mask, error_mask) and torch.equal(last.advantages, gen["advantages"])

    # TRL shuffles the batch before the loss: match rows by their prompt and completion ids
    got = received[0]
    key = [tuple(p.tolist() + [-1] + c.tolist()) for p, c in zip(gen["prompt_ids"], ids)]
    seen = [tuple(p.tolist() + [-1] + c.tolist()) for p, c in zip(got["prompt_ids"], got["completion_ids"])]
    assert Counter(seen) == Counter(key)  # the same rows (a policy this peaked repeats itself within a group)
    order = [key.index(k) for k in seen]  # a repeated row has the same advantages as its first copy
    assert got["advantages"].shape == ids.shape
    torch.testing.assert_close(got["advantages"], expected[order], rtol=0, atol=0)
    broadcast = gen["advantages"][:, None] * mask  # (B, T)
    if mode != "prefix" or bool((gen["advantages"][is_wrong & error_mask.any(1)] != 0).any()):
        assert not torch.equal(expected, broadcast)  # CAL credit is not the sequence credit here
    logged = _logged(trainer)
    assert logged["cal/error_tokens"] == stats.num_error_tokens
    assert logged["cal/wrong"] == len(wrong) and logged["cal/fallbacks"] == stats.num_fallback
    assert 0 < logged["cal/span_hit_rate"] <= 1 and logged["cal/oracle_failures"] == 0


def test_trl_trainer_builds_the_run_of_our_config(tmp_path: Path, policy: tuple[Any, Any]) -> None:
    from transformers import PrinterCallback, ProgressCallback
    from transformers.utils.notebook import NotebookProgressCallback

    from calgrpo_lib.config import preset

    cal = preset("tiny", output_dir=str(tmp_path / "run"), train_size=12, prompts_per_step=2, num_generations=4,
                 microbatch_size=4, credit_mode="prefix", lam=0.25)
    args = trl_config(cal)
    args.disable_tqdm = True  # TRL would then print its logs: quiet removes that printer
    trainer = trl_trainer(cal, copy.deepcopy(policy[0]), policy[1], args=args, quiet=True)
    kinds = {type(c) for c in trainer.callback_handler.callbacks}
    assert not kinds & {PrinterCallback, ProgressCallback, NotebookProgressCallback}
    assert len(trainer.train_dataset) == 12 and trainer.train_dataset[0]["question"]
    assert trainer.args.credit_mode == "prefix" and trainer.args.lam == 0.25
    assert (trainer.args.per_device_train_batch_size, trainer.args.gradient_accumulation_steps) == (4, 2)
    assert isinstance(trainer.oracle, StepCheckOracle) and trainer.last_batch is None


# ------------------------------------------------------------------------------------------- LoRA, faults


def test_lora_through_peft_config_trains_only_the_adapters(tmp_path: Path, policy: tuple[Any, Any],
                                                           dataset: Any) -> None:
    lora = peft.LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"],
                           task_type="CAUSAL_LM")
    trainer = _trainer(CALGRPOTrainer, policy, dataset, CALGRPOConfig(**_args(tmp_path, credit_mode="cal_hybrid")),
                       peft_config=lora)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    assert any("lora_" in n for n in before)
    trainer.train()
    after = dict(trainer.model.named_parameters())
    changed = {n for n, p in before.items() if not torch.equal(p, after[n].detach())}
    assert changed and all("lora_" in n for n in changed), sorted(changed)[:5]
    assert _logged(trainer)["cal/error_tokens"] > 0


def test_a_failing_oracle_never_stops_training(tmp_path: Path, policy: tuple[Any, Any], dataset: Any) -> None:
    def unavailable(item: Any) -> str:
        raise BackendError("http_503", "service unavailable", status=503)

    oracle = FakeOracle(0.0, unavailable)
    config = CALGRPOConfig(**_args(tmp_path, credit_mode="cal_sparse", max_steps=2))
    trainer = _trainer(CALGRPOTrainer, policy, dataset, config, oracle=oracle)
    trainer.train()
    assert trainer.state.global_step == 2
    logs = [r for r in trainer.state.log_history if "loss" in r]
    assert len(logs) == 2 and all(torch.isfinite(torch.tensor(r["loss"])) for r in logs)
    for record in logs:
        assert record["cal/wrong"] > 0
        assert record["cal/oracle_failures"] == record["cal/oracle_calls"] > 0  # no retries: a 503 without retry
        assert record["cal/oracle_calls"] + record["cal/oracle_cache_hits"] == record["cal/judged"]  # repeats: hits
        assert record["cal/oracle_failures_http_503"] == record["cal/oracle_failures"]
        assert record["cal/fallbacks"] == record["cal/wrong"]  # every wrong answer got sequence credit
        assert record["cal/error_tokens"] == 0 and record["cal/span_hit_rate"] == 0
    assert oracle.backend_calls == sum(r["cal/oracle_calls"] for r in logs)
