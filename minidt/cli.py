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


def cmd_train(args: argparse.Namespace) -> int:
    from .train import TrainSettings, TrainingDiverged, train

    if args.resume:
        import json
        from pathlib import Path

        run = Path(args.resume) / "run.json"
        if not run.exists():
            raise UsageError(f"--resume: {args.resume} is not a run directory (no run.json)")
        settings = TrainSettings(**json.loads(run.read_text())["settings"])
        if args.steps is not None:
            settings.steps = args.steps
        if args.eval_episodes is not None:
            settings.final_eval_episodes = args.eval_episodes
        if args.workers is not None:
            settings.workers = args.workers
        out = args.resume
    else:
        try:
            settings = TrainSettings.from_preset(args.preset, env=args.env, dataset=args.dataset, steps=args.steps,
                                                 seed=args.seed, backend=args.backend,
                                                 final_eval_episodes=args.eval_episodes, workers=args.workers)
        except ValueError as e:
            raise UsageError(str(e))
        out = args.out or default_run_dir(settings)
    try:
        summary = train(settings, out, resume=bool(args.resume), progress=not args.quiet)
    except TrainingDiverged as e:
        print(f"minidt train: {e}", file=sys.stderr)
        return 1
    except ValueError as e:  # bad dataset, env or checkpoint: reported as one line
        raise UsageError(str(e))
    if summary["evaluations"]:
        print(format_evaluations(summary["evaluations"]))
        best = summary["best_normalized_score"]
        print(f"best normalized score {'n/a' if best is None else f'{best:.1f}'}; rank correlation of achieved "
              f"with target return {summary['rank_correlation']:.2f}")
    print(f"run directory: {out} ({summary['wall_seconds']:.0f} s)")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from .data import env_name, generate_dataset, generated_dataset_id, read_minari
    from .data.scores import REF_MIN_SCORE, normalized_score

    try:
        path = generate_dataset(args.env, args.tier, args.episodes, args.seed, progress=not args.quiet)
        data = read_minari(path)
    except ValueError as e:
        raise UsageError(str(e))
    r = data.returns
    line = (f"{generated_dataset_id(args.env, args.tier, args.episodes, args.seed)}: {len(data)} episodes, "
            f"{data.num_steps} steps, return mean {r.mean():.1f} (min {r.min():.1f}, max {r.max():.1f})")
    if env_name(args.env) in REF_MIN_SCORE:
        line += f", normalized score {normalized_score(args.env, r).mean():.1f}"
    print(line)
    print(path)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    import json

    from .train import evaluate_run

    try:
        evaluations = evaluate_run(args.run_dir, env=args.env, targets=args.targets, episodes=args.episodes,
                                   seed=args.seed, progress=not (args.quiet or args.json), workers=args.workers)
    except ValueError as e:
        raise UsageError(str(e))
    print(json.dumps({"evaluations": evaluations}, indent=1) if args.json else format_evaluations(evaluations))
    return 0


def cmd_reference_returns(args: argparse.Namespace) -> int:
    from .data import GYM_IDS
    from .data.generate import generated_env
    from .data.scores import REF_MAX_SCORE, REF_MIN_SCORE, measure_reference_returns

    try:
        name = generated_env(args.env)
    except ValueError as e:
        raise UsageError(str(e))
    lo, hi = measure_reference_returns(name, args.episodes, args.seed, progress=not args.quiet)
    print(f"{GYM_IDS[name]} over {args.episodes} episodes (seed {args.seed}): random {lo:.6f}, expert {hi:.6f}")
    print(f"minidt.data.scores uses: random {REF_MIN_SCORE[name]:.6f}, expert {REF_MAX_SCORE[name]:.6f}")
    return 0


def default_run_dir(settings) -> str:
    import time

    return f"runs/{settings.env}-{settings.dataset.replace('/', '_')}-{time.strftime('%Y%m%d-%H%M%S')}"


def format_evaluations(evaluations: list[dict]) -> str:
    lines = [f"{'target':>10}  {'return mean':>11}  {'std':>8}  {'normalized':>10}  episodes"]
    for e in evaluations:
        lines.append(f"{e['target_return']:10.1f}  {e['return_mean']:11.1f}  {e['return_std']:8.1f}  "
                     f"{e.get('normalized_score_mean', float('nan')):10.1f}  {e['episodes']}")
    return "\n".join(lines)


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "parity": cmd_parity, "train": cmd_train, "generate": cmd_generate, "evaluate": cmd_evaluate,
    "reference-returns": cmd_reference_returns}


WORKERS_HELP = ("threads for minidt.DataParallel, each on a slice of the batch (default: the usable CPU cores on "
                "the numpy backend; 1 turns it off)")


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

    t = sub.add_parser("train", help="train a Decision Transformer offline, then evaluate it at several targets")
    t.add_argument("--env", default="Pendulum-v1", help="Pendulum-v1 (default), MountainCarContinuous-v0, "
                   "InvertedPendulum-v5, or the environment of a D4RL/Minari dataset")
    t.add_argument("--dataset", default="full-replay",
                   help="a generated tier (random, medium, expert, medium-replay, medium-expert, full-replay), "
                        "a D4RL .hdf5 file, a Minari dataset directory, or a local Minari id")
    t.add_argument("--preset", default="quick", help="quick (minutes on a CPU; default) or paper")
    t.add_argument("--steps", type=int, help="training steps (default: the preset's)")
    t.add_argument("--out", help="run directory (default runs/ENV-DATASET-TIME)")
    t.add_argument("--seed", type=int)
    t.add_argument("--backend", choices=("numpy", "cupy", "strict"))
    t.add_argument("--eval-episodes", type=int, help="episodes per target in the final evaluation (default 20; "
                   "0 skips it)")
    t.add_argument("--workers", type=int, help=WORKERS_HELP)
    t.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its latest checkpoint")
    t.add_argument("--quiet", action="store_true", help="no progress bars")

    g = sub.add_parser("generate", help="generate (or find in the cache) an offline dataset, in Minari's format")
    g.add_argument("--env", required=True, help="pendulum (Pendulum-v1), mountaincar (MountainCarContinuous-v0) or "
                   "invertedpendulum (InvertedPendulum-v5, needs the mujoco extra)")
    g.add_argument("--tier", required=True, help="random, medium, expert, medium-replay, full-replay, medium-expert")
    g.add_argument("--episodes", type=int, help="episodes (default 200; medium-expert holds twice as many)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--quiet", action="store_true", help="no progress bar")

    e = sub.add_parser("evaluate", help="return-conditioned evaluation of a trained run at several targets")
    e.add_argument("run_dir", metavar="RUN_DIR", help="a directory written by minidt train")
    e.add_argument("--env", help="the environment (default: the run's)")
    e.add_argument("--targets", type=float, nargs="+", help="target returns (default: 5 across the dataset's "
                   "range and one beyond)")
    e.add_argument("--episodes", type=int, default=20, help="episodes per target (default 20)")
    e.add_argument("--seed", type=int, default=10_000, help="episode j of every target is seeded seed + j")
    e.add_argument("--workers", type=int, help=WORKERS_HELP)
    e.add_argument("--json", action="store_true", help="print JSON instead of a table")
    e.add_argument("--quiet", action="store_true", help="no progress bar")

    r = sub.add_parser("reference-returns", help="re-measure the random and expert returns that normalized "
                       "scores use, for a generated environment")
    r.add_argument("--env", required=True, help="pendulum, mountaincar or invertedpendulum")
    r.add_argument("--episodes", type=int, default=1000, help="episodes per policy (default 1000, as in scores.py)")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--quiet", action="store_true", help="no progress bar")

    from .coursework.cli import add_parsers as add_coursework_parsers  # minidt assignment, minidt grade
    COMMANDS.update(add_coursework_parsers(sub))
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (UsageError, FileNotFoundError) as e:
        print(f"minidt {args.command}: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `minidt parity | head`: the reader left; not an error of ours
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    # run the importable minidt.cli, not this __main__ copy: commands in other modules raise minidt.cli.UsageError
    from minidt.cli import main as _main

    sys.exit(_main())
