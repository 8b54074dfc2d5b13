"""The prepared GPU check: one command that runs, on a machine with CuPy and a GPU and no internet, what the GPU path
must prove, and writes one report (DIR/gpu_check.json and DIR/gpu_check.md, rewritten after every part, so a run cut
short still leaves what it measured).

    python -m benchmarks.gpu_check --out DIR [--only PART,PART,...]

Parts, in this order (about 8 minutes in all on one GPU; each is timed):

    environment  versions, the GPU, and which packages the machine lacks (carry them as wheels: docs/gpu.md)
    tests        the backend tests of tests/ on cupy: every test that takes the `backend` or `device_backend` fixture
    twins        every fused kernel (minidt/kernels) against its NumPy twin on odd shapes, and the NVRTC checks
                 (benchmarks/gpu_kernels.py); on a GPU its [gpu] cases must run
    tutorial     tutorials/11_gpu_with_cupy.py at full size
    parity       training steps on the device against the same steps on NumPy, same weights and batches, no
                 dropout: loss, gradient norm and every gradient within 1e-10 (float64) or 1e-4 (float32), relative;
                 every parameter after AdamW within 1e-6 lr (float64) or 2 lr (float32). In lr: Adam divides by
                 sqrt(v), so a gradient that is zero in exact arithmetic (GPT-2's key bias: softmax ignores a score
                 shift) is round-off whose sign differs between the backends and moves its entry by up to lr. On a
                 GPU for the array-op path and again for the kernel path (MINIDT_KERNELS=1)
    determinism  with dropout: two identical runs, and a run resumed halfway from its saved state, equal bit for bit
                 (on a GPU for both paths)
    kernels      the review's findings 3-6 measured on the device: the dropout mask, the embedding backward (and
                 whether cupyx.scatter_add's atomics really differ run to run), vecdot, AdamW and clipping
    profile      kernels per paper-config step and GPU-busy time, minidt (both paths) and torch (torch.profiler,
                 CUDA activities); the kernel path's step captured as one CUDA graph, or what refused it
    benchmark    benchmarks.run item 6 against torch CUDA, before (array ops) and after (kernels), with the goals

DIR/readme_tables.md holds the tables benchmarks/README.md takes from a GPU run.

Without CuPy or a GPU it says why, and runs tests, tutorial, parity and determinism on the strict backend instead
(what CI checks of the same code); kernels and benchmark need the GPU. Exit status 1 when a part that ran failed.

Loaded as a pytest plugin (`pytest -p benchmarks.gpu_check`), this module keeps only the backend tests: that is how
the `tests` part runs them.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
import traceback
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout, too

from benchmarks.gpu_kernels import (kernels_on, part_kernels, part_profile, part_speed, part_twins,  # noqa: E402
                                    tables)

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("environment", "tests", "twins", "tutorial", "parity", "determinism", "kernels", "profile", "benchmark")
# import name -> distribution: what `pip install -e ".[test]"` would bring, and CuPy
PACKAGES = {"numpy": "numpy", "scipy": "scipy", "array_api_compat": "array-api-compat",
            "array_api_strict": "array-api-strict", "safetensors": "safetensors", "gymnasium": "gymnasium",
            "h5py": "h5py", "minari": "minari", "tqdm": "tqdm", "matplotlib": "matplotlib", "pytest": "pytest",
            "hypothesis": "hypothesis", "jupytext": "jupytext", "torch": "torch", "transformers": "transformers",
            "cupy": "cupy"}
FIXTURES = {"backend", "device_backend"}  # the kernels' twin tests run in their own part, twins
TIMEOUTS = {"tests": 300, "tutorial": 180}  # seconds, for the two subprocesses


def pytest_collection_modifyitems(config: Any, items: list) -> None:
    """As a pytest plugin: deselect every test that takes neither backend fixture (those run on NumPy anyway)."""
    keep = [item for item in items if FIXTURES & set(getattr(item, "fixturenames", ()))]
    config.hook.pytest_deselected(items=[item for item in items if item not in keep])
    items[:] = keep


# --- the device ----------------------------------------------------------------------------------------------------
def device_backend() -> tuple[str, str | None]:
    """("cupy", None) when CuPy runs a kernel on a GPU, else ("strict", why not)."""
    try:
        import minidt

        minidt.get_backend("cupy")
    except ImportError as e:  # a package minidt needs is missing: the environment part lists it
        return "strict", f"minidt does not import: {e}"
    except RuntimeError as e:
        return "strict", str(e)
    return "cupy", None


def synchronize(name: str) -> None:
    if name == "cupy":
        import cupy

        cupy.cuda.get_current_stream().synchronize()


# --- parts ---------------------------------------------------------------------------------------------------------
def part_environment(dev: str, why: str | None, out: Path) -> dict:
    versions, missing = {}, []
    for module, dist in PACKAGES.items():
        if importlib.util.find_spec(module) is None:
            missing.append(dist)
            continue
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:  # CuPy's distribution is cupy-cuda12x, cupy-cuda13x, ...
            versions[dist] = getattr(importlib.import_module(module), "__version__", "?")
    result = {"ok": not [m for m in missing if m != "cupy"], "device_backend": dev, "python": platform.python_version(),
              "machine": platform.machine(), "cpus": os.cpu_count(), "versions": versions, "missing": missing}
    if missing:
        result["advice"] = ("carry the missing packages as wheels (docs/gpu.md, 'Carrying wheels'): pip download them "
                            "on a machine with internet, install with pip install --no-index --target")
    if dev == "cupy":
        import cupy

        props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
        result["gpu"] = {"name": props["name"].decode(), "compute_capability": f"{props['major']}.{props['minor']}",
                         "memory_gib": round(props["totalGlobalMem"] / 2**30, 1),
                         "cuda_runtime": cupy.cuda.runtime.runtimeGetVersion(),
                         "cuda_driver": cupy.cuda.runtime.driverGetVersion()}
    else:
        result["cupy_unavailable"] = why
    return result


def part_tests(dev: str, why: str | None, out: Path) -> dict:
    xml = out / "tests.xml"
    cmd = [sys.executable, "-m", "pytest", "tests", "-q", "-p", "no:cacheprovider", "-p", "benchmarks.gpu_check",
           "--backend", dev, f"--junitxml={xml}"]
    env = {**os.environ, "MPLBACKEND": "Agg"}
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUTS["tests"])
    result = {"command": " ".join(cmd[1:]), "returncode": p.returncode, "output_tail": p.stdout[-3000:]}
    if xml.exists():
        suite = ET.parse(xml).getroot()
        suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
        counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
        failed = [f"{case.get('classname')}::{case.get('name')}: {(bad.get('message') or '')[:300]}"
                  for case in suite.iter("testcase") for bad in case if bad.tag in ("failure", "error")]
        result.update(counts, failed=failed)
    result["ok"] = p.returncode == 0 and result.get("tests", 0) > 0
    return result


def part_tutorial(dev: str, why: str | None, out: Path) -> dict:
    env = {**os.environ, "MPLBACKEND": "Agg", "MINIDT_FIGURES": str(out / "figures")}
    env.pop("MINIDT_SMOKE", None)
    p = subprocess.run([sys.executable, "tutorials/11_gpu_with_cupy.py"], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=TIMEOUTS["tutorial"])
    return {"ok": p.returncode == 0, "returncode": p.returncode, "output_tail": (p.stdout + p.stderr)[-3000:]}


def paper_config(**overrides: Any):
    from benchmarks.run import PAPER
    from minidt import DecisionTransformerConfig

    return DecisionTransformerConfig(**{**PAPER, "activation_function": "gelu", "action_tanh": True, **overrides})


def host_batch(config: Any, B: int, K: int, seed: int) -> dict[str, np.ndarray]:
    """A training batch as the sampler makes it (host arrays, left-padded), float64."""
    from minidt.parity import make_inputs

    x = make_inputs(config, B, K, seed)
    x["rewards"] = None
    return x


def trainer(config: Any, dtype: str, backend: str, seed: int = 0):
    from minidt import DecisionTransformerModel
    from minidt.optim import AdamW, LinearWarmup, param_groups_no_decay

    model = DecisionTransformerModel(config, dtype=dtype, seed=seed, backend=backend)
    opt = AdamW(param_groups_no_decay(model.named_parameters(), 1e-4), lr=LR, weight_decay=1e-4)
    return model, opt, LinearWarmup(opt, 1)


LR = 1e-3


def part_parity(dev: str, why: str | None, out: Path) -> dict:
    """One to three training steps on both backends from the same weights and batches (dropout 0: the device draws
    its own masks), every tensor compared as max |device - numpy| / max |numpy|. On a GPU, for the array-op path
    (the default) and again for the kernel path (MINIDT_KERNELS=1)."""
    result = {"config": "paper (hidden 128, 3 layers, gelu, tanh head), B 16, K 20, no dropout", **parity(dev)}
    if dev == "cupy":
        with kernels_on(True):
            result["kernel path"] = parity(dev)
        result["ok"] &= result["kernel path"]["ok"]
    return result


def parity(dev: str) -> dict:
    from minidt import to_numpy
    from minidt.gradcheck import rel_error
    from minidt.train import train_step

    config = paper_config(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    result: dict[str, Any] = {"ok": True}
    for dtype, steps in (("float64", 3), ("float32", 1)):
        (host, opt_h, sched_h), (devm, opt_d, sched_d) = trainer(config, dtype, "numpy"), trainer(config, dtype, dev)
        worst: dict[str, tuple[float, str]] = {}

        def note(kind: str, name: str, a: Any, b: Any, scale: float | None = None) -> None:
            a, b = np.asarray(to_numpy(a), np.float64), np.asarray(to_numpy(b), np.float64)
            e = rel_error(a, b) if scale is None else float(np.max(np.abs(a - b))) / scale
            if e >= worst.get(kind, (-1.0, ""))[0]:
                worst[kind] = (e, name)

        for step in range(steps):
            x = host_batch(config, 16, 20, step)
            lh, nh = train_step(host, opt_h, sched_h, x, 0.25)
            ld, nd = train_step(devm, opt_d, sched_d, x, 0.25)
            note("loss", f"step {step}", ld, lh)
            note("grad_norm", f"step {step}", nd, nh)
            for (name, p), q in zip(host.named_parameters(), devm.parameters()):
                if p.grad is not None:
                    note("gradients", f"{name} (step {step})", q.grad, p.grad)
                note("parameters", f"{name} (step {step})", q.data, p.data, LR)
        limits = ({"loss": 1e-10, "grad_norm": 1e-10, "gradients": 1e-10, "parameters": 1e-6} if dtype == "float64"
                  else {"loss": 1e-4, "grad_norm": 1e-4, "gradients": 1e-4, "parameters": 2.0})
        rows = {kind: {"worst": e, "where": where, "limit": limits[kind], "ok": e <= limits[kind]}
                for kind, (e, where) in worst.items()}
        result[dtype] = {"steps": steps, **rows}
        result["ok"] &= all(r["ok"] for r in rows.values())
    for dtype in ("float64", "float32"):
        result[dtype]["parameters"]["unit"] = "max |difference| / lr"
    return result


def part_determinism(dev: str, why: str | None, out: Path) -> dict:
    """Dropout 0.1 everywhere (masks from the device's generator), float32: run A (6 steps), run B (the same), run C
    (3 steps, its state saved as a checkpoint keeps it, loaded into fresh objects, 3 more). Equal bit for bit. On a
    GPU for both paths."""
    result = determinism(dev)
    if dev == "cupy":  # the kernel path's masks come from the hash (minidt/kernels/common.cuh): the same rules
        with kernels_on(True):
            result["kernel path"] = determinism(dev)
        result["ok"] &= result["kernel path"]["ok"]
    return result


def determinism(dev: str) -> dict:
    from minidt import to_numpy
    from minidt.train import train_step

    config = paper_config()
    B = 64 if dev == "cupy" else 8

    def steps(model, opt, sched, first: int, last: int) -> list[float]:
        return [float(to_numpy(train_step(model, opt, sched, host_batch(config, B, 20, 100 + s), 0.25)[0]))
                for s in range(first, last)]

    def weights(model) -> dict[str, np.ndarray]:
        return model.state_dict()

    runs = {}
    for name in ("A", "B"):
        model, opt, sched = trainer(config, "float32", dev)
        runs[name] = (steps(model, opt, sched, 0, 6), weights(model))
    model, opt, sched = trainer(config, "float32", dev)
    losses = steps(model, opt, sched, 0, 3)
    saved = (model.state_dict(), json.loads(json.dumps(model.gen.get_state())), opt.state_dict(), sched.state_dict())
    model, opt, sched = trainer(config, "float32", dev, seed=1)  # other weights and masks until the state is loaded
    model.load_state_dict(saved[0])
    model.gen.set_state(saved[1])
    opt.load_state_dict(saved[2])
    sched.load_state_dict(saved[3])
    runs["C (resumed at 3)"] = (losses + steps(model, opt, sched, 3, 6), weights(model))

    (losses_a, weights_a) = runs["A"]
    result: dict[str, Any] = {"config": f"paper (gelu, dropout 0.1), float32, B {B}, K 20, 6 steps", "ok": True}
    for name, (losses, w) in runs.items():
        if name == "A":
            continue
        differ = [k for k in weights_a if not np.array_equal(weights_a[k], w[k])]
        same = losses == losses_a and not differ
        result[name] = {"bitwise_equal_to_A": same, "losses_equal": losses == losses_a,
                        "parameters_differing": differ[:10]}
        result["ok"] &= same
    result["losses_A"] = losses_a
    return result


PART_FUNCTIONS = {"environment": part_environment, "tests": part_tests, "twins": part_twins,
                  "tutorial": part_tutorial, "parity": part_parity, "determinism": part_determinism,
                  "kernels": part_kernels, "profile": part_profile, "benchmark": part_speed}


# --- the report ----------------------------------------------------------------------------------------------------
def markdown(report: dict) -> str:
    lines = ["# minidt GPU check", "", f"{report['started']}; device backend: **{report['device_backend']}**"]
    if report["device_backend"] != "cupy":
        lines += ["", f"**No GPU check: CuPy is unavailable** ({report['cupy_unavailable']}). The parts that can "
                  "ran on the strict backend instead."]
    lines += ["", "| part | ok | seconds | |", "|---|---|---|---|"]
    for name, r in report["parts"].items():
        note = r.get("skipped") or (r["error"].strip().splitlines()[-1] if "error" in r else "")
        lines.append(f"| {name} | {'yes' if r['ok'] else 'NO'} | {r['seconds']:.1f} | {note} |")
    for name, r in report["parts"].items():
        body = {k: v for k, v in r.items() if k not in ("ok", "seconds", "output_tail", "table")}
        lines += ["", f"## {name}", ""]
        if "table" in r:
            lines += ["```", r["table"], "```", ""]
        lines += ["```json", json.dumps(body, indent=1, default=str)[:20000], "```"]
        if r.get("output_tail") and not r["ok"]:
            lines += ["", "output (tail):", "", "```", r["output_tail"][-2000:], "```"]
    return "\n".join(lines) + "\n"


def write(out: Path, report: dict) -> None:
    """Both files, each written whole or not at all (not minidt.checkpoint's writer: the report must come out
    even when minidt does not import)."""
    for name, text in (("gpu_check.json", json.dumps(report, indent=1, default=str)),
                       ("gpu_check.md", markdown(report)), ("readme_tables.md", tables(report))):
        tmp = out / f".{name}.tmp"
        tmp.write_text(text)
        os.replace(tmp, out / name)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="directory for gpu_check.json, gpu_check.md, tests.xml, figures/")
    p.add_argument("--only", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    args = p.parse_args(argv)
    only = args.only.split(",")
    unknown = sorted(set(only) - set(PARTS))
    if unknown:
        print(f"gpu_check: --only: expected parts from {','.join(PARTS)}, got {','.join(unknown)}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dev, why = device_backend()
    report: dict[str, Any] = {"started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "device_backend": dev,
                              "cupy_unavailable": why, "parts": {}}
    print(f"gpu_check: device backend {dev}" + (f" (CuPy unavailable: {why})" if why else ""), flush=True)
    t_all = time.perf_counter()
    for name in (part for part in PARTS if part in only):
        t0 = time.perf_counter()
        try:
            r = PART_FUNCTIONS[name](dev, why, out)
        except Exception as e:  # a part that breaks is reported, and the next one still runs
            r = {"ok": False, "error": "".join(traceback.format_exception(e))[-4000:]}
        r["seconds"] = time.perf_counter() - t0
        report["parts"][name] = r
        report["seconds"] = time.perf_counter() - t_all
        write(out, report)
        print(f"gpu_check: {name}: {'ok' if r['ok'] else 'FAILED'} ({r['seconds']:.0f} s)", flush=True)
    ok = all(r["ok"] for r in report["parts"].values())
    print(f"gpu_check: {'all parts ok' if ok else 'FAILED'}; report in {out / 'gpu_check.md'}", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
