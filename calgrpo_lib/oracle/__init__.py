"""The credit-assignment oracle: it points at the first erroneous step of a wrong answer, and quotes it.

Where each concept lives:

- :mod:`.verdict`: what an oracle answers (:class:`JudgeItem`, :class:`Verdict`, :data:`STATUSES`), the judge's
  JSON reply (:data:`REPLY_SCHEMA`, :func:`parse_reply`, :func:`reply_json`) and the check of a reply against the
  response (:func:`localize`);
- :mod:`.runner`: :class:`Oracle`, the base class every backend shares (cache, concurrency, per-call and per-batch
  deadlines, retries honouring ``Retry-After``, quota stop, reply size limit, key redaction, fallback, validation,
  counters), its settings :class:`OracleConfig` and the faults a backend raises (:class:`BackendError`,
  :class:`QuotaExhausted`);
- :mod:`.cache`: the SQLite cache of replies (:class:`ReplyCache`); :mod:`.stats`: the counters (:class:`OracleStats`);
- :mod:`.remote`: what the remote judges share: HTTP fault classification (:func:`classify_http`,
  :func:`retry_after_s`) and API keys (:class:`Secret`, :func:`resolve_api_key`, :func:`redact`);
- :mod:`.prompt`: the judge prompt and few-shot file, and :class:`PromptedOracle`, the base of the LLM judges;
- one module per backend: :mod:`.gemini` (:class:`GeminiOracle`, Gemini through ``google-genai`` with a JSON reply
  schema), :mod:`.openai_compat` (:class:`OpenAICompatibleOracle`, a vLLM / ollama server behind
  ``/v1/chat/completions``), :mod:`.local` (:class:`LocalJudgeOracle`, any Hugging Face causal LM), :mod:`.prm`
  (:class:`PRMOracle`, a process reward model: the first step scoring below a threshold; the Qwen2.5-Math-PRM and
  Math-Shepherd interfaces, :data:`PRM_INTERFACES`) and
  :mod:`.stepcheck`, the offline judges: :class:`StepCheckOracle` (exact; re-checks every arithmetic claim and every
  number used) and :class:`FakeOracle` (a scripted judge with a fixed latency, for demos and benchmarks);
- :mod:`.cascade`: :class:`CascadeOracle`, the exact step checker first and a judge (LLM or PRM) for what it cannot
  settle, combined by a documented rule (:data:`CASCADE_RULES`, :func:`combine_verdicts`); ``stats.answered_by``
  says which stage gave each verdict;
- :mod:`.noise`: :class:`NoisyOracle`, any oracle with its located verdicts spoiled at set, seeded rates (missed,
  a later step named, an earlier correct step quoted; :data:`NOISE_KINDS`), to measure how much localisation
  quality token credit needs;
- :mod:`.evaluation`: how well an oracle localises errors: ProcessBench F1 (:func:`harmonic_f1`, the one place it
  is computed), :func:`localization_report` on injected errors, :func:`localization_quality` (any oracle against
  the exact checker on the synthetic task), and the ProcessBench evaluation
  (:func:`evaluate_processbench` -> :class:`ProcessBenchReport`: accuracies, F1, first-error offsets; how a sample's
  steps become the response the oracle numbers, :func:`benchmark_response` / :func:`benchmark_step`; the GSM8K
  reference join, :func:`gsm8k_references`);
- :mod:`.__main__`: the command line, ``python -m calgrpo_lib.oracle evaluate --benchmark processbench --oracle
  gemini --split gsm8k`` (``--path FILE`` for a local copy);
- :mod:`.backends`: :func:`make_oracle`, a backend's name (:data:`BACKENDS`) to an oracle, for the command line and
  for a training run's ``run_oracle.build_oracle``.

What the oracles read and are benchmarked on lives in the world layer and is re-exported here: claims in free text
(:mod:`calgrpo_lib.claims`), injected errors (:func:`calgrpo_lib.arithmetic.corrupt_solution`), problem sources
(:func:`calgrpo_lib.data.oracle_problems`) and ProcessBench (:func:`calgrpo_lib.data.load_processbench`).

Typical use::

    oracle = StepCheckOracle()                        # or GeminiOracle(cache="results/cache/oracle.sqlite",
                                                      #                 fallback=StepCheckOracle())
    verdicts = oracle.judge_batch([(question, reference, response), ...])   # never raises for backend faults
    v = verdicts[0]; v.status, v.step, v.quote, v.span
    oracle.stats                                      # calls, cache hits, retries, failures, latency p50/p95
    oracle.stats.summary()                            # a run's faults by cause, retries, fallbacks, quota stop
    report = evaluate_processbench(oracle, load_processbench("gsm8k", path="ProcessBench/"))
    print(report); report.f1, report.offsets          # accuracies, F1, too early / right / too late / missed
"""

from ..arithmetic import Corruption, corrupt_problems, corrupt_solution
from ..claims import Claim, find_claims
from ..data import PROCESSBENCH_SPLITS, ProcessBenchRecord, find_data_dir, load_processbench, oracle_problems
from .backends import BACKENDS, make_oracle
from .cache import ReplyCache, cache_key
from .cascade import CASCADE_RULES, CascadeOracle, combine_verdicts
from .evaluation import (
    OFFSETS_CORRECT,
    OFFSETS_ERRONEOUS,
    LocalizationReport,
    ProcessBenchItem,
    ProcessBenchReport,
    average_f1,
    benchmark_response,
    benchmark_step,
    evaluate_processbench,
    gsm8k_references,
    harmonic_f1,
    localization_quality,
    localization_report,
    offsets_table,
    processbench_items,
    processbench_report,
    step_offsets,
)
from .gemini import DEFAULT_GEMINI_MODEL, HOW_TO_ENABLE, GeminiOracle, client_library, gemini_key
from .local import LocalJudgeOracle
from .noise import NOISE_KINDS, NOISE_RATES, NoisyOracle
from .openai_compat import OpenAICompatibleOracle
from .prm import PRM_INTERFACES, PRMOracle
from .prompt import TEMPLATE_VERSION, FewShot, OraclePrompt, PromptedOracle, build_prompt, load_fewshot, prompt_version
from .remote import Secret, classify_http, is_daily_quota, redact, resolve_api_key, retry_after_s
from .runner import FALLBACKS, BackendError, Oracle, OracleConfig, QuotaExhausted
from .stats import OracleStats
from .stepcheck import (
    MISTAKE_KINDS,
    FakeOracle,
    StepCheckOracle,
    StepError,
    check_solution,
    error_line,
    first_error_kind,
)
from .verdict import REPLY_SCHEMA, STATUSES, JudgeItem, Reply, ReplyError, Verdict, localize, parse_reply, reply_json

__all__ = [
    "BACKENDS", "make_oracle", "CascadeOracle", "CASCADE_RULES", "combine_verdicts", "PRMOracle", "PRM_INTERFACES",
    "Oracle", "OracleConfig", "FALLBACKS", "Verdict", "JudgeItem", "STATUSES",
    "OracleStats", "ReplyCache",
    "cache_key", "StepCheckOracle", "StepError", "check_solution", "MISTAKE_KINDS", "first_error_kind", "error_line",
    "GeminiOracle", "DEFAULT_GEMINI_MODEL",
    "HOW_TO_ENABLE", "client_library", "gemini_key", "LocalJudgeOracle", "OpenAICompatibleOracle", "FakeOracle",
    "PromptedOracle", "BackendError", "QuotaExhausted", "classify_http", "is_daily_quota", "TEMPLATE_VERSION",
    "FewShot", "OraclePrompt", "build_prompt", "load_fewshot", "prompt_version", "REPLY_SCHEMA", "Reply",
    "ReplyError", "parse_reply", "reply_json", "localize", "Corruption", "corrupt_solution", "corrupt_problems",
    "LocalizationReport", "localization_report", "find_data_dir", "oracle_problems", "Claim", "find_claims", "Secret",
    "redact", "resolve_api_key", "retry_after_s", "harmonic_f1", "step_offsets", "OFFSETS_ERRONEOUS", "OFFSETS_CORRECT",
    "benchmark_response", "benchmark_step", "ProcessBenchItem", "processbench_items", "gsm8k_references",
    "ProcessBenchReport", "processbench_report", "evaluate_processbench", "average_f1", "offsets_table",
    "PROCESSBENCH_SPLITS", "ProcessBenchRecord", "load_processbench", "NoisyOracle", "NOISE_KINDS", "NOISE_RATES",
    "localization_quality",
]
