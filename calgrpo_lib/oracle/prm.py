"""A process reward model (PRM) as the credit-assignment oracle: :class:`PRMOracle`.

A *process reward model* scores every intermediate step of a solution rather than only its final answer: score
``p_k`` is the model's probability that step ``k`` is correct (given the question and the steps before it). One
forward pass over the whole response gives all the scores at once, so a PRM judges a response in milliseconds on
a GPU, with no generation and no JSON to parse.

**Threshold rule.** The oracle names the *first* step whose score falls below ``threshold`` (default 0.5)::

    first_error = min{k : p_k < threshold}, or -1 ("no error") when there is none

and replies like an LLM judge would (:func:`~calgrpo_lib.oracle.verdict.reply_json`): that step, its whole text as
the quote (so an ``ok`` verdict's span is that step) and ``"step score 0.31 < threshold 0.50"`` as the reason. The
steps are those of :func:`calgrpo_lib.steps.split_steps`, the numbering every oracle shares. The reference
solution is **not** shown to the PRM (it was not trained with one): the item's ``reference`` only takes part in
validation, where "no error" on a response whose final answer contradicts the reference becomes ``unlocalized``.

**Two interfaces** (:data:`PRM_INTERFACES`):

- ``"step_head"``, the Qwen2.5-Math-PRM family: a token-classification head with two labels. The input is the
  chat template (system :data:`QWEN_PRM_SYSTEM`, user = the question, assistant = the steps each followed by the
  separator token ``<extra_0>``), or the same three parts as plain lines when the tokenizer has no template. With
  ``z_t`` the model's logits ``(B, T, 2)`` and ``t_k`` the position of the ``k``-th separator::

      p_k = softmax(z_{t_k})[1]

- ``"next_token"``, the Math-Shepherd family: a causal LM that predicts a good (``"+"``) or bad (``"-"``) token
  after each step tag (``"ки"``). The input is ``question + " " + "Step 1: <step 0> ки\\nStep 2: <step 1> ки..."``
  (Math-Shepherd's format); with ``l_t(v)`` the LM logit of token ``v`` at position ``t`` and ``t_k`` the
  ``k``-th tag::

      p_k = exp l_{t_k}(+) / (exp l_{t_k}(+) + exp l_{t_k}(-))

The separator, tag, good and bad tokens are parameters; each must be one token of the tokenizer (not its unknown
token). Occurrences of the separator (or tag) inside the question or the steps are blanked before tokenising, so
the ``k``-th one is always the end of step ``k``.

**Runtime.** One forward at a time behind a lock (``config.concurrency`` defaults to 1). Before the forward the
attempt's time left is checked (none left once the model is free: cause ``timeout``); a forward cannot be cut
short, so ``config.timeout_s`` should exceed one forward. An input longer than the model's
``max_position_embeddings`` fails with cause ``input_too_long`` and a forward that raises (out of memory, a bug)
with cause ``model_error``, neither retried, so the ``fallback`` oracle (e.g. ``StepCheckOracle()``) answers.

**Use with a GPU**::

    oracle = PRMOracle.from_pretrained("Qwen/Qwen2.5-Math-PRM-7B", trust_remote_code=True, dtype="bfloat16",
                                       cache="results/cache/oracle.sqlite", fallback=StepCheckOracle())
    shepherd = PRMOracle.from_pretrained("peiyi9979/math-shepherd-mistral-7b-prm", interface="next_token")
    oracle.step_scores(question, ["48 / 2 = 24", "48 + 24 = 72"])     # [p_0, p_1]
    evaluate_processbench(oracle, load_processbench("gsm8k"))

``device=None`` picks cuda, then mps, then cpu; ``dtype=None`` bf16 on a GPU that supports it (a 7B PRM needs
about 16 GB in bf16). Without a network, download the folder elsewhere (``hf download ID --local-dir DIR``) and
pass ``DIR``.

References: Qwen2.5-Math-PRM, https://huggingface.co/Qwen/Qwen2.5-Math-PRM-7B, and Zhang et al., "The Lessons of
Developing Process Reward Models in Mathematical Reasoning", arXiv:2501.07301; Math-Shepherd, Wang et al.,
arXiv:2312.08935, https://huggingface.co/peiyi9979/math-shepherd-mistral-7b-prm.
"""

from __future__ import annotations

import hashlib
import math
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..steps import split_steps
from ..validation import check_choice, check_float, check_type
from .cache import ReplyCache
from .runner import BackendError, Oracle, OracleConfig
from .verdict import JudgeItem, reply_json

if TYPE_CHECKING:
    import torch

__all__ = ["PRMOracle", "PRM_INTERFACES", "QWEN_PRM_SYSTEM", "STEP_SEPARATOR", "STEP_TAG", "GOOD_TOKEN", "BAD_TOKEN"]

PRM_INTERFACES = ("step_head", "next_token")
QWEN_PRM_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."
STEP_SEPARATOR = "<extra_0>"  # Qwen2.5-Math-PRM's step separator (step_head)
STEP_TAG, GOOD_TOKEN, BAD_TOKEN = "ки", "+", "-"  # Math-Shepherd's step tag and label tokens (next_token)
_VERSION = "prm-1"


def _single_token(tokenizer: Any, name: str, text: Any) -> int:
    """The id of ``text`` when the tokenizer encodes it as one known token, else ``ValueError`` naming ``name``.
    A leading whitespace-only piece (a SentencePiece prefix space) is dropped, as Math-Shepherd's
    ``encode(tag)[-1]`` does."""
    check_type(name, text, str)
    allowed = "allowed: a string the tokenizer encodes as exactly one known token (e.g. one of its special tokens)"
    if not text.strip():
        raise ValueError(f"{name}={text!r} is blank; {allowed}")
    ids = list(tokenizer.encode(text, add_special_tokens=False))
    if len(ids) > 1 and not tokenizer.decode(ids[:1]).strip():
        ids = ids[1:]
    unk = getattr(tokenizer, "unk_token_id", None)
    if len(ids) != 1 or (ids[0] == unk and text != getattr(tokenizer, "unk_token", None)):
        got = f"{len(ids)} tokens {ids}" if len(ids) != 1 else "the unknown token"
        raise ValueError(f"{name}={text!r} is not a single token of the tokenizer (it encodes to {got}); {allowed}")
    return int(ids[0])


class PRMOracle(Oracle):
    """Judge with a process reward model ``model`` (a ``torch.nn.Module``) and its ``tokenizer``; see the module
    docstring for the two ``interface`` values, the inputs they build and the threshold rule."""

    backend = "prm"

    def __init__(self, model: Any, tokenizer: Any, interface: str = "step_head", *, threshold: float = 0.5,
                 separator: str = STEP_SEPARATOR, step_tag: str = STEP_TAG, good_token: str = GOOD_TOKEN,
                 bad_token: str = BAD_TOKEN, system_prompt: str = QWEN_PRM_SYSTEM, model_name: str | None = None,
                 config: OracleConfig | None = None, cache: ReplyCache | str | Path | None = None,
                 fallback: Oracle | None = None) -> None:
        super().__init__(config=config if config is not None else OracleConfig(concurrency=1), cache=cache,
                         fallback=fallback)
        import torch

        check_choice("interface", interface, PRM_INTERFACES)
        check_float("threshold", threshold, 0.0, 1.0)
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"model has type {type(model).__name__}; allowed: a torch.nn.Module (a transformers "
                            "token-classification PRM for 'step_head', a causal LM for 'next_token')")
        if not callable(tokenizer) or not callable(getattr(tokenizer, "encode", None)):
            raise TypeError(f"tokenizer has type {type(tokenizer).__name__}; allowed: a transformers tokenizer")
        check_type("system_prompt", system_prompt, str)
        if model_name is not None:
            check_type("model_name", model_name, str)
        self.hf_model, self.tokenizer, self.interface = model, tokenizer, interface
        self.threshold = float(threshold)
        self.system_prompt = system_prompt
        self.separator, self.step_tag, self.good_token, self.bad_token = separator, step_tag, good_token, bad_token
        self._label_ids: tuple[int, int] = (-1, -1)
        if interface == "step_head":  # only the tokens of the chosen interface must be in the vocabulary
            self.marker_id = _single_token(tokenizer, "separator", separator)
        else:
            self.marker_id = _single_token(tokenizer, "step_tag", step_tag)
            good, bad = _single_token(tokenizer, "good_token", good_token), _single_token(tokenizer, "bad_token",
                                                                                         bad_token)
            if good == bad:
                raise ValueError(f"good_token={good_token!r} and bad_token={bad_token!r} are the same token (id "
                                 f"{good}); allowed: two different tokens")
            self._label_ids = (good, bad)
        cfg = getattr(model, "config", None)
        self._name = model_name or getattr(cfg, "name_or_path", "") or type(model).__name__
        self._max_positions = getattr(cfg, "max_position_embeddings", None)
        self._lock = threading.Lock()

    # ---------------------------------------------------------------------------------------------- loader
    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, interface: str = "step_head", *,
                        trust_remote_code: bool = False, device: str | torch.device | None = None,
                        dtype: str | torch.dtype | None = None,
                        threshold: float = 0.5, separator: str = STEP_SEPARATOR, step_tag: str = STEP_TAG,
                        good_token: str = GOOD_TOKEN, bad_token: str = BAD_TOKEN,
                        system_prompt: str = QWEN_PRM_SYSTEM, config: OracleConfig | None = None,
                        cache: ReplyCache | str | Path | None = None, fallback: Oracle | None = None) -> PRMOracle:
        """Load a PRM from a hub id or a local folder (saved with ``save_pretrained``), in eval mode, no grad.

        ``step_head``: ``AutoModelForTokenClassification`` when the config's ``architectures`` name a
        ``...ForTokenClassification`` class, else ``AutoModel`` with the repository's own code, which needs
        ``trust_remote_code=True`` (Qwen2.5-Math-PRM's ``Qwen2ForProcessRewardModel``); ``next_token``:
        ``AutoModelForCausalLM``. ``device``: ``"cuda"``, ``"mps"``, ``"cpu"`` or ``None`` (best available);
        ``dtype``: a ``torch.dtype``, a name (``"bfloat16"``, ...) or ``None`` (bf16 on a GPU that supports it,
        else fp32). The other arguments go to :class:`PRMOracle`."""
        check_type("name_or_path", name_or_path, (str, os.PathLike))
        check_choice("interface", interface, PRM_INTERFACES)
        check_type("trust_remote_code", trust_remote_code, bool)
        check_float("threshold", threshold, 0.0, 1.0)
        from transformers import (
            AutoConfig,
            AutoModel,
            AutoModelForCausalLM,
            AutoModelForTokenClassification,
            AutoTokenizer,
        )

        from ..policy import pick_device, pick_dtype

        dev = pick_device(device)
        dt = pick_dtype(dev, dtype)
        name = os.fspath(name_or_path)
        path = Path(name).expanduser()
        local = path.is_dir()
        if not local and (name.startswith((".", "/", "~", "\\")) or name.count("/") > 1 or path.exists()):
            raise FileNotFoundError(f"name_or_path={name!r} is not a folder; allowed: a folder saved with "
                                    "save_pretrained (config.json, weights, tokenizer), or a hub id such as "
                                    "'Qwen/Qwen2.5-Math-PRM-7B'")
        src = os.fspath(path) if local else name
        opts = {"local_files_only": local, "trust_remote_code": trust_remote_code}
        try:
            hf_config = AutoConfig.from_pretrained(src, **opts)
            architectures = list(getattr(hf_config, "architectures", None) or [])
            if interface == "next_token":
                loader = AutoModelForCausalLM
            elif any(a.endswith("ForTokenClassification") for a in architectures):
                loader = AutoModelForTokenClassification
            elif not trust_remote_code:
                raise ValueError(f"name_or_path={name!r} has architectures={architectures}, not a "
                                 "...ForTokenClassification model: its step head is in the repository's own code; "
                                 "allowed: trust_remote_code=True (runs that code; read it first), or a "
                                 "token-classification PRM")
            else:
                loader = AutoModel
            tokenizer = AutoTokenizer.from_pretrained(src, **opts)
            model = loader.from_pretrained(src, dtype=dt, **opts)
        except OSError as err:
            if local:
                raise
            raise OSError(f"could not load the PRM {name!r}: it is not a local folder and the Hugging Face hub could "
                          f"not serve it (no network, a typo, or a gated model). On a machine with a network run "
                          f"`hf download {name} --local-dir DIR`, copy DIR here and pass it. Original error: {err}"
                          ) from err
        model = model.to(dev).eval()
        model.requires_grad_(False)
        return cls(model, tokenizer, interface, threshold=threshold, separator=separator, step_tag=step_tag,
                   good_token=good_token, bad_token=bad_token, system_prompt=system_prompt, model_name=name,
                   config=config, cache=cache, fallback=fallback)

    # ----------------------------------------------------------------------------------------- identity
    @property
    def model(self) -> str:
        return self._name

    @property
    def prompt_version(self) -> str:
        """Interface, tokens, threshold (and the system prompt's hash for ``step_head``): caches never mix them."""
        if self.interface == "step_head":
            system = hashlib.sha256(self.system_prompt.encode()).hexdigest()[:8]
            tokens = f"sep={self.separator}|system={system}"
        else:
            tokens = f"tag={self.step_tag}|good={self.good_token}|bad={self.bad_token}"
        return f"{_VERSION}|{self.interface}|{tokens}|threshold={self.threshold:g}"

    def __repr__(self) -> str:
        return (f"PRMOracle(model={self.model!r}, interface={self.interface!r}, threshold={self.threshold:g}, "
                f"config={self.config!r}, cache={self.cache!r})")

    # -------------------------------------------------------------------------------------------- inputs
    def _clean(self, text: str) -> str:
        marker = self.separator if self.interface == "step_head" else self.step_tag
        return text.replace(marker, " ")

    def prompt_text(self, question: str, steps: Sequence[str]) -> str:
        """The text the PRM reads for ``question`` and ``steps`` (see the module docstring for both formats)."""
        check_type("question", question, str)
        steps = [self._clean(s) for s in steps]
        if self.interface == "next_token":
            body = "\n".join(f"Step {k + 1}: {s} {self.step_tag}" for k, s in enumerate(steps))
            return f"{self._clean(question)} {body}"
        answer = "".join(s + self.separator for s in steps)
        if getattr(self.tokenizer, "chat_template", None):
            messages = [{"role": "system", "content": self.system_prompt},
                        {"role": "user", "content": self._clean(question)},
                        {"role": "assistant", "content": answer}]
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
        return f"{self.system_prompt}\n{self._clean(question)}\n{answer}"

    # ------------------------------------------------------------------------------------------- scoring
    def step_scores(self, question: str, steps: Sequence[str]) -> list[float]:
        """``p_k`` for each of ``steps`` (the probability that step ``k`` is correct), in order; ``[]`` for no
        steps. Raises :class:`BackendError` (``input_too_long``, ``model_error``) like a judged call."""
        check_type("steps", steps, (list, tuple))
        for k, s in enumerate(steps):
            check_type(f"steps[{k}]", s, str)
        return self._scores(question, list(steps), None)

    def _scores(self, question: str, steps: list[str], deadline: float | None) -> list[float]:
        if not steps:
            return []
        import torch

        text = self.prompt_text(question, steps)
        with self._lock, torch.no_grad():  # the tokenizer too: a fast tokenizer is not safe across threads
            if deadline is not None and deadline - time.monotonic() <= 0:  # waiting for the model counts
                raise BackendError("timeout", "no time left once the model was free")
            ids = torch.tensor([self.tokenizer.encode(text)], dtype=torch.long)  # (1, T)
            if self._max_positions and ids.shape[1] > self._max_positions:
                raise BackendError("input_too_long", f"{ids.shape[1]} tokens; the model reads at most "
                                   f"max_position_embeddings={self._max_positions}")
            positions = (ids[0] == self.marker_id).nonzero().flatten()  # (n,) where each step ends
            if positions.numel() != len(steps):
                raise BackendError("tokenization_mismatch", f"{positions.numel()} step markers in the input for "
                                   f"{len(steps)} steps")
            try:
                scores = self._forward(ids, positions)
            except Exception as e:  # out of memory, a shape the model does not take, a bug in remote code
                raise BackendError("model_error", f"{type(e).__name__}: {e}") from e
        if not all(math.isfinite(s) for s in scores):
            raise BackendError("model_error", f"non-finite step scores {scores}")
        return scores

    def _forward(self, ids: torch.Tensor, positions: torch.Tensor) -> list[float]:
        """One forward of the model on ``ids`` ``(1, T)``: the scores at ``positions`` ``(n,)``."""
        params = next(self.hf_model.parameters(), None)
        device = params.device if params is not None else "cpu"
        if self.interface == "step_head":
            out = self.hf_model(input_ids=ids.to(device))
            logits = out.logits if hasattr(out, "logits") else out[0]  # (1, T, 2)
            if logits.dim() != 3 or logits.shape[-1] != 2:
                raise ValueError(f"the step head gave logits of shape {tuple(logits.shape)}; allowed: (B, T, 2)")
            probs = logits[0, positions.to(logits.device)].float().softmax(dim=-1)  # (n, 2)
            return probs[:, 1].tolist()
        out = self.hf_model(input_ids=ids.to(device), use_cache=False)
        logits = out.logits if hasattr(out, "logits") else out[0]  # (1, T, V)
        pair = logits[0, positions.to(logits.device)][:, list(self._label_ids)].float()  # (n, 2): good, bad
        return pair.softmax(dim=-1)[:, 0].tolist()

    # ------------------------------------------------------------------------------------------- judging
    def reply_text(self, item: JudgeItem, scores: Sequence[float]) -> str:
        """The reply for ``item`` given its step ``scores``: the first step below the threshold, quoted whole, or
        step -1."""
        steps = split_steps(item.response)
        for step, score in zip(steps, scores):
            if score < self.threshold:
                return reply_json(step.index, step.text,
                                  f"step score {score:.2f} < threshold {self.threshold:.2f}")
        lowest = f" (lowest {min(scores):.2f})" if scores else ""
        return reply_json(-1, "", f"every step scores >= {self.threshold:.2f}{lowest}")

    def _call(self, item: JudgeItem, timeout_s: float) -> str:
        deadline = time.monotonic() + timeout_s
        scores = self._scores(item.question, [s.text for s in split_steps(item.response)], deadline)
        return self.reply_text(item, scores)
