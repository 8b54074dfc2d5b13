"""`minidt study NAME`: plan a study's runs, run them in a pool of processes (one per usable core, one thread
each, longest first) with a progress bar, then write its table, study.json and figure.

    OUT/study.json      the settings, every run's result, the table, the wall time, the machine and its load
    OUT/NAME.png        the figure
    OUT/runs/RUN/       each run's directory (minidt train's files, and study-result.json once finished)

An interrupted study resumes with the same command: finished runs are kept, a run stopped mid-training resumes
from its latest checkpoint, one stopped before its first checkpoint trains again (study/worker.py).
"""

from __future__ import annotations

import json
import os
import platform
import queue
import signal
import tempfile
import time
from dataclasses import asdict
from multiprocessing import connection, get_context
from pathlib import Path
from typing import Any

from ..files import atomic_write_text, read_json
from . import STUDIES, study_module
from .plan import Run, makespan, run_seconds
from .table import Table
from .worker import RESULT, child, same_settings

POLL_SECONDS = 1.0  # how often the progress bar reads the running runs' metrics.jsonl


class StudyInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM: the running runs were stopped at a checkpoint; the same command resumes."""


class StudyFailed(RuntimeError):
    """A run failed (its message names it); the other runs finished and are kept."""


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def default_out(name: str, smoke: bool) -> Path:
    return Path("runs") / "studies" / (f"{name}-smoke" if smoke else name)


def check_out(out: Path, name: str, smoke: bool) -> None:
    """out can take this study: not a file (nor under one), writable, and holding no other study (nor this one
    at the other size). Creates nothing."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out: {out} is a file, expected a directory")
    existing = out.absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"--out: {out} is under {existing}, which is a file")
    try:  # os.access says yes to root on a read-only mount: making something is the real test
        os.rmdir(tempfile.mkdtemp(dir=existing, prefix=".minidt-"))
    except OSError as e:
        raise ValueError(f"--out: cannot write in {existing} ({e.strerror})") from None
    if (out / "study.json").is_file():
        try:
            have = read_json(out / "study.json")
            have_name, have_smoke = have["study"], have["smoke"]
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"--out: {out / 'study.json'} is not a study's ({e}); use another --out") from None
        if (have_name, have_smoke) != (name, smoke):
            what = f"{have_name}{' (smoke)' if have_smoke else ''}"
            raise ValueError(f"--out: {out} holds the study {what}, not {name}{' (smoke)' if smoke else ''}; use "
                             "another --out")


def prepare_datasets(runs: list[Run], progress: bool) -> None:
    """Generate every generated tier the runs train on, once, before the workers start (two workers must not
    generate the same dataset side by side)."""
    from ..data import TIERS, generate_dataset

    for env, tier, episodes in dict.fromkeys((r.settings.env, r.settings.dataset, r.settings.dataset_episodes)
                                             for r in runs if r.settings.dataset in TIERS):
        generate_dataset(env, tier, episodes, progress=progress)


def steps_done(run_dir: Path) -> int:
    """The last step a running run logged (metrics.jsonl), for the progress bar."""
    from ..runs import read_metrics

    logged = [r["step"] for r in read_metrics(run_dir) if "loss" in r or "critic_loss" in r]
    return max(logged, default=0)


def run_pool(todo: list[Run], runs_dir: Path, workers: int, results: dict[str, dict], total_steps: int,
             progress: bool) -> list[float]:
    """Run `todo` in at most `workers` processes at a time, longest predicted first; put each result into
    `results`. Returns the 1-minute load averages sampled on the way. StudyInterrupted on Ctrl-C or SIGTERM
    (every running run gets one SIGINT and writes a checkpoint first); StudyFailed once all have ended, if any
    failed."""
    from tqdm import tqdm

    ctx = get_context("fork")  # not spawn: a tutorial run as a script would be re-executed in every worker
    messages = ctx.Queue()
    pending = sorted(todo, key=run_seconds, reverse=True)
    running: dict[str, tuple[Any, Run]] = {}
    failed: dict[str, str] = {}
    loads: list[float] = []
    finished_steps = sum(r["steps"] for r in results.values())
    bar = tqdm(total=total_steps, initial=finished_steps, desc="study", unit="step", dynamic_ncols=True,
               disable=not progress)
    try:
        while pending or running:
            while pending and len(running) < workers:
                run = pending.pop(0)
                p = ctx.Process(target=child, args=(run, runs_dir / run.name, messages), name=run.name)
                p.start()
                running[run.name] = (p, run)
            connection.wait([p.sentinel for p, _ in running.values()], timeout=POLL_SECONDS)
            loads.append(os.getloadavg()[0])
            for name, (p, run) in list(running.items()):
                if p.exitcode is None:
                    continue
                p.join()
                del running[name]
                if p.exitcode == 0:
                    results[name] = read_json(runs_dir / name / RESULT)
                    finished_steps += run.settings.steps
                    r = results[name]
                    bar.write(f"{name}: {r['label']} {r['score']:.1f} ({r['status']}, {r['run_seconds']:.0f} s)")
                else:
                    failed[name] = f"exit status {p.exitcode}"
            drain(messages, failed, wait=0.0)
            bar.n = finished_steps + sum(steps_done(runs_dir / n) for n in running)
            bar.refresh()
    except KeyboardInterrupt:
        for p, _ in running.values():
            os.kill(p.pid, signal.SIGINT)  # once: the run finishes its step and writes a checkpoint
        for p, _ in running.values():
            p.join()
        raise StudyInterrupted(f"{len(results)} runs finished, {len(running)} stopped at a checkpoint") from None
    finally:
        bar.close()
    drain(messages, failed, wait=0.2)  # a failed run's message may come in just after its process ended
    if failed:
        listed = "; ".join(f"{name}: {message}" for name, message in failed.items())
        raise StudyFailed(f"{len(failed)} of {len(todo)} runs failed ({listed}); the others are kept: the same "
                          "command runs the failed ones again")
    return loads


def drain(messages: Any, failed: dict[str, str], wait: float) -> None:
    """Move the failed runs' messages from the queue into `failed` (they replace "exit status 1")."""
    while True:
        try:
            name, message = messages.get(timeout=wait) if wait else messages.get_nowait()
        except queue.Empty:
            return
        failed[name] = message


def machine(workers: int, load_start: tuple, loads: list[float]) -> dict:
    """Where the study ran, and how busy the machine was (the wall time means little under load)."""
    model = ""
    if Path("/proc/cpuinfo").is_file():
        model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("model name")), "")
    return {"processes": workers, "usable_cores": usable_cores(), "cpu_count": os.cpu_count(), "cpu": model,
            "platform": platform.platform(), "python": platform.python_version(),
            "load_average_start": list(load_start), "load_average_end": list(os.getloadavg()),
            "load_1min_max": max(loads, default=None), "load_1min_mean": sum(loads) / len(loads) if loads else None}


def duration(seconds: float) -> str:
    return (f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min" if seconds < 7200
            else f"{seconds / 3600:.2f} h")


def run_study(name: str, out: "str | os.PathLike | None" = None, seeds: int = 3, smoke: bool = False,
              progress: bool = True, workers: int | None = None) -> dict:
    """Run the study `name` (one of STUDIES) with `seeds` seeds per setting into `out` (default
    runs/studies/NAME, -smoke with smoke), on `workers` processes (default: the usable cores). Writes
    OUT/study.json and OUT/NAME.png and returns what study.json holds. Bad input is a ValueError naming the
    argument, raised before anything runs."""
    from .. import __version__

    if name not in STUDIES:
        raise ValueError(f"NAME: expected one of {', '.join(STUDIES)}, got {name!r}")
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"--seeds: expected an integer >= 1, got {seeds!r}")
    workers = workers or usable_cores()
    out = Path(out) if out is not None else default_out(name, smoke)
    check_out(out, name, smoke)
    study = study_module(name)
    config = study.config(smoke)
    runs = study.plan(config, seeds)
    runs_dir = out / "runs"
    for run in runs:
        same_settings(run, runs_dir / run.name)
    results = {r.name: {**read_json(runs_dir / r.name / RESULT), "status": "kept"} for r in runs
               if (runs_dir / r.name / RESULT).is_file()}
    todo = [r for r in runs if r.name not in results]
    estimate = makespan([run_seconds(r) for r in todo], workers)
    if progress:
        print(f"study {name}{' (smoke)' if smoke else ''}: {study.TITLE}\n{len(runs)} runs ({len(results)} kept "
              f"from before), {seeds} seeds; {workers} processes, one thread each; estimated "
              f"{duration(estimate)} on idle cores (from the step times in minidt/study/plan.py)\nout: {out}",
              flush=True)
    load_start = os.getloadavg()
    t0 = time.perf_counter()
    prepare_datasets(todo, progress)
    out.mkdir(parents=True, exist_ok=True)
    loads = run_pool(todo, runs_dir, workers, results, sum(r.settings.steps for r in runs), progress)
    extra = study.extra(config, seeds)
    ordered = [{"settings": asdict(r.settings), **results[r.name]} for r in runs]
    table: Table = study.table(config, ordered, extra)
    wall = time.perf_counter() - t0
    doc = {"study": name, "title": study.TITLE, "smoke": smoke, "seeds": seeds, "config": config,
           "table": table.to_dict(), "wall_seconds": wall, "estimated_seconds": estimate,
           "runs_kept": sum(r["status"] == "kept" for r in results.values()), "machine": machine(workers,
           load_start, loads), "minidt": __version__, "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
           "extra": extra, "runs": ordered}
    atomic_write_text(out / "study.json", json.dumps(doc, indent=1))
    study.figure(doc, out / f"{name}.png")
    return doc


def format_report(doc: dict, out: "str | os.PathLike") -> str:
    """What `minidt study` prints at the end: the table, the wall time with the machine's load, the files."""
    m = doc["machine"]
    load = ", ".join(f"{x:.2f}" for x in m["load_average_start"])
    n = doc["runs_kept"]
    kept = f"; {n} run{'s' if n > 1 else ''} kept from an earlier start" if n else ""
    return (f"{Table.from_dict(doc['table']).text()}\n"
            f"wall time {duration(doc['wall_seconds'])} on {m['processes']} processes (estimated "
            f"{duration(doc['estimated_seconds'])}; load average at the start {load}){kept}\n"
            f"wrote {Path(out) / 'study.json'} and {Path(out) / (doc['study'] + '.png')}")
