"""Command line, ``python -m calgrpo_lib COMMAND`` (also the ``calgrpo`` script):

- ``train --preset tiny [--FIELD VALUE ...]``: GRPO training. Every field of :class:`~calgrpo_lib.config.GRPOConfig`
  is a flag (``--learning-rate 1e-4``, ``--credit-mode sequence``, ``--resume``); flags override the preset.
  ``none`` sets an optional field to None. ``--engine calgrpo`` (default) runs our trainer
  (:func:`calgrpo_lib.trainer.train`); ``--engine trl`` runs TRL's ``GRPOTrainer`` with our token credit
  (:class:`calgrpo_lib.trl_engine.CALGRPOTrainer`, ``pip install 'calgrpo[trl]'``) on the same flags, mapped to TRL's
  names by :func:`calgrpo_lib.trl_engine.trl_config` (the table in that module's docstring: ``--max-new-tokens`` ->
  ``max_completion_length``, ``--prompts-per-step`` x ``--num-generations`` -> the global batch, split over the
  processes, ``--save-every`` -> ``save_steps``, ...), plus TRL's own ``--report-to``, ``--use-vllm``,
  ``--vllm-mode colocate|server`` and ``--vllm-server-base-url``. A flag without a TRL counterpart
  (``trl_engine.NO_TRL_COUNTERPART``: ``--eval-size``, ``--reward rm``, ...) given a value other than its default is
  refused, naming it. Several processes: ``accelerate launch --config_file
  calgrpo_lib/accelerate_configs/multi_gpu.yaml -m calgrpo_lib train --engine trl ...``; ``--resume`` continues from
  the newest ``checkpoint-N`` in ``--output-dir``.
- ``policy build --out DIR [--steps N ...]``: (re)build the tiny policy from scratch
  (:func:`calgrpo_lib.policy_build.build_tiny_policy`; flags are the fields of its ``TinyBuildConfig``).
- ``policy eval [--model tiny] [--n 512] [--groups K]``: a policy's greedy accuracy on held-out synthetic problems.
- ``reward-model build --out DIR [--steps N ...]``: (re)build the tiny outcome reward model
  (:func:`calgrpo_lib.reward_model_build.build_tiny_reward_model`; flags are the fields of its ``RMBuildConfig``).
- ``reward-model eval [--model tiny-rm] [--fresh N]``: a reward model's accuracy at threshold 0 and within-group
  ranking rate, on the model folder's ``heldout.jsonl`` (default) or on answers freshly sampled from the tiny policy.
- ``export --checkpoint DIR --out DIR``: a run's checkpoint (full or LoRA) as a plain merged Hugging Face model
  folder (:func:`calgrpo_lib.lora.export_checkpoint`).
- ``doctor``: what a real run needs to know first: device, dtype, libraries, key set or not (never shown), hub,
  data (:func:`calgrpo_lib.doctor.print_doctor`).

``train`` prints the run's memory estimate (:func:`calgrpo_lib.memory.estimate_memory`) before it starts; a run
that cannot fit is refused with the numbers before any model loads.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import MISSING, fields
from typing import Any

from .config import PRESETS, GRPOConfig, preset
from .policy import TINY, TINY_DIR, load_policy
from .policy_build import TinyBuildConfig, build_tiny_policy
from .reward_model import TINY_RM, TINY_RM_DIR
from .reward_model_build import RMBuildConfig
from .sampling import greedy_accuracy, group_stats
from .tasks import generate_problems

__all__ = ["main", "build_parser", "config_from_args"]


def _parse_optional(kind: type):
    def parse(text: str) -> Any:
        return None if text.lower() == "none" else kind(text)

    parse.__name__ = kind.__name__
    return parse


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("config fields (override the preset)")
    for f in fields(GRPOConfig):
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not MISSING else "{}"
        help_text = f"(default {default!r})"
        kind = str(f.type).replace(" ", "")
        if kind == "bool":
            group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif kind.startswith("dict"):
            group.add_argument(flag, dest=f.name, type=json.loads, default=None, help=help_text + ", as JSON")
        else:
            base = {"str": str, "int": int, "float": float}[kind.split("|")[0]]
            parse = _parse_optional(base) if "None" in kind else base
            group.add_argument(flag, dest=f.name, type=parse, default=None, metavar=kind.split("|")[0].upper(),
                               help=help_text)


TRL_ONLY = ("report_to", "use_vllm", "vllm_mode", "vllm_server_base_url")  #: flags of --engine trl alone


def _add_engine_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("engine (--engine trl: TRL's GRPOTrainer with our credit)")
    group.add_argument("--engine", choices=("calgrpo", "trl"), default="calgrpo",
                       help="calgrpo: our trainer (default); trl: calgrpo_lib.trl_engine.CALGRPOTrainer, also under "
                            "accelerate launch (pip install 'calgrpo[trl]')")
    group.add_argument("--report-to", default=None, help="--engine trl: TRL's loggers, comma-separated "
                                                         "(default 'none'; e.g. wandb, tensorboard)")
    group.add_argument("--use-vllm", action=argparse.BooleanOptionalAction, default=None,
                       help="--engine trl: generate with vLLM (TRL's use_vllm)")
    group.add_argument("--vllm-mode", choices=("colocate", "server"), default=None,
                       help="--engine trl with --use-vllm: colocate (vLLM in each training process, default) or "
                            "server (a `trl vllm-serve` process)")
    group.add_argument("--vllm-server-base-url", default=None,
                       help="--engine trl, --vllm-mode server: the server's URL (default TRL's 0.0.0.0:8000)")


def _share(value: str) -> float | None:
    """``--hard-carry-share``: a number, or ``none``."""
    return None if value.strip().lower() == "none" else float(value)


def _add_policy_commands(parser: argparse.ArgumentParser) -> None:
    d = TinyBuildConfig()
    sub = parser.add_subparsers(dest="policy_command", required=True)
    b = sub.add_parser("build", help="train the tiny policy from scratch and save it as a HF folder")
    b.add_argument("--out", required=True, help=f"output folder (the shipped one is {TINY_DIR})")
    b.add_argument("--seed", type=int, default=d.seed)
    b.add_argument("--steps", type=int, default=d.steps)
    b.add_argument("--batch-size", type=int, default=d.batch_size)
    b.add_argument("--lr", type=float, default=d.lr)
    b.add_argument("--min-lr-ratio", type=float, default=d.min_lr_ratio,
                   help="cosine floor as a share of --lr (1 = constant after warm-up)")
    b.add_argument("--train-problems", type=int, default=d.train_problems,
                   help="distinct training problems generated (default steps x batch size)")
    b.add_argument("--slip-rate", type=float, default=d.slip_rate, help="share of SFT targets with one slip")
    b.add_argument("--carry-bug-rate", type=float, default=d.carry_bug_rate,
                   help="share of SFT targets with a line that carries or borrows whose carry is forgotten "
                        "(a misconception)")
    b.add_argument("--hard-carry-share", type=_share, default=d.hard_carry_share,
                   help="share of SFT problems with a line that carries into a tens digit or borrows "
                        "('none': the task's own, about 11%%)")
    b.add_argument("--threads", type=int, default=d.threads, help="torch CPU threads")
    b.add_argument("--eval-every", type=int, default=0, help="greedy accuracy on 128 held-out problems every N steps")
    b.add_argument("--no-eval", action="store_true", help="skip the final evaluation and model card")
    e = sub.add_parser("eval", help="greedy accuracy (and group statistics) on held-out synthetic problems")
    e.add_argument("--model", default=TINY, help="'tiny', a local folder or a hub id")
    e.add_argument("--n", type=int, default=512)
    e.add_argument("--groups", type=int, default=0, help="also sample G=8 groups for this many problems")


def _add_reward_model_commands(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="rm_command", required=True)
    b = sub.add_parser("build", help="train the tiny outcome reward model and save it as a HF folder")
    b.add_argument("--out", required=True, help=f"output folder (the shipped one is {TINY_RM_DIR})")
    for f in fields(RMBuildConfig):
        b.add_argument("--" + f.name.replace("_", "-"), type=type(f.default), default=f.default,
                       help=f"{f.metadata['help']} (default %(default)s)")
    b.add_argument("--quiet", action="store_true", help="no progress bar")
    e = sub.add_parser("eval", help="accuracy and within-group ranking rate of a reward model")
    e.add_argument("--model", default=TINY_RM, help="'tiny-rm', a local folder or a hub id")
    e.add_argument("--heldout", default=None, help="a heldout.jsonl to re-score (default: the model folder's)")
    e.add_argument("--fresh", type=int, default=0, metavar="N",
                   help="score answers freshly sampled from the tiny policy for N new test problems instead")
    e.add_argument("--samples", type=int, default=4, help="answers sampled per problem with --fresh")
    e.add_argument("--seed", type=int, default=1234, help="problems and sampling seed with --fresh")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="calgrpo", description="GRPO with credit-assignment oracles.")
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="run GRPO training and print held-out accuracy before -> after")
    train.add_argument("--preset", default="tiny", choices=sorted(PRESETS), help="starting config (default tiny)")
    train.add_argument("--print-config", action="store_true", help="print the resolved config as JSON and exit "
                       "(with --engine trl: TRL's config)")
    _add_engine_flags(train)
    _add_config_flags(train)
    policy = sub.add_parser("policy", help="build the tiny policy, or evaluate a policy")
    _add_policy_commands(policy)
    rm = sub.add_parser("reward-model", help="build the tiny outcome reward model, or evaluate a reward model")
    _add_reward_model_commands(rm)
    export = sub.add_parser("export", help="write a checkpoint (full or LoRA) as a merged Hugging Face model folder")
    export.add_argument("--checkpoint", required=True, help="a run's checkpoint folder, checkpoints/step-NNNNNN")
    export.add_argument("--out", required=True, help="a new or empty folder for the merged model and tokenizer")
    export.add_argument("--base-model", default=None, help="a LoRA run's base model (default: the run's own)")
    sub.add_parser("doctor", help="what a real run needs: device, dtype, libraries, API key (never shown), hub, data")
    return parser


def config_from_args(args: argparse.Namespace) -> GRPOConfig:
    """The preset named by ``args.preset`` with every given flag applied (validated)."""
    names = {f.name for f in fields(GRPOConfig)}
    overrides = {k: v for k, v in vars(args).items() if k in names and v is not None}
    return preset(args.preset, **overrides)


def _policy_main(args: argparse.Namespace) -> int:
    if args.policy_command == "build":
        cfg = TinyBuildConfig(seed=args.seed, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                              min_lr_ratio=args.min_lr_ratio, train_problems=args.train_problems,
                              slip_rate=args.slip_rate, carry_bug_rate=args.carry_bug_rate,
                              hard_carry_share=args.hard_carry_share, threads=args.threads)
        info = build_tiny_policy(args.out, config=cfg, eval_every=args.eval_every, evaluate=not args.no_eval)
        print({k: v for k, v in info.items() if not isinstance(v, dict)})
        return 0
    model, tok = load_policy(args.model)
    problems = generate_problems(args.n, seed=0, split="test")
    print(greedy_accuracy(model, tok, problems))
    if args.groups:
        print(group_stats(model, tok, problems[: args.groups]))
    return 0


def _reward_model_main(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .reward_model import RewardModel, reward_model_source
    from .reward_model_build import build_tiny_reward_model, sample_answers
    from .reward_model_eval import read_heldout, rm_metrics, score_rows

    try:
        if args.rm_command == "build":
            cfg = RMBuildConfig(**{f.name: getattr(args, f.name) for f in fields(RMBuildConfig)})
            info = build_tiny_reward_model(args.out, cfg, progress=not args.quiet)
            print(json.dumps({k: v for k, v in info.items() if k in ("heldout", "build_seconds", "weights_sha256")}))
            return 0
        if args.fresh:
            model, tok = load_policy(TINY)
            rows = sample_answers(model, tok, generate_problems(args.fresh, seed=args.seed, split="test"),
                                  args.samples, seed=args.seed)
        else:
            kind, path = reward_model_source(args.model)
            heldout = Path(args.heldout or (Path(path) / "heldout.jsonl" if kind == "folder" else ""))
            if not heldout.is_file():
                raise FileNotFoundError(f"--heldout {os.fspath(heldout)!r} is not a file; pass a heldout.jsonl or "
                                        "--fresh N")
            rows = read_heldout(heldout)
        metrics = rm_metrics(rows, score_rows(RewardModel.load(args.model), rows))
    except (OSError, ValueError, TypeError) as e:
        print(f"calgrpo: error: {e}", file=sys.stderr)
        return 2
    print(f"accuracy {metrics['accuracy']:.4f} of {metrics['n']}; ranking rate {metrics['ranking']['rate']} over "
          f"{metrics['ranking']['pairs']} pairs")
    print(json.dumps(metrics))
    return 0


def _export_main(args: argparse.Namespace) -> int:
    from .checkpoints import verify_checkpoint
    from .lora import export_checkpoint

    problem = verify_checkpoint(args.checkpoint)
    if problem:
        print(f"calgrpo: error: --checkpoint {args.checkpoint!r} is damaged: {problem}", file=sys.stderr)
        return 2
    try:
        out = export_checkpoint(args.checkpoint, args.out, base_model=args.base_model)
    except (OSError, ValueError) as e:  # a missing base model, a non-empty --out, ...
        print(f"calgrpo: error: {e}", file=sys.stderr)
        return 2
    print(f"merged model folder: {out} (load it with load_policy({str(out)!r}))")
    return 0


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _train_trl(args: argparse.Namespace, config: GRPOConfig) -> int:
    """``train --engine trl``: :class:`calgrpo_lib.trl_engine.CALGRPOTrainer` on the task's problems, in each
    process of an ``accelerate launch`` (or alone); prints each process's own counts and, once, a summary."""
    try:
        from . import trl_engine
    except ImportError as e:
        print(f"calgrpo: error: --engine trl needs TRL ({e}); install it: pip install 'calgrpo[trl]'", file=sys.stderr)
        return 2
    defaults = {f.name: f.default for f in fields(GRPOConfig) if f.default is not MISSING}
    refused = [f"{_flag(name)} {getattr(args, name)!r}" for name, neutral in trl_engine.NO_TRL_COUNTERPART.items()
               if getattr(args, name, None) is not None and getattr(args, name) != defaults.get(name, {})
               and getattr(args, name) not in neutral]
    try:
        if refused:
            raise ValueError(f"{', '.join(refused)}: no counterpart in the trl engine (calgrpo_lib.trl_engine); "
                             "allowed: leave these flags out, or --engine calgrpo")
        world = int(os.environ.get("WORLD_SIZE", "1"))  # set by accelerate launch / torchrun
        trl_args = trl_engine.trl_config(config, num_processes=world, report_to=args.report_to or "none",
                                         use_vllm=bool(args.use_vllm), vllm_mode=args.vllm_mode or "colocate",
                                         vllm_server_base_url=args.vllm_server_base_url)
        if args.print_config:
            print(trl_args.to_json_string())
            return 0
        from pathlib import Path

        from transformers.trainer_utils import get_last_checkpoint

        from .policy import model_source

        out = Path(config.output_dir)
        last = get_last_checkpoint(str(out)) if out.is_dir() else None
        if config.resume and last is None:
            raise FileNotFoundError(f"--resume: no checkpoint-N folder in output_dir {str(out)!r}; allowed: a run "
                                    "folder of the trl engine, or leave out --resume")
        if last is not None and not (config.resume or config.overwrite):
            raise FileExistsError(f"output_dir {str(out)!r} holds a run ({Path(last).name}); allowed: --resume to "
                                  "continue it, --overwrite to start again there, or another --output-dir")
        kind, path = model_source(config.model, "model")
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=kind == "folder", padding_side="left")
        trainer = trl_engine.trl_trainer(config, path, tokenizer, args=trl_args)
    except (OSError, ValueError, TypeError) as e:
        print(f"calgrpo: error: {e}", file=sys.stderr)
        return 2
    result = trainer.train(resume_from_checkpoint=True if config.resume else None)
    acc, own = trainer.accelerator, trainer.local_totals
    requests = trainer.oracle.stats.snapshot()["requests"] if trainer.oracle is not None else 0
    print(f"calgrpo[rank {acc.process_index}/{acc.num_processes}]: {own['completions']:.0f} completions, "
          f"{own['wrong']:.0f} wrong, {own['judged']:.0f} judged, {requests:.0f} oracle requests", flush=True)
    acc.wait_for_everyone()
    if acc.is_main_process:
        logs = [r for r in trainer.state.log_history if "cal/completions" in r]
        totals = {k: sum(r[f"cal/{k}"] for r in logs) for k in ("completions", "wrong", "judged", "error_tokens")}
        checkpoints = sorted(p.name for p in Path(config.output_dir).glob("checkpoint-*"))
        print(f"trl engine: {trainer.state.global_step} optimizer steps on {acc.num_processes} process(es) in "
              f"{result.metrics.get('train_runtime', 0.0):.1f} s; {totals['completions']:.0f} completions, "
              f"{totals['wrong']:.0f} wrong, {totals['judged']:.0f} judged, {totals['error_tokens']:.0f} error "
              f"tokens; checkpoints {checkpoints} in {config.output_dir}", flush=True)
    return 0


def _print_memory_estimate(config: GRPOConfig) -> None:
    from .memory import estimate_memory, fits

    estimate = estimate_memory(config)
    if estimate is not None:  # None: the model's config could not be read (preflight names a bad model)
        print(estimate.format(fits(estimate, config.device if config.device != "auto" else None)[1]))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "policy":
        return _policy_main(args)
    if args.command == "reward-model":
        return _reward_model_main(args)
    if args.command == "export":
        return _export_main(args)
    if args.command == "doctor":
        from .doctor import print_doctor

        print_doctor()
        return 0
    try:
        config = config_from_args(args)
    except (ValueError, TypeError) as e:
        print(f"calgrpo: error: {e}", file=sys.stderr)
        return 2
    if args.engine == "trl":
        return _train_trl(args, config)
    given = [name for name in TRL_ONLY if getattr(args, name) is not None]
    if given:
        print(f"calgrpo: error: {', '.join(_flag(n) for n in given)} only with --engine trl", file=sys.stderr)
        return 2
    if args.print_config:
        print(json.dumps(config.to_dict(), indent=2))
        return 0
    from .checkpoints import CheckpointError, RunFolderError
    from .preflight import PreflightError
    from .trainer import train  # heavy imports only when training

    try:
        _print_memory_estimate(config)
        result = train(config)  # preflight, the run folder and the checkpoints are checked before the model loads
    except (PreflightError, RunFolderError, CheckpointError) as e:
        print(f"calgrpo: error: {e}", file=sys.stderr)
        return 2
    if result.interrupted:  # Ctrl-C or SIGTERM: the trainer wrote a checkpoint; say so, fail like an interrupted run
        print(f"calgrpo: interrupted after step {result.steps_done}; checkpoint written in {config.output_dir}; "
              "continue with --resume", file=sys.stderr)
        return 130
    faults = result.oracle_summary
    if faults and (faults["failures"] or faults["unlocalized"] or faults["retries"] or faults["stopped"]):
        stopped = f"; stopped: {faults['stopped']}" if faults["stopped"] else ""
        print(f"oracle: {faults['calls']} calls, {faults['cache_hits']} cache hits, {faults['retries']} retries, "
              f"{faults['fallbacks']} fallbacks; failures {faults['failures_by_cause'] or 0}; unlocalized "
              f"{faults['unlocalized_by_cause'] or 0}{stopped} (oracle_summary.json in {config.output_dir})")
    rm_steps = [r for r in result.history if "rm_score_mean" in r]
    if rm_steps:  # an RM run: what the RM said over the run, next to metrics.jsonl's per-step values
        agreement = [r["rm_agreement"] for r in rm_steps if r["rm_agreement"] is not None]
        agree = f"{sum(agreement) / len(agreement):.1%}" if agreement else "n/a (no mixed group)"
        last = rm_steps[-1]
        print(f"reward {config.reward!r} with RM {config.reward_model!r} (scorer {config.reward_scorer!r}): "
              f"calibrated {config.rm_calibration} [{last['rm_calibration_low']:.3g}, "
              f"{last['rm_calibration_high']:.3g}]; mean r_hat {rm_steps[0]['rm_r_hat_mean']:.3f} -> "
              f"{last['rm_r_hat_mean']:.3f}; RM-verifier agreement {agree}; weights "
              f"{last['weight_min']:.2f}..{last['weight_max']:.2f} at the last step")
    before, after = result.eval_before, result.eval_after
    if before is not None and after is not None:
        print(f"held-out accuracy: {before['accuracy']:.1%} -> {after['accuracy']:.1%} "
              f"({result.steps_done} steps, {result.wall_time_s / 60:.1f} min); run folder: {config.output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
