"""The `minidt` command (also `python -m minidt`). Each subcommand's work lives in its own module; this file parses
and checks arguments, one `add_*` function per subcommand's flags and one `cmd_*` function per subcommand.

Exit status: 0 on success, 1 when a check fails (parity) or training diverges, 2 on bad input, 130 when
interrupted. Bad input is one line on stderr naming the flag or file, found before any long work starts (flags by
their types, from minidt.arguments; files and environments before a dataset is generated or a model built), never
a traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

from .arguments import (ArgumentParser, UsageError, finite_float, nonnegative_float, nonnegative_int, percentage,
                        positive_int)


# --- commands ----------------------------------------------------------------------------------------------------

def cmd_parity(args: argparse.Namespace) -> int:
    from .config import DecisionTransformerConfig

    if args.config and args.checkpoint:
        raise UsageError("--config and --checkpoint: expected one of them, got both")
    config = None
    if args.config:
        try:
            config = DecisionTransformerConfig.from_json_file(args.config)
        except OSError as e:
            raise UsageError(f"--config {args.config}: {e.strerror}")
        except ValueError as e:
            raise UsageError(f"--config {args.config}: {e}")
    if args.checkpoint and not Path(args.checkpoint).is_dir():
        raise UsageError(f"--checkpoint {args.checkpoint}: not a directory (expected one written by save_pretrained)")
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as e:
        raise UsageError(f"parity compares with transformers, which is not installed ({e}): pip install -e '.[test]'")
    from . import parity

    try:
        rows = parity.run(config=config, checkpoint=args.checkpoint, dtype=args.dtype, batch=args.batch,
                          steps=args.steps, seed=args.seed)
    except (OSError, ValueError) as e:
        raise UsageError(f"--checkpoint {args.checkpoint}: {e}" if args.checkpoint else str(e))
    print(parity.format_table(rows))
    return 0 if all(r.ok for r in rows) else 1


def cmd_train(args: argparse.Namespace) -> int:
    from .report import format_conditioning, format_evaluations
    from .runs import default_run_dir, latest_checkpoint, resumed_settings
    from .settings import TrainSettings
    from .td3bc.train import train_td3bc
    from .train import TrainingDiverged, TrainingInterrupted, terminate_as_interrupt, train

    def refuse_dt_flags(algo: str) -> None:
        given = [f"{flag} {value}" for flag, value in (("--preset", args.preset), ("--workers", args.workers))
                 if value is not None]
        if algo == "td3bc" and given:
            raise UsageError(f"{', '.join(given)}: the Decision Transformer's presets and DataParallel threads; "
                             "TD3+BC (--algo td3bc) takes the paper's hyperparameters, on one thread")

    if args.resume:
        if args.force:
            raise UsageError("--resume and --force: --resume continues a run, --force replaces one; pick one")
        settings = resumed_settings(args.resume, env=args.env, dataset=args.dataset, preset=args.preset,
                                    backend=args.backend, seed=args.seed, out=args.out, algo=args.algo,
                                    top_percent=args.top_percent, dataset_episodes=args.dataset_episodes,
                                    delayed_rewards=args.delayed_rewards, steps=args.steps,
                                    final_eval_episodes=args.eval_episodes, checkpoint_every=args.checkpoint_every,
                                    workers=args.workers)
        refuse_dt_flags(settings.algo)
        out = args.resume
    else:
        refuse_dt_flags(args.algo)
        settings = TrainSettings.from_preset(
            args.preset or "quick", env=args.env, dataset=args.dataset, steps=args.steps, seed=args.seed,
            backend=args.backend, final_eval_episodes=args.eval_episodes, checkpoint_every=args.checkpoint_every,
            workers=args.workers, algo=args.algo, top_percent=args.top_percent,
            dataset_episodes=args.dataset_episodes, delayed_rewards=args.delayed_rewards)
        out = args.out or default_run_dir(settings)
    run = train_td3bc if settings.algo == "td3bc" else train
    try:
        with terminate_as_interrupt():  # SIGTERM outside the training loop (which checkpoints first): as Ctrl-C
            summary = run(settings, out, resume=bool(args.resume), progress=not args.quiet, force=args.force)
    except TrainingDiverged as e:
        print(f"minidt train: {e}", file=sys.stderr)
        return 1
    except TrainingInterrupted as e:
        print(f"minidt train: interrupted ({e.signal_name}) at step {e.step}; checkpoint written: {e.checkpoint}\n"
              f"resume with: minidt train --resume {e.run_dir}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        try:
            where = f"; the last checkpoint: {latest_checkpoint(Path(out))}\nresume with: minidt train --resume {out}"
        except ValueError:
            where = " before the first checkpoint: nothing to resume"
        print(f"minidt train: interrupted{where}", file=sys.stderr)
        return 130
    if summary["evaluations"]:
        print(format_evaluations(summary["evaluations"]))
        print(format_conditioning(summary) if settings.algo != "td3bc" else
              "TD3+BC is not return-conditioned: plain rollouts of its policy, one row")
    print(f"run directory: {out} ({summary['wall_seconds']:.0f} s)")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from .data import describe_returns, generate_dataset, generated_dataset_id, read_minari

    path = generate_dataset(args.env, args.tier, args.episodes, args.seed, progress=not args.quiet)
    data = read_minari(path)
    print(f"{generated_dataset_id(args.env, args.tier, args.episodes, args.seed)}: {len(data)} episodes, "
          f"{data.num_steps} steps, {describe_returns(args.env, data.returns)}")
    print(path)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    import json

    from .report import evaluate_run, format_evaluations
    from .runs import locate_run, read_run_info

    given = [f"{flag} {value}" for flag, value in (("--video", args.video), ("--workers", args.workers)) if value]
    if given and read_run_info(locate_run(args.run_dir)[0]).settings.algo == "td3bc":
        raise UsageError(f"{', '.join(given)}: a Decision Transformer run's video and DataParallel threads; "
                         f"{args.run_dir} is a TD3+BC run (evaluated by plain rollouts on one thread)")
    evaluations = evaluate_run(args.run_dir, env=args.env, targets=args.targets, episodes=args.episodes,
                               seed=args.seed, progress=not (args.quiet or args.json), workers=args.workers,
                               temperature=args.temperature)
    print(json.dumps({"evaluations": evaluations}, indent=1) if args.json else format_evaluations(evaluations))
    if args.video:
        from .video import record_run

        clips = record_run(args.run_dir, args.video, [e["target_return"] for e in evaluations], args.env, args.seed,
                           args.temperature)
        print("clips:", *clips, file=sys.stderr)
    return 0


def cmd_reference_returns(args: argparse.Namespace) -> int:
    from .data import GYM_IDS, REF_MAX_SCORE, REF_MIN_SCORE, measure_reference_returns
    from .data.generate import generated_env

    try:
        name = generated_env(args.env)
    except ValueError as e:
        raise UsageError(f"--env: {e}")
    lo, hi = measure_reference_returns(name, args.episodes, args.seed, progress=not args.quiet)
    print(f"{GYM_IDS[name]} over {args.episodes} episodes (seed {args.seed}): random {lo:.6f}, expert {hi:.6f}")
    if name in REF_MIN_SCORE:
        print(f"minidt.data.scores uses: random {REF_MIN_SCORE[name]:.6f}, expert {REF_MAX_SCORE[name]:.6f}")
    else:
        print(f"minidt.data.scores has no reference returns for {name} yet")
    return 0


def cmd_study(args: argparse.Namespace) -> int:
    from .study.runner import StudyFailed, StudyInterrupted, default_out, format_report, run_study
    from .train import terminate_as_interrupt

    out = args.out or default_out(args.name, args.smoke)
    seeds = args.seeds or (2 if args.smoke else 3)
    resume = f"minidt study {args.name} --out {out} --seeds {seeds}{' --smoke' if args.smoke else ''}"
    try:
        with terminate_as_interrupt():  # SIGTERM as Ctrl-C: every running run writes a checkpoint first
            doc = run_study(args.name, out, seeds, args.smoke, progress=not args.quiet)
    except StudyFailed as e:
        print(f"minidt study: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:
        print(f"minidt study: interrupted{f' ({e})' if str(e) else ''}; resume with: {resume}", file=sys.stderr)
        return 130
    print(format_report(doc, out))
    return 0


# --- the parsers -------------------------------------------------------------------------------------------------

def add_parity(sub: argparse._SubParsersAction) -> None:
    q = sub.add_parser("parity", help="cross-check every output and gradient against transformers")
    q.add_argument("--config", metavar="FILE", help="a config.json (default: DecisionTransformerConfig())")
    q.add_argument("--checkpoint", metavar="DIR", help="a save_pretrained directory (minidt's or transformers')")
    q.add_argument("--dtype", choices=("float64", "float32"), default="float64",
                   help="minidt's dtype (default float64; float32 is compared with the float64 reference)")
    q.add_argument("--batch", type=positive_int, default=4, metavar="B", help="sequences per batch (default 4)")
    q.add_argument("--steps", type=positive_int, default=10, metavar="T",
                   help="timesteps per sequence, 3 tokens each (default 10)")
    q.add_argument("--seed", type=nonnegative_int, default=0, metavar="S",
                   help="seed of the weights and inputs (default 0)")


WORKERS_HELP = ("threads for minidt.DataParallel, each on a slice of the batch (default: the usable CPU cores on "
                "the numpy backend; 1 turns it off)")


def add_train(sub: argparse._SubParsersAction) -> None:
    from .settings import ALGOS, PRESETS, TD3BC_DEFAULTS, TrainSettings  # not minidt.data (slow: minari)

    d = TrainSettings()
    t = sub.add_parser("train", help="train a Decision Transformer (or BC, or TD3+BC) offline, then evaluate it at "
                       "several targets (BC, TD3+BC: once, with no target)")
    t.add_argument("--env", metavar="ENV", help=f"{d.env} (default), MountainCarContinuous-v0, InvertedPendulum-v5; "
                   "with discrete actions CartPole-v1, Acrobot-v1, MountainCar-v0, minidt/KeyToDoor-v0 (the paper's "
                   "credit-assignment task); or the environment of a D4RL/Minari dataset")
    t.add_argument("--dataset", metavar="TIER|PATH|MINARI_ID",
                   help="a generated tier (random, medium, expert, medium-replay, full-replay, medium-expert; "
                        f"default {d.dataset}, Key-to-Door random), a D4RL .hdf5 file, a Minari dataset directory, "
                        "or a local Minari id")
    t.add_argument("--dataset-episodes", type=positive_int, metavar="N",
                   help="episodes of a generated tier (default 200, Key-to-Door 10,000; the paper's smaller "
                        "Key-to-Door dataset: 1000)")
    t.add_argument("--algo", choices=ALGOS, help="dt, the Decision Transformer (default); bc, behaviour cloning: "
                   "the same model with its return input zeroed, evaluated once with no target; td3bc, TD3+BC "
                   "(Fujimoto & Gu 2021), the TD-learning baseline, continuous actions only, the paper's "
                   f"hyperparameters (hidden {TD3BC_DEFAULTS['hidden_size']}, lr {TD3BC_DEFAULTS['lr']:g}, batch "
                   f"{TD3BC_DEFAULTS['batch_size']}) for {TD3BC_DEFAULTS['steps']:,} steps by default; not with "
                   "--preset or --workers")
    t.add_argument("--top-percent", type=percentage, metavar="X",
                   help="train on the best X %% of the episodes by return (default 100; with --algo bc, the "
                        "paper's %%BC; equal returns are never split: Key-to-Door's X < 100 keeps its successes)")
    t.add_argument("--preset", choices=tuple(PRESETS),
                   help="quick (minutes on a CPU; default) or paper (the paper's model and schedule)")
    t.add_argument("--steps", type=positive_int, metavar="N",
                   help=f"training steps in all (default: the preset's, quick {d.steps:,}, paper "
                        f"{PRESETS['paper']['steps']:,}); with --resume, the total to reach counting the steps "
                        "already done, not steps on top")
    t.add_argument("--out", metavar="DIR", help="run directory (default runs/ENV-DATASET-TIME); one that holds a "
                   "run is refused unless --force")
    t.add_argument("--force", action="store_true",
                   help="replace the run in --out (its files are deleted once the new run has its data and model)")
    t.add_argument("--seed", type=nonnegative_int, metavar="S",
                   help=f"seed of the weights, batches and dropout (default {d.seed})")
    t.add_argument("--backend", choices=("numpy", "cupy", "strict"),
                   help="numpy (default, CPU), cupy (a CUDA GPU), strict (array_api_strict, for testing)")
    t.add_argument("--eval-episodes", type=nonnegative_int, metavar="N",
                   help=f"episodes per target in the final evaluation (default {d.final_eval_episodes}; 0 skips it)")
    t.add_argument("--checkpoint-every", type=positive_int, metavar="N",
                   help=f"write a checkpoint every N steps (default {d.checkpoint_every}; also at the end, and on "
                        "Ctrl-C or SIGTERM)")
    t.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its latest checkpoint, with its "
                   "settings (--steps, --eval-episodes and --checkpoint-every may change)")
    t.add_argument("--workers", type=positive_int, metavar="N", help=WORKERS_HELP)
    t.add_argument("--delayed-rewards", action="store_true", default=None,
                   help="move every episode's rewards to its last step (the return is unchanged), as the paper's "
                        "delayed-reward experiment (Table 7)")
    t.add_argument("--quiet", action="store_true", help="no start-up summary, no progress bars")


def add_generate(sub: argparse._SubParsersAction) -> None:
    g = sub.add_parser("generate", help="generate (or find in the cache) an offline dataset, in Minari's format")
    g.add_argument("--env", required=True, help="pendulum (Pendulum-v1), mountaincar (MountainCarContinuous-v0), "
                   "invertedpendulum (InvertedPendulum-v5, needs the mujoco extra); with discrete actions: cartpole "
                   "(CartPole-v1), acrobot (Acrobot-v1), mountaincar-discrete (MountainCar-v0), keytodoor "
                   "(minidt/KeyToDoor-v0)")
    g.add_argument("--tier", required=True, help="random, medium, expert, medium-replay, full-replay, medium-expert")
    g.add_argument("--episodes", type=positive_int, metavar="N",
                   help="episodes (default 200, Key-to-Door 10,000; medium-expert holds twice as many)")
    g.add_argument("--seed", type=nonnegative_int, default=0, metavar="S",
                   help="episode i is seeded by (seed, tier, i) (default 0)")
    g.add_argument("--quiet", action="store_true", help="no progress bar")


def add_evaluate(sub: argparse._SubParsersAction) -> None:
    from .settings import EVAL_SEED

    e = sub.add_parser("evaluate", help="return-conditioned evaluation of a trained run at several targets")
    e.add_argument("run_dir", metavar="RUN_DIR", help="a directory written by minidt train (its latest model), or "
                   "one of its checkpoints/step-N folders")
    e.add_argument("--env", help="the environment (default: the run's)")
    e.add_argument("--targets", type=finite_float, nargs="+", metavar="R",
                   help="target returns (default: 7 from the run's dataset: 5 spanning its returns, the mean of its "
                        "best 10%% of episodes, and one a quarter of the range beyond its best; Key-to-Door: 0, "
                        "0.25, 0.5, 0.75, 1; a BC run takes none)")
    e.add_argument("--temperature", type=nonnegative_float, default=0.0, metavar="T",
                   help="a discrete model's actions: 0 takes the argmax of its logits (default); T > 0 samples from "
                        "softmax(logits / T), episode j's draws seeded like its environment (the same seed, the same "
                        "episode)")
    e.add_argument("--episodes", type=positive_int, default=20, metavar="N", help="episodes per target (default 20)")
    e.add_argument("--seed", type=nonnegative_int, default=EVAL_SEED, metavar="S",
                   help=f"episode j of every target is seeded seed + j (default {EVAL_SEED})")
    e.add_argument("--workers", type=positive_int, metavar="N", help=WORKERS_HELP)
    e.add_argument("--json", action="store_true", help="print JSON instead of a table")
    e.add_argument("--video", metavar="DIR", help="also write one GIF per target (its episode seeded --seed) and "
                   "all of them side by side into DIR")
    e.add_argument("--quiet", action="store_true", help="no progress bar")


def add_reference_returns(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser("reference-returns", help="re-measure the random and expert returns that normalized "
                       "scores use, for a generated environment")
    r.add_argument("--env", required=True, help="pendulum, mountaincar, invertedpendulum, cartpole, acrobot, "
                   "mountaincar-discrete or keytodoor (or their gymnasium ids)")
    r.add_argument("--episodes", type=positive_int, default=1000, metavar="N",
                   help="episodes per policy (default 1000, as in scores.py)")
    r.add_argument("--seed", type=nonnegative_int, default=0, metavar="S",
                   help="seed of the episodes, as in minidt generate (default 0)")
    r.add_argument("--quiet", action="store_true", help="no progress bar")


def add_study(sub: argparse._SubParsersAction) -> None:
    from .study import STUDIES  # the names only: the studies' modules load when one runs

    s = sub.add_parser("study", help="check one of the paper's claims: train a study's runs over seeds, evaluate "
                       "them, print the paper's numbers beside ours, write study.json and a figure")
    s.add_argument("name", metavar="NAME", choices=tuple(STUDIES),
                   help=f"one of {', '.join(STUDIES)} (what each runs: docs/studies.md)")
    s.add_argument("--out", metavar="DIR", help="where study.json, the figure and the runs go (default "
                   "runs/studies/NAME, -smoke with --smoke); the same command with the same DIR resumes an "
                   "interrupted study")
    s.add_argument("--seeds", type=positive_int, metavar="N",
                   help="training seeds per setting, 0 to N-1 (default 3; with --smoke 2)")
    s.add_argument("--smoke", action="store_true", help="tiny datasets, models and runs: seconds, for CI (the "
                   "numbers mean nothing)")
    s.add_argument("--quiet", action="store_true", help="no start-up summary, no progress bar")


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "parity": cmd_parity, "train": cmd_train, "generate": cmd_generate, "evaluate": cmd_evaluate,
    "reference-returns": cmd_reference_returns, "study": cmd_study}


def build_parser() -> ArgumentParser:
    from . import __version__

    p = ArgumentParser(prog="minidt", description="The Decision Transformer from first principles.")
    p.add_argument("--version", action="version", version=f"minidt {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p.commands = sub.choices  # name -> its parser: main() reports an unknown flag as that command's error
    for add in (add_parity, add_train, add_generate, add_evaluate, add_reference_returns, add_study):
        add(sub)

    from .coursework.cli import add_parsers as add_coursework_parsers  # minidt assignment, minidt grade
    COMMANDS.update(add_coursework_parsers(sub))
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args, unknown = parser.parse_known_args(argv)
        if unknown:
            parser.commands[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    except SystemExit as e:  # --help, --version, or a flag argparse refused (one line: ArgumentParser.error)
        return int(e.code or 0)
    try:
        return COMMANDS[args.command](args)
    except BrokenPipeError:  # `minidt parity | head`: the reader left; not an error of ours
        sys.stderr.close()
        return 0
    except (UsageError, ValueError) as e:  # the library's checks raise ValueError with a one-line message
        message = " ".join(str(e).split("\n"))
    except OSError as e:  # a file that cannot be read or written
        message = f"{e.filename}: {e.strerror}" if e.filename and e.strerror else str(e)
    except KeyboardInterrupt:
        print(f"minidt {args.command}: interrupted", file=sys.stderr)
        return 130
    print(f"minidt {args.command}: error: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
