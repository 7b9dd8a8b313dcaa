"""Benchmark: mapping oracle quotes to token masks vs one GRPO step of the tiny policy, side by side in one run.

What it measures (CPU, the threads torch is given; median of ``--repeats`` runs each):

- **span mapping**: :func:`calgrpo_lib.spans.error_token_masks` on a batch of 512 responses x 64 tokens (right
  padded, EOS included). Responses are synthetic GSM8K-style solutions with one wrong number, tokenized by the
  policy's tokenizer and cut to 63 tokens + EOS. Quotes are mixed as an oracle would send them: a quarter
  verbatim (exact), a quarter re-formatted (LaTeX ``\\(..\\)`` and ``\\times``, no spaces: normalised), a quarter
  with a typo (fuzzy) and a quarter ``None`` (correct answers; they cost nothing). Three variants are timed:
  ``canonical`` ids (the tokenizer's own tokenization), ``non-canonical`` ids (every response spelled with one
  merged token split in two, as a sampling policy may do; for byte-level BPE the ids decoded one by one still give
  the offsets) and the worst case, ``unigram non-canonical``: the same texts through the SentencePiece-style Unigram
  tokenizer of :mod:`calgrpo_lib.tokenizers_zoo`, non-canonical, so offsets come from decoding growing prefixes of
  the ids.
- **GRPO step**: one :meth:`calgrpo_lib.trainer.Trainer.step` that produces a batch of 512 responses (64 prompts x
  8 samples, up to 64 new tokens): sampling with the KV cache, rewards, advantages, loss and optimizer step, with
  ``credit_mode="sequence"`` and no oracle, so that neither the mapping nor the oracle is inside the step (the step
  is shorter and the ratio larger: conservative).

The policy is the shipped tiny policy (``load_policy("tiny")``) when it is there; otherwise the same architecture
(:func:`calgrpo_lib.policy_build.tiny_llama_config`: hidden 256, 4 layers) with random weights and a byte-level BPE
tokenizer trained on the spot (the tiny policy's recipe), which is what the timing depends on.

The acceptance criterion is ``ratio = mapping / GRPO step < 1%``. Run:
``python bench/span_mapping.py [--repeats 3] [--threads 2]``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable

import torch

from calgrpo_lib.arithmetic import corrupt_solution
from calgrpo_lib.rewards import build_prompt
from calgrpo_lib.spans import error_token_masks
from calgrpo_lib.steps import split_steps
from calgrpo_lib.tasks import TaskConfig, generate_problems
from calgrpo_lib.tokenizers_zoo import corpus_texts, train_tokenizer

N_RESPONSES, T = 512, 64
PROMPTS, GROUP = 64, 8  # the GRPO step that produces N_RESPONSES = 512 completions


def load_model_and_tokenizer() -> tuple[object, object, str]:
    """The tiny policy if shipped, else its architecture with random weights and a freshly trained tokenizer."""
    from calgrpo_lib.policy import load_policy

    try:
        model, tok = load_policy("tiny", device="cpu", dtype="float32")
        return model, tok, "tiny policy (shipped weights)"
    except FileNotFoundError:
        pass
    from transformers import LlamaForCausalLM

    from calgrpo_lib.policy_build import TinyBuildConfig, tiny_llama_config, train_tokenizer

    texts = [t for p in generate_problems(3000, seed=7) for t in (build_prompt(p.question), p.answer)]
    tok = train_tokenizer(texts, vocab_size=1536)
    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_llama_config(tok, TinyBuildConfig())).eval()
    return model, tok, f"tiny architecture, random weights, vocab {len(tok)} (tiny policy not built yet)"


def _wrong_solutions(n: int) -> list[tuple[str, int]]:
    """``n`` synthetic solutions with one wrong result each (:func:`corrupt_solution`): (text, wrong step)."""
    out = []
    longer = TaskConfig(min_steps=3, max_steps=3)  # solutions of about 64 tokens
    for i, p in enumerate(generate_problems(2 * n, seed=1, config=longer)):
        c = corrupt_solution(p.answer, i, propagate=True)
        if c is not None:
            out.append((c.text, c.step))
    return out[:n]


def _quote(text: str, k: int, i: int) -> tuple[str, int] | None:
    line = split_steps(text)[k].text
    plain = line.split("<<")[0] + line.rsplit(">>", 1)[-1]  # "12 + 5 = 18"
    kind = i % 4
    if kind == 0:
        return line, k
    if kind == 1:
        return "\\(" + plain.replace(" * ", " \\times ").replace(" ", "") + "\\)", k
    if kind == 2:
        return plain.replace("=", "= ", 1) + "x", k
    return None


def _split_one_token(tok: object, ids: list[int]) -> list[int]:
    """Respell one multi-character token as two tokens (a non-canonical tokenization of the same text)."""
    for j, t in enumerate(ids):
        piece = tok.convert_ids_to_tokens(t)
        if len(piece) >= 2:
            a, b = tok.convert_tokens_to_ids(piece[:1]), tok.convert_tokens_to_ids(piece[1:])
            if a != tok.unk_token_id and b != tok.unk_token_id and a is not None and b is not None:
                return ids[:j] + [a, b] + ids[j + 1:]
    return ids


def mapping_batch(tok: object, canonical: bool) -> tuple[torch.Tensor, torch.Tensor, list]:
    """512 x 64 completion ids, mask and quotes (see the module docstring)."""
    ids = torch.full((N_RESPONSES, T), tok.pad_token_id, dtype=torch.long)
    mask = torch.zeros(N_RESPONSES, T, dtype=torch.bool)
    quotes = []
    for i, (text, k) in enumerate(_wrong_solutions(N_RESPONSES)):
        row = tok(text, add_special_tokens=False)["input_ids"]
        row = (row if canonical else _split_one_token(tok, row))[: T - 1] + [tok.eos_token_id]
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = True
        quotes.append(_quote(text, k, i))
    return ids, mask, quotes


def grpo_step_work(model: object, tok: object) -> Callable[[], None]:
    """A closure running one step of the project's trainer that yields the 512 responses the mapping handles:
    64 prompts x 8 samples, up to 64 new tokens each (sampling, rewards, advantages, loss, optimizer step).
    ``credit_mode="sequence"`` with no oracle keeps the mapping itself (and the oracle) out of the step."""
    from calgrpo_lib.config import GRPOConfig
    from calgrpo_lib.trainer import Trainer

    config = GRPOConfig(prompts_per_step=PROMPTS, num_generations=GROUP, max_new_tokens=T, eval_size=0,
                        train_size=1024, save_every=0, credit_mode="sequence", oracle="none",
                        output_dir=tempfile.mkdtemp(prefix="calgrpo-bench-"))
    trainer = Trainer(config, model=model, tokenizer=tok, progress=False)
    return trainer.step


def median_time(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``repeats`` calls, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model, tok, what = load_model_and_tokenizer()
    print(f"policy: {what}; torch threads: {args.threads}")
    step_s = median_time(grpo_step_work(model, tok), args.repeats)
    print(f"GRPO step ({PROMPTS} prompts x {GROUP} samples, <= {T} new tokens): {step_s * 1000:9.1f} ms")
    unigram = train_tokenizer("unigram", corpus_texts(500))
    for name, tokenizer, canonical in (("canonical", tok, True), ("non-canonical", tok, False),
                                       ("unigram non-canonical", unigram, False)):
        batch = mapping_batch(tokenizer, canonical)
        map_s = median_time(lambda t=tokenizer, b=batch: error_token_masks(t, *b), args.repeats)
        _, stats = error_token_masks(tokenizer, *batch)
        print(f"span mapping {N_RESPONSES}x{T}, {name:22s}: {map_s * 1000:7.1f} ms  ratio {100 * map_s / step_s:.2f}%"
              f"  (mean length {batch[1].sum(1).float().mean():.1f}, hit rate {stats.hit_rate:.3f}, "
              f"{stats.by_kind}, failures {stats.failures}, offsets {stats.offset_methods})")


if __name__ == "__main__":
    main()
