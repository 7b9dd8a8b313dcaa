"""Rewards for math answers: final-answer extraction, number normalisation, correctness and format rewards,
and the prompt builders that ask for those formats.

Extraction order, first hit wins: the last ``#### n`` line, the last ``<answer>...</answer>``, the last
``\\boxed{...}``, else the last number anywhere in the text. The reward of a completion is

    r = answer_weight * [answer == target] + format_weight * [well-formed]        (default 0.8 / 0.2)
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .validation import check_choice, check_float, check_type

__all__ = [
    "FORMATS", "PROMPT_STYLES", "extract_answer", "parse_number", "extract_number", "is_correct",
    "answer_reward", "format_reward", "completion_reward", "batch_rewards", "RewardBatch", "build_prompt",
    "SOLUTION_INSTRUCTION",
]

FORMATS = ("gsm8k", "r1")
PROMPT_STYLES = ("plain", "r1_zero", "chat")
SOLUTION_INSTRUCTION = "Solve it step by step, one calculation per line, and end with a line '#### <number>'."

_NUMBER = r"-?\$?\s?\d[\d,]*(?:\.\d+)?%?|-?\$?\.\d+%?"
_HASH = re.compile(r"####\s*([^\n]*)")
_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_NUM_RE = re.compile(_NUMBER)
_FRACTION = re.compile(r"^(-?\d+)\s*/\s*(\d+)$")
_LATEX_FRAC = re.compile(r"^(-?)\\[dt]?frac\{(-?\d+)\}\{(\d+)\}$")
_R1 = re.compile(r"^\s*<think>.*?</think>\s*<answer>.*?</answer>\s*$", re.DOTALL)
_GSM8K_END = re.compile(r"\n?####\s*(\S[^\n]*?)\s*$")


def _last_boxed(text: str) -> str | None:
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, i = 0, start + len("\\boxed")
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i + 1: j]
    return None


def extract_answer(text: str) -> str | None:
    """The final-answer string of ``text`` (not yet normalised), or ``None`` when the text holds no number."""
    check_type("text", text, str)
    for found in (_HASH.findall(text), _ANSWER_TAG.findall(text)):
        if found:
            return found[-1].strip()
    boxed = _last_boxed(text)
    if boxed is not None:
        return boxed.strip()
    numbers = _NUM_RE.findall(text)
    return numbers[-1].strip() if numbers else None


def parse_number(s: str | None) -> float | None:
    """Parse an answer string to a float: strips ``$``, ``%``, thousands commas, spaces and a final period;
    accepts negatives, ``a/b`` and ``\\frac{a}{b}``. Returns ``None`` when it is not a single number."""
    if s is None:
        return None
    check_type("s", s, str)
    t = s.strip().rstrip(".").replace("\\$", "$").replace("\\%", "%").replace("\\!", "")
    t = t.replace("$", "").replace("%", "").replace(",", "").replace(" ", "").strip()
    if t.startswith("\\text{") and t.endswith("}"):
        t = t[6:-1]
    m = _LATEX_FRAC.match(t) or _FRACTION.match(t)
    if m:
        sign, num, den = (m.group(1), m.group(2), m.group(3)) if m.re is _LATEX_FRAC else ("", *m.groups())
        return None if int(den) == 0 else (-1 if sign else 1) * int(num) / int(den)
    try:
        value = float(t)
    except ValueError:
        numbers = _NUM_RE.findall(t)
        if len(numbers) != 1:  # e.g. "72 clips" -> 72; "3 or 4" -> None
            return None
        return parse_number(numbers[0])
    return value if math.isfinite(value) else None


def extract_number(text: str) -> float | None:
    """``parse_number(extract_answer(text))``: the final answer of a completion as a float, or ``None``."""
    return parse_number(extract_answer(text))


def is_correct(text: str, target: float) -> bool:
    """Whether the final answer of ``text`` equals ``target`` (relative tolerance 1e-6)."""
    got = extract_number(text)
    return got is not None and math.isclose(got, float(target), rel_tol=1e-6, abs_tol=1e-9)


def answer_reward(text: str, target: float) -> float:
    """1.0 when the final answer is right, else 0.0."""
    return float(is_correct(text, target))


def format_reward(text: str, fmt: str = "gsm8k") -> float:
    """1.0 when ``text`` is well-formed, else 0.0.

    - ``gsm8k``: the text ends with a ``#### n`` line whose value parses as a number, and has one such line;
    - ``r1``: the whole text is ``<think>...</think><answer>...</answer>`` with a number in the answer.
    """
    check_type("text", text, str)
    check_choice("fmt", fmt, FORMATS)
    if fmt == "gsm8k":
        m = _GSM8K_END.search(text)
        return float(m is not None and text.count("####") == 1 and parse_number(m.group(1)) is not None)
    if not _R1.match(text):
        return 0.0
    return float(parse_number(_ANSWER_TAG.findall(text)[-1]) is not None)


def completion_reward(text: str, target: float, fmt: str = "gsm8k", answer_weight: float = 0.8,
                      format_weight: float = 0.2) -> float:
    """``answer_weight * answer_reward + format_weight * format_reward``."""
    return answer_weight * answer_reward(text, target) + format_weight * format_reward(text, fmt)


@dataclass(frozen=True)
class RewardBatch:
    """Rewards of a batch of completions: the weighted ``total`` and its two parts, each a list of floats."""

    total: list[float]
    correct: list[float]
    formatted: list[float]


def batch_rewards(texts: Sequence[str], targets: Sequence[float], fmt: str = "gsm8k", answer_weight: float = 0.8,
                  format_weight: float = 0.2) -> RewardBatch:
    """Rewards for many completions at once; ``targets[i]`` is the right answer of ``texts[i]``."""
    if len(texts) != len(targets):
        raise ValueError(f"texts has {len(texts)} items but targets has {len(targets)}; allowed: equal lengths")
    check_float("answer_weight", answer_weight, 0.0)
    check_float("format_weight", format_weight, 0.0)
    correct = [answer_reward(t, y) for t, y in zip(texts, targets)]
    formatted = [format_reward(t, fmt) for t in texts]
    total = [answer_weight * c + format_weight * f for c, f in zip(correct, formatted)]
    return RewardBatch(total, correct, formatted)


def build_prompt(question: str, style: str = "plain", tokenizer: Any = None, system: str | None = None) -> str:
    """The prompt text for ``question``.

    - ``plain``: ``"Question: ...\\nAnswer:\\n"``, the format the tiny policy is trained on (answers in GSM8K form);
    - ``r1_zero``: the R1-zero instruction, answer expected as ``<think>...</think> <answer>...</answer>``;
    - ``chat``: the tokenizer's own chat template (instruct models), with the GSM8K-format instruction.
    """
    check_type("question", question, str)
    check_choice("style", style, PROMPT_STYLES)
    if style == "plain":
        return f"Question: {question}\nAnswer:\n"
    if style == "r1_zero":
        return ("A conversation between a User and an Assistant. The User asks a math question and the Assistant "
                "solves it. The Assistant first reasons inside <think> </think> tags, then gives only the final "
                "number inside <answer> </answer> tags.\n"
                f"User: {question}\nAssistant: <think>")
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise ValueError("style='chat' needs a tokenizer with a chat template (tokenizer.chat_template); "
                         f"got tokenizer={type(tokenizer).__name__}. Allowed: such a tokenizer, or style='plain'")
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": f"{question}\n{SOLUTION_INSTRUCTION}"})
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
