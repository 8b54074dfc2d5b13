"""The `minidt` command. Each subcommand's work lives in its own module; this file only parses arguments.

Exit status: 0 on success, 1 when a check fails (parity), 2 on bad input (a one-line message names what is wrong).
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable


class UsageError(Exception):
    """Bad input from the command line: printed as one line, exit status 2."""


def cmd_parity(args: argparse.Namespace) -> int:
    from . import parity
    from .config import DecisionTransformerConfig

    if args.config and args.checkpoint:
        raise UsageError("parity: expected --config or --checkpoint, got both")
    config = None
    if args.config:
        try:
            config = DecisionTransformerConfig.from_json_file(args.config)
        except FileNotFoundError:
            raise UsageError(f"--config: no such file {args.config}")
        except ValueError as e:
            raise UsageError(f"--config: {e}")
    rows = parity.run(config=config, checkpoint=args.checkpoint, dtype=args.dtype, batch=args.batch,
                      steps=args.steps, seed=args.seed)
    print(parity.format_table(rows))
    return 0 if all(r.ok for r in rows) else 1


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {"parity": cmd_parity}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="minidt", description="The Decision Transformer from first principles.")
    sub = p.add_subparsers(dest="command", required=True)

    q = sub.add_parser("parity", help="cross-check every output and gradient against transformers")
    q.add_argument("--config", help="a config.json (default: DecisionTransformerConfig())")
    q.add_argument("--checkpoint", help="a save_pretrained directory (minidt's or transformers')")
    q.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    q.add_argument("--batch", type=int, default=4)
    q.add_argument("--steps", type=int, default=10, help="timesteps per sequence (3 tokens each)")
    q.add_argument("--seed", type=int, default=0)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (UsageError, FileNotFoundError) as e:
        print(f"minidt {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
