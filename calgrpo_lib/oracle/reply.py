"""The oracle's reply format: a JSON object ``{"step": int, "quote": str, "reason": str}``.

``step`` is the 0-based number of the first erroneous step as shown in the prompt (``[0]``, ``[1]``, ...) or ``-1``
when no step is wrong; ``quote`` copies the erroneous text exactly from that step (empty when ``step`` is -1);
``reason`` says in a sentence what is wrong. :data:`REPLY_SCHEMA` is handed to backends that enforce JSON output
(Gemini ``response_schema``, OpenAI-style ``response_format``); :func:`parse_reply` also reads replies of models
that ignore it (code fences, text around the object, the step as a string).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

__all__ = ["REPLY_SCHEMA", "Reply", "ReplyError", "parse_reply", "reply_json"]

REPLY_SCHEMA: dict = {
    "type": "object",
    "properties": {
        "step": {"type": "integer", "description": "0-based number of the first wrong step, or -1 if none"},
        "quote": {"type": "string", "description": "the wrong text, copied exactly from that step; empty if none"},
        "reason": {"type": "string", "description": "one short sentence: what is wrong"},
    },
    "required": ["step", "quote", "reason"],
}
_STEP_KEYS = ("step", "error_step", "first_error_step")
_QUOTE_KEYS = ("quote", "error_segment", "segment")
_MAX_REASON = 300


class ReplyError(ValueError):
    """A reply that is not a usable JSON verdict; ``cause`` is ``malformed_reply``."""

    cause = "malformed_reply"


@dataclass(frozen=True)
class Reply:
    """A parsed reply: ``step`` (-1 = no error), ``quote`` and ``reason``."""

    step: int
    quote: str
    reason: str


def _objects(text: str):
    decoder = json.JSONDecoder()
    for m in re.finditer(r"\{", text):
        try:
            obj, _ = decoder.raw_decode(text, m.start())
        except ValueError:
            continue
        if isinstance(obj, dict):
            yield obj


def _first(obj: dict, keys: tuple[str, ...]):
    for k in keys:
        if k in obj:
            return obj[k]
    return None


def parse_reply(text: str) -> Reply:
    """The first JSON object in ``text`` that has a step, as a :class:`Reply`; raises :class:`ReplyError`."""
    if not isinstance(text, str) or not text.strip():
        raise ReplyError("empty reply")
    for obj in _objects(text):
        step = _first(obj, _STEP_KEYS)
        if isinstance(step, str) and re.fullmatch(r"\s*-?\d+\s*", step):
            step = int(step)
        if isinstance(step, float) and step.is_integer():
            step = int(step)
        if isinstance(step, bool) or not isinstance(step, int):
            continue
        quote, reason = _first(obj, _QUOTE_KEYS), obj.get("reason", "")
        return Reply(step if step >= -1 else -1, quote if isinstance(quote, str) else "",
                     (reason if isinstance(reason, str) else str(reason))[:_MAX_REASON])
    raise ReplyError(f"no JSON object with an integer 'step' in the reply ({len(text)} chars)")


def reply_json(step: int, quote: str = "", reason: str = "") -> str:
    """The reply text for a verdict (what an LLM should answer; used by the offline oracles)."""
    return json.dumps({"step": step, "quote": quote, "reason": reason}, ensure_ascii=False)
