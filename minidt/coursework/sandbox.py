"""The process a student's file runs in while `minidt grade` grades it: the grader never imports student code.

Run as a script, `python -I -B sandbox.py FD`, with the grader's request (JSON) on stdin; it writes one JSON line
per message to file descriptor FD. In order:

1. It loads what the assignment's file may import: `minidt.backend`, and the earlier assignments' pieces a later
   assignment builds on (gpt2_block imports LayerNorm, Conv1D and attention), each from its own file under a stub
   `minidt` package: minidt/__init__.py, which imports the whole library, never runs here. For train_step, the
   model a student's function trains is loaded under a private package name.
2. It closes the door. Importing any other minidt module raises ImportError saying what is allowed, and an audit
   hook (sys.addaudithook: it cannot be removed) refuses to read minidt's other files or the autograder kit, to
   write, rename or delete files, to start processes, to signal other processes, to open sockets and to use
   ctypes. (A guard against borrowing and accidents, not a sandbox for hostile code: docs/coursework.md.)
3. It runs the student's file and reports its functions and their parameters.
4. It makes the calls the grader asks for, with the reference's versions of the functions a graded function
   calls swapped in where the grader says so, and sends back what each call returned, what it printed, which
   arguments it changed in place, and what it raised. The verdicts are the grader's: it compares, in its own
   process, against the reference, which this process never sees.

The grader imports this file only for `encode` / `decode`, the JSON wire format both sides share (arrays as base64
bytes with dtype and shape; never pickle).
"""

from __future__ import annotations

import base64
import builtins
import importlib.abc
import importlib.machinery
import importlib.util
import inspect
import io
import json
import os
import sys
import time
import traceback
import types
from typing import Any

import numpy as np

MAX_PRINTED = 2000  # characters of a call's printed output sent back (the total count is sent too)
MAX_TEXT = 2000  # characters of an error message
MAX_ELEMENTS = 1 << 20  # a returned array with more entries comes back as its shape and dtype only
MAX_ITEMS = 1000  # entries of a returned list, tuple or dict
MAX_DEPTH = 8
PRIVATE = "_minidt_grader"  # the package name the train_step model's modules are loaded under
PROCESS_EVENTS = frozenset(("os.system", "os.exec", "os.spawn", "os.posix_spawn", "os.fork", "os.forkpty",
                            "subprocess.Popen", "pty.spawn", "webbrowser.open"))
FILE_EVENTS = frozenset((  # changes to the file system: allowed only in the writable folders (CuPy's kernel cache)
    "os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "os.link", "os.symlink", "os.truncate",
    "os.utime", "os.chflags", "os.lchflags", "os.setxattr", "os.removexattr", "os.mkfifo", "os.mknod",
    "shutil.copyfile", "shutil.copymode", "shutil.copystat", "shutil.copytree", "shutil.move", "shutil.rmtree",
    "shutil.chown"))
SIGNAL_EVENTS = frozenset(("os.kill", "os.killpg", "signal.pthread_kill"))
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


# --- the wire format -------------------------------------------------------------------------------------------


class Ref:
    """In a request: the result of an earlier call of the same case (element `index` of it, or all of it)."""

    def __init__(self, step: int, index: "int | None" = None):
        self.step, self.index = step, index


class Arr:
    """A returned array, decoded: the host copy and the backend it was an array of."""

    def __init__(self, array: np.ndarray, backend: "str | None", scalar: bool = False):
        self.array, self.backend, self.scalar = array, backend, scalar


class Opaque:
    """A returned value that is not an array, a number, a string or a container of them: its type's name."""

    def __init__(self, what: str):
        self.what = what


def array_backend(x: Any) -> "str | None":
    if isinstance(x, (np.ndarray, np.generic)):
        return "numpy"
    module = type(x).__module__
    for prefix, name in (("array_api_strict", "strict"), ("cupy", "cupy")):
        if module.startswith(prefix):
            return name
    return None


def encode(x: Any, to_host: Any = None, depth: int = 0) -> Any:
    """A value -> JSON-able. to_host(array) -> NumPy array, for arrays of the other backends (the sandbox's)."""
    if isinstance(x, np.generic):
        return _encode_array(np.asarray(x), "numpy", scalar=True)
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    if isinstance(x, Ref):
        return {"$r": [x.step, x.index]}
    backend = array_backend(x)
    if backend is not None:
        return _encode_array(np.asarray(x) if backend == "numpy" else to_host(x), backend)
    if depth >= MAX_DEPTH:
        return {"$o": f"{type(x).__name__} nested more than {MAX_DEPTH} deep"}
    if isinstance(x, (tuple, list)):
        if len(x) > MAX_ITEMS:
            return {"$o": f"{type(x).__name__} of {len(x)} entries"}
        items = [encode(v, to_host, depth + 1) for v in x]
        return {"$t": items} if isinstance(x, tuple) else items
    if isinstance(x, dict):
        if len(x) > MAX_ITEMS:
            return {"$o": f"dict of {len(x)} entries"}
        return {"$d": [[str(k), encode(v, to_host, depth + 1)] for k, v in x.items()]}
    return {"$o": f"{type(x).__module__}.{type(x).__qualname__}"}


def _encode_array(a: np.ndarray, backend: str, scalar: bool = False) -> dict:
    if a.dtype.kind not in "biufc":
        return {"$o": f"{backend} array of dtype {a.dtype}"}
    if a.size > MAX_ELEMENTS:
        return {"$big": list(a.shape), "d": a.dtype.str, "b": backend}
    out = {"$a": base64.b64encode(np.ascontiguousarray(a).tobytes()).decode("ascii"), "d": a.dtype.str,
           "s": list(a.shape), "b": backend}
    if scalar:
        out["scalar"] = True
    return out


def decode_call(call: dict) -> dict:
    key = "args" if "args" in call else "train"
    return {**call, key: decode(call[key])}


def decode(x: Any, wrap: bool = False) -> Any:
    """JSON -> values: arrays as NumPy arrays, or (wrap) as Arr with the backend they came from."""
    if isinstance(x, list):
        return [decode(v, wrap) for v in x]
    if not isinstance(x, dict):
        return x
    if "$a" in x or "$big" in x:
        dtype = np.dtype(x["d"])
        if dtype.kind not in "biufc":
            raise ValueError(f"decode: refused dtype {dtype}")
        if "$big" in x:  # its shape and dtype, no memory
            a = np.broadcast_to(np.zeros((), dtype), tuple(x["$big"]))
        else:
            a = np.frombuffer(base64.b64decode(x["$a"]), dtype=dtype).reshape(x["s"]).copy()
        return Arr(a, x.get("b"), bool(x.get("scalar"))) if wrap else a
    if "$t" in x:
        return tuple(decode(v, wrap) for v in x["$t"])
    if "$d" in x:
        return {str(k): decode(v, wrap) for k, v in x["$d"]}
    if "$r" in x:
        return Ref(*x["$r"])
    if "$o" in x:
        return Opaque(str(x["$o"]))
    return {str(k): decode(v, wrap) for k, v in x.items()}  # a message's own fields


# --- the door: what a graded file may import and read -----------------------------------------------------------


class StubLoader(importlib.abc.Loader):
    """An empty package: `minidt`, `minidt.layers` ... without their __init__.py."""

    def create_module(self, spec: Any) -> None:
        return None

    def exec_module(self, module: types.ModuleType) -> None:
        module.__path__ = []


class TextLoader(importlib.abc.Loader):
    """A module made from source text (an earlier assignment's solution), not from a file."""

    def __init__(self, name: str, source: str):
        self.name, self.source = name, source

    def create_module(self, spec: Any) -> None:
        return None

    def exec_module(self, module: types.ModuleType) -> None:
        exec(compile(self.source, f"<{self.name}>", "exec"), module.__dict__)


class Door(importlib.abc.MetaPathFinder):
    """First on sys.meta_path: every `minidt...` import. While the sandbox sets up, it loads modules from their files
    (packages as stubs); after that every minidt module not loaded already is refused with `refusal`."""

    def __init__(self, root: str, provided: dict[str, str], refusal: str):
        self.root, self.provided, self.refusal = root, provided, refusal
        self.open = True
        self.refused_top = frozenset(("_posixsubprocess",))  # process creation no audit event sees (3.11)

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        top = name.partition(".")[0]
        if not self.open and top in self.refused_top:
            raise ImportError(f"importing {name} is not allowed while grading")
        if top != "minidt":
            return None
        if not self.open:
            raise ModuleNotFoundError(self.refusal.format(name=name), name=name)
        if name in self.provided:
            return importlib.util.spec_from_loader(name, TextLoader(name, self.provided[name]))
        parts = name.split(".")[1:]
        folder = os.path.join(self.root, *parts)
        if not parts or os.path.isdir(folder):
            return importlib.machinery.ModuleSpec(name, StubLoader(), is_package=True)
        return importlib.util.spec_from_file_location(name, folder + ".py")


def under(path: str, roots: "tuple[str, ...]") -> bool:
    return any(path == r or path.startswith(r + os.sep) for r in roots)


def audit_hook(forbidden: tuple[str, ...], readable: frozenset[str], writable: tuple[str, ...]) -> Any:
    """The hook that refuses, for the rest of the process's life, what a graded function has no business doing."""
    pid = os.getpid()
    own_proc = (f"/proc/{pid}", "/proc/self", "/proc/thread-self")

    def hook(event: str, args: tuple) -> None:
        if event == "open":
            path, mode, flags = args
            if path is None or isinstance(path, int):
                return
            real = os.path.realpath(os.fsdecode(path))
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & WRITE_FLAGS)
            if writing and real != os.devnull and not under(real, writable):
                raise PermissionError(f"writing files is not allowed while grading (tried {os.fsdecode(path)})")
            if under(real, forbidden) and real not in readable:
                raise PermissionError(f"reading {os.fsdecode(path)} is not allowed while grading: it is part of "
                                      "minidt's reference or of the autograder")
            parts = real.split(os.sep)
            if len(parts) > 2 and parts[1] == "proc" and parts[2].isdigit() and not under(real, own_proc):
                raise PermissionError("reading other processes' /proc entries is not allowed while grading")
        elif event in FILE_EVENTS:
            paths = [os.path.realpath(os.fsdecode(a)) for a in args if isinstance(a, (str, bytes, os.PathLike))]
            if not paths or not all(under(p, writable) for p in paths):
                raise PermissionError(f"{event} is not allowed while grading")
        elif event in PROCESS_EVENTS or event.startswith(("socket.", "ctypes.")):
            raise PermissionError(f"{event} is not allowed while grading")
        elif event in SIGNAL_EVENTS and args and args[0] != pid:
            raise PermissionError(f"{event} of another process is not allowed while grading")

    return hook


# --- what a call printed -----------------------------------------------------------------------------------------


class Printed(io.TextIOBase):
    """sys.stdout and sys.stderr during a call: the first MAX_PRINTED characters, and how many there were."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.kept = self.total = 0

    def writable(self) -> bool:
        return True

    def write(self, s: Any) -> int:
        s = str(s)
        self.total += len(s)
        if self.kept < MAX_PRINTED:
            piece = s[:MAX_PRINTED - self.kept]
            self.parts.append(piece)
            self.kept += len(piece)
        return len(s)

    def text(self) -> str:
        return "".join(self.parts)


class Sandbox:
    def __init__(self, request: dict, send: Any):
        self.request, self.send = request, send
        self.path = request["path"]
        self.dead = {fn: ("dead", message) for fn, message in request["dead"].items()}  # fn -> (kind, message)
        self.units = [{**u, "cases": [[decode_call(call) for call in case] for case in u["cases"]]}
                      for u in request["units"]]

    # --- set-up, before the door closes --------------------------------------------------------------------------
    def setup(self) -> None:
        r = self.request
        sys.dont_write_bytecode = True
        for name, value in r.get("environ", {}).items():
            os.environ[name] = value
        self.door = Door(r["minidt_dir"], r["provided"], r["refusal"])
        sys.meta_path.insert(0, self.door)
        self.backend = importlib.import_module("minidt.backend")
        for name in list(r["allowed"]) + list(r["provided"]):
            importlib.import_module(name)
        self.backends = {name: self.backend.get_backend(name) for name in r["backends"]}
        if r["model"]:
            self.load_model()
        import ctypes  # noqa: F401  imported now: ctypes' own import dlopens, which the hook would refuse
        import subprocess  # noqa: F401  scipy.special (erf) imports it; its fork_exec has no audit event: removed
        del sys.modules["_posixsubprocess"].fork_exec
        self.limit_memory()
        loaded = [m for m in list(sys.modules.values()) if getattr(m, "__file__", None)]
        readable = {os.path.realpath(f) for m in loaded for f in (m.__file__, getattr(m, "__cached__", None)) if f}
        self.door.open = False
        sys.addaudithook(audit_hook(tuple(os.path.realpath(p) for p in r["forbidden"]), frozenset(readable),
                                    tuple(os.path.realpath(p) for p in r["writable"])))

    def load_model(self) -> None:
        """DecisionTransformerModel under the private package name, warmed up on every backend (a forward and a
        backward run now, so any import the model makes lazily happens before the door closes)."""
        package = types.ModuleType(PRIVATE)
        package.__path__ = [self.request["minidt_dir"]]
        sys.modules[PRIVATE] = package
        self.Model = importlib.import_module(f"{PRIVATE}.model").DecisionTransformerModel
        self.Config = importlib.import_module(f"{PRIVATE}.config").DecisionTransformerConfig
        graded = [m for m in self.request["references"] if f"{PRIVATE}.{m}" in sys.modules]
        if graded:  # the student's code could reach them through the model
            raise RuntimeError(f"the model imports {', '.join(graded)}, which holds graded reference solutions")
        private_backend = importlib.import_module(f"{PRIVATE}.backend")
        self.model_backends = {name: private_backend.get_backend(name) for name in self.request["backends"]}
        for b in self.model_backends.values():
            model = self.Model(self.Config(state_dim=1, act_dim=1, hidden_size=2, n_head=1, n_layer=1, max_ep_len=2),
                               dtype="float64", backend=b, seed=0)
            ones = b.asarray(np.ones((1, 2, 1)), "float64")
            out = model(states=ones, actions=ones, rewards=None, returns_to_go=ones,
                        timesteps=b.asarray(np.zeros((1, 2), dtype=np.int64)),
                        attention_mask=b.asarray(np.ones((1, 2)), "float64"))
            model.backward(action_preds=out.action_preds)

    def limit_memory(self) -> None:
        """At most 8 GiB more address space: a runaway allocation is a MemoryError, not the machine's OOM killer.
        Not with CuPy, whose driver maps far more address space than it uses."""
        if "cupy" in self.backends:
            return
        try:
            import resource

            with open("/proc/self/statm") as f:
                size = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
            limit = size + (8 << 30)
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        except (ImportError, OSError, ValueError):
            pass

    # --- the student's file --------------------------------------------------------------------------------------
    def load(self) -> dict:
        """Run the file as a module; report each graded function: callable, its parameters, defined in the file."""
        with open(self.path, encoding="utf-8") as f:
            source = f.read()
        name = self.request["module"]
        module = types.ModuleType(name)
        module.__file__ = self.path
        sys.modules[name] = module  # dataclasses look their module up while it executes
        printed = Printed()
        try:
            with Capture(printed):
                exec(compile(source, self.path, "exec"), module.__dict__)
        except BaseException as e:  # SystemExit and KeyboardInterrupt too: the grader reports them
            return {"load_error": self.describe(e, None)[1], "printed": printed.text(), "printed_total": printed.total}
        self.student = module
        functions = {}
        for fn_name in self.request["functions"]:
            fn = getattr(module, fn_name, None)
            info: dict[str, Any] = {"callable": callable(fn)}
            if callable(fn):
                try:
                    info["params"] = list(inspect.signature(fn).parameters)
                except (TypeError, ValueError):
                    info["params"] = None
                code = getattr(fn, "__code__", None)
                if getattr(code, "co_filename", None) != self.path:
                    where = getattr(code, "co_filename", None) or f"{type(fn).__module__}.{type(fn).__qualname__}"
                    self.dead[fn_name] = ("not_defined", f"{fn_name} is not defined in {os.path.basename(self.path)} "
                                          f"(it comes from {where}): only functions written in the file are graded")
            functions[fn_name] = info
        return {"loaded": functions, "printed": printed.text(), "printed_total": printed.total}

    def describe(self, e: BaseException, fn_name: "str | None") -> tuple[str, str]:
        """(kind, one message) for what a student's call (fn_name), or importing the file (None), raised."""
        frames = [f for f in traceback.extract_tb(e.__traceback__) if f.filename == self.path]
        frame = frames[-1] if frames else None
        where = f" (in {frame.name}, line {frame.lineno}: {frame.line})" if frame is not None else ""
        if isinstance(e, SystemExit):
            text = f"SystemExit({e.code!r})"
        elif isinstance(e, KeyboardInterrupt):
            text = "KeyboardInterrupt"
        else:
            try:
                text = f"{type(e).__name__}: {e}"
            except Exception:  # an exception whose str() raises
                text = type(e).__name__
            text = text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + " ..."
        if fn_name is None:
            return "exception", text + where
        if isinstance(e, NotImplementedError) and frame is not None:
            return "not_implemented", f"not implemented: {frame.name} raises NotImplementedError"
        if isinstance(e, (SystemExit, KeyboardInterrupt)):
            return "exit", (f"{fn_name} raised {text}{where}: a graded function must return its result, not end the "
                            "program")
        return "exception", text + where

    # --- the calls -----------------------------------------------------------------------------------------------
    def run(self) -> None:
        current = None
        for u, backend, c in self.request["jobs"]:
            if u != current:
                current = u
                self.swap_in(self.units[u])
            steps = self.units[u]["cases"][c]
            kept: dict[int, Any] = {}
            results: dict[int, dict] = {}
            for i, step in enumerate(steps):
                t0 = time.perf_counter()
                result = self.step(step, backend, kept, results, i)
                result["seconds"] = round(time.perf_counter() - t0, 6)
                results[i] = result
                self.send({"job": [u, backend, c], "step": i, **result})
            self.send({"done": [u, backend, c]})

    def swap_in(self, unit: dict) -> None:
        """The reference's versions of the functions this unit's functions call, in place of the student's (so a
        wrong softmax costs the softmax checks only, not attention's)."""
        if not unit["inject"]:
            return
        namespace: dict[str, Any] = {"__name__": "minidt_reference_helpers", "__builtins__": builtins}
        exec(compile(unit["inject_source"], f"<the reference's {', '.join(unit['inject'])}>", "exec"), namespace)
        for name in unit["inject"]:
            setattr(self.student, name, namespace[name])

    def to_backend(self, x: Any, backend: str) -> Any:
        if isinstance(x, np.ndarray):
            return self.backends[backend].asarray(np.array(x))  # a fresh array per call: writes spoil nothing
        if isinstance(x, tuple):
            return tuple(self.to_backend(v, backend) for v in x)
        if isinstance(x, list):
            return [self.to_backend(v, backend) for v in x]
        if isinstance(x, dict):
            return {k: self.to_backend(v, backend) for k, v in x.items()}
        return x

    def resolve(self, x: Any, backend: str, kept: dict, results: dict) -> Any:
        if isinstance(x, Ref):
            if not results[x.step]["ok"]:
                raise Dependency(results[x.step])
            value = kept[x.step]
            return value if x.index is None else value[x.index]
        if isinstance(x, np.ndarray):
            return self.to_backend(x, backend)
        if isinstance(x, (tuple, list)):
            items = [self.resolve(v, backend, kept, results) for v in x]
            return tuple(items) if isinstance(x, tuple) else items
        if isinstance(x, dict):
            return {k: self.resolve(v, backend, kept, results) for k, v in x.items()}
        return x

    def host(self, x: Any) -> np.ndarray:
        return np.asarray(self.backend.to_numpy(x))

    def step(self, step: dict, backend: str, kept: dict, results: dict, i: int) -> dict:
        fn_name = step["fn"]
        if fn_name in self.dead:
            kind, error = self.dead[fn_name]
            return {"ok": False, "kind": kind, "error": error}
        fn = getattr(self.student, fn_name)
        if "train" in step:
            return self.train(fn, fn_name, step["train"], backend)
        try:
            args = self.resolve(step["args"], backend, kept, results)
        except Dependency as d:
            return {"ok": False, "kind": d.result["kind"], "error": d.result["error"]}
        watched = [(f"its argument {label}", a) for label, a in arrays_in(args, self.labels(fn, len(args)))]
        before = [(label, a, np.array(self.host(a))) for label, a in watched] if step["inplace"] else []
        printed = Printed()
        try:
            with Capture(printed):
                result = fn(*args)
        except BaseException as e:
            kind, error = self.describe(e, fn_name)
            return {"ok": False, "kind": kind, "error": error, **self.printed(printed)}
        changed = [label for label, a, old in before if not same(old, self.host(a))]
        out = {"ok": True, "changed": changed, **self.printed(printed)}
        try:
            value = result if step["take"] is None else result[step["take"]]
        except Exception:
            return {**out, "ok": False, "kind": "exception",
                    "error": f"{fn_name} returned {kind_of(result)}, expected a tuple (its docstring says of what)"}
        if step["keep"]:
            kept[i] = result
        return {**out, **self.encoded(value, fn_name)}

    def encoded(self, value: Any, fn_name: str) -> dict:
        try:
            return {"value": encode(value, self.host)}
        except Exception as e:  # an array the backend cannot move to the host, say
            return {"ok": False, "kind": "exception",
                    "error": f"{fn_name} returned a value the grader cannot read ({type(e).__name__}: {e})"}

    def train(self, fn: Any, fn_name: str, spec: dict, backend: str) -> dict:
        """train_step, `steps` times, on a fresh model: after each step the loss it returned, the gradients the
        model held right after its backward, the parameters, and whether it wrote into the batch."""
        b = self.model_backends[backend]
        model = self.Model(self.Config(**spec["config"]), dtype="float64", backend=b, seed=spec["seed"])
        after_backward: list[dict] = []
        backward = model.backward

        def recording_backward(*args: Any, **kwargs: Any) -> Any:
            result = backward(*args, **kwargs)
            after_backward.append(encode({n: p.grad for n, p in model.named_parameters()}, self.host))
            return result

        model.backward = recording_backward
        batch = self.to_backend(spec["batch"], backend)
        watched = [(f"batch{label}", a) for label, a in arrays_in(batch, None)]
        opt_state: dict = {}
        steps = []
        printed = Printed()
        for t in range(1, spec["steps"] + 1):
            calls = len(after_backward)
            before = [(label, a, np.array(self.host(a))) for label, a in watched]
            try:
                with Capture(printed):
                    loss = fn(model, batch, opt_state, *spec["hyper"])
            except BaseException as e:
                kind, error = self.describe(e, fn_name)
                return {"ok": False, "kind": kind, "error": f"at step {t}: {error}" if t > 1 else error,
                        **self.printed(printed)}
            # encoded now: the next step may write into these arrays
            loss, params = (self.encoded(x, fn_name) for x in (loss, {n: p.data for n, p in model.named_parameters()}))
            if "value" not in loss or "value" not in params:
                return {**loss, **params, **self.printed(printed)}
            steps.append({"loss": loss["value"], "params": params["value"],
                          "backward_calls": len(after_backward) - calls,
                          "grads": after_backward[-1] if len(after_backward) > calls else None,
                          "changed": [label for label, a, old in before if not same(old, self.host(a))]})
        return {"ok": True, "changed": [], "value": steps, **self.printed(printed)}

    @staticmethod
    def labels(fn: Any, n: int) -> list[str]:
        try:
            names = list(inspect.signature(fn).parameters)
        except (TypeError, ValueError):
            names = []
        return [names[i] if i < len(names) else f"#{i + 1}" for i in range(n)]

    @staticmethod
    def printed(p: Printed) -> dict:
        return {"printed": p.text(), "printed_total": p.total} if p.total else {}


class Dependency(Exception):
    """A call needs the result of an earlier call that failed: it fails with that call's message."""

    def __init__(self, result: dict):
        self.result = result


class Capture:
    """sys.stdout and sys.stderr into a Printed for the duration of a call."""

    def __init__(self, printed: Printed):
        self.printed = printed

    def __enter__(self) -> None:
        self.saved = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = self.printed

    def __exit__(self, *exc: Any) -> None:
        sys.stdout, sys.stderr = self.saved


def arrays_in(x: Any, labels: "list[str] | None") -> list[tuple[str, Any]]:
    """(label, array) for every array in a call's arguments (labels: the parameter names) or in a dict (None):
    x, params['ln_1.weight'], grads[1], ['states']."""
    found: list[tuple[str, Any]] = []

    def walk(v: Any, label: str, depth: int) -> None:
        if array_backend(v) is not None and not isinstance(v, np.generic):
            found.append((label, v))
        elif depth < 3 and isinstance(v, (tuple, list)):
            for j, item in enumerate(v):
                walk(item, f"{label}[{j}]", depth + 1)
        elif depth < 3 and isinstance(v, dict):
            for k, item in v.items():
                walk(item, f"{label}[{k!r}]", depth + 1)

    if labels is None:
        walk(x, "", 0)
    else:
        for label, v in zip(labels, x):
            walk(v, label, 0)
    return found


def same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and bool(np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"))


def kind_of(x: Any) -> str:
    if isinstance(x, (tuple, list)):
        return f"a {type(x).__name__} of {len(x)}"
    return "None" if x is None else f"a {type(x).__name__}"


def main() -> None:
    channel = os.fdopen(int(sys.argv[1]), "w", encoding="utf-8")

    def send(message: dict) -> None:
        channel.write(json.dumps(message) + "\n")
        channel.flush()

    request = json.loads(sys.stdin.read())
    sys.path[:] = request["sys_path"]
    try:
        sandbox = Sandbox(request, send)
        sandbox.setup()
    except BaseException:
        send({"fatal": traceback.format_exc()[-MAX_TEXT:]})
        return
    send({"ready": True})
    loaded = sandbox.load()
    send(loaded)
    if "loaded" in loaded:
        sandbox.run()


if __name__ == "__main__":
    main()
