"""Build the tiny default policy from scratch: a byte-level BPE tokenizer and a 3M-parameter Llama, trained by
supervised fine-tuning (SFT) on synthetic problems, saved as a standard Hugging Face folder with its model card.

What it is trained on (problems, targets with slips and forgotten carries, token ids, batches) lives in
:mod:`calgrpo_lib.sft_data`; here are the tokenizer, the Llama config, the SFT loop, the build and the card. Every
training example is ``<|bos|> build_prompt(question, "plain") answer <|eos|>``; the loss covers the answer tokens
and the final EOS, never the prompt. Training stops on purpose at an imperfect accuracy (about half the held-out
problems right), so that GRPO groups hold both right and wrong answers.

The build is deterministic: the same :class:`TinyBuildConfig` (seed included) and the same number of CPU threads give
the same weights. Rebuild the shipped model with ``python -m calgrpo_lib policy build --out calgrpo_lib/models/tiny``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .policy import BOS_TOKEN, EOS_TOKEN, PAD_TOKEN, TINY_DIR
from .rewards import build_prompt
from .sampling import greedy_accuracy, group_stats
from .sft_data import batch_order, collate, encode_examples, target_counts, training_answers, training_problems
from .tasks import TaskConfig, generate_problems
from .validation import check_float, check_int, check_type

__all__ = ["TinyBuildConfig", "train_tokenizer", "tiny_llama_config", "sft", "build_tiny_policy", "write_model_card",
           "CHAT_TEMPLATE", "machine_description"]

# The tiny policy's chat template renders a conversation in the plain format it was trained on.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'system' -%}{{ message['content'] + '\\n' }}"
    "{%- elif message['role'] == 'user' -%}{{ 'Question: ' + message['content'] + '\\n' }}"
    "{%- elif message['role'] == 'assistant' -%}{{ 'Answer:\\n' + message['content'] + eos_token }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ 'Answer:\\n' }}{%- endif -%}"
)


@dataclass(frozen=True)
class TinyBuildConfig:
    """Everything that determines the tiny policy: data, tokenizer, architecture, optimisation.

    ``train_problems`` distinct train problems are generated (default ``steps * batch_size``, so no example is seen
    twice); the batches walk one fixed shuffle of them, so a shorter run with the same ``train_problems`` sees the
    same data in the same order and its tokenizer is the same. The learning rate warms up linearly for ``warmup``
    steps, then follows a cosine down to ``min_lr_ratio * lr`` (``min_lr_ratio=1`` keeps it constant, so a run of
    ``k`` steps ends with the weights a longer run had at step ``k``). ``slip_rate`` is the share of training
    solutions with one arithmetic slip (:func:`calgrpo_lib.sft_data.slip_answer`); ``carry_bug_rate`` the share of
    problems with a line that carries or borrows whose solution forgets every carry
    (:func:`calgrpo_lib.sft_data.dropped_carry_answer`); both 0 train on the references only. With a misconception,
    problems where it cannot be written out exactly are left out of the training data. ``hard_carry_share``, when
    given, is the share of training problems with a line that carries into a tens digit or borrows (``24 + 9``,
    ``16 - 7``; :func:`calgrpo_lib.arithmetic.carry_kind`), drawn apart from the others; ``None`` keeps the task's
    own share (about 11% of the problems that fit the misconception). A small model learns those lines slowest, and
    GRPO can only unlearn a misconception on lines where sampling sometimes gets them right; the default 0.4 draws
    them nearly four times as often as the task does.
    """

    seed: int = 0
    steps: int = 1400
    batch_size: int = 32
    train_problems: int | None = None
    lr: float = 2e-3
    min_lr_ratio: float = 0.1
    warmup: int = 100
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    slip_rate: float = 0.2
    carry_bug_rate: float = 0.6
    hard_carry_share: float | None = 0.4
    vocab_size: int = 1024
    tokenizer_problems: int = 20_000
    hidden_size: int = 256
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 640
    max_len: int = 256
    threads: int = 2
    task: TaskConfig = field(default_factory=TaskConfig)

    def __post_init__(self) -> None:
        check_int("seed", self.seed, None, None)
        for name in ("steps", "batch_size", "vocab_size", "tokenizer_problems", "hidden_size", "num_layers",
                     "num_heads", "intermediate_size", "max_len", "threads"):
            check_int(name, getattr(self, name), 1, None)
        check_int("warmup", self.warmup, 0, None)
        if self.train_problems is not None:
            check_int("train_problems", self.train_problems, self.batch_size, None)
        check_float("lr", self.lr, 0.0, low_open=True)
        check_float("min_lr_ratio", self.min_lr_ratio, 0.0, 1.0)
        check_float("weight_decay", self.weight_decay, 0.0)
        check_float("grad_clip", self.grad_clip, 0.0, low_open=True)
        check_float("slip_rate", self.slip_rate, 0.0, 1.0)
        check_float("carry_bug_rate", self.carry_bug_rate, 0.0, 1.0)
        if self.hard_carry_share is not None:
            check_float("hard_carry_share", self.hard_carry_share, 0.0, 1.0, high_open=True)
        check_type("task", self.task, TaskConfig)
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size={self.hidden_size} is not a multiple of num_heads={self.num_heads}")


def train_tokenizer(texts: Sequence[str], vocab_size: int = 1024, model_max_length: int = 256) -> Any:
    """Train a byte-level BPE on ``texts``; return it as a ``transformers`` fast tokenizer.

    Digits are split one by one before BPE (as in Llama and Qwen), so numbers are spelled digit by digit and
    arithmetic stays learnable. Special tokens: ``<|pad|>`` (id 0), ``<|bos|>`` (added in front of every encoded
    text), ``<|eos|>``; pad is never eos. Decoding is exact (byte-level, no clean-up of spaces) and offsets are
    character offsets into the input text.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    check_int("vocab_size", vocab_size, 300, None)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, show_progress=False,
                                  special_tokens=[PAD_TOKEN, BOS_TOKEN, EOS_TOKEN],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(list(texts), trainer)
    bos_id = tok.token_to_id(BOS_TOKEN)
    tok.post_processor = processors.TemplateProcessing(single=f"{BOS_TOKEN} $A", pair=f"{BOS_TOKEN} $A $B:1",
                                                       special_tokens=[(BOS_TOKEN, bos_id)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS_TOKEN, eos_token=EOS_TOKEN,
                                   pad_token=PAD_TOKEN, padding_side="left", clean_up_tokenization_spaces=False,
                                   model_max_length=model_max_length,
                                   chat_template=CHAT_TEMPLATE)


def tiny_llama_config(tokenizer: Any, cfg: TinyBuildConfig) -> Any:
    """The ``LlamaConfig`` of the tiny policy (tied input/output embeddings, no dropout)."""
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=len(tokenizer), hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
                       num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
                       num_key_value_heads=cfg.num_heads, max_position_embeddings=cfg.max_len,
                       tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
                       eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)


def _lr_factor(step: int, warmup: int, steps: int, min_ratio: float) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + torch.cos(torch.tensor(progress * torch.pi)).item())


def _optimizer(model: Any, cfg: TinyBuildConfig) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95))


def sft(model: Any, tokenizer: Any, examples: Sequence[tuple[list[int], int]], cfg: TinyBuildConfig, *,
        eval_fn: Callable[[int], dict] | None = None, eval_every: int = 0, progress: bool = True) -> list[dict]:
    """Supervised fine-tuning with AdamW, warmup + cosine; return a log of ``{"step", "loss", ...eval}`` rows."""
    from tqdm.auto import tqdm

    opt = _optimizer(model, cfg)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: _lr_factor(s, cfg.warmup, cfg.steps, cfg.min_lr_ratio))
    lengths = [len(ids) for ids, _ in examples]
    log, running = [], []
    model.train()
    bar = tqdm(batch_order(lengths, cfg.batch_size, cfg.steps, cfg.seed), total=cfg.steps, desc="SFT tiny policy",
               disable=not progress)
    for step, idx in enumerate(bar, start=1):
        loss = model(**collate([examples[i] for i in idx], tokenizer.pad_token_id)).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()
        running.append(loss.item())
        if step % 50 == 0 or step == cfg.steps:
            log.append({"step": step, "loss": sum(running) / len(running)})
            bar.set_postfix(loss=f"{log[-1]['loss']:.3f}")
            running = []
        if eval_fn is not None and eval_every and step % eval_every == 0:
            log.append({"step": step, **eval_fn(step)})
            bar.write(f"step {step}: {log[-1]}")
            model.train()
    model.eval()
    return log


def machine_description(load_before: float) -> str:
    """The machine a build ran on, for its model card: platform, cores, torch version and threads, and the 1-min load
    average at the start (``load_before``) and now (a load above the thread count means shared cores)."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPU cores visible, torch "
            f"{torch.__version__}, {torch.get_num_threads()} torch threads, 1-min load average {load_before:.1f} "
            f"at the start and {load:.1f} at the end")


def _evaluate(model: Any, tokenizer: Any) -> dict[str, Any]:
    t0 = time.perf_counter()
    held_out = generate_problems(512, seed=0, split="test")
    acc = greedy_accuracy(model, tokenizer, held_out)
    groups = group_stats(model, tokenizer, held_out[:256], group_size=8, temperature=1.0, seed=0)
    return {"greedy": acc, "groups": groups, "eval_seconds": round(time.perf_counter() - t0, 1)}


def _train(cfg: TinyBuildConfig, eval_every: int, progress: bool) -> tuple[Any, Any, dict[str, Any]]:
    """Tokenizer, model and SFT of one build; return ``(model, tokenizer, facts)``."""
    from transformers import LlamaForCausalLM

    n_problems = cfg.train_problems or cfg.steps * cfg.batch_size
    problems = training_problems(n_problems, seed=cfg.seed, task=cfg.task, carry_bug_rate=cfg.carry_bug_rate,
                                 hard_carry_share=cfg.hard_carry_share)
    answers = training_answers(problems, cfg.slip_rate, cfg.seed, cfg.carry_bug_rate)
    corpus = [build_prompt(p.question) + p.answer for p in problems[: cfg.tokenizer_problems]]
    tokenizer = train_tokenizer(corpus, cfg.vocab_size, cfg.max_len)
    examples = encode_examples(tokenizer, problems, answers)
    torch.manual_seed(cfg.seed)
    model = LlamaForCausalLM(tiny_llama_config(tokenizer, cfg))
    probe = generate_problems(128, seed=1, split="test", config=cfg.task)
    log = sft(model, tokenizer, examples, cfg, eval_fn=lambda _: greedy_accuracy(model, tokenizer, probe),
              eval_every=eval_every, progress=progress)
    facts = {"config": {k: v for k, v in dataclasses.asdict(cfg).items() if k != "task"}, "task": repr(cfg.task),
             "n_params": sum(p.numel() for p in model.parameters()), "vocab": len(tokenizer),
             "train_examples": len(examples), "train_tokens": sum(len(ids) for ids, _ in examples),
             **target_counts(problems, answers, cfg.carry_bug_rate), "log": log}
    return model, tokenizer, facts


def _save(model: Any, tokenizer: Any, out: Path) -> None:
    from transformers import GenerationConfig

    out.mkdir(parents=True, exist_ok=True)
    model.generation_config = GenerationConfig(bos_token_id=tokenizer.bos_token_id, max_new_tokens=128,
                                               eos_token_id=tokenizer.eos_token_id, do_sample=False,
                                               pad_token_id=tokenizer.pad_token_id)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def build_tiny_policy(out_dir: str | os.PathLike, *, seed: int | None = None, steps: int | None = None,
                      config: TinyBuildConfig | None = None, evaluate: bool = True, eval_every: int = 0,
                      progress: bool = True) -> dict[str, Any]:
    """Train the tiny policy from scratch and save it to ``out_dir`` as a Hugging Face folder.

    ``seed`` and ``steps``, when given, override those of ``config`` (default :class:`TinyBuildConfig`: seed 0).
    With ``evaluate`` the held-out greedy accuracy (512 test problems) and the G=8 group statistics (256 problems,
    temperature 1) are measured and written, with the build facts, to ``build_info.json`` and the model card
    ``README.md``. ``eval_every > 0`` also prints the greedy accuracy on 128 other held-out problems during
    training (that time counts in ``build_seconds``). Uses ``config.threads`` torch threads while it runs.
    Returns the build facts.
    """
    check_type("out_dir", out_dir, (str, os.PathLike))
    check_int("eval_every", eval_every, 0, None)
    cfg = config or TinyBuildConfig()
    check_type("config", cfg, TinyBuildConfig)
    cfg = dataclasses.replace(cfg, **{k: v for k, v in (("seed", seed), ("steps", steps)) if v is not None})
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        t0 = time.perf_counter()
        model, tokenizer, info = _train(cfg, eval_every, progress)
        out = Path(out_dir)
        _save(model, tokenizer, out)
        sha = hashlib.sha256((out / "model.safetensors").read_bytes()).hexdigest()
        info.update(build_seconds=round(time.perf_counter() - t0, 1), weights_sha256=sha,
                    machine=machine_description(load_before))
        if evaluate:
            info.update(_evaluate(model, tokenizer))
    finally:
        torch.set_num_threads(threads)
    info["size_mb"] = round(sum(f.stat().st_size for f in out.iterdir() if f.is_file()) / 1e6, 2)
    (out / "build_info.json").write_text(json.dumps(info, indent=1) + "\n")
    if evaluate:
        write_model_card(out, info)
    return info


def write_model_card(out_dir: str | os.PathLike, info: dict[str, Any]) -> Path:
    """Write ``README.md`` (the model card) into ``out_dir`` from the facts :func:`build_tiny_policy` returns."""
    c, g, grp = info["config"], info["greedy"], info["groups"]
    shipped, rate, share = Path(out_dir).resolve() == TINY_DIR, c.get("carry_bug_rate", 0.0), c.get("hard_carry_share")
    text = _CARD.format(
        **c, n_params=f"{info['n_params']:,}", vocab=info["vocab"], task=info["task"],
        train_examples=f"{info['train_examples']:,}", train_tokens=f"{info['train_tokens']:,}",
        build_minutes=info["build_seconds"] / 60, machine=info["machine"], acc=100 * g["accuracy"],
        fmt=100 * g["format_rate"], n=g["n"], mixed=100 * grp["mixed_rate"], n_groups=grp["n_groups"],
        all_right=100 * grp["all_right_rate"], all_wrong=100 * grp["all_wrong_rate"],
        sample_acc=100 * grp["sample_accuracy"], sample_fmt=100 * grp["format_rate"], size_mb=info["size_mb"],
        sha=info["weights_sha256"][:16],
        slipped=f"{info.get('slipped_examples', 0) - info.get('carry_dropped_examples', 0):,}",
        misconception=_MISCONCEPTION.format(carried=f"{info.get('carry_dropped_examples', 0):,}", rate=rate)
        if rate else "", misconception_intro=_MISCONCEPTION_INTRO if rate else "",
        carry_flag=f" \\\n    --carry-bug-rate {rate} --hard-carry-share {'none' if share is None else share}",
        hard_carries=_HARD_CARRIES.format(share=share, hard=f"{info.get('hard_carry_examples', 0):,}")
        if share is not None else "",
        out="calgrpo_lib/models/tiny" if shipped else os.fspath(out_dir))
    path = Path(out_dir) / "README.md"
    path.write_text(text)
    return path


_MISCONCEPTION_INTRO = """ It also has one systematic **misconception**: it
often forgets the carry (`48 + 4 = 42`), as its training data taught it. GRPO can unlearn a rule like that from
the reward alone, since sampling already produces the right carry a good share of the time; facts the policy never
learned (`17 * 6 = 64`) it can hardly fix, since sampling rarely produces them."""

_MISCONCEPTION = """- Misconception: {carried} of the targets ({rate:.0%} of the problems with a line that carries or
  borrows, asked) forget every carry and borrow (`7 + 5 = 2`, `48 + 4 = 42`: 10 short; `54 - 8 = 56`: 10 over), each
  line computing on from the one before (`sft_data.dropped_carry_answer`): one rule wherever it applies, for
  GRPO to unlearn; the step checker points at the first line that forgot a carry. Problems where the rule cannot be
  written out exactly (a later division that no longer divides) are left out of the SFT data.
"""

_HARD_CARRIES = """- Hard carries: {hard} of the problems ({share:.0%} asked, against about 11% in the task) have a line
  that carries into a tens digit or borrows (`24 + 9`, `16 - 7`; `arithmetic.carry_kind`): the lines a small
  model learns slowest. Drawn more often, they start out right more often, and GRPO can only reinforce a right
  line that sampling produces.
"""

_CARD = """# calgrpo tiny policy

A {n_params}-parameter Llama (`LlamaForCausalLM`) trained from random weights on calgrpo's synthetic arithmetic
word problems, shipped inside the package so that every notebook runs offline on a CPU:

```python
from calgrpo_lib.policy import load_policy
model, tokenizer = load_policy("tiny")
```

It is deliberately **imperfect**: greedy decoding answers {acc:.0f}% of the held-out problems right, and when it
samples it slips now and then, so GRPO has something to improve and most groups of sampled answers contain both
right and wrong ones.{misconception_intro}

## Prompt and answer format

Prompt: `build_prompt(question, "plain")`, i.e. `"Question: <question>\\nAnswer:\\n"` (the tokenizer adds
`<|bos|>`). Completion: GSM8K-style lines such as `12 + 5 = <<12+5=17>>17`, a final `#### <number>` line, then
`<|eos|>`. The chat template renders a conversation in the same format (it is not an instruct model).

## Architecture

| | |
|---|---|
| layers / hidden / heads / MLP | {num_layers} / {hidden_size} / {num_heads} / {intermediate_size} |
| parameters | {n_params} (input and output embeddings tied) |
| context | {max_len} tokens, RoPE |
| tokenizer | byte-level BPE, {vocab} tokens, digits split one by one |
| special tokens | `<|pad|>`=0, `<|bos|>`=1 (added in front), `<|eos|>`=2; pad is never eos |
| files | {size_mb} MB in all; weights in model.safetensors (fp32) |

## Training

- Data: {train_examples} distinct train-split problems from `generate_problems(n, seed={seed}, split="train")` with
  `{task}`,
  {train_tokens} tokens; the tokenizer is trained on the first {tokenizer_problems:,} of them.
- Slips: {slipped} of the targets ({slip_rate:.0%} asked) carry one arithmetic slip: one line's result is off by 1, 2
  or 10 and the later lines compute correctly from the wrong value (`sft_data.slip_answer`). Greedy decoding
  mostly ignores them; sampling reproduces them now and then, in one identifiable line. Without slips the model
  is sharper and fewer groups are mixed (an earlier build with `slip_rate=0`: 52% right greedily after 500 steps,
  44% of G=8 groups mixed; one with `slip_rate=0.05`: 38% mixed).
{misconception}{hard_carries}- SFT: loss on the answer tokens and the final `<|eos|>` only; {steps} steps of
  batch {batch_size}; AdamW (betas 0.9/0.95, weight decay {weight_decay}), lr {lr} with {warmup} warm-up steps
  then cosine to {min_lr_ratio} x lr; gradient clipping {grad_clip}; seed {seed}.
- Build time: {build_minutes:.1f} min (tokenizer, data and SFT; evaluation apart) on {machine}
  (a load average above the number of threads means other jobs shared the cores: the time is then pessimistic).
  Deterministic: the same seed and thread count on the same machine give the same weights (sha256 of
  model.safetensors starts `{sha}`).

## Evaluation (held-out: `generate_problems(512, seed=0, split="test")`, disjoint from train)

| | |
|---|---|
| greedy accuracy | {acc:.1f}% of {n} |
| well-formed `#### n` ending (greedy) | {fmt:.1f}% |
| groups of G=8 at temperature 1.0 with both a right and a wrong answer (mixed) | {mixed:.1f}% of {n_groups} |
| groups all right / all wrong | {all_right:.1f}% / {all_wrong:.1f}% |
| sampled (T=1.0) accuracy / well-formed rate | {sample_acc:.1f}% / {sample_fmt:.1f}% |

## Rebuild

```bash
python -m calgrpo_lib policy build --out {out} --seed {seed} --steps {steps} --slip-rate {slip_rate}{carry_flag}
```

`build_info.json` holds these numbers, the loss curve and the full configuration.
"""
