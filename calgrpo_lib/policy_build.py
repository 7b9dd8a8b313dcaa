"""Build the tiny default policy from scratch: a byte-level BPE tokenizer and a 3M-parameter Llama, trained by
supervised fine-tuning (SFT) on synthetic problems, saved as a standard Hugging Face folder.

Every training example is ``<|bos|> build_prompt(question, "plain") answer <|eos|>``, where ``answer`` is the GSM8K
reference solution; the loss covers the answer tokens and the final EOS, never the prompt. Prompt and answer are
tokenized separately, exactly as :func:`calgrpo_lib.sampling.generate` sees them. Training stops on purpose at an
imperfect accuracy (about half the held-out problems right), so that GRPO groups hold both right and wrong answers.

The build is deterministic: the same :class:`TinyBuildConfig` (seed included) and the same number of CPU threads give
the same weights. Rebuild the shipped model with ``python -m calgrpo_lib.policy build --out calgrpo_lib/models/tiny``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import random
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .policy import BOS_TOKEN, EOS_TOKEN, PAD_TOKEN, TINY_DIR
from .sampling import greedy_accuracy, group_stats
from .rewards import build_prompt
from .tasks import Problem, TaskConfig, _calc, generate_problems
from .validation import check_float, check_int, check_type

__all__ = ["TinyBuildConfig", "train_tokenizer", "tiny_llama_config", "slip_answer", "forgotten_carry_shift",
           "carry_kind", "dropped_carry_answer", "training_answers",
           "encode_examples", "sft",
           "build_tiny_policy", "write_model_card", "CHAT_TEMPLATE"]

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
    ``k`` steps ends with the weights a longer run had at step ``k``). ``slip_rate`` is
    the share of training solutions with one arithmetic slip (see :func:`slip_answer`); ``carry_bug_rate`` the share
    of problems with a line that carries or borrows whose solution forgets every carry (see
    :func:`dropped_carry_answer`); both 0 train on the references only. With a misconception, problems where it
    cannot be written out exactly are left out of the training data. ``hard_carry_share``, when given, is the share
    of training problems with a line that carries into a tens digit or borrows (``24 + 9``, ``16 - 7``; see
    :func:`carry_kind`), drawn apart from the others; ``None`` keeps the task's own share (about 11% of the problems
    that fit the misconception). A small model learns those lines slowest, and GRPO can only unlearn a misconception
    on lines where sampling sometimes gets them right; the default 0.4 draws them nearly four times as often as
    the task does.
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


# ----------------------------------------------------------------------------------------------- tokenizer


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


# ----------------------------------------------------------------------------------------------- model and data


def tiny_llama_config(tokenizer: Any, cfg: TinyBuildConfig) -> Any:
    """The ``LlamaConfig`` of the tiny policy (tied input/output embeddings, no dropout)."""
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=len(tokenizer), hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
                       num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
                       num_key_value_heads=cfg.num_heads, max_position_embeddings=cfg.max_len,
                       tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
                       eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)


_LINE = re.compile(r"^(\d+) ([-+*/]) (\d+) = <<\d+[-+*/]\d+=(\d+)>>\d+$")
_SLIPS = (-10, -2, -1, 1, 2, 10)


def _line(a: int, op: str, b: int, c: int) -> str:
    return f"{a} {op} {b} = <<{a}{op}{b}={c}>>{c}"


def _slipped(calcs: list[tuple[int, str, int, int]], k: int, delta: int) -> list[str] | None:
    """Lines with result ``k`` off by ``delta`` and the chain after it recomputed; ``None`` when that cannot be done
    exactly (a negative value, an inexact division, or a later line that does not continue the chain)."""
    a, op, b, c = calcs[k]
    value, true = c + delta, c
    if value < 0:
        return None
    lines = [_line(*x) for x in calcs[:k]] + [_line(a, op, b, value)]
    for a2, op2, b2, c2 in calcs[k + 1:]:
        if a2 != true or (op2 == "/" and value % b2) or (op2 == "-" and value < b2):
            return None
        new = _calc(value, op2, b2)
        lines.append(_line(value, op2, b2, new))
        value, true = new, c2
    return [*lines, f"#### {value}"]


def _calcs(problem: Problem) -> list[tuple[int, str, int, int]] | None:
    calcs = []
    for step in problem.steps:
        m = _LINE.match(step)
        if m is None:
            return None
        calcs.append((int(m.group(1)), m.group(2), int(m.group(3)), int(m.group(4))))
    return calcs


def slip_answer(problem: Problem, rng: random.Random) -> str:
    """``problem.answer`` with one arithmetic slip: one line's result is off by 1, 2 or 10 and the following lines
    compute correctly from the wrong value, so the final answer is wrong. Such slips in a fifth of the SFT data
    teach the tiny policy to slip now and then when it samples (greedy decoding mostly does not), which gives GRPO
    groups with both right and wrong answers and errors that sit in one identifiable line. Falls back to the
    unchanged answer when no line can slip exactly."""
    calcs = _calcs(problem)
    if calcs is None:
        return problem.answer
    for k in rng.sample(range(len(calcs)), len(calcs)):
        lines = _slipped(calcs, k, rng.choice(_SLIPS))
        if lines is not None:
            return "\n".join(lines)
    return problem.answer


def forgotten_carry_shift(a: int, op: str, b: int) -> int:
    """How far ``a op b`` lands when its carry is forgotten: -10 for an addition whose units overflow
    (``7 + 5 = 2``), +10 for a subtraction whose units need a borrow (``54 - 8 = 56``), 0 when nothing carries."""
    if op == "+" and a % 10 + b % 10 >= 10:
        return -10
    if op == "-" and a >= 10 and a % 10 < b % 10:
        return 10
    return 0


def carry_kind(a: int, op: str, b: int) -> str | None:
    """Which kind of carry the line ``a op b`` needs: ``"one-digit sum"`` (``9 + 8``), ``"two-digit sum"`` (a carry
    into a tens digit, ``24 + 9``), ``"borrow"`` (``16 - 7``), or ``None`` (no carry, or ``*``/``/``)."""
    if not forgotten_carry_shift(a, op, b):
        return None
    return "borrow" if op == "-" else "one-digit sum" if a < 10 and b < 10 else "two-digit sum"


def _has_hard_carry(problem: Problem) -> bool:
    """Whether a line of ``problem``'s reference carries into a tens digit or borrows."""
    return any(carry_kind(a, op, b) in ("two-digit sum", "borrow") for a, op, b, _ in _calcs(problem) or [])


def dropped_carry_answer(problem: Problem) -> str | None:
    """``problem.answer`` with every carry and borrow forgotten (:func:`forgotten_carry_shift`): each line computes
    from the previous line's (possibly wrong) result with that rule; ``None`` when no line carries or borrows, or
    when the chain cannot continue exactly (an inexact division, a negative value).

    An addition whose units overflow loses the carry (``7 + 5 = 2``, ``48 + 4 = 42``: 10 short); a subtraction
    whose units need a borrow loses it (``54 - 8 = 56``: 10 over). A systematic misconception rather than a random
    slip: one rule on every line it applies to, so it is one thing to unlearn, and the step checker localizes the
    first line it breaks."""
    calcs = _calcs(problem)
    if not calcs:
        return None
    lines, value, true, dropped = [], calcs[0][0], calcs[0][0], False
    for a, op, b, c in calcs:
        if a != true or (op == "/" and value % b) or (op == "-" and value < b):
            return None
        shift = forgotten_carry_shift(value, op, b)
        new = _calc(value, op, b) + shift
        lines.append(_line(value, op, b, new))
        dropped, value, true = dropped or bool(shift), new, c
    return "\n".join([*lines, f"#### {value}"]) if dropped else None


def _misconception_applies(problem: Problem) -> bool:
    """Whether the forgotten-carry rule can be written out for ``problem``: no line carries or borrows, or
    :func:`dropped_carry_answer` continues the chain exactly."""
    calcs = _calcs(problem)
    return not any(forgotten_carry_shift(a, op, b) for a, op, b, _ in calcs or []) \
        or dropped_carry_answer(problem) is not None


def training_answers(problems: Sequence[Problem], slip_rate: float, seed: int,
                     carry_bug_rate: float = 0.0) -> list[str]:
    """The SFT target of each problem: with probability ``carry_bug_rate`` (problems with a line that carries or
    borrows only) the answer with that carry dropped (:func:`dropped_carry_answer`), else with probability
    ``slip_rate`` a slipped one, else its reference solution. The two draws use separate random streams, so
    ``carry_bug_rate=0`` gives the same targets as before it existed."""
    check_float("slip_rate", slip_rate, 0.0, 1.0)
    check_float("carry_bug_rate", carry_bug_rate, 0.0, 1.0)
    rng, carry_rng = random.Random(f"calgrpo-slips/{seed}"), random.Random(f"calgrpo-carry/{seed}")
    out = []
    for p in problems:
        dropped = dropped_carry_answer(p) if carry_bug_rate > 0 and carry_rng.random() < carry_bug_rate else None
        slipped = rng.random() < slip_rate
        out.append(dropped if dropped is not None else slip_answer(p, rng) if slipped else p.answer)
    return out


def encode_examples(tokenizer: Any, problems: Sequence[Problem],
                    answers: Sequence[str] | None = None) -> list[tuple[list[int], int]]:
    """``(ids, prompt_len)`` per problem: ``bos + prompt`` then ``answer + eos``; the loss starts at ``prompt_len``.

    ``answers`` (default: each ``problem.answer``) are the targets, tokenized apart from the prompt, exactly as
    generation sees them.
    """
    prompts = tokenizer([build_prompt(p.question) for p in problems], add_special_tokens=True)["input_ids"]
    targets = list(answers) if answers is not None else [p.answer for p in problems]
    if len(targets) != len(problems):
        raise ValueError(f"answers has {len(targets)} items but problems has {len(problems)}; allowed: equal lengths")
    ids = tokenizer(targets, add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    return [(p + a + [eos], len(p)) for p, a in zip(prompts, ids)]


def _batches(lengths: Sequence[int], batch_size: int, steps: int, seed: int) -> Iterator[list[int]]:
    """``steps`` batches of example indices: shuffled, then grouped by length within windows of 16 batches."""
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(lengths), generator=gen).tolist()
    window = batch_size * 16
    batches = []
    for s in range(0, len(order), window):
        chunk = sorted(order[s: s + window], key=lambda i: lengths[i])
        batches += [chunk[b: b + batch_size] for b in range(0, len(chunk), batch_size)]
    shuffle = torch.randperm(len(batches), generator=gen).tolist()
    for k in range(steps):
        yield batches[shuffle[k % len(batches)]]


def _collate(examples: Sequence[tuple[list[int], int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch; ``labels`` are -100 on prompt and padding so the loss covers answer + EOS only."""
    width = max(len(ids) for ids, _ in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, (ids, plen) in enumerate(examples):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        labels[i, plen: len(ids)] = torch.tensor(ids[plen:])
        mask[i, : len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


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
    bar = tqdm(_batches(lengths, cfg.batch_size, cfg.steps, cfg.seed), total=cfg.steps, desc="SFT tiny policy",
               disable=not progress)
    for step, idx in enumerate(bar, start=1):
        loss = model(**_collate([examples[i] for i in idx], tokenizer.pad_token_id)).loss
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


# ----------------------------------------------------------------------------------------------- build


def _machine(load_before: float) -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPU cores visible, torch "
            f"{torch.__version__}, {torch.get_num_threads()} torch threads, 1-min load average {load_before:.1f} "
            f"at the start and {load:.1f} at the end")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _evaluate(model: Any, tokenizer: Any) -> dict[str, Any]:
    t0 = time.perf_counter()
    held_out = generate_problems(512, seed=0, split="test")
    acc = greedy_accuracy(model, tokenizer, held_out)
    groups = group_stats(model, tokenizer, held_out[:256], group_size=8, temperature=1.0, seed=0)
    return {"greedy": acc, "groups": groups, "eval_seconds": round(time.perf_counter() - t0, 1)}


def _training_problems(n: int, cfg: TinyBuildConfig) -> list[Problem]:
    """``n`` train-split problems; with a misconception, only those where it can be written out, so that it is the
    same rule on every line that carries or borrows; with ``hard_carry_share``, that share of them (rounded) with a
    line that carries into a tens digit or borrows, in a seeded random order."""
    if not cfg.carry_bug_rate and cfg.hard_carry_share is None:
        return generate_problems(n, seed=cfg.seed, split="train", config=cfg.task)
    n_hard = None if cfg.hard_carry_share is None else round(n * cfg.hard_carry_share)
    size = n * 3 // 2
    while True:  # a larger pool starts with the same problems (generate_problems is a prefix of a longer call)
        pool = [p for p in generate_problems(size, seed=cfg.seed, split="train", config=cfg.task)
                if not cfg.carry_bug_rate or _misconception_applies(p)]
        if n_hard is None:
            problems = pool[:n]
        else:
            hard = [_has_hard_carry(p) for p in pool]
            problems = [p for p, h in zip(pool, hard) if h][:n_hard] + [p for p, h in zip(pool, hard) if not h][
                : n - n_hard]
        if len(problems) == n:
            if n_hard is not None:  # mix the two kinds in a seeded order
                random.Random(cfg.seed).shuffle(problems)
            return problems
        if size >= 64 * n:
            raise ValueError(f"only {len(problems)} of {size} generated problems fit the forgotten-carry rule and "
                             f"hard_carry_share={cfg.hard_carry_share}, fewer than the {n} needed; allowed: a task "
                             "whose problems mostly fit them")
        size *= 2


def _train(cfg: TinyBuildConfig, eval_every: int, progress: bool) -> tuple[Any, Any, dict[str, Any]]:
    """Tokenizer, model and SFT of one build; return ``(model, tokenizer, facts)``."""
    from transformers import LlamaForCausalLM

    n_problems = cfg.train_problems or cfg.steps * cfg.batch_size
    problems = _training_problems(n_problems, cfg)
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
             "slipped_examples": sum(a != p.answer for a, p in zip(answers, problems)),
             "hard_carry_examples": sum(map(_has_hard_carry, problems)),
             "carry_dropped_examples": sum(a != p.answer and a == dropped_carry_answer(p)
                                           for a, p in zip(answers, problems)) if cfg.carry_bug_rate else 0,
             "log": log}
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
        info.update(build_seconds=round(time.perf_counter() - t0, 1), weights_sha256=_sha256(out / "model.safetensors"),
                    machine=_machine(load_before))
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
  line computing on from the one before (`policy_build.dropped_carry_answer`): one rule wherever it applies, for
  GRPO to unlearn; the step checker points at the first line that forgot a carry. Problems where the rule cannot be
  written out exactly (a later division that no longer divides) are left out of the SFT data.
"""

_HARD_CARRIES = """- Hard carries: {hard} of the problems ({share:.0%} asked, against about 11% in the task) have a line
  that carries into a tens digit or borrows (`24 + 9`, `16 - 7`; `policy_build.carry_kind`): the lines a small
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
  or 10 and the later lines compute correctly from the wrong value (`policy_build.slip_answer`). Greedy decoding
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
python -m calgrpo_lib.policy build --out {out} --seed {seed} --steps {steps} --slip-rate {slip_rate}{carry_flag}
```

`build_info.json` holds these numbers, the loss curve and the full configuration.
"""
