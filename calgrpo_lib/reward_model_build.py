"""Build the tiny outcome reward model ("tiny-rm"): a one-logit classification head on a copy of the tiny policy's
Llama, trained on the policy's own sampled answers of the synthetic task, labelled right or wrong by the verifier.

Data: ``train_problems`` train-split problems, ``train_samples`` answers each sampled from the shipped tiny policy at
``temperature``; held-out: ``heldout_problems`` *test*-split problems (disjoint from train), ``heldout_samples``
answers each, the answers of one problem forming a group. Label ``y = answer_reward(response, problem.final)`` (1
right, 0 wrong). A pair is rendered by :func:`calgrpo_lib.reward_model.render_pair` and tokenised by
:meth:`calgrpo_lib.reward_model.RewardModel.encode`, the one :meth:`~calgrpo_lib.reward_model.RewardModel.score`
uses, so training and use match.

Model: ``LlamaForSequenceClassification`` (``num_labels=1``) whose backbone (``model.*``) is the tiny policy's, and
whose ``score`` head (hidden -> 1, no bias) is fresh, drawn with ``torch.manual_seed(seed)``. Its score ``s`` is the
logit read at the last non-pad token (the EOS the chat template appends). Loss, BCE with logits over a batch of
``B`` pairs::

    L = -(1/B) sum_i [ y_i log sigmoid(s_i) + (1 - y_i) log(1 - sigmoid(s_i)) ]

so ``s`` estimates the log-odds that the answer is right. The held-out metrics (accuracy at threshold 0, the
within-group ranking rate and its sign test) are those of :mod:`calgrpo_lib.reward_model_eval`.

The build is deterministic: the same :class:`RMBuildConfig` and thread count give the same weights. Rebuild the
shipped model with ``python -m calgrpo_lib reward-model build --out calgrpo_lib/models/tiny-rm``.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .policy import load_policy
from .policy_build import machine_description
from .reward_model import TINY_RM_DIR, RewardModel
from .reward_model_eval import SAMPLE_LINES, WRONG_KINDS, rm_metrics, score_rows
from .rewards import answer_reward, build_prompt
from .sampling import generate
from .tasks import Problem, generate_problems
from .validation import check_float, check_int, check_type

__all__ = ["RMBuildConfig", "sample_answers", "reward_model_from_policy", "train_reward_model",
           "build_tiny_reward_model", "write_reward_model_card"]


def _f(default: Any, doc: str) -> Any:
    return field(default=default, metadata={"help": doc})


@dataclass(frozen=True)
class RMBuildConfig:
    """Everything that determines the tiny reward model (each field's ``metadata["help"]`` says what it does; the
    command line shows them as ``reward-model build --help``)."""

    seed: int = _f(0, "seeds problems, sampling, the score head's init and the batch order")
    train_problems: int = _f(1536, "train-split problems whose sampled answers are the training pairs")
    train_samples: int = _f(4, "answers sampled per training problem")
    heldout_problems: int = _f(256, "test-split problems (disjoint from train) for the held-out answers")
    heldout_samples: int = _f(4, "answers sampled per held-out problem: one group")
    temperature: float = _f(1.0, "sampling temperature of the tiny policy")
    max_new_tokens: int = _f(64, "most tokens sampled per answer (a cut-off answer has no final line: wrong)")
    sample_batch_size: int = _f(256, "rows sampled together (changes the sampled tokens, so it is part of a build)")
    steps: int = _f(400, "optimizer steps")
    batch_size: int = _f(32, "pairs per step")
    lr: float = _f(5e-4, "peak AdamW learning rate (backbone and head)")
    min_lr_ratio: float = _f(0.1, "the cosine decays the learning rate to this share of lr")
    warmup: int = _f(30, "linear warm-up steps")
    weight_decay: float = _f(0.01, "AdamW weight decay on matrices (not on norms)")
    grad_clip: float = _f(1.0, "gradient-norm clipping")
    threads: int = _f(2, "torch CPU threads while building (part of determinism)")

    def __post_init__(self) -> None:
        check_int("seed", self.seed, None, None)
        for name in ("train_problems", "train_samples", "heldout_problems", "heldout_samples", "max_new_tokens",
                     "sample_batch_size", "steps", "batch_size", "threads"):
            check_int(name, getattr(self, name), 1, None)
        check_int("warmup", self.warmup, 0, None)
        check_float("temperature", self.temperature, 0.0, low_open=True)
        check_float("lr", self.lr, 0.0, low_open=True)
        check_float("min_lr_ratio", self.min_lr_ratio, 0.0, 1.0)
        check_float("weight_decay", self.weight_decay, 0.0)
        check_float("grad_clip", self.grad_clip, 0.0, low_open=True)


def sample_answers(model: Any, tokenizer: Any, problems: Sequence[Problem], samples: int, *, temperature: float = 1.0,
                   max_new_tokens: int = 64, seed: int = 0, batch_size: int = 256) -> list[dict[str, Any]]:
    """Sample ``samples`` answers per problem; one row ``{"group", "question", "response", "label"}`` per answer,
    problem-major (``group`` is the problem's index), ``label = answer_reward(response, problem.final)``."""
    check_int("samples", samples, 1, None)
    prompts = [build_prompt(p.question, "plain") for p in problems]
    texts = generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens, temperature=temperature,
                     num_return_sequences=samples, seed=seed, batch_size=batch_size).texts
    return [{"group": i // samples, "question": problems[i // samples].question, "response": t,
             "label": answer_reward(t, problems[i // samples].final)} for i, t in enumerate(texts)]


def reward_model_from_policy(policy: Any, seed: int = 0) -> Any:
    """A ``LlamaForSequenceClassification`` (one label) with ``policy``'s backbone weights (copied) and a fresh
    ``score`` head drawn with ``torch.manual_seed(seed)``."""
    from transformers import LlamaForSequenceClassification

    cfg = copy.deepcopy(policy.config)
    cfg.num_labels, cfg.architectures, cfg.tie_word_embeddings = 1, ["LlamaForSequenceClassification"], False
    torch.manual_seed(seed)
    model = LlamaForSequenceClassification(cfg)
    model.model.load_state_dict(policy.model.state_dict())  # strict: every backbone tensor
    return model.float()


def _lr_factor(step: int, cfg: RMBuildConfig) -> float:
    if step < cfg.warmup:
        return (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def _batches(n: int, cfg: RMBuildConfig) -> list[list[int]]:
    """``cfg.steps`` batches of indices into ``n`` rows: one seeded shuffle per epoch, walked in order."""
    gen, order, out = torch.Generator().manual_seed(cfg.seed), [], []
    for _ in range(cfg.steps):
        batch = []
        while len(batch) < min(cfg.batch_size, n):
            if not order:
                order = torch.randperm(n, generator=gen).tolist()
            batch.append(order.pop())
        out.append(batch)
    return out


def train_reward_model(rm: RewardModel, rows: Sequence[dict[str, Any]], cfg: RMBuildConfig,
                       progress: bool = True) -> list[dict[str, float]]:
    """Train ``rm.model`` on ``rows`` with the BCE-with-logits loss of the module docstring (AdamW, warm-up then
    cosine); return the log ``[{"step", "loss", "accuracy"}]`` (means over each 25 steps)."""
    from tqdm.auto import tqdm

    model = rm.model
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0}],
                            lr=cfg.lr, betas=(0.9, 0.95))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(s, cfg))
    log, losses, hits = [], [], []
    model.train()
    bar = tqdm(_batches(len(rows), cfg), desc="train tiny-rm", disable=not progress)
    for step, idx in enumerate(bar, start=1):
        enc = rm.encode([rows[i]["question"] for i in idx], [rows[i]["response"] for i in idx])
        y = torch.tensor([float(rows[i]["label"]) for i in idx])  # (B,)
        s = model(**enc).logits[:, 0].float()  # (B,)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(s, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()
        losses.append(loss.item())
        hits.append(((s > 0).float() == y).float().mean().item())
        if step % 25 == 0 or step == cfg.steps:
            log.append({"step": step, "loss": sum(losses) / len(losses), "accuracy": sum(hits) / len(hits)})
            bar.set_postfix(loss=f"{log[-1]['loss']:.3f}", acc=f"{log[-1]['accuracy']:.2f}")
            losses, hits = [], []
    model.eval()
    return log


def build_tiny_reward_model(out_dir: str | os.PathLike, config: RMBuildConfig | None = None,
                            progress: bool = True) -> dict[str, Any]:
    """Sample the data, train the reward model, save it to ``out_dir`` (a Hugging Face folder with the tiny
    policy's tokenizer), score the held-out answers with the saved model as :meth:`RewardModel.load` loads it, and
    write ``heldout.jsonl``, ``build_info.json`` and the model card ``README.md``. Returns the build info."""
    check_type("out_dir", out_dir, (str, os.PathLike))
    cfg = config or RMBuildConfig()
    check_type("config", cfg, RMBuildConfig)
    out, threads = Path(out_dir), torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        t0 = time.perf_counter()
        policy, tok = load_policy("tiny", device="cpu", dtype="float32")
        train = sample_answers(policy, tok, generate_problems(cfg.train_problems, seed=cfg.seed, split="train"),
                               cfg.train_samples, temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens,
                               seed=cfg.seed, batch_size=cfg.sample_batch_size)
        held = sample_answers(policy, tok, generate_problems(cfg.heldout_problems, seed=cfg.seed + 1, split="test"),
                              cfg.heldout_samples, temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens,
                              seed=cfg.seed + 1, batch_size=cfg.sample_batch_size)
        t_sampled = time.perf_counter()
        rm = RewardModel(reward_model_from_policy(policy, cfg.seed), copy.deepcopy(tok))
        log = train_reward_model(rm, train, cfg, progress)
        t_trained = time.perf_counter()
        out.mkdir(parents=True, exist_ok=True)
        rm.model.save_pretrained(out)
        for key in ("is_local", "local_files_only", "name_or_path"):  # where the policy's tokenizer came from
            rm.tokenizer.init_kwargs.pop(key, None)
        rm.tokenizer.save_pretrained(out)
        sha = hashlib.sha256((out / "model.safetensors").read_bytes()).hexdigest()
        scores = score_rows(RewardModel.load(out, device="cpu", dtype="float32"), held)
        info = {"config": dataclasses.asdict(cfg), "n_params": sum(p.numel() for p in rm.model.parameters()),
                "train_answers": len(train), "train_right_share": sum(r["label"] for r in train) / len(train),
                "heldout": rm_metrics(held, scores),
                "heldout_sample": rm_metrics(held[:SAMPLE_LINES], scores[:SAMPLE_LINES]),
                "sample_seconds": round(t_sampled - t0, 1), "train_seconds": round(t_trained - t_sampled, 1),
                "build_seconds": round(t_trained - t0, 1), "weights_sha256": sha,
                "machine": machine_description(load_before),
                "log": log}
    finally:
        torch.set_num_threads(threads)
    with (out / "heldout.jsonl").open("w") as f:
        for r, s in zip(held, scores):
            f.write(json.dumps({**r, "score": round(s, 6)}) + "\n")
    wrong = sorted((s, r["response"]) for r, s in zip(held, scores) if r["label"] <= 0.5)[::-1][:3]
    info["top_wrong"] = [{"score": round(s, 3), "response": t} for s, t in wrong]
    info["size_mb"] = round(sum(f.stat().st_size for f in out.iterdir() if f.is_file()) / 1e6, 2)
    (out / "build_info.json").write_text(json.dumps(info, indent=1) + "\n")
    write_reward_model_card(out, info)
    return info


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def write_reward_model_card(out_dir: str | os.PathLike, info: dict[str, Any]) -> Path:
    """Write ``README.md`` (the model card) into ``out_dir`` from the facts :func:`build_tiny_reward_model`
    returns."""
    c, h, smp = info["config"], info["heldout"], info["heldout_sample"]
    rank, shipped = h["ranking"], Path(out_dir).resolve() == TINY_RM_DIR
    defaults = dataclasses.asdict(RMBuildConfig())
    flags = "".join(f" --{k.replace('_', '-')} {v}" for k, v in c.items() if v != defaults[k])
    kinds = "\n".join(f"| {k}: {WRONG_KINDS.get(k, k)} | {v['n']} | {_pct(v['scored_right'])} |"
                      for k, v in h["wrong_kinds"].items())
    top = "\n".join(f"- score {w['score']:+.2f}: `{w['response'].replace(chr(10), ' / ')}`" for w in info["top_wrong"])
    lo, hi = rank["groups_won_95"]
    text = _CARD.format(
        **c, n_params=f"{info['n_params']:,}", train_answers=f"{info['train_answers']:,}",
        train_right=_pct(info["train_right_share"]), n=h["n"], right_share=_pct(h["right_share"]),
        acc=_pct(h["accuracy"]), tpr=_pct(h["true_positive_rate"]), tnr=_pct(h["true_negative_rate"]),
        bce="n/a" if h["bce"] is None else f"{h['bce']:.3f}", sample_n=smp["n"], sample_acc=_pct(smp["accuracy"]),
        sample_correct=round((smp["accuracy"] or 0) * smp["n"]), rank=_pct(rank["rate"]), pairs=rank["pairs"],
        mixed=rank["mixed_groups"], won=rank["groups_won"], lost=rank["groups_lost"], tied=rank["groups_tied"],
        lo=_pct(lo), hi=_pct(hi), kinds=kinds, top=top or "- (none)", minutes=info["build_seconds"] / 60,
        sample_s=info["sample_seconds"], train_s=info["train_seconds"], machine=info["machine"],
        sha=info["weights_sha256"][:16], size_mb=info["size_mb"], lines=SAMPLE_LINES,
        out="calgrpo_lib/models/tiny-rm" if shipped else os.fspath(out_dir), flags=flags)
    path = Path(out_dir) / "README.md"
    path.write_text(text)
    return path


_CARD = """# calgrpo tiny-rm: the tiny outcome reward model

A {n_params}-parameter `LlamaForSequenceClassification` with one label: the tiny policy's Llama (its weights copied)
with a fresh linear `score` head, trained to tell the tiny policy's right answers from its wrong ones on the
synthetic task. Its score is the log-odds that the answer is right; shipped inside the package, it loads offline:

```python
from calgrpo_lib.reward_model import RewardModel
rm = RewardModel.load("tiny-rm")
rm.score(["Tom has 2 apples. ..."], ["2 + 3 = <<2+3=5>>5\\n#### 5"])  # (N,) float32
```

The pair is rendered by the tiny policy's chat template (`Question: q\\nAnswer:\\nresponse<|eos|>`,
`reward_model.render_pair`) and scored at its last token. It is an *outcome* model: it sees the whole answer
and was only told whether the final number is right.

## Training

- Data: {train_answers} answers of the shipped tiny policy, {train_samples} sampled at temperature {temperature}
  (at most {max_new_tokens} new tokens) for each of {train_problems} train-split problems
  (`generate_problems({train_problems}, seed={seed}, split="train")`); {train_right} of them right. Label: 1 when
  `answer_reward(response, problem.final)` is 1, else 0.
- Loss: binary cross-entropy with logits, `-[y log sigmoid(s) + (1 - y) log(1 - sigmoid(s))]`, mean over a batch.
- {steps} steps of batch {batch_size}, AdamW (betas 0.9/0.95, weight decay {weight_decay}), lr {lr} with {warmup}
  warm-up steps then cosine to {min_lr_ratio} x lr, gradient clipping {grad_clip}; the whole model is trained;
  seed {seed}; {threads} torch threads.
- Build time: {minutes:.1f} min ({sample_s:.0f} s sampling, {train_s:.0f} s training) on {machine} (a load
  average above the number of threads means other jobs shared the cores: the time is then pessimistic).
  Deterministic: the same configuration and thread count give the same weights (sha256 of model.safetensors
  starts `{sha}`). Files: {size_mb} MB in all, fp32 weights.

## Held-out evaluation

{n} answers: {heldout_samples} sampled the same way for each of {heldout_problems} *test*-split problems (disjoint
from train), {right_share} of them right; each line of `heldout.jsonl` holds one (question, response, label, group,
and the score this model gave).

| | |
|---|---|
| accuracy at threshold 0 (score > 0 means "right") | **{acc}** of {n} |
| accuracy on the first {lines} lines of `heldout.jsonl` (the test's sample) | {sample_acc} ({sample_correct} of \
{sample_n}) |
| right answers scored > 0 / wrong answers scored <= 0 | {tpr} / {tnr} |
| mean BCE | {bce} |
| within-group ranking rate (a right answer above a wrong one of the same problem; ties half; chance 50%) | \
**{rank}** over {pairs} (right, wrong) pairs in {mixed} groups |
| groups whose ranking rate is above / below / at 50% | {won} / {lost} / {tied} (share above among those not \
at 50%: 95% Wilson interval {lo} to {hi}) |

## Known weaknesses

How often each kind of wrong held-out answer is scored > 0 (called right):

| kind of wrong answer | n | scored > 0 |
|---|---|---|
{kinds}

The wrong held-out answers it scored highest:

{top}

It has only seen the tiny policy's own answers on the synthetic task: it knows nothing of other tasks, other
answer styles or other policies, and a policy trained against it can learn what it cannot check.

## Rebuild

```bash
python -m calgrpo_lib reward-model build --out {out}{flags}
```

`build_info.json` holds these numbers, the loss curve and the full configuration;
`python -m calgrpo_lib reward-model eval` re-scores `heldout.jsonl`.
"""
