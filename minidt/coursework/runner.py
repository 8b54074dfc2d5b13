"""Run the sandbox (sandbox.py) in a child process and supervise it: time limits, crashes, restarts.

The sandbox streams one message per call. A call that sends nothing within `timeout` seconds has hung: the process
is killed and a new one started, which carries on with the same work but skips that function (and every call that
needs its result). A process that dies (os._exit, a segfault, the memory limit) is handled the same way. Each
unit (a function or a forward/backward pair) also has a budget for all its calls, `timeout` seconds per check;
a unit that spends it loses the checks it had not finished. A student's file therefore loses only the checks its
hang or crash touches, and a grade always finishes.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any

SANDBOX = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sandbox.py")
STARTUP_TIMEOUT = 120.0  # seconds for the sandbox to import NumPy and the allowed modules (no student code yet)
OUTPUT_KEPT = 4000  # characters kept of what the process wrote to its own stdout / stderr
MAX_LINE = 64 << 20  # bytes of one message
THREADS_ONE = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # tiny arrays


class UngradeableError(ValueError):
    """The file cannot be graded at all; the message is one line."""


class SandboxError(RuntimeError):
    """The sandbox itself failed (not the student's code): a bug of the grader or a broken installation."""


@dataclass
class Run:
    """load: the sandbox's report on the file (its functions, what importing it printed); steps: (unit, backend,
    case) -> {call index: message}; output: what the processes wrote to file descriptors 1 and 2 (student code
    printing around sys.stdout)."""

    load: dict
    steps: dict[tuple, dict[int, dict]] = field(default_factory=dict)
    output: str = ""


class _Output:
    def __init__(self) -> None:
        self.kept: list[str] = []
        self.size = self.total = 0

    def drain(self, stream: Any) -> None:
        for chunk in iter(lambda: stream.read(65536), b""):
            self.total += len(chunk)
            if self.size < OUTPUT_KEPT:
                text = chunk[:OUTPUT_KEPT - self.size].decode("utf-8", "replace")
                self.kept.append(text)
                self.size += len(text)

    def text(self) -> str:
        text = "".join(self.kept)
        return text + (f"\n... ({self.total} bytes in all)" if self.total > self.size else "")


_TIMEOUT, _EOF = object(), object()


class _Process:
    def __init__(self, request: dict, output: _Output, cwd: str):
        read_end, write_end = os.pipe()
        self.proc = subprocess.Popen([sys.executable, "-I", "-B", SANDBOX, str(write_end)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, pass_fds=(write_end,),
                                     env={**os.environ, **THREADS_ONE}, cwd=cwd)
        os.close(write_end)
        self.messages: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, args=(os.fdopen(read_end, "rb"),), daemon=True).start()
        threading.Thread(target=output.drain, args=(self.proc.stdout,), daemon=True).start()
        try:
            self.proc.stdin.write(json.dumps(request).encode())
            self.proc.stdin.close()
        except (BrokenPipeError, OSError):  # it died before reading: the next read says so
            pass

    def _read(self, stream: Any) -> None:
        with stream:
            while line := stream.readline(MAX_LINE):
                self.messages.put(line)
        self.messages.put(_EOF)

    def next(self, timeout: float) -> Any:
        """The next message, _TIMEOUT, or _EOF (the process ended, or sent what is not a message)."""
        try:
            line = self.messages.get(timeout=max(timeout, 0.0))
        except queue.Empty:
            return _TIMEOUT
        if line is _EOF:
            return _EOF
        try:
            message = json.loads(line)
        except ValueError:
            return _EOF
        return message if isinstance(message, dict) else _EOF

    def how_it_ended(self) -> str:
        try:
            rc = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return "it stopped sending results"
        if rc < 0:
            try:
                return f"killed by signal {signal.Signals(-rc).name}"
            except ValueError:
                return f"killed by signal {-rc}"
        return f"exit status {rc}"

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def run(request: dict, jobs: list[tuple[int, str, int]], functions: list[list[list[str]]], timeout: float,
        budgets: list[float], check_load: Any) -> Run:
    """Run the jobs (unit, backend, case) in the sandbox; functions[u][c][i] is the function call i calls.
    check_load(message) raises UngradeableError for a file that cannot be graded (it sees the first load report).
    Raises UngradeableError when importing the file fails, hangs or crashes, SandboxError when the sandbox does."""
    output = _Output()
    dead: dict[str, str] = {}
    spent = [0.0] * len(budgets)
    pending = list(jobs)
    result: "Run | None" = None
    with tempfile.TemporaryDirectory(prefix="minidt-grade-") as cwd:
        while pending:
            proc = _Process({**request, "jobs": pending, "dead": dead}, output, cwd)
            try:
                result = _supervise(proc, pending, functions, timeout, budgets, spent, dead, result, check_load)
            finally:
                proc.kill()
    assert result is not None, "run: no jobs"
    result.output = output.text()
    return result


def _supervise(proc: _Process, pending: list, functions: list, timeout: float, budgets: list[float],
               spent: list[float], dead: dict, result: "Run | None", check_load: Any) -> Run:
    """One sandbox process's life: set-up, import, then calls until all jobs are done or the process must go."""
    message = proc.next(STARTUP_TIMEOUT)
    if message is _TIMEOUT or message is _EOF or "fatal" in message:
        detail = message.get("fatal", "") if isinstance(message, dict) else proc.how_it_ended()
        raise SandboxError(f"the grading process failed to start ({detail.strip().splitlines()[-1] if detail else ''})")
    message = proc.next(timeout)
    failure = None
    if message is _TIMEOUT:
        failure = f"importing it did not finish within {timeout:g} s (--timeout)"
    elif message is _EOF:
        failure = f"importing it ended the grading process ({proc.how_it_ended()})"
    elif "load_error" in message:
        failure = f"importing it raised {message['load_error']}"
    if failure is not None:
        if result is None:
            raise UngradeableError(failure)
        for job in pending:  # it imported before, and not now: nothing more can run
            _fill(result, job, functions, {"ok": False, "kind": "dead", "error": failure})
        pending.clear()
        return result
    if result is None:
        check_load(message)
        result = Run(load=message)
    step = 0
    while pending:
        u, backend, c = pending[0]
        started = time.monotonic()
        message = proc.next(min(timeout, budgets[u] - spent[u]))
        spent[u] += time.monotonic() - started
        if isinstance(message, dict) and "done" in message:
            pending.pop(0)
            step = 0
            continue
        if isinstance(message, dict) and "job" in message:
            result.steps.setdefault(tuple(message["job"]), {})[int(message["step"])] = message
            step = int(message["step"]) + 1
            continue
        fn = functions[u][c][min(step, len(functions[u][c]) - 1)]
        if message is _TIMEOUT and spent[u] >= budgets[u]:
            error = {"ok": False, "kind": "out_of_time",
                     "error": f"not graded: the calls for {' and '.join(dict.fromkeys(functions[u][c]))} used up "
                              f"their time ({budgets[u]:g} s: --timeout {timeout:g} s per check)"}
            for job in [j for j in pending if j[0] == u]:
                _fill(result, job, functions, error)
                pending.remove(job)
            return result
        if fn in dead:  # it was skipped, not run: the sandbox itself is failing
            raise SandboxError(f"the grading process stopped while it skipped {fn} ({proc.how_it_ended()})")
        if message is _TIMEOUT:
            dead[fn] = f"{fn} did not return within {timeout:g} s (--timeout): an infinite loop?"
        else:
            dead[fn] = (f"{fn} ended the grading process ({proc.how_it_ended()}): a crash, os._exit, or more memory "
                        "than the grader allows?")
        result.steps.setdefault((u, backend, c), {})[step] = {"ok": False, "kind": "dead", "error": dead[fn]}
        return result
    return result


def _fill(result: Run, job: tuple, functions: list, error: dict) -> None:
    u, _, c = job
    done = result.steps.setdefault(tuple(job), {})
    for i in range(len(functions[u][c])):
        done.setdefault(i, error)
