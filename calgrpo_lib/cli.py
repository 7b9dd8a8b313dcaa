"""Command line: ``python -m calgrpo_lib train --preset tiny [--FIELD VALUE ...]`` (also the ``calgrpo`` script).

Every field of :class:`~calgrpo_lib.config.GRPOConfig` is a flag (``--learning-rate 1e-4``, ``--credit-mode
sequence``, ``--resume``); flags override the preset. ``none`` sets an optional field to None.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import MISSING, fields
from typing import Any

from .config import PRESETS, GRPOConfig, preset

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="calgrpo", description="GRPO with credit-assignment oracles.")
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="run GRPO training and print held-out accuracy before -> after")
    train.add_argument("--preset", default="tiny", choices=sorted(PRESETS), help="starting config (default tiny)")
    train.add_argument("--print-config", action="store_true", help="print the resolved config as JSON and exit")
    _add_config_flags(train)
    return parser


def config_from_args(args: argparse.Namespace) -> GRPOConfig:
    """The preset named by ``args.preset`` with every given flag applied (validated)."""
    names = {f.name for f in fields(GRPOConfig)}
    overrides = {k: v for k, v in vars(args).items() if k in names and v is not None}
    return preset(args.preset, **overrides)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = config_from_args(args)
    except (ValueError, TypeError) as e:
        print(f"calgrpo: error: {e}", file=sys.stderr)
        return 2
    if args.print_config:
        print(json.dumps(config.to_dict(), indent=2))
        return 0
    from .trainer import train  # heavy imports only when training

    result = train(config)
    before, after = result.eval_before, result.eval_after
    if before is not None and after is not None:
        print(f"held-out accuracy: {before['accuracy']:.1%} -> {after['accuracy']:.1%} "
              f"({result.steps_done} steps, {result.wall_time_s / 60:.1f} min); run folder: {config.output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
