"""Gemini as the judge: :class:`GeminiOracle`, on the ``google-genai`` SDK.

The reply is forced to JSON (``response_mime_type="application/json"`` and ``response_schema`` =
:data:`REPLY_SCHEMA`). The API key comes from ``api_key=`` or ``GEMINI_API_KEY`` / ``GOOGLE_API_KEY`` (environment,
else a ``.env`` file); it is held in a :class:`Secret` and removed from every message this module logs or stores.

Retries and time: the SDK's own retries are off (``HttpRetryOptions(attempts=1)``): every HTTP request is one
attempt of the runner, which retries 408 / 429 / 5xx, timeouts and refused connections itself, counts each retry
by cause, and gives each attempt only the time left to the call's and the batch's deadline (the SDK's
per-request ``timeout``). So a call the batch has abandoned makes no request after it, and no retry runs in the
background. A 429 body is read first: a daily quota stops the oracle (``QuotaExhausted``); a per-minute limit
is retried after the server's suggested wait, the larger of the ``Retry-After`` header (read from the SDK
error's ``response.headers``) and the body's ``retryDelay``, unless that wait would pass the deadline.

The legacy ``google-generativeai`` package (support ended 2025-11-30) is used only when it is the sole one
installed (:func:`client_library`); it has no base-URL option, fewer retry controls (its own defaults apply
within each attempt's timeout) and no access to response headers.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from pathlib import Path

from .cache import ReplyCache
from .prompt import FewShot, OraclePrompt, PromptedOracle
from .remote import Secret, classify_http, redact, resolve_api_key
from .runner import BackendError, Oracle, OracleConfig
from .verdict import REPLY_SCHEMA

__all__ = ["GeminiOracle", "client_library", "gemini_key", "DEFAULT_GEMINI_MODEL", "KEY_NAMES", "HOW_TO_ENABLE"]

DEFAULT_GEMINI_MODEL = "gemini-3.5-flash"
KEY_NAMES = ("GEMINI_API_KEY", "GOOGLE_API_KEY")
HOW_TO_ENABLE = ("To use Gemini: create a key at https://aistudio.google.com/apikey, then either `export "
                 "GEMINI_API_KEY=...` before starting Python/Jupyter or put the line `GEMINI_API_KEY=...` in a `.env` "
                 "file in this folder or a parent (never commit it; .env is git-ignored), and `pip install "
                 "google-genai`.")


def client_library(find_spec: Callable[[str], object] = importlib.util.find_spec) -> str:
    """``"google-genai"`` when installed, else ``"google-generativeai"`` (legacy) when installed; raises
    ``ImportError`` with the install command otherwise."""
    for module, name in (("google.genai", "google-genai"), ("google.generativeai", "google-generativeai")):
        try:
            if find_spec(module) is not None:
                return name
        except (ImportError, ValueError):
            continue
    raise ImportError("no Gemini client library is installed; allowed: google-genai (pip install google-genai)")


def gemini_key(dotenv: str | os.PathLike | None = None) -> Secret | None:
    """The Gemini key from the environment or a ``.env`` file, or ``None`` (see :data:`HOW_TO_ENABLE`)."""
    return resolve_api_key(KEY_NAMES, dotenv)


def _is_timeout(e: BaseException) -> bool:
    return any(c.__name__ in ("TimeoutException", "ReadTimeout", "DeadlineExceeded") for c in type(e).__mro__)


def _is_connect(e: BaseException) -> bool:
    return any(c.__name__ in ("ConnectError", "NetworkError") for c in type(e).__mro__)


class GeminiOracle(PromptedOracle):
    """The Gemini judge (see the module docstring). ``base_url`` points the SDK elsewhere (a proxy, a test server)."""

    backend = "gemini"

    def __init__(self, model: str = DEFAULT_GEMINI_MODEL, *, api_key: str | None = None, base_url: str | None = None,
                 api_version: str | None = None, temperature: float = 0.0, thinking_budget: int | None = None,
                 dotenv: str | os.PathLike | None = None, library: str | None = None,
                 fewshot: FewShot | str | os.PathLike | None = None, config: OracleConfig | None = None,
                 cache: ReplyCache | str | Path | None = None, fallback: Oracle | None = None) -> None:
        super().__init__(fewshot=fewshot, config=config, cache=cache, fallback=fallback)
        if not isinstance(model, str) or not model.strip():
            raise ValueError(f"model={model!r}; allowed: a Gemini model id such as {DEFAULT_GEMINI_MODEL!r}")
        self._model = model
        self._key = Secret(api_key) if api_key is not None else gemini_key(dotenv)
        if self._key is None:
            raise RuntimeError(f"no Gemini API key found in {' / '.join(KEY_NAMES)} or a .env file. {HOW_TO_ENABLE}")
        self.library = library or client_library()
        if self.library not in ("google-genai", "google-generativeai"):
            raise ValueError(f"library={library!r}; allowed: 'google-genai', 'google-generativeai'")
        if self.library == "google-generativeai" and base_url is not None:
            raise ValueError("base_url is only supported with library='google-genai'")
        self.temperature, self.thinking_budget = float(temperature), thinking_budget
        self._client = self._make_client(base_url, api_version)

    @property
    def model(self) -> str:
        return self._model

    def _redact(self, text: str) -> str:
        return redact(text, self._key)

    def _make_client(self, base_url: str | None, api_version: str | None):
        c = self.config
        if self.library == "google-generativeai":
            import google.generativeai as legacy

            legacy.configure(api_key=self._key.reveal())
            return legacy
        from google import genai
        from google.genai import types

        retry = types.HttpRetryOptions(attempts=1)  # one request per attempt: the runner retries, within deadlines
        opts = types.HttpOptions(base_url=base_url, api_version=api_version, timeout=max(1, int(c.timeout_s * 1000)),
                                 retry_options=retry)
        return genai.Client(api_key=self._key.reveal(), http_options=opts)

    def _generate(self, prompt: OraclePrompt, timeout_s: float) -> str:
        try:
            if self.library == "google-generativeai":
                return self._generate_legacy(prompt, timeout_s)
            return self._generate_genai(prompt, timeout_s)
        except BackendError:
            raise
        except Exception as e:
            raise self._classify(e) from None

    def _generate_genai(self, prompt: OraclePrompt, timeout_s: float) -> str:
        from google.genai import types

        thinking = (types.ThinkingConfig(thinking_budget=self.thinking_budget)
                    if self.thinking_budget is not None else None)
        cfg = types.GenerateContentConfig(
            system_instruction=prompt.system, response_mime_type="application/json", response_schema=REPLY_SCHEMA,
            temperature=self.temperature, thinking_config=thinking,
            automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
            http_options=types.HttpOptions(timeout=max(1, int(timeout_s * 1000))))
        response = self._client.models.generate_content(model=self._model, contents=prompt.user, config=cfg)
        return response.text or ""

    def _generate_legacy(self, prompt: OraclePrompt, timeout_s: float) -> str:
        model = self._client.GenerativeModel(self._model, system_instruction=prompt.system)
        gen = {"response_mime_type": "application/json", "response_schema": REPLY_SCHEMA,
               "temperature": self.temperature}
        response = model.generate_content(prompt.user, generation_config=gen, request_options={"timeout": timeout_s})
        return response.text or ""

    def _classify(self, e: Exception) -> BackendError:
        message = self._redact(f"{type(e).__name__}: {e}")[:500]
        code = getattr(e, "code", None)
        if isinstance(code, int) and 400 <= code < 600:
            headers = getattr(getattr(e, "response", None), "headers", None)  # httpx.Response of a genai APIError
            return classify_http(code, getattr(e, "details", None) or message, message, headers=headers)
        if _is_timeout(e):
            return BackendError("timeout", message, retryable=True)
        if _is_connect(e):
            return BackendError("connection_error", message, retryable=True)
        if type(e).__name__ in ("UnknownApiResponseError", "JSONDecodeError"):  # the HTTP body is not an API reply
            return BackendError("bad_response", message)
        return BackendError(f"error_{type(e).__name__}", message)
