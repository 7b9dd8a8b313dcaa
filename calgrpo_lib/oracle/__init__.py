"""The credit-assignment oracle: it points at the first erroneous step of a wrong answer, and quotes it.

Backends (all share the runner in :mod:`.base`: cache, concurrency, timeouts, retries, quota stop, fallback,
validation, counters):

- :class:`StepCheckOracle`: exact and offline; re-checks every arithmetic claim and every number used;
- :class:`GeminiOracle`: Gemini through ``google-genai`` with a JSON reply schema;
- :class:`OpenAICompatibleOracle`: a vLLM / ollama server behind ``/v1/chat/completions``;
- :class:`LocalJudgeOracle`: any Hugging Face causal LM;
- :class:`FakeOracle`: a scripted judge with a fixed latency, for demos and benchmarks.

Typical use::

    oracle = StepCheckOracle()                        # or GeminiOracle(cache="results/cache/oracle.sqlite")
    verdicts = oracle.judge_batch([(question, reference, response), ...])   # never raises for backend faults
    v = verdicts[0]; v.status, v.step, v.quote, v.span
    oracle.stats                                      # calls, cache hits, retries, failures, latency p50/p95
"""

from .apikey import Secret, redact, resolve_api_key
from .base import Oracle
from .cache import ReplyCache, cache_key
from .claims import Claim, find_claims
from .config import FALLBACKS, OracleConfig
from .corrupt import Corruption, corrupt_problems, corrupt_solution
from .errors import BackendError, QuotaExhausted, classify_http, is_daily_quota
from .fake import FakeOracle
from .gemini import DEFAULT_GEMINI_MODEL, HOW_TO_ENABLE, GeminiOracle, client_library, gemini_key
from .local import LocalJudgeOracle
from .metrics import LocalizationReport, localization_report
from .openai_compat import OpenAICompatibleOracle
from .prompt import TEMPLATE_VERSION, FewShot, OraclePrompt, build_prompt, load_fewshot, prompt_version
from .reply import REPLY_SCHEMA, Reply, ReplyError, parse_reply
from .sources import find_data_dir, oracle_problems
from .stats import OracleStats
from .stepcheck import StepCheckOracle, StepError, check_solution
from .validate import localize
from .verdict import STATUSES, JudgeItem, Verdict

__all__ = [
    "Oracle", "OracleConfig", "FALLBACKS", "Verdict", "JudgeItem", "STATUSES", "OracleStats", "ReplyCache",
    "cache_key", "StepCheckOracle", "StepError", "check_solution", "GeminiOracle", "DEFAULT_GEMINI_MODEL",
    "HOW_TO_ENABLE", "client_library", "gemini_key", "LocalJudgeOracle", "OpenAICompatibleOracle", "FakeOracle",
    "BackendError", "QuotaExhausted", "classify_http", "is_daily_quota", "TEMPLATE_VERSION", "FewShot",
    "OraclePrompt", "build_prompt", "load_fewshot", "prompt_version", "REPLY_SCHEMA", "Reply", "ReplyError",
    "parse_reply", "localize", "Corruption", "corrupt_solution", "corrupt_problems", "LocalizationReport",
    "localization_report", "find_data_dir", "oracle_problems", "Claim", "find_claims", "Secret", "redact",
    "resolve_api_key",
]
