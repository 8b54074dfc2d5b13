"""The checks the grader runs: the calls each asks the sandbox to make, and how their results are judged.

A unit grades one function or one forward/backward pair (pair.py). For each drawn input (a Case) it plans the
calls the sandbox makes with the student's functions (`Call`, `Train`) and computes the reference's answers here,
in the grader's process; once the results are back, `judge` decides each check on that input. A check's score is
the fraction of its inputs that pass. Here: drawing inputs, the calls, judging a returned value (`compare`, with
the parity spec's float64 tolerances), and the simplest unit, a `Question` (a derivation's answer as a function).
Inputs are drawn by hypothesis (`derandomize=True`: a file gets the same score on every run; an instructor's seed
for the hidden checks): shapes and hyperparameters from hypothesis, array entries from a NumPy generator seeded by
a drawn seed (well-scaled numbers, so the finite differences measure the gradient and not round-off).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from .hints import precision_hint
from .sandbox import Arr, Opaque, decode, encode

FORWARD_TOL = 1e-9  # float64 outputs: max |got - expected| / max |expected|
GRAD_TOL = 1e-8  # float64 gradients, the same measure
FD_TOL = 1e-6  # directional differences: |fd - <g, u>| <= FD_TOL * (|g| |u| + |fd|)
FD_STEP = 1e-6  # central differences in float64: truncation ~h^2, round-off ~1e-16 / h
PROBE_TOL = 1e-12  # a masked position's influence: exactly zero in exact arithmetic
GENERAL = ("not_implemented", "dead", "not_defined", "out_of_time")  # failures that do not depend on the input


class Draw:
    """What a case-drawing function sees: labelled hypothesis draws (a failing check shows them)."""

    def __init__(self, data: Any):
        self.data = data
        self.drawn: list[tuple[str, Any]] = []

    def _draw(self, strategy: Any, label: str) -> Any:
        value = self.data.draw(strategy, label=label)
        self.drawn.append((label, value))
        return value

    def int(self, lo: int, hi: int, label: str) -> int:
        from hypothesis import strategies as st

        return self._draw(st.integers(lo, hi), label)

    def float(self, lo: float, hi: float, label: str) -> float:
        from hypothesis import strategies as st

        return self._draw(st.floats(lo, hi, allow_nan=False, allow_infinity=False), label)

    def choice(self, options: Sequence[Any], label: str) -> Any:
        from hypothesis import strategies as st

        return self._draw(st.sampled_from(list(options)), label)

    def bool(self, label: str) -> bool:
        from hypothesis import strategies as st

        return self._draw(st.booleans(), label)

    def rng(self) -> np.random.Generator:
        return np.random.default_rng(self.int(0, 2**32 - 1, "seed"))


@dataclass
class Case:
    """One drawn input: `arrays` are the float64 inputs gradients are taken with respect to, `consts` the rest
    (integer ids, masks, hyperparameters). NumPy arrays among either are moved to the backend under test."""

    arrays: dict[str, np.ndarray]
    consts: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    drawn: list[tuple[str, Any]] = field(default_factory=list)

    @property
    def size(self) -> int:
        return sum(np.size(v) for v in (*self.arrays.values(), *self.consts.values()) if isinstance(v, np.ndarray))

    def describe(self) -> str:
        return ", ".join(f"{label} = {value:g}" if isinstance(value, float) else f"{label} = {value}"
                         for label, value in self.drawn)


def draw_cases(draw: Callable[[Draw], Case], n: int, seed: "int | None" = None) -> list[Case]:
    """n inputs from hypothesis: derandomized (the public checks), or from an instructor's seed (the hidden ones)."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as with_seed
    from hypothesis import strategies as st

    cases: list[Case] = []

    @settings(max_examples=n, deadline=None, database=None, derandomize=seed is None, phases=(Phase.generate,),
              suppress_health_check=list(HealthCheck), print_blob=False)
    @given(st.data())
    def collect(data: Any) -> None:
        d = Draw(data)
        case = draw(d)
        case.drawn = d.drawn
        cases.append(case)

    (collect if seed is None else with_seed(seed)(collect))()
    return cases[:n]


# --- what the sandbox is asked to do ------------------------------------------------------------------------------


@dataclass
class Call:
    """Call the student's `fn` with `args` (NumPy arrays become fresh arrays of the backend; a Ref is an earlier
    call's result). `take`: send back only that element of the result; `keep`: later calls may Ref it."""

    fn: str
    args: tuple
    keep: bool = False
    take: "int | None" = None
    inplace: bool = True  # look for writes into the arguments (not for the probe calls)

    def wire(self) -> dict:
        return {"fn": self.fn, "args": encode(self.args), "keep": self.keep, "take": self.take,
                "inplace": self.inplace}


@dataclass
class Train:
    """Call the student's train_step `steps` times on a fresh DecisionTransformerModel(config, seed)."""

    fn: str
    config: dict
    seed: int
    batch: dict
    hyper: tuple
    steps: int

    def wire(self) -> dict:
        return {"fn": self.fn, "train": encode({"config": self.config, "seed": self.seed, "batch": self.batch,
                                                "hyper": list(self.hyper), "steps": self.steps})}


@dataclass
class Step:
    """What one call did, as the sandbox reported it (value decoded: arrays are Arr)."""

    ok: bool
    value: Any = None
    error: str = ""
    kind: str = ""
    printed: str = ""
    printed_total: int = 0
    changed: list = field(default_factory=list)

    @classmethod
    def from_message(cls, m: dict) -> "Step":
        return cls(ok=bool(m.get("ok")), value=decode(m.get("value"), wrap=True), error=str(m.get("error", "")),
                   kind=str(m.get("kind", "")), printed=str(m.get("printed", "")),
                   printed_total=int(m.get("printed_total", 0)), changed=[str(c) for c in m.get("changed", [])])


@dataclass(frozen=True)
class Kind:
    """One check of a unit, before it is run on a backend: key (the unit's own), label, points, the function
    whose output it reads (for what that function printed)."""

    key: str
    label: str
    points: int
    function: str


class Failure(AssertionError):
    """A check failed on one input. general: the reason does not depend on the input (not implemented, hung,
    not defined in the file); exception: the student's code raised."""

    def __init__(self, message: str, general: bool = False, exception: bool = False):
        super().__init__(message)
        self.general, self.exception = general, exception


def returned(step: Step, fn: str, inplace: bool = True) -> Any:
    """The value a call returned; Failure if it raised (or a call it needs did), or if it wrote into an argument."""
    if not step.ok:
        raise Failure(step.error or f"{fn} was not run", general=step.kind in GENERAL,
                      exception=step.kind == "exception")
    if inplace and step.changed:
        raise Failure(f"{fn} changed {', '.join(step.changed)} in place: a graded function must not write into its "
                      "inputs (the caller still holds them); make a new array (x = x - mean, not x -= mean)")
    return step.value


def returned_backward(step: Step, forward: str, backward: str) -> Any:
    """What a backward returned; it is called with the reference forward's cache, and an exception it raised says
    so (a hint on how to read that cache)."""
    try:
        return returned(step, backward)
    except Failure as f:
        if not f.exception:
            raise
        raise Failure(f"{f}\nhint: {backward} is called with the reference {forward}'s cache (so a mistake in your "
                      f"{forward} costs its own points only), laid out as the docstring of {forward} says: does your "
                      f"{backward} read it that way?", exception=True) from None


def describe(v: Any) -> str:
    if isinstance(v, Arr):
        return f"a {v.backend or 'NumPy'} {'scalar' if v.scalar else 'array'} of shape {tuple(v.array.shape)}"
    if isinstance(v, Opaque):
        return f"a {v.what}"
    if isinstance(v, (tuple, list)):
        return f"a {type(v).__name__} of {len(v)}"
    return "None" if v is None else f"a {type(v).__name__}"


def host(v: Any, backend: str, what: str) -> np.ndarray:
    """A returned array as NumPy, after checking it is an array of the backend it was given: a floating array
    keeps its dtype (compare says when it is not the inputs' float64), the others become float64."""
    ok = isinstance(v, Arr) and (v.backend == backend or (v.scalar and backend == "numpy"))
    if not ok:
        raise Failure(f"{what}: expected an array of the {backend!r} backend (the namespace of the inputs), got "
                      f"{describe(v)}")
    if v.array.dtype.kind not in "biuf":
        raise Failure(f"{what}: expected a real (float64) array, got dtype {v.array.dtype}")
    return np.asarray(v.array) if v.array.dtype.kind == "f" else np.asarray(v.array, dtype=np.float64)


def compare(what: str, got: np.ndarray, want: np.ndarray, tol: float, where: "np.ndarray | None" = None) -> None:
    """Assert got == want to `tol` relative to max |want| (over `where` only, when given: the entries that count;
    the others may hold finite garbage, never NaN or inf)."""
    if got.shape != want.shape:
        raise Failure(f"{what}: expected shape {want.shape}, got {got.shape}")
    counts = np.ones(got.shape, bool) if where is None else np.broadcast_to(where, got.shape)
    bad = ~np.isfinite(got)
    if (bad & counts).any():
        idx = tuple(int(i) for i in np.argwhere(bad & counts)[0])
        raise Failure(f"{what}: not finite at index {idx} ({got[idx]})")
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        raise Failure(f"{what}: {got[idx]} at index {idx}, a padded position: what a padded position holds does "
                      "not count, but it must be finite (NaN * 0 = NaN poisons the backward pass)")
    if not counts.any():
        return
    diff = np.where(counts, np.abs(got.astype(np.float64) - want), 0.0)
    scale = max(float(np.max(np.abs(want[counts]))), 1e-300)
    err = float(np.max(diff)) / scale
    if err > tol:
        idx = tuple(int(i) for i in np.unravel_index(int(np.argmax(diff)), got.shape))
        g, w = _digits(float(got[idx]), float(want[idx]))
        raise Failure(f"{what}: max |got - expected| / max |expected| = {err:.2e} > {tol:.0e}; at index {idx}: "
                      f"got {g}, expected {w}{precision_hint(got, err)}")


def _digits(got: float, want: float) -> tuple[str, str]:
    """Both numbers with as few significant digits (6 at least) as show where they differ."""
    for d in range(6, 18):
        g, w = f"{got:.{d}g}", f"{want:.{d}g}"
        if g != w:
            return g, w
    return f"{got:.17g}", f"{want:.17g}"


def left_padding_mask(d: Draw, B: int, T: int, min_real: int = 1) -> np.ndarray:
    """(B, T) of 1 (real) and 0 (padding): each row left-padded by a drawn amount, at least min_real real steps.
    Row 0 is padded whenever it can be (T > min_real): every such input then has a padded position, so a mask
    that ignores padding (-inf for a padded key, a loss over every timestep) fails on it, not only on the few
    inputs hypothesis happens to pad."""
    mask = np.ones((B, T))
    for b in range(B):
        least = 1 if b == 0 and T > min_real else 0
        mask[b, :d.int(least, max(T - min_real, 0), f"left padding of row {b}")] = 0.0
    return mask


# --- a question: a derivation's answer, as a function -------------------------------------------------------------


@dataclass
class Question:
    """A written question whose answer is a function of the drawn inputs (a number, an array, a tuple of them):
    its value against the reference's, relative error <= 1e-9, one point."""

    function: str
    draw: Callable[[Draw], Case]
    args: Callable[[dict, dict], tuple]
    label: str  # what is asked, in a few words

    @property
    def functions(self) -> tuple[str, ...]:
        return (self.function,)

    def kinds(self) -> list[Kind]:
        return [Kind("answer", f"{self.function}: {self.label} vs reference", 1, self.function)]

    def plan(self, case: Case, ref: Any) -> tuple[list, Any]:
        want = getattr(ref, self.function)(*self.args({k: v.copy() for k, v in case.arrays.items()}, case.consts))
        return [Call(self.function, self.args(case.arrays, case.consts))], want

    def judge(self, key: str, case: Case, want: Any, steps: list[Step], backend: str) -> None:
        got = returned(steps[0], self.function)
        wants, gots = (want, got) if isinstance(want, tuple) else ((want,), (got,))
        if not isinstance(gots, tuple) or len(gots) != len(wants):
            raise Failure(f"{self.function} returned {describe(got)}, expected a tuple of {len(wants)}")
        for i, (g, w) in enumerate(zip(gots, wants)):
            what = self.function if len(wants) == 1 else f"{self.function}, entry {i}"
            if isinstance(w, (int, float)):  # a number: a Python one or a 0-d array will do
                number = isinstance(g, (int, float)) and not isinstance(g, bool)
                if not number and not (isinstance(g, Arr) and g.array.size == 1):
                    raise Failure(f"{what}: expected a number, got {describe(g)}")
                g = float(g.array.reshape(())) if isinstance(g, Arr) else float(g)
                compare(what, np.asarray(g), np.asarray(float(w)), FORWARD_TOL)
            else:
                compare(what, host(g, backend, what), np.asarray(w, dtype=np.float64), FORWARD_TOL)
