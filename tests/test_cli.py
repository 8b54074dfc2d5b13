"""The command line: every bad invocation is exit 2 with at most two lines on stderr naming the flag or file, no
traceback, and nothing long done first (no dataset generated, no model built); every flag has help text;
`minidt --version`; `python -m minidt` is `minidt`."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import minidt
from minidt.cli import build_parser, main
from minidt.td3bc.train import train_td3bc
from tiny_runs import cartpole_hdf5, pendulum_hdf5, tiny_run, tiny_settings

ROOT = Path(__file__).resolve().parents[1]


def _cupy_missing() -> bool:
    try:
        import cupy  # noqa: F401
    except ImportError:
        return True
    return False


@pytest.fixture(scope="module")
def paths(tmp_path_factory) -> dict[str, str]:
    """A finished tiny run and damaged copies of it, a few files that are not what a flag expects."""
    tmp = tmp_path_factory.mktemp("cli")
    data = pendulum_hdf5(tmp / "pendulum-random.hdf5", episodes=2)
    run = tiny_run(tmp / "run", data)  # steps 1 and 2 checkpointed
    bcrun = tiny_run(tmp / "bcrun", data, algo="bc")
    cartpole = cartpole_hdf5(tmp / "cartpole-random.hdf5")
    cartpolerun = tiny_run(tmp / "cartpolerun", cartpole, env="CartPole-v1")
    td3bc_run = tmp / "td3bc-run"
    train_td3bc(tiny_settings(data, algo="td3bc", batch_size=8), td3bc_run, progress=False)

    def damaged(name: str, damage) -> str:
        copy = tmp / name
        shutil.copytree(run, copy)
        damage(copy)
        return str(copy)

    def edit_json(rel: str, change):
        def damage(d: Path) -> None:
            obj = json.loads((d / rel).read_text())
            change(obj)
            (d / rel).write_text(json.dumps(obj))
        return damage

    def replace_with_dir(rel: str):
        def damage(d: Path) -> None:
            (d / rel).unlink()
            (d / rel).mkdir()
        return damage

    (tmp / "a-file").write_text("not a directory\n")
    (tmp / "empty-dir").mkdir()
    (tmp / "text.hdf5").write_text("not hdf5\n")
    (tmp / "bad.json").write_text("{not json")
    import h5py
    with h5py.File(tmp / "no-keys.hdf5", "w") as f:
        f["observations"] = [[0.0, 0.0, 0.0]]
    ckpt = tmp / "corrupt-ckpt"
    shutil.copytree(run / "checkpoints" / "step-0000002", ckpt)
    (ckpt / "model.safetensors").write_bytes((ckpt / "model.safetensors").read_bytes()[:100])
    return {
        "tmp": str(tmp), "data": str(data), "run": str(run), "file": str(tmp / "a-file"), "bcrun": str(bcrun),
        "cartpole": str(cartpole), "cartpolerun": str(cartpolerun), "td3bc": str(td3bc_run),
        "emptydir": str(tmp / "empty-dir"), "texthdf5": str(tmp / "text.hdf5"), "badjson": str(tmp / "bad.json"),
        "nokeys": str(tmp / "no-keys.hdf5"), "corruptckpt": str(ckpt),
        "ckpt1": str(run / "checkpoints" / "step-0000001"),
        "runjson_bad": damaged("runjson-bad", lambda d: (d / "run.json").write_text("{oops")),
        "runjson_list": damaged("runjson-list", lambda d: (d / "run.json").write_text("[1, 2]")),
        "runjson_binary": damaged("runjson-binary", lambda d: (d / "run.json").write_bytes(b"\xff\xfe\x00")),
        "runjson_dir": damaged("runjson-dir", replace_with_dir("run.json")),
        "runjson_nokeys": damaged("runjson-nokeys", edit_json("run.json", lambda o: o.pop("preprocess"))),
        "runjson_unknown": damaged("runjson-unknown", edit_json("run.json", lambda o: o["settings"].update(x=1))),
        "runjson_steps0": damaged("runjson-steps0", edit_json("run.json", lambda o: o["settings"].update(steps=0))),
        "runjson_noreturns": damaged("runjson-noreturns",
                                     edit_json("run.json", lambda o: o["dataset_returns"].update(all=[]))),
        "trainer_bad": damaged("trainer-bad", lambda d: (d / "checkpoints/step-0000002/trainer_state.json")
                               .write_text("{")),
        "trainer_nostep": damaged("trainer-nostep", edit_json("checkpoints/step-0000002/trainer_state.json",
                                                              lambda o: o.pop("step"))),
        "latest_dangling": damaged("latest-dangling", lambda d: (d / "latest").write_text("checkpoints/step-9\n")),
        "latest_missing": damaged("latest-missing", lambda d: (d / "latest").unlink()),
        "config_dir": damaged("config-dir", replace_with_dir("config.json")),
        "config_bad": damaged("config-bad", lambda d: (d / "config.json").write_text("{")),
        "weights_cut": damaged("weights-cut", lambda d: (d / "model.safetensors").write_bytes(b"\x08\x00")),
    }


# (argv, a piece of the message: the flag or the file it names). {name} is a path from the fixture above.
CASES = [
    # minidt train: flags
    ("train --env FrozenLake-v1", "observation space is Discrete(16)"),
    ("train --env FrozenLake-v1", "--env FrozenLake-v1"),
    ("train --env NoSuchEnv-v0", "--env NoSuchEnv-v0"),
    ("train --algo cql", "--algo"),
    ("train --algo", "--algo"),
    ("train --top-percent 0", "--top-percent"),
    ("train --top-percent 101", "--top-percent"),
    ("train --top-percent nan", "--top-percent"),
    ("train --top-percent ten", "--top-percent"),
    ("train --dataset-episodes 0", "--dataset-episodes"),
    ("train --dataset {data} --dataset-episodes 5", "--dataset-episodes"),
    ("train --steps 0", "--steps"),
    ("train --steps -5", "--steps"),
    ("train --steps many", "--steps"),
    ("train --steps 1.5", "--steps"),
    ("train --eval-episodes -1", "--eval-episodes"),
    ("train --seed -1", "--seed"),
    ("train --seed x", "--seed"),
    ("train --checkpoint-every 0", "--checkpoint-every"),
    ("train --workers 0", "--workers"),
    ("train --workers two", "--workers"),
    ("train --checkpoint-every -2", "--checkpoint-every"),
    ("train --preset huge", "--preset"),
    ("train --backend tpu", "--backend"),
    ("train --no-such-flag", "--no-such-flag"),
    ("train extra", "extra"),
    # minidt train: datasets
    ("train --dataset superb", "superb"),
    ("train --dataset missing.hdf5", "missing.hdf5"),
    ("train --dataset {emptydir}", "{emptydir}"),
    ("train --dataset {texthdf5}", "{texthdf5}"),
    ("train --dataset {nokeys}", "{nokeys}"),
    ("train --dataset {badjson}", "{badjson}"),
    ("train --dataset medium --env Hopper-v5", "Hopper-v5"),
    ("train --dataset nobody/nothing-v0", "nobody/nothing-v0"),
    ("train --dataset {data} --env MountainCarContinuous-v0", "--dataset"),
    ("train --dataset {data} --env CartPole-v1", "continuous actions of size 1, but CartPole-v1 has"),
    ("train --dataset {cartpole} --env Pendulum-v1", "2 discrete actions, but Pendulum-v1 has"),
    ("train --dataset {cartpole} --env MountainCar-v0", "--dataset"),
    # minidt train: --out
    ("train --out {file}", "{file}"),
    ("train --out {file}/run", "{file}"),
    ("train --out /sys/minidt-run", "--out"),
    ("train --out {run}", "--resume {run}"),
    ("train --out {run} --dataset {data}", "--force"),
    # minidt train: --resume
    ("train --resume .", "--resume"),
    ("train --resume {tmp}/nowhere", "{tmp}/nowhere"),
    ("train --resume {emptydir}", "{emptydir}"),
    ("train --resume {runjson_bad}", "{runjson_bad}/run.json"),
    ("train --resume {runjson_list}", "{runjson_list}/run.json"),
    ("train --resume {runjson_binary}", "{runjson_binary}/run.json"),
    ("train --resume {runjson_dir}", "{runjson_dir}/run.json"),
    ("train --resume {runjson_nokeys}", "{runjson_nokeys}/run.json"),
    ("train --resume {runjson_unknown}", "{runjson_unknown}/run.json"),
    ("train --resume {runjson_steps0}", "{runjson_steps0}/run.json"),
    ("train --resume {trainer_bad}", "trainer_state.json"),
    ("train --resume {trainer_nostep}", "trainer_state.json"),
    ("train --resume {latest_dangling}", "{latest_dangling}/latest"),
    ("train --resume {latest_missing}", "--resume"),
    ("train --resume {run} --env MountainCarContinuous-v0", "--env MountainCarContinuous-v0"),
    ("train --resume {run} --dataset expert", "--dataset expert"),
    ("train --resume {run} --preset paper", "--preset paper"),
    ("train --resume {run} --backend strict", "--backend strict"),
    ("train --resume {run} --seed 99", "--seed 99"),
    ("train --resume {run} --algo bc", "--algo bc"),
    ("train --resume {run} --top-percent 10", "--top-percent 10"),
    ("train --resume {run} --dataset-episodes 9", "--dataset-episodes 9"),
    ("train --resume {run} --out {tmp}/elsewhere", "--out"),
    ("train --resume {run} --force", "--force"),
    ("train --resume {run} --steps 1", "--steps"),
    ("train --resume", "--resume"),
    ("train --resume {run} --algo td3bc", "--algo td3bc"),
    ("train --resume {run} --delayed-rewards", "--delayed-rewards"),
    ("train --resume {td3bc} --workers 2", "--workers 2"),
    ("train --resume {td3bc} --algo dt", "--algo dt"),
    # minidt train --algo td3bc
    ("train --algo td3bc --env CartPole-v1", "TD3+BC"),
    ("train --algo td3bc --env CartPole-v1", "Discrete(2)"),
    ("train --algo td3bc --preset paper", "--preset paper"),
    ("train --algo td3bc --preset quick", "--preset quick"),
    ("train --algo td3bc --workers 2", "--workers 2"),
    ("train --algo sac", "--algo"),
    ("train --algo td3bc --out {run}", "--resume {run}"),
    ("train --algo td3bc --dataset {data} --env MountainCarContinuous-v0", "--dataset"),
    # minidt evaluate
    ("evaluate", "RUN_DIR"),
    ("evaluate .", "RUN_DIR"),
    ("evaluate {tmp}/nowhere", "{tmp}/nowhere"),
    ("evaluate {file}", "{file}"),
    ("evaluate {run}/checkpoints/step-0000009", "step-0000009"),
    ("evaluate {run} --episodes 0", "--episodes"),
    ("evaluate {run} --workers 0", "--workers"),
    ("evaluate {run} --episodes -1", "--episodes"),
    ("evaluate {run} --targets nan", "--targets"),
    ("evaluate {run} --targets inf", "--targets"),
    ("evaluate {run} --targets -1e999", "--targets"),
    ("evaluate {run} --targets high", "--targets"),
    ("evaluate {run} --targets", "--targets"),
    ("evaluate {run} --seed -1", "--seed"),
    ("evaluate {run} --env CartPole-v1", "--env: CartPole-v1 has observations of size 4 and discrete actions 2"),
    ("evaluate {cartpolerun} --env Pendulum-v1", "--env: Pendulum-v1"),
    ("evaluate {run} --temperature -1", "--temperature"),
    ("evaluate {run} --temperature nan", "--temperature"),
    ("evaluate {run} --temperature inf", "--temperature"),
    ("evaluate {run} --temperature hot", "--temperature"),
    ("evaluate {run} --temperature 0.5", "--temperature: the model predicts continuous actions"),
    ("evaluate {cartpolerun} --temperature -0.1", "--temperature"),
    ("evaluate {bcrun} --targets 1", "--targets: {bcrun} is a behaviour-cloning run (BC)"),
    ("evaluate {run} --env NoSuchEnv-v0", "--env NoSuchEnv-v0"),
    ("evaluate {run} --env MountainCarContinuous-v0", "--env"),
    ("evaluate {runjson_nokeys}", "{runjson_nokeys}/run.json"),
    ("evaluate {runjson_bad}", "{runjson_bad}/run.json"),
    ("evaluate {runjson_noreturns}", "{runjson_noreturns}/run.json"),
    ("evaluate {config_dir}", "config.json"),
    ("evaluate {config_bad}", "config.json"),
    ("evaluate {weights_cut}", "model.safetensors"),
    ("evaluate {td3bc} --targets 1", "--targets"),
    ("evaluate {td3bc} --video {tmp}/clips", "--video"),
    ("evaluate {td3bc} --workers 2", "--workers 2"),
    ("evaluate {td3bc} --env MountainCarContinuous-v0", "TD3+BC run"),
    # minidt parity
    ("parity --batch 0", "--batch"),
    ("parity --batch -3", "--batch"),
    ("parity --steps 0", "--steps"),
    ("parity --steps -1", "--steps"),
    ("parity --seed -1", "--seed"),
    ("parity --dtype float16", "--dtype"),
    ("parity --config {tmp}/missing.json", "missing.json"),
    ("parity --config {emptydir}", "{emptydir}"),
    ("parity --config {badjson}", "{badjson}"),
    ("parity --checkpoint {tmp}/nowhere", "--checkpoint"),
    ("parity --checkpoint {corruptckpt}", "{corruptckpt}"),
    ("parity --config {badjson} --checkpoint {run}", "--checkpoint"),
    # minidt generate, reference-returns
    ("generate --env pendulum --tier legendary", "legendary"),
    ("generate --env lunarlander --tier expert", "lunarlander"),
    ("generate --env pendulum --tier expert --episodes 0", "--episodes"),
    ("generate --env pendulum --tier expert --seed -1", "--seed"),
    ("generate --env pendulum", "--tier"),
    ("reference-returns --env pendulum --episodes 0", "--episodes"),
    ("reference-returns --env pendulum --seed -2", "--seed"),
    ("reference-returns --env hopper", "hopper"),
    # minidt assignment start: where the file cannot be written
    ("assignment start layernorm {file}", "{file}"),
    ("assignment start layernorm {file}/sub", "{file}/sub"),
    ("assignment start layernorm /sys/minidt-assignment", "/sys/minidt-assignment"),
    # the command itself
    ("", "COMMAND"),
    ("fly", "fly"),
    ("train --eval 3", "--eval"),
]
if _cupy_missing():
    CASES.append(("train --backend cupy", "--backend cupy"))


@pytest.fixture
def no_long_work(monkeypatch, tmp_path):
    """Generating a dataset or building a model fails the test: bad input must be found before either."""
    import minidt.data.readers
    import minidt.td3bc.train
    import minidt.train

    def refuse(what):
        def f(*args, **kwargs):
            raise AssertionError(f"{what} started before the input was checked")
        return f

    monkeypatch.setattr(minidt.data.readers, "generate_dataset", refuse("dataset generation"))
    monkeypatch.setattr(minidt.train, "build_model", refuse("building the model"))
    monkeypatch.setattr(minidt.td3bc.train, "build_agent", refuse("building the TD3+BC networks"))
    monkeypatch.chdir(tmp_path)  # a default run directory would land here: it must not be made
    monkeypatch.setenv("MINIDT_CACHE", str(tmp_path / "cache"))


@pytest.mark.parametrize("argv, names", CASES, ids=[" ".join(c) for c in CASES])
def test_bad_invocation_is_one_or_two_lines_and_exit_2(paths, no_long_work, capsys, tmp_path, argv, names):
    argv = argv.format(**paths).split()
    assert main(argv) == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert 1 <= len(lines) <= 2 and "Traceback" not in err, err
    assert names.format(**paths) in err, err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "cache").exists()


def test_at_least_60_cases():
    assert len(CASES) >= 60


def test_nothing_is_written_by_a_refused_run(paths, no_long_work, capsys):
    """A refused --out leaves the run that is there untouched."""
    before = {p: p.stat().st_mtime_ns for p in Path(paths["run"]).rglob("*")}
    assert main(["train", "--out", paths["run"], "--dataset", paths["data"]]) == 2
    assert {p: p.stat().st_mtime_ns for p in Path(paths["run"]).rglob("*")} == before


def test_the_installed_command_and_python_m(paths):
    """The real entry points: `python -m minidt` is `minidt`; an error has no traceback there either."""
    env = {**os.environ, "MINIDT_CACHE": paths["tmp"]}
    p = subprocess.run([sys.executable, "-m", "minidt", "--version"], capture_output=True, text=True, cwd=ROOT,
                       env=env, timeout=120)
    assert p.returncode == 0 and p.stdout.strip() == f"minidt {minidt.__version__}"
    p = subprocess.run([sys.executable, "-m", "minidt", "evaluate", paths["run"], "--targets", "nan"],
                       capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert p.returncode == 2 and len(p.stderr.splitlines()) == 1 and "--targets" in p.stderr, p.stderr
    p = subprocess.run([sys.executable, "-m", "minidt", "train", "--env", "CartPole-v1", "--dataset", paths["data"]],
                       capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert p.returncode == 2 and "Traceback" not in p.stderr and "discrete actions" in p.stderr, p.stderr


def walk(parser: argparse.ArgumentParser, prog: str = "minidt"):
    """(command, action) for every argument of every subcommand."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from walk(sub, f"{prog} {name}")
        else:
            yield prog, action


def test_every_flag_has_help():
    """Every flag of every command, and the positional arguments of the offline-RL commands and parity (the
    coursework's are minidt/coursework/cli.py's)."""
    own = {f"minidt {c}" for c in ("parity", "train", "generate", "evaluate", "reference-returns", "study")}
    missing = [f"{cmd} {'/'.join(a.option_strings) or a.dest}" for cmd, a in walk(build_parser())
               if not a.help and not isinstance(a, argparse._SubParsersAction) and (a.option_strings or cmd in own)]
    assert not missing, missing


def test_every_flag_is_in_the_book():
    """The book's reference pages name every flag: docs/cli.md the offline-RL commands' and parity's,
    docs/coursework.md the coursework's (`minidt assignment ...`, `minidt grade`)."""
    own = {f"minidt {c}" for c in ("parity", "train", "generate", "evaluate", "reference-returns", "study")}
    pages = {page: (ROOT / "docs" / page).read_text() for page in ("cli.md", "coursework.md")}
    missing = [f"{cmd} {flag}" for cmd, a in walk(build_parser()) for flag in a.option_strings
               if flag not in ("-h", "--help", "--version")
               and f"`{flag}" not in pages["cli.md" if cmd in own else "coursework.md"]
               and f"[{flag}" not in pages["cli.md" if cmd in own else "coursework.md"]]
    assert not missing, f"flags the book does not document: {missing}"


def test_help_says_what_evaluate_and_resume_do(capsys):
    """evaluate's default targets are as many as evaluation_targets makes; train --help says what --steps means
    on resume; the tiers in train --help are minidt.data's."""
    import numpy as np

    from minidt.data import TIERS
    from minidt.report import evaluation_targets

    assert main(["evaluate", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    n = len(evaluation_targets(np.linspace(-1000, 0, 200)))
    assert f"default: {n} from the run's dataset" in text and n == 7
    assert main(["train", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split()).replace("- ", "-")
    assert "with --resume, the total to reach" in text
    assert all(tier in text for tier in TIERS)


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"minidt {minidt.__version__}"
