"""LoRA through peft in the trainer: only the adapters train and the policy starts as the base; the KL reference is
the base model with the adapters off; a bad target module is named; a LoRA checkpoint holds the adapters and resumes
bit for bit; a checkpoint exports as a plain merged model folder; gradient checkpointing changes no gradient; and a
LoRA run on the tiny policy learns."""

from __future__ import annotations

import json
import logging

import pytest
import torch
import transformers

import calgrpo_lib.trainer as trainer_module
from calgrpo_lib.checkpoints import CheckpointError, load_checkpoint, verify_checkpoint
from calgrpo_lib.config import GRPOConfig
from calgrpo_lib.lora import (
    ADAPTER_FILES,
    adapters_disabled,
    add_lora,
    enable_gradient_checkpointing,
    export_checkpoint,
    is_peft,
    linear_module_names,
    merge_and_save,
    trainable_parameters,
)
from calgrpo_lib.loss import token_logprobs
from calgrpo_lib.policy import load_policy
from calgrpo_lib.rewards import build_prompt
from calgrpo_lib.rollout import sample_rollouts, sequence_forward
from calgrpo_lib.sampling import generate
from calgrpo_lib.tasks import generate_problems
from calgrpo_lib.trainer import TIMING_KEYS, Trainer

LINEAR = ["down_proj", "gate_proj", "k_proj", "lm_head", "o_proj", "q_proj", "up_proj", "v_proj"]  # the tiny Llama's
HIDDEN, INTERMEDIATE, LAYERS = 256, 640, 4  # its shapes (q/k/v/o: 256 -> 256; gate/up: 256 -> 640; down: 640 -> 256)
#: LoRA settings of the rise test: LoRA needs a larger learning rate than a full fine-tune (the tiny preset: 1e-4)
LORA_RISE = {"learning_rate": 2e-3, "lora_r": 16, "lora_alpha": 32, "lora_target_modules": "all-linear"}
RISE = 0.05


def _batch(model, tokenizer, n=3, seed=4):
    prompts = [build_prompt(p.question) for p in generate_problems(n, seed=seed, split="test")]
    g = generate(model, tokenizer, prompts, max_new_tokens=16, temperature=1.0, num_return_sequences=2, seed=1)
    return torch.cat([g.prompt_ids, g.completion_ids], 1), torch.cat([g.prompt_mask, g.completion_mask], 1), \
        g.prompt_ids.shape[1]


def _small(tmp_path, **changes):
    return GRPOConfig(**{"max_steps": 2, "prompts_per_step": 2, "num_generations": 4, "max_new_tokens": 24,
                         "eval_size": 0, "train_size": 32, "output_dir": str(tmp_path), "save_every": 1, "seed": 3,
                         "use_peft": True, "lora_r": 4, "lora_alpha": 8, **changes})


def _comparable(record):
    return {k: v for k, v in record.items() if k not in TIMING_KEYS}


# ------------------------------------------------------------------------------------------- adapters
@pytest.mark.parametrize(("targets", "per_layer"), [
    ("q_proj,v_proj", 2 * (HIDDEN + HIDDEN)),  # r * (in + out) for each adapted module
    ("all-linear", 4 * (HIDDEN + HIDDEN) + 2 * (HIDDEN + INTERMEDIATE) + (INTERMEDIATE + HIDDEN)),  # not lm_head
    (None, 2 * (HIDDEN + HIDDEN)),  # peft's default for Llama: q_proj, v_proj
])
def test_add_lora_trains_only_the_adapters_and_starts_as_the_base_model(targets, per_layer):
    model, tok = load_policy("tiny", device="cpu")
    ids, mask, start = _batch(model, tok)
    base_logits = sequence_forward(model, ids, mask, start)
    n_base = sum(p.numel() for p in model.parameters())
    r = 4
    lora = add_lora(model, r=r, alpha=8, dropout=0.0, target_modules=targets)
    assert is_peft(lora) and not is_peft(model)
    trainable = {n: p for n, p in lora.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    assert [p for p in trainable_parameters(lora)] == list(trainable.values())
    assert sum(p.numel() for p in trainable.values()) == LAYERS * r * per_layer
    assert sum(p.numel() for p in lora.parameters() if not p.requires_grad) == n_base  # the whole base, frozen
    q_a = trainable["base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight"]
    q_b = trainable["base_model.model.model.layers.0.self_attn.q_proj.lora_B.default.weight"]
    assert q_a.shape == (r, HIDDEN) and q_b.shape == (HIDDEN, r) and not q_b.any()  # A (r, in), B (out, r) = 0
    if targets == "all-linear":
        down_a = trainable["base_model.model.model.layers.0.mlp.down_proj.lora_A.default.weight"]
        assert down_a.shape == (r, INTERMEDIATE)
    assert not any(p.any() for n, p in trainable.items() if ".lora_B." in n)  # B = 0: W' = W
    with torch.no_grad():  # the base model's logits, up to float rounding (an exact zero added, then other kernels)
        torch.testing.assert_close(sequence_forward(lora, ids, mask, start), base_logits, atol=1e-5, rtol=0)


def test_the_lora_update_is_alpha_over_r_times_b_a():
    model, tok = load_policy("tiny", device="cpu")
    layer = model.model.layers[1].self_attn.v_proj
    w = layer.weight.detach().clone()
    lora = add_lora(model, r=2, alpha=6, dropout=0.0, target_modules="v_proj")
    adapted = lora.base_model.model.model.layers[1].self_attn.v_proj
    with torch.no_grad():
        adapted.lora_B["default"].weight.normal_()
    a, b = adapted.lora_A["default"].weight, adapted.lora_B["default"].weight  # (2, 256), (256, 2)
    x = torch.randn(5, HIDDEN)
    torch.testing.assert_close(adapted(x), x @ (w + (6 / 2) * b @ a).T)


def test_a_target_module_that_matches_nothing_is_named_with_the_models_linear_modules():
    model, _ = load_policy("tiny", device="cpu")
    assert linear_module_names(model) == LINEAR
    listing = ", ".join(LINEAR)
    with pytest.raises(ValueError, match=rf"lora_target_modules='q_proj,qproj': 'qproj' matches no module; allowed: "
                                         rf"comma-separated names of this model's linear modules \({listing}\), "
                                         r"'all-linear', or None"):
        add_lora(model, target_modules="q_proj,qproj")
    with pytest.raises(ValueError, match=r"lora_target_modules=' , ' names no module"):
        add_lora(model, target_modules=" , ")
    with pytest.raises(ValueError, match=r"lora_r=0 is out of range"):
        add_lora(model, r=0)
    assert not any(p.requires_grad is False for p in model.parameters())  # a refused call changed nothing
    with pytest.raises(ValueError, match=r"already a peft.PeftModel"):
        add_lora(add_lora(model), r=4)


def test_a_model_passed_to_the_trainer_is_wrapped_and_only_its_adapters_are_optimized(tmp_path):
    model, tok = load_policy("tiny", device="cpu")
    trainer = Trainer(_small(tmp_path, lora_target_modules="q_proj,v_proj"), model=model, tokenizer=tok,
                      progress=False)
    assert is_peft(trainer.model) and trainer.model.get_base_model() is model
    optimized = [p for group in trainer.optimizer.param_groups for p in group["params"]]
    assert len(optimized) == LAYERS * 2 * 2 and all(p.requires_grad for p in optimized)  # A and B of q, v per layer
    assert {id(p) for p in optimized} == {id(p) for p in trainable_parameters(trainer.model)}
    assert not any(p.requires_grad for n, p in model.named_parameters() if "lora_" not in n)


# ------------------------------------------------------------------------------------------- KL reference
def test_the_kl_reference_is_the_base_model_with_adapters_off(tmp_path, monkeypatch):
    """After a step changed the adapters, the next step's reference log-probs are the base model's (bit for bit) and
    not the adapted policy's; no copy of the model is held, and the base weights do not move."""
    base, _ = load_policy("tiny", device="cpu")
    trainer = Trainer(_small(tmp_path, beta=0.1, learning_rate=1e-2, save_every=0, max_steps=2), progress=False)
    assert trainer.ref_model is None and is_peft(trainer.model)
    seen = {}
    rollout, train_step = trainer.rollout, trainer_module.train_step

    def spy_rollout():
        seen["rollout"] = rollout()
        return seen["rollout"]

    def spy_train_step(model, optimizer, batch, *args, **kwargs):
        seen["ref_logp"] = batch["ref_logp"]
        return train_step(model, optimizer, batch, *args, **kwargs)

    monkeypatch.setattr(trainer, "rollout", spy_rollout)
    monkeypatch.setattr("calgrpo_lib.trainer.train_step", spy_train_step)
    trainer.step()
    trainer.step()  # the adapters are no longer zero: the policy differs from the base
    mask = seen["rollout"].completion_mask
    base_logp = trainer.logprobs(seen["rollout"], base)
    assert torch.equal(seen["ref_logp"], base_logp)
    before_update = trainer.logprobs(seen["rollout"])  # the adapted policy after step 2
    assert (before_update - base_logp)[mask].abs().max() > 1e-3
    with adapters_disabled(trainer.model):
        assert torch.equal(trainer.logprobs(seen["rollout"]), base_logp)
    frozen = {n.removeprefix("base_model.model.").replace(".base_layer", ""): p
              for n, p in trainer.model.named_parameters() if "lora_" not in n}
    for name, p in base.named_parameters():
        assert torch.equal(frozen[name], p), name


# ------------------------------------------------------------------------------------------- checkpoints
def test_a_lora_checkpoint_holds_the_adapters_and_resumes_bit_for_bit(tmp_path):
    """An interrupted LoRA run (Ctrl-C after step 2 of 4) resumed from its checkpoint repeats the uninterrupted run:
    the same records and the same adapter weights at the end. The checkpoint holds the adapters, not the model."""
    config = _small(tmp_path / "reference", max_steps=4, beta=0.05, lora_dropout=0.1)  # dropout: the RNG matters
    reference = Trainer(config, progress=False)
    expected = {r["step"]: _comparable(r) for r in reference.train().history}

    def interrupt(event, record):
        if event == "step" and record["step"] == 2:
            raise KeyboardInterrupt

    folder = tmp_path / "interrupted"
    assert Trainer(config.replace(output_dir=str(folder)), callbacks=[interrupt], progress=False).train().interrupted
    checkpoint = folder / "checkpoints" / "step-000002"
    names = {p.name for p in checkpoint.iterdir()}
    assert set(ADAPTER_FILES) <= names and "model.safetensors" not in names
    manifest = json.loads((checkpoint / "manifest.json").read_text())
    assert manifest["kind"] == "lora" and json.loads((checkpoint / "trainer_state.json").read_text())["kind"] == "lora"
    assert (checkpoint / ADAPTER_FILES[0]).stat().st_size < 200_000  # 4 layers x 2 modules x r=4: ~66 kB, not 12 MB
    assert verify_checkpoint(checkpoint) is None

    resumed = Trainer(config.replace(output_dir=str(folder), resume=True), progress=False)
    assert len(resumed.optimizer.state_dict()["param_groups"][0]["params"]) == len(trainable_parameters(resumed.model))
    result = resumed.train()
    assert {r["step"]: _comparable(r) for r in result.history} == expected
    for (name, a), (_, b) in zip(resumed.model.named_parameters(), reference.model.named_parameters()):
        assert torch.equal(a, b), name

    full, _ = load_policy("tiny", device="cpu")
    with pytest.raises(CheckpointError, match=r"holds a lora model, the model to load it into is a full one"):
        load_checkpoint(checkpoint, full, torch.optim.AdamW(full.parameters()))
    data = bytearray((checkpoint / ADAPTER_FILES[0]).read_bytes())
    data[-1] ^= 0xFF
    (checkpoint / ADAPTER_FILES[0]).write_bytes(bytes(data))
    assert verify_checkpoint(checkpoint) == "adapter_model.safetensors sha256 mismatch"


# ------------------------------------------------------------------------------------------- export
def test_export_writes_a_merged_model_folder_that_computes_as_the_adapted_model(tmp_path):
    trainer = Trainer(_small(tmp_path / "run", learning_rate=1e-2, lora_target_modules="all-linear"), progress=False)
    trainer.train()
    model, tok = trainer.model.eval(), trainer.tokenizer
    ids, mask, start = _batch(model, tok, n=4, seed=9)
    with torch.no_grad():
        adapted = sequence_forward(model, ids, mask, start)
        with adapters_disabled(model):
            assert (sequence_forward(model, ids, mask, start) - adapted).abs().max() > 1e-2  # the adapters matter
    prompts = [build_prompt(p.question) for p in generate_problems(8, seed=5, split="test")]
    greedy = generate(model, tok, prompts, max_new_tokens=32).texts

    out = export_checkpoint(tmp_path / "run" / "checkpoints" / "step-000002", tmp_path / "export")
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in out.iterdir()}
    assert not any(p.name.startswith("adapter_") for p in out.iterdir())
    merged, merged_tok = load_policy(out, device="cpu")
    assert not is_peft(merged)
    with torch.no_grad():
        torch.testing.assert_close(sequence_forward(merged, ids, mask, start), adapted, atol=1e-4, rtol=1e-4)
    assert generate(merged, merged_tok, prompts, max_new_tokens=32).texts == greedy

    copy_dir = merge_and_save(model, tok, tmp_path / "merged")  # from the live model, which stays as it was
    assert is_peft(model) and torch.equal(sequence_forward(model, ids, mask, start).detach(), adapted)
    again, _ = load_policy(copy_dir, device="cpu")
    with torch.no_grad():
        torch.testing.assert_close(sequence_forward(again, ids, mask, start), adapted, atol=1e-4, rtol=1e-4)
    with pytest.raises(FileExistsError, match=r"out_dir=.*export' exists and is not an empty folder"):
        export_checkpoint(tmp_path / "run" / "checkpoints" / "step-000002", tmp_path / "export")
    with pytest.raises(FileNotFoundError, match=r"is not a checkpoint folder \(no trainer_state.json\)"):
        export_checkpoint(out, tmp_path / "elsewhere")


def test_export_of_a_full_checkpoint_saves_its_model(tmp_path):
    trainer = Trainer(_small(tmp_path / "run", use_peft=False, max_steps=1), progress=False)
    trainer.train()
    out = export_checkpoint(tmp_path / "run" / "checkpoints" / "step-000001", tmp_path / "export")
    model, _ = load_policy(out, device="cpu")
    for (name, a), (_, b) in zip(model.named_parameters(), trainer.model.named_parameters()):
        assert torch.equal(a, b), name


# ------------------------------------------------------------------------------------------- checkpointing
class _Logs(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _counting(forward, calls):
    def counted(*args, **kwargs):
        calls.append(1)
        return forward(*args, **kwargs)
    return counted


@pytest.mark.parametrize("use_peft", [False, True], ids=["full", "lora"])
def test_gradient_checkpointing_gives_the_same_loss_and_gradients(use_peft):
    """One loss, with and without gradient checkpointing: the same value and gradients (float tolerance); the
    checkpointed layers really recompute; generation (eval mode) and scoring log no cache warning."""
    logs = _Logs()
    transformers.utils.logging.warning_once.cache_clear()
    logging.getLogger("transformers").addHandler(logs)
    try:
        results = []
        for checkpointing in (False, True):
            torch.manual_seed(0)
            model, tok = load_policy("tiny", device="cpu")
            if use_peft:
                model = add_lora(model, r=4, alpha=8, dropout=0.0, target_modules="all-linear")
                with torch.no_grad():
                    for p in trainable_parameters(model):
                        p.add_(0.01 * torch.randn_like(p))
            if checkpointing:
                enable_gradient_checkpointing(model)
            config = GRPOConfig(num_generations=4, max_new_tokens=24)
            rollout = sample_rollouts(model, tok, generate_problems(3, seed=2), config, seed=5)  # eval mode
            calls, mlp = [], (model.get_base_model() if use_peft else model).model.layers[0].mlp
            mlp.forward = _counting(mlp.forward, calls)  # (hooks do not fire in a recompute)
            model.train()
            start = rollout.completion_start
            logits = sequence_forward(model, rollout.input_ids, rollout.attention_mask, start)
            logp = token_logprobs(logits, rollout.input_ids, start)
            loss = -(logp * rollout.completion_mask).sum() / rollout.completion_mask.sum()
            forward_calls = len(calls)
            loss.backward()
            grads = [p.grad.clone() for p in trainable_parameters(model)]
            results.append((rollout.completion_ids, loss.item(), grads, (forward_calls, len(calls) - forward_calls)))
    finally:
        logging.getLogger("transformers").removeHandler(logs)
    (ids, loss, grads, calls), (ids_gc, loss_gc, grads_gc, calls_gc) = results
    assert torch.equal(ids, ids_gc)  # sampling is untouched
    assert calls == (2, 0) and calls_gc == (1, 1)  # prefill + completions; whole rows, recomputed in the backward
    assert loss_gc == pytest.approx(loss, rel=1e-5)
    for a, b in zip(grads_gc, grads):
        assert (a - b).norm() <= 1e-4 * b.norm()
    assert not [m for m in logs.messages if "cach" in m.lower() or "checkpointing" in m.lower()], logs.messages


def test_a_trainer_step_with_gradient_checkpointing_matches_one_without(tmp_path):
    """(Without LoRA dropout: its masks are drawn per forward, and a checkpointed step runs other forwards.)"""
    records = [Trainer(_small(tmp_path / str(gc), gradient_checkpointing=gc, beta=0.05, lora_dropout=0.0),
                       progress=False).step() for gc in (False, True)]
    for key in ("loss", "kl", "grad_norm", "entropy"):
        assert records[1][key] == pytest.approx(records[0][key], rel=1e-4, abs=1e-7), key
    assert records[1]["reward_mean"] == records[0]["reward_mean"]


# ------------------------------------------------------------------------------------------- learning
def test_a_lora_run_raises_held_out_accuracy_and_its_checkpoint_exports_as_a_merged_model(tmp_path):
    """The acceptance test: the tiny preset with LoRA on a small budget, as the full fine-tune's rise test
    (tests/test_trainer.py): 25 steps, the full held-out set (256 problems); ~75 s on a quiet 2-core CPU. Measured
    0.547 -> 0.637 (seed 0), 0.629 (seed 1), 0.637 (seed 2); the full fine-tune at lr 1e-4: 0.629 (seed 0). Its last
    checkpoint exports as a merged model folder that answers as the trained policy."""
    from calgrpo_lib.config import preset

    config = preset("tiny", max_steps=25, eval_every=0, save_every=0, output_dir=str(tmp_path / "run"),
                    use_peft=True, **LORA_RISE)
    trainer = Trainer(config, progress=False)
    result = trainer.train()
    before, after = result.eval_before["accuracy"], result.eval_after["accuracy"]
    assert result.steps_done == 25 and after >= before + RISE, (before, after)
    out = export_checkpoint(tmp_path / "run" / "checkpoints" / "step-000025", tmp_path / "export")
    merged, tok = load_policy(out, device="cpu")
    prompts = [build_prompt(p.question) for p in generate_problems(64, seed=11, split="test")]
    assert generate(merged, tok, prompts, max_new_tokens=64).texts == \
        generate(trainer.model, trainer.tokenizer, prompts, max_new_tokens=64).texts
