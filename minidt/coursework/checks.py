"""The checks the grader runs: the calls each asks the sandbox to make, and how their results are judged.

A unit grades one function or one forward/backward pair. For each drawn input (a Case) it plans the calls the
sandbox makes with the student's functions (`Call`, `Train`) and computes the reference's answers here, in the
grader's process; once the results are back, `judge` decides each check on that input. A check's score is the
fraction of its inputs that pass.

A forward/backward pair (`Pair`) gets, on each backend:
    output vs reference          the forward's output against the reference's, relative error <= 1e-9
    dX vs finite differences     for each group of inputs X: central differences of L = sum(forward(...) * dout)
                                 along a random direction u of the whole group, against <dX, u>
    dX vs reference              the backward's gradients against the reference's, relative error <= 1e-8
The backward runs on the reference forward's cache and the differences are of the reference forward, so a
mistake in a forward costs the forward's checks and nothing else. Where the pair is causal, a probe: a change at position j must leave earlier positions, and a change at a
padded position every real position, exactly as they were. The tolerances are the parity spec's float64 ones.
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


# --- a forward/backward pair --------------------------------------------------------------------------------------


@dataclass
class Causal:
    """The probe of a causal, padding-masked function: `inputs` (their time axis `axis`) are changed at one
    position j at a time; the output (time axis `out_axis`) must stay exactly as it was at every real position
    i < j, and everywhere real when j is padded. attention_mask (B, T) is the case's const."""

    inputs: tuple[str, ...]
    axis: int
    out_axis: int
    what: str  # "key", "position"

    def perturbed(self, case: Case, rng: np.random.Generator) -> list[dict[str, np.ndarray]]:
        T = case.arrays[self.inputs[0]].shape[self.axis]
        out = []
        for j in range(T):
            arrays = dict(case.arrays)
            for name in self.inputs:
                x = arrays[name].copy()
                at = [slice(None)] * x.ndim
                at[self.axis] = j
                x[tuple(at)] += rng.standard_normal(x[tuple(at)].shape)
                arrays[name] = x
            out.append(arrays)
        return out

    def moved(self, base: np.ndarray, outs: list[np.ndarray], real: np.ndarray) -> list[np.ndarray]:
        """[j] (B, T): where the output changed when position j of the inputs did (beyond round-off)."""
        base_bt = self._bt(base)
        scale = max(float(np.max(np.abs(base_bt[real]), initial=0.0)), 1e-300)
        return [np.max(np.abs(self._bt(out) - base_bt), axis=-1) > PROBE_TOL * scale for out in outs]

    def _bt(self, out: np.ndarray) -> np.ndarray:
        return np.moveaxis(out, self.out_axis, 1).reshape(out.shape[0], out.shape[self.out_axis], -1)  # B,T,rest

    def judge(self, fn: str, base: np.ndarray, outs: list[np.ndarray], mask: np.ndarray,
              ref_moved: list[np.ndarray]) -> None:
        """ref_moved: the reference's `moved` on the same perturbations (what a position must react to)."""
        real = mask > 0  # B,T
        finite = np.isfinite(self._bt(base)).all(axis=-1)  # B,T
        if (real & ~finite).any():
            b, i = (int(v) for v in np.argwhere(real & ~finite)[0])
            raise Failure(f"{fn}: the output at position {i} (batch row {b}) is not finite: does every position see "
                          f"at least itself ({self.what} j <= i)?")
        moved = self.moved(base, outs, real)
        for i in range(len(outs)):
            for b in np.argwhere(real[:, i] & ref_moved[i][:, i] & ~moved[i][:, i]).ravel():
                raise Failure(f"{fn}: the output at position {i} did not change when {self.what} {i} changed (batch "
                              f"row {b}): does every position see at least itself ({self.what} j <= i)?")
        for j, m in enumerate(moved):
            for b, i in np.argwhere(real & m):
                if not real[b, j]:
                    raise Failure(f"{fn}: the output at real position {i} changed when padded {self.what} {j} changed "
                                  f"(batch row {b}): a padded {self.what} must get no attention")
                if j > i:
                    raise Failure(f"{fn}: the output at position {i} changed when {self.what} {j} changed (batch row "
                                  f"{b}): position i may depend on {self.what}s 0..i only (causal)")


@dataclass
class PairPlan:
    ref_out: np.ndarray
    ref_grads: dict[str, np.ndarray]
    dout: np.ndarray
    fd: dict[str, tuple[dict[str, np.ndarray], float]]  # group -> (direction u, central difference of L along u)
    probe_at: int  # index of the first probe call
    probe_moved: list[np.ndarray]  # the reference's reaction to each probe (Causal.moved)


@dataclass
class Pair:
    """A forward/backward function pair. args(arrays, consts) -> the forward's positional arguments;
    grads(what the backward returned) -> {array name: gradient}; groups: (label, array names) graded together;
    where(case) -> bool array broadcastable to out: the entries that count (None: all of them); returns_cache:
    the forward returns (out, cache) (else out, which is its own cache).

    The backward is called with the reference forward's cache, never the student's: a wrong forward costs the
    forward's checks only (the skeleton's docstrings give the cache's layout). Its gradients are compared with
    the reference backward's and with central differences of the reference forward, computed here."""

    forward: str
    backward: str
    draw: Callable[[Draw], Case]
    args: Callable[[dict, dict], tuple]
    grads: Callable[[Any], dict[str, Any]]
    groups: tuple[tuple[str, tuple[str, ...]], ...]
    where: "Callable[[Case], np.ndarray] | None" = None
    returns_cache: bool = True
    probe: "Causal | None" = None

    @property
    def functions(self) -> tuple[str, ...]:
        return (self.forward, self.backward)

    def kinds(self) -> list[Kind]:
        out = [Kind("out", f"{self.forward}: output vs reference", 1, self.forward)]
        for label, _ in self.groups:
            out += [Kind(f"fd {label}", f"{self.backward}: {label} vs finite differences", 1, self.backward),
                    Kind(f"ref {label}", f"{self.backward}: {label} vs reference", 1, self.backward)]
        if self.probe is not None:
            out.append(Kind("probe", f"{self.forward}: causality and padding probe", 1, self.forward))
        return out

    def _forward_call(self, arrays: dict, consts: dict, inplace: bool = False) -> Call:
        return Call(self.forward, self.args(arrays, consts), take=0 if self.returns_cache else None, inplace=inplace)

    def _reference(self, ref: Any, arrays: dict, consts: dict) -> tuple[np.ndarray, Any]:
        """The reference forward's (output, cache) on copies of the arrays."""
        result = getattr(ref, self.forward)(*self.args({k: v.copy() for k, v in arrays.items()}, consts))
        return result if self.returns_cache else (result, result)

    def plan(self, case: Case, ref: Any) -> tuple[list, PairPlan]:
        ref_out, ref_cache = self._reference(ref, case.arrays, case.consts)
        rng = np.random.default_rng(case.seed)
        dout = rng.standard_normal(ref_out.shape)
        if self.where is not None:  # dL/dout zero where the output does not count
            dout = np.where(np.broadcast_to(self.where(case), dout.shape), dout, 0.0)
        ref_grads = self.grads(getattr(ref, self.backward)(dout.copy(), ref_cache))
        calls = [self._forward_call(case.arrays, case.consts, inplace=True),
                 Call(self.backward, (dout, ref_cache))]
        fd = {}
        for label, names in self.groups:
            u = {name: rng.standard_normal(case.arrays[name].shape) for name in names}
            loss = [float(np.sum(self._reference(ref, {**case.arrays, **{n: case.arrays[n] + sign * FD_STEP * u[n]
                                                                        for n in names}}, case.consts)[0] * dout))
                    for sign in (1.0, -1.0)]
            fd[label] = (u, (loss[0] - loss[1]) / (2 * FD_STEP))
        probe_at, probe_moved = len(calls), []
        if self.probe is not None:
            perturbed = self.probe.perturbed(case, rng)
            calls += [self._forward_call(arrays, case.consts) for arrays in perturbed]
            outs = [np.asarray(self._reference(ref, arrays, case.consts)[0]) for arrays in perturbed]
            probe_moved = self.probe.moved(np.asarray(ref_out), outs, case.consts["attention_mask"] > 0)
        return calls, PairPlan(np.asarray(ref_out), {k: np.asarray(v) for k, v in ref_grads.items()}, dout, fd,
                               probe_at, probe_moved)

    def judge(self, key: str, case: Case, plan: PairPlan, steps: list[Step], backend: str) -> None:
        where = None if self.where is None else self.where(case)
        if key == "out":
            got = host(returned(steps[0], self.forward), backend, f"{self.forward} output")
            compare(f"{self.forward} output", got, plan.ref_out, FORWARD_TOL, where)
            return
        if key == "probe":
            base = host(returned(steps[0], self.forward, inplace=False), backend, f"{self.forward} output")
            outs = [host(returned(s, self.forward, inplace=False), backend, f"{self.forward} output")
                    for s in steps[plan.probe_at:]]
            if any(o.shape != base.shape for o in outs):
                raise Failure(f"{self.forward}: the output's shape changed with the values of its inputs")
            self.probe.judge(self.forward, base, outs, case.consts["attention_mask"], plan.probe_moved)
            return
        test, label = key.split(" ", 1)
        names = dict(self.groups)[label]
        got = self._student_grads(steps, backend, names, case)
        if test == "ref":
            for name in names:
                compare(f"{self.backward}: d{name}", got[name], plan.ref_grads[name], GRAD_TOL)
            return
        u, fd = plan.fd[label]
        an = sum(float(np.sum(got[name] * u[name])) for name in names)
        norms = np.sqrt(sum(float(np.sum(got[n] ** 2)) for n in names) * sum(float(np.sum(u[n] ** 2)) for n in names))
        if not abs(fd - an) <= FD_TOL * (norms + abs(fd)) + 1e-12:
            what = ", ".join(f"d{n}" for n in names)
            lowest = min((got[n] for n in names), key=lambda g: np.finfo(g.dtype).bits)
            raise Failure(f"{self.backward}: {what} disagree{'s' if len(names) == 1 else ''} with central finite "
                          f"differences of sum({self.forward}(...) * dout) (the reference {self.forward}): along a "
                          f"random direction u, <{label}, u> = {an:.8g} but (L(x + h u) - L(x - h u)) / 2h = "
                          f"{fd:.8g} (h = {FD_STEP:g}){precision_hint(lowest, 1.0)}")

    def _student_grads(self, steps: list[Step], backend: str, names: tuple[str, ...], case: Case) -> dict:
        try:
            raw = returned(steps[1], self.backward)
        except Failure as f:
            if not f.exception:
                raise
            raise Failure(f"{f}\nhint: {self.backward} is called with the reference {self.forward}'s cache (so a "
                          f"mistake in your {self.forward} costs its own points only), laid out as the docstring of "
                          f"{self.forward} says: does your {self.backward} read it that way?", exception=True) from None
        try:
            grads = self.grads(raw)
        except Exception as e:  # a wrong structure: not a tuple, too short, not a dict
            raise Failure(f"{self.backward} returned {describe(raw)}, which does not hold the gradients "
                          f"({type(e).__name__}: {e})")
        got = {}
        for name in names:
            if not isinstance(grads, dict) or name not in grads:
                raise Failure(f"{self.backward}: the gradient of {name} is missing from what it returned")
            got[name] = host(grads[name], backend, f"{self.backward}: d{name}")
            if got[name].shape != case.arrays[name].shape:
                raise Failure(f"{self.backward}: d{name} has shape {got[name].shape}, expected "
                              f"{case.arrays[name].shape} (the shape of {name})")
        return got
