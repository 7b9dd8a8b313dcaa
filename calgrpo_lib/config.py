"""Training configuration: one dataclass, validated on creation, and named presets.

Field names follow TRL's ``GRPOConfig`` where one exists (``num_generations``, ``learning_rate``, ``beta``,
``epsilon``, ``epsilon_high``, ``num_iterations``, ``loss_type``, ``scale_rewards``, ``temperature``, ``top_p``,
``max_new_tokens``, ...). Every check runs in ``__post_init__``, so a bad value fails before any model work, with a
message naming the field, the value and what is allowed; assigning a field later (``config.seed = -1``) runs the same
checks and leaves the config unchanged when they fail. What a field cannot show by its value alone (a data file that
does not parse, a missing API key, a device that is not there) is checked by :func:`calgrpo_lib.preflight.preflight`
before a run loads its model.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields
from typing import Any

from .advantages import SCALES
from .credit import CREDIT_MODES
from .granularity import SPAN_GRANULARITIES
from .hybrid_rewards import REWARDS, SCORERS
from .loss import LOSS_TYPES
from .oracle.noise import check_noise_rates
from .oracle.prm import PRM_INTERFACES
from .reward_model import CALIBRATIONS
from .validation import check_choice, check_float, check_int, check_new_tokens, check_type

__all__ = ["GRPOConfig", "PRESETS", "preset", "CREDIT_MODE_CHOICES", "ORACLES", "LR_SCHEDULERS", "NOISE_FIELDS",
           "lr_at_step", "process_batch_split"]

#: the fields of the oracle-noise rates (fed to NoisyOracle by run_oracle.build_oracle)
NOISE_FIELDS = ("oracle_miss_rate", "oracle_wrong_step_rate", "oracle_correct_step_rate")

CREDIT_MODE_CHOICES = CREDIT_MODES  #: the credit modes a config accepts: credit.CREDIT_MODES itself, not a copy
ORACLES = ("stepcheck", "gemini", "openai", "local", "prm", "none")
LR_SCHEDULERS = ("constant", "linear", "cosine")
DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = ("auto", "float32", "bfloat16", "float16")
SEED_MAX = 2**32 - 1  #: seeds are 32-bit (as numpy's): a step's sampling seed, seed * 1_000_003 + step, stays in range


@dataclass
class GRPOConfig:
    """Everything one GRPO run needs. Defaults are the ``tiny`` preset: the shipped tiny policy on the synthetic
    task, with the exact offline step checker as oracle, on a CPU."""

    # --- world: model, data, prompt, reward
    model: str = "tiny"  #: "tiny" (shipped) or a hub id / local path for AutoModelForCausalLM
    task: str = "synthetic"  #: "synthetic" or "gsm8k"
    data_path: str | None = None  #: GSM8K folder or file (default: $CALGRPO_DATA_DIR/gsm8k, else the hub)
    prompt_style: str = "plain"  #: "plain", "r1_zero" or "chat" (see rewards.build_prompt)
    reward_format: str = "gsm8k"  #: format rewarded: "gsm8k" (#### n) or "r1" (<think>/<answer>)
    answer_weight: float = 0.8  #: reward weight of a right final answer
    format_weight: float = 0.2  #: reward weight of a well-formed answer
    reward: str = "rule"  #: "rule" (answer + format), "rm" (reward model alone) or "hybrid" (see hybrid_rewards.py)
    reward_model: str = "tiny-rm"  #: the RM of reward "rm" / "hybrid": "tiny-rm" (shipped), a folder or a hub id
    reward_scorer: str = "sigmoid"  #: difficulty weight on the advantages with an RM: "sigmoid", "tanh" or "none"
    rm_warmup: int = 64  #: W, responses of the starting policy the RM is calibrated on before the first step
    rm_calibration: str = "min_max"  #: r_hat from raw RM scores: "min_max" or "mean_std" (see reward_model.py)
    rm_correct_weight: float = 0.5  #: c: a right answer's hybrid reward is 1 - c + c * r_hat, in [1 - c, 1]
    rm_incorrect_weight: float = 0.5  #: u: a wrong answer's hybrid reward is u * r_hat, in [0, u]
    difficulty_w_min: float = 0.5  #: w_min, the smallest difficulty weight
    difficulty_w_max: float = 2.0  #: w_max, the largest difficulty weight (>= w_min)
    difficulty_k: float = 10.0  #: k, the sigmoid weight's steepness in sigma_u - sigma_bar
    train_size: int = 4096  #: training prompts drawn (synthetic: generated; gsm8k: the first n after a shuffle)
    eval_size: int = 256  #: held-out prompts for greedy evaluation
    # --- sampling
    prompts_per_step: int = 16  #: B, distinct prompts per step
    num_generations: int = 8  #: G, completions per prompt (the group)
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 64
    min_new_tokens: int = 0  #: stop tokens are masked until a completion has this many tokens (<= max_new_tokens)
    # --- advantages and credit
    scale_rewards: str = "group"  #: "group" (GRPO), "batch" (TRL) or "none" (Dr. GRPO)
    credit_mode: str = "cal_hybrid"  #: one of credit.CREDIT_MODES: 4 modes and 2 controls (random_span, uniform)
    negative_reward: float = -1.0  #: R- of the credit modes (<= 0)
    lam: float = 0.5  #: weight of the extra error-span push-down in cal_hybrid (>= 0)
    max_error_span_tokens: int = 48  #: a longer span falls back to sequence credit
    span_granularity: str = "quote"  #: what an error span covers: "quote" (as found), "step", "claim" or "result"
    oracle: str = "stepcheck"  #: "stepcheck" (exact, offline), "gemini", "openai", "local", "prm" or "none"
    oracle_model: str | None = None  #: model id for gemini / openai / local / prm oracles (None = backend default)
    oracle_base_url: str | None = None  #: base URL of an OpenAI-compatible server (vLLM, ollama)
    oracle_concurrency: int = 16
    oracle_timeout_s: float = 60.0  #: wall-clock limit of one judge call, its retries included
    oracle_batch_timeout_s: float | None = None  #: limit of a step's judge calls together (None: 2 * oracle_timeout_s)
    oracle_cache: str | None = None  #: sqlite file for oracle verdicts (default: <output_dir>/oracle_cache.sqlite)
    oracle_cascade: bool = False  #: the exact step checker first, the oracle where it may see an earlier error
    oracle_trust_remote_code: bool = False  #: run a hub judge's own code (Qwen2.5-Math-PRM's head needs it)
    prm_interface: str = "step_head"  #: oracle="prm": "step_head" (Qwen2.5-Math-PRM) or "next_token" (Math-Shepherd)
    prm_threshold: float = 0.5  #: oracle="prm": the first step scoring below this is the first error
    oracle_miss_rate: float = 0.0  #: NoisyOracle: share of located errors made missed (for oracle-quality studies)
    oracle_wrong_step_rate: float = 0.0  #: NoisyOracle: share of located errors moved to a later step
    oracle_correct_step_rate: float = 0.0  #: NoisyOracle: share moved to an earlier, correct step (noise seed: seed)
    # --- loss and optimisation
    loss_type: str = "dapo"  #: "grpo", "dr_grpo", "dapo" or "bnpo" (see loss.py)
    learning_rate: float = 1e-4
    lr_scheduler_type: str = "constant"  #: "constant", "linear" (to 0 at max_steps) or "cosine" (to 0 at max_steps)
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    beta: float = 0.0  #: KL weight (k3 estimator); 0 loads no reference model
    epsilon: float = 0.2  #: PPO clip range, lower side (and upper when epsilon_high is None)
    epsilon_high: float | None = None  #: upper clip range (DAPO's clip-higher), None = epsilon
    num_iterations: int = 1  #: optimisation passes over each batch of rollouts (mu in the GRPO paper)
    microbatch_size: int = 64  #: sequences per forward/backward; gradients accumulate over microbatches
    gradient_checkpointing: bool = False  #: recompute activations in the backward pass (less memory, ~30% slower)
    # --- LoRA (peft), TRL's names: adapters on the policy, the base weights frozen
    use_peft: bool = False  #: train LoRA adapters instead of every weight; the KL reference is the base (adapters off)
    lora_r: int = 16  #: LoRA rank
    lora_alpha: int = 32  #: LoRA scaling numerator (the update is scaled by lora_alpha / lora_r)
    lora_dropout: float = 0.05  #: dropout on the LoRA path
    lora_target_modules: str | None = None  #: comma-separated module names, "all-linear", or None (peft's default)
    max_steps: int = 50
    # --- bookkeeping
    eval_every: int = 25  #: greedy held-out evaluation every N steps (and before and after); 0 = only before/after
    save_every: int = 50  #: checkpoint every N steps (and at the end, and on Ctrl-C); 0 = only at the end
    output_dir: str = "runs/tiny"
    resume: bool = False  #: continue from the newest good checkpoint in output_dir
    overwrite: bool = False  #: a new run may replace the run already in output_dir (its checkpoints and metrics)
    allow_config_change: bool = False  #: resume even where fields that change results differ from the checkpoint's
    seed: int = 0
    device: str = "auto"  #: "auto" (cuda > mps > cpu), "cpu", "cuda" or "mps"
    dtype: str = "auto"  #: "auto" (bf16 on GPUs that support it, else fp32), "float32", "bfloat16", "float16"
    extra: dict[str, Any] = field(default_factory=dict)  #: free-form notes stored with the run

    def __post_init__(self) -> None:
        check_type("model", self.model, str)
        if not self.model.strip():
            raise ValueError(f"model={self.model!r} is empty; allowed: 'tiny', a hub id or a local model folder")
        for name in ("data_path", "oracle_model", "oracle_base_url", "oracle_cache"):
            check_type(name, getattr(self, name), (str, type(None)))
        check_type("extra", self.extra, dict)
        check_choice("task", self.task, ("synthetic", "gsm8k"))
        check_choice("prompt_style", self.prompt_style, ("plain", "r1_zero", "chat"))
        check_choice("reward_format", self.reward_format, ("gsm8k", "r1"))
        check_float("answer_weight", self.answer_weight, 0.0)
        check_float("format_weight", self.format_weight, 0.0)
        if self.answer_weight + self.format_weight <= 0:
            raise ValueError("answer_weight + format_weight must be > 0; got "
                             f"{self.answer_weight} + {self.format_weight}")
        check_choice("reward", self.reward, REWARDS)
        check_type("reward_model", self.reward_model, str)
        if not self.reward_model.strip():
            raise ValueError(f"reward_model={self.reward_model!r} is empty; allowed: 'tiny-rm', a hub id or a local "
                             "folder of a sequence-classification model")
        check_choice("reward_scorer", self.reward_scorer, SCORERS)
        check_int("rm_warmup", self.rm_warmup, 2, None)
        check_choice("rm_calibration", self.rm_calibration, CALIBRATIONS)
        check_float("rm_correct_weight", self.rm_correct_weight, 0.0, 1.0)
        check_float("rm_incorrect_weight", self.rm_incorrect_weight, 0.0, 1.0)
        check_float("difficulty_w_min", self.difficulty_w_min, 0.0)
        check_float("difficulty_w_max", self.difficulty_w_max, self.difficulty_w_min)
        check_float("difficulty_k", self.difficulty_k, 0.0)
        check_int("train_size", self.train_size, 1, None)
        check_int("eval_size", self.eval_size, 0, None)
        check_int("prompts_per_step", self.prompts_per_step, 1, None)
        check_int("num_generations", self.num_generations, 2, None)
        check_float("temperature", self.temperature, 0.0, None, low_open=True)
        check_float("top_p", self.top_p, 0.0, 1.0, low_open=True)
        check_new_tokens(self.max_new_tokens, self.min_new_tokens)
        check_choice("scale_rewards", self.scale_rewards, SCALES)
        check_choice("credit_mode", self.credit_mode, CREDIT_MODES)
        check_float("negative_reward", self.negative_reward, None, 0.0)
        check_float("lam", self.lam, 0.0)
        check_int("max_error_span_tokens", self.max_error_span_tokens, 1, None)
        check_choice("span_granularity", self.span_granularity, SPAN_GRANULARITIES)
        check_choice("oracle", self.oracle, ORACLES)
        if self.credit_mode != "sequence" and self.oracle == "none":
            raise ValueError(f"credit_mode={self.credit_mode!r} needs an oracle, but oracle='none'; allowed: "
                             f"credit_mode='sequence' with oracle='none', or an oracle in {ORACLES[:-1]}")
        check_type("oracle_cascade", self.oracle_cascade, bool)
        if self.oracle_cascade and self.oracle in ("stepcheck", "none"):
            raise ValueError(f"oracle_cascade=True with oracle={self.oracle!r}: the cascade puts the step checker "
                             "before a judge; allowed: oracle_cascade=False, or oracle in "
                             f"{ORACLES[1:-1]}")
        check_type("oracle_trust_remote_code", self.oracle_trust_remote_code, bool)
        check_choice("prm_interface", self.prm_interface, PRM_INTERFACES)
        check_float("prm_threshold", self.prm_threshold, 0.0, 1.0)
        noise = {name: getattr(self, name) for name in NOISE_FIELDS}
        check_noise_rates(noise)
        if self.oracle == "none" and any(noise.values()):
            raise ValueError(f"oracle noise rates {noise} with oracle='none': there is no oracle to spoil; allowed: "
                             "rates of 0, or an oracle")
        check_int("oracle_concurrency", self.oracle_concurrency, 1, 256)
        check_float("oracle_timeout_s", self.oracle_timeout_s, 0.0, None, low_open=True)
        if self.oracle_batch_timeout_s is not None:
            check_float("oracle_batch_timeout_s", self.oracle_batch_timeout_s, 0.0, None, low_open=True)
        check_choice("loss_type", self.loss_type, LOSS_TYPES)
        check_float("learning_rate", self.learning_rate, 0.0, None, low_open=True)
        check_choice("lr_scheduler_type", self.lr_scheduler_type, LR_SCHEDULERS)
        check_float("weight_decay", self.weight_decay, 0.0)
        check_float("max_grad_norm", self.max_grad_norm, 0.0, None, low_open=True)
        check_float("beta", self.beta, 0.0)
        check_float("epsilon", self.epsilon, 0.0, None, low_open=True)
        if self.epsilon_high is not None:
            check_float("epsilon_high", self.epsilon_high, self.epsilon)
        check_int("num_iterations", self.num_iterations, 1, None)
        check_int("microbatch_size", self.microbatch_size, 1, None)
        check_type("gradient_checkpointing", self.gradient_checkpointing, bool)
        check_type("use_peft", self.use_peft, bool)
        check_int("lora_r", self.lora_r, 1, None)
        check_int("lora_alpha", self.lora_alpha, 1, None)
        check_float("lora_dropout", self.lora_dropout, 0.0, 1.0, high_open=True)
        check_type("lora_target_modules", self.lora_target_modules, (str, type(None)))
        if self.lora_target_modules is not None and not [m for m in self.lora_target_modules.split(",") if m.strip()]:
            raise ValueError(f"lora_target_modules={self.lora_target_modules!r} names no module; allowed: e.g. "
                             "'q_proj,v_proj', 'all-linear', or None (peft's default for the architecture)")
        check_int("max_steps", self.max_steps, 1, None)
        check_int("eval_every", self.eval_every, 0, None)
        check_int("save_every", self.save_every, 0, None)
        check_type("output_dir", self.output_dir, str)
        if self.output_dir.strip() in ("", ".", "./", ".\\"):  # a new run would replace the runs of the current folder
            raise ValueError(f"output_dir={self.output_dir!r} is empty or the current folder; allowed: a folder of its "
                             "own for the run, e.g. 'runs/tiny'")
        check_type("resume", self.resume, bool)
        check_type("overwrite", self.overwrite, bool)
        check_type("allow_config_change", self.allow_config_change, bool)
        if self.resume and self.overwrite:
            raise ValueError("resume=True and overwrite=True contradict each other; allowed: resume=True (continue the "
                             "run in output_dir) or overwrite=True (replace it), not both")
        check_int("seed", self.seed, 0, SEED_MAX)
        check_choice("device", self.device, DEVICES)
        check_choice("dtype", self.dtype, DTYPES)

        object.__setattr__(self, "_checked", True)  # from now on, every assignment is checked (__setattr__)

    def __setattr__(self, name: str, value: Any) -> None:
        """Assign a field and run every check again; on failure the old value is put back and the error raised."""
        if not self.__dict__.get("_checked"):  # inside __init__: __post_init__ checks everything at the end
            object.__setattr__(self, name, value)
            return
        names = {f.name for f in fields(self)}
        if name not in names:
            raise AttributeError(f"GRPOConfig has no field {name!r}; allowed: {sorted(names)}")
        old = getattr(self, name)
        object.__setattr__(self, name, value)
        try:
            self.__post_init__()
        except (TypeError, ValueError):
            object.__setattr__(self, name, old)
            raise

    @property
    def batch_size(self) -> int:
        """Completions per step, ``prompts_per_step * num_generations``."""
        return self.prompts_per_step * self.num_generations

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> GRPOConfig:
        """A copy with ``changes`` applied (validated again); unknown names raise, listing the fields."""
        names = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise ValueError(f"unknown config field(s) {unknown}; allowed: {sorted(names)}")
        return dataclasses.replace(self, **changes)


def lr_at_step(config: GRPOConfig, step: int) -> float:
    """The learning rate of optimizer step ``step`` (0-based): ``learning_rate`` times 1 (constant),
    ``1 - step / max_steps`` (linear) or ``(1 + cos(pi * step / max_steps)) / 2`` (cosine)."""
    progress = min(step, config.max_steps) / config.max_steps
    factor = {"constant": 1.0, "linear": 1.0 - progress,
              "cosine": 0.5 * (1.0 + math.cos(math.pi * progress))}[config.lr_scheduler_type]
    return config.learning_rate * factor


def process_batch_split(prompts_per_step: int, num_generations: int, num_processes: int,
                        microbatch_size: int) -> tuple[int, int]:
    """How one step's ``P * G`` completions split over ``num_processes`` data-parallel processes, each running
    microbatches: ``(per_process_microbatch, accumulation_steps)`` with ``per_process = P * G / num_processes``,
    ``per_process_microbatch = min(microbatch_size, per_process)`` and ``accumulation_steps = per_process /
    per_process_microbatch`` (TRL's ``per_device_train_batch_size`` and ``gradient_accumulation_steps``), so that
    ``num_processes * per_process_microbatch * accumulation_steps = P * G``. A batch that does not split evenly
    raises ``ValueError`` naming the fields."""
    for name, value in (("prompts_per_step", prompts_per_step), ("num_generations", num_generations),
                        ("num_processes", num_processes), ("microbatch_size", microbatch_size)):
        check_int(name, value, 1, None)
    per_process, rest = divmod(prompts_per_step * num_generations, num_processes)
    if rest or not per_process:
        raise ValueError(f"prompts_per_step * num_generations = {prompts_per_step} * {num_generations} does not "
                         f"split over {num_processes} processes; allowed: a multiple of {num_processes}")
    micro = min(microbatch_size, per_process)
    if per_process % micro:
        raise ValueError(f"microbatch_size={microbatch_size} does not divide the {per_process} completions of each "
                         f"process (prompts_per_step * num_generations / {num_processes}); allowed: a divisor")
    return micro, per_process // micro


PRESETS: dict[str, dict[str, Any]] = {
    # CPU, minutes: the shipped tiny policy on the synthetic task, exact offline oracle.
    "tiny": {},
    # The same on a GPU with a larger batch.
    "tiny-gpu": {"prompts_per_step": 32, "num_generations": 16, "microbatch_size": 512, "device": "cuda",
                 "output_dir": "runs/tiny-gpu"},
    # Real models, for users with a hub connection and a GPU. float32 weights: AdamW's updates at lr 1e-6 are below
    # bfloat16's resolution (in a test, 10 steps changed 2% of bf16 weights, 99.95% of fp32 ones); a LoRA run may
    # use bfloat16 (peft keeps its adapters in fp32). Estimated peak (calgrpo_lib.memory, not yet measured on a
    # GPU), 0.5B: 43.0 GiB as below, 16.6 GiB at microbatch_size 4, 5.1 GiB with use_peft, gradient_checkpointing,
    # bfloat16 and microbatch_size 4; 1.5B: 78.5 / 37.5 / 7.2 GiB.
    "qwen-gsm8k": {"model": "Qwen/Qwen2.5-0.5B-Instruct", "task": "gsm8k", "prompt_style": "chat",
                   "oracle": "gemini", "max_new_tokens": 384, "prompts_per_step": 16, "num_generations": 8,
                   "learning_rate": 1e-6, "microbatch_size": 16, "max_steps": 300, "eval_size": 256,
                   "temperature": 0.9, "device": "cuda", "dtype": "float32", "output_dir": "runs/qwen-gsm8k",
                   "loss_type": "dr_grpo", "scale_rewards": "none", "beta": 0.0},
}


def preset(name: str, **overrides: Any) -> GRPOConfig:
    """The config of preset ``name`` (``tiny``, ``tiny-gpu``, ``qwen-gsm8k``) with ``overrides`` applied."""
    check_choice("preset", name, tuple(PRESETS))
    return GRPOConfig().replace(**{**PRESETS[name], **overrides})
