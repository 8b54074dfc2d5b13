"""The checks the grader runs, and the hypothesis machinery that draws their inputs.

A forward/backward pair gets, on each backend:
    output vs reference          the forward's output against the reference's, relative error <= 1e-9
    dX vs finite differences     for each group of inputs X: directional central differences of
                                 L = sum(forward(...) * dout) along random directions u, against <dX, u>
    dX vs reference              the backward's gradients against the reference's, relative error <= 1e-8
The tolerances are the parity spec's float64 ones. Every check runs a hypothesis property (`@given` with
`derandomize=True`, so a file gets the same score on every run) over inputs drawn by the pair's `draw`: shapes
and hyperparameters from hypothesis, array entries from a NumPy generator seeded by a drawn seed (well-scaled
numbers, so the finite differences measure the gradient and not round-off).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from ..backend import Backend, backend_of, get_backend, to_numpy
from .spec import Check

FORWARD_TOL = 1e-9  # float64 outputs: max |got - expected| / max |expected|
GRAD_TOL = 1e-8  # float64 gradients, the same measure
FD_TOL = 1e-6  # directional differences: |fd - <g, u>| <= FD_TOL * (|g| |u| + |fd|)
FD_STEP = 1e-6  # central differences in float64: truncation ~h^2, round-off ~1e-16 / h
FD_DIRECTIONS = 2


class Draw:
    """What a case-drawing function sees: labelled hypothesis draws (shown in a failing check's output)."""

    def __init__(self, data: Any):
        self.data = data

    def int(self, lo: int, hi: int, label: str) -> int:
        from hypothesis import strategies as st

        return self.data.draw(st.integers(lo, hi), label=label)

    def float(self, lo: float, hi: float, label: str) -> float:
        from hypothesis import strategies as st

        return self.data.draw(st.floats(lo, hi, allow_nan=False, allow_infinity=False), label=label)

    def choice(self, options: Sequence[Any], label: str) -> Any:
        from hypothesis import strategies as st

        return self.data.draw(st.sampled_from(list(options)), label=label)

    def bool(self, label: str) -> bool:
        from hypothesis import strategies as st

        return self.data.draw(st.booleans(), label=label)

    def rng(self) -> np.random.Generator:
        return np.random.default_rng(self.int(0, 2**32 - 1, "seed"))


@dataclass
class Case:
    """One drawn input: `arrays` are the float64 inputs gradients are taken with respect to, `consts` the rest
    (integer ids, masks, hyperparameters). NumPy arrays among either are moved to the backend under test."""

    arrays: dict[str, np.ndarray]
    consts: dict[str, Any] = field(default_factory=dict)
    seed: int = 0


def run_property(draw: Callable[[Draw], Case], body: Callable[[Case], None], max_examples: int) -> None:
    """Run body on max_examples drawn cases; raise the first failure (with hypothesis' notes naming the draws)."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import strategies as st

    # No shrinking: a student wants the verdict quickly; the drawn shapes are small already.
    @settings(max_examples=max_examples, deadline=None, database=None, derandomize=True,
              phases=(Phase.explicit, Phase.generate), suppress_health_check=list(HealthCheck),
              report_multiple_bugs=False, print_blob=False)
    @given(st.data())
    def prop(data: Any) -> None:
        body(draw(Draw(data)))

    prop()


def on_backend(case: Case, b: Backend) -> tuple[dict[str, Any], dict[str, Any]]:
    """Fresh backend copies of the case's arrays (a function that writes into its inputs spoils nothing else)."""
    # np.array copies: on the numpy backend asarray would hand out the case's own arrays
    arrays = {k: b.asarray(np.array(v, dtype=np.float64), "float64") for k, v in case.arrays.items()}
    consts = {k: b.asarray(np.array(v)) if isinstance(v, np.ndarray) else v for k, v in case.consts.items()}
    return arrays, consts


def host(x: Any, b: Backend, what: str) -> np.ndarray:
    """A returned array as float64 NumPy, after checking it is an array of the backend it was given."""
    if isinstance(x, np.generic) and b.name == "numpy":  # NumPy reductions return scalars, not 0-d arrays
        x = np.asarray(x)
    try:
        got = backend_of(x)
    except TypeError:
        got = None
    if got != b:
        raise AssertionError(f"{what}: expected an array of the {b.name!r} backend (the namespace of the inputs), "
                             f"got {type(x).__module__}.{type(x).__name__}")
    return np.asarray(to_numpy(x), dtype=np.float64)


def compare(what: str, got: np.ndarray, want: np.ndarray, tol: float, where: np.ndarray | None = None) -> None:
    """Assert got == want to `tol` relative to max |want| (over `where` only, when given)."""
    if got.shape != want.shape:
        raise AssertionError(f"{what}: expected shape {want.shape}, got {got.shape}")
    if not np.all(np.isfinite(got)):
        idx = tuple(int(i) for i in np.argwhere(~np.isfinite(got))[0])
        raise AssertionError(f"{what}: not finite at index {idx} ({got[idx]}); a NaN even at a padded position "
                             "poisons the backward pass (NaN * 0 = NaN)")
    mask = np.ones(got.shape, bool) if where is None else np.broadcast_to(where, got.shape)
    if not mask.any():
        return
    diff = np.where(mask, np.abs(got - want), 0.0)
    scale = max(float(np.max(np.abs(want[mask]))), 1e-300)
    err = float(np.max(diff)) / scale
    if err > tol:
        idx = tuple(int(i) for i in np.unravel_index(int(np.argmax(diff)), got.shape))
        raise AssertionError(f"{what}: max |got - expected| / max |expected| = {err:.2e} > {tol:.0e}; "
                             f"at index {idx}: got {got[idx]:.6g}, expected {want[idx]:.6g}")


@dataclass
class Pair:
    """A forward/backward function pair and how to call them.

    call(forward, arrays, consts) -> (out, cache); grads(backward, dout, cache) -> {array name: gradient};
    groups: (label, array names) graded together, one finite-difference and one reference check per group;
    where(case) -> bool array broadcastable to out: the entries that count (None: all of them)."""

    forward: str
    backward: str
    draw: Callable[[Draw], Case]
    call: Callable[[Callable, dict, dict], tuple[Any, Any]]
    grads: Callable[[Callable, Any, Any], dict[str, Any]]
    groups: tuple[tuple[str, tuple[str, ...]], ...]
    where: Callable[[Case], np.ndarray] | None = None

    def checks(self, backend: str) -> list[Check]:
        tag = f"[{backend}]"
        out = [Check(f"{self.forward}: output vs reference {tag}", 1, lambda s, r, n: self._forward(s, r, n, backend))]
        for label, names in self.groups:
            out.append(Check(f"{self.backward}: {label} vs finite differences {tag}", 1,
                             lambda s, r, n, names=names: self._fd(s, n, backend, names)))
            out.append(Check(f"{self.backward}: {label} vs reference {tag}", 1,
                             lambda s, r, n, names=names: self._ref(s, r, n, backend, names)))
        return out

    def _mask(self, case: Case) -> np.ndarray | None:
        return None if self.where is None else self.where(case)

    def _forward(self, student: Any, ref: Any, n: int, backend: str) -> None:
        b = get_backend(backend)

        def body(case: Case) -> None:
            got = host(self.call(getattr(student, self.forward), *on_backend(case, b))[0], b, f"{self.forward} output")
            want = to_numpy(self.call(getattr(ref, self.forward), *on_backend(case, b))[0])
            compare(f"{self.forward} output", got, want, FORWARD_TOL, self._mask(case))

        run_property(self.draw, body, n)

    def _upstream(self, case: Case, out_shape: tuple) -> tuple[np.random.Generator, np.ndarray]:
        """dL/dout for L = sum(out * dout): random, zero where the output does not count."""
        rng = np.random.default_rng(case.seed)
        dout = rng.standard_normal(out_shape)
        mask = self._mask(case)
        return rng, dout if mask is None else np.where(np.broadcast_to(mask, out_shape), dout, 0.0)

    def _student_grads(self, student: Any, case: Case, b: Backend, names: tuple[str, ...]):
        fwd, bwd = getattr(student, self.forward), getattr(student, self.backward)
        out, cache = self.call(fwd, *on_backend(case, b))
        out = host(out, b, f"{self.forward} output")
        rng, dout = self._upstream(case, out.shape)
        grads = self.grads(bwd, b.asarray(dout.copy(), "float64"), cache)  # a copy: backward may write into it
        got = {}
        for name in names:
            if not isinstance(grads, dict) or name not in grads:
                raise AssertionError(f"{self.backward}: the gradient of {name} is missing from what it returned")
            got[name] = host(grads[name], b, f"{self.backward}: d{name}")
            if got[name].shape != case.arrays[name].shape:
                raise AssertionError(f"{self.backward}: d{name} has shape {got[name].shape}, expected "
                                     f"{case.arrays[name].shape} (the shape of {name})")
        return rng, dout, got

    def _fd(self, student: Any, n: int, backend: str, names: tuple[str, ...]) -> None:
        b = get_backend(backend)
        fwd = getattr(student, self.forward)

        def body(case: Case) -> None:
            rng, dout, got = self._student_grads(student, case, b, names)
            for name in names:
                g = got[name]
                for _ in range(FD_DIRECTIONS):
                    u = rng.standard_normal(g.shape)

                    def loss(x: np.ndarray) -> float:
                        arrays, consts = on_backend(case, b)
                        arrays[name] = b.asarray(x, "float64")
                        return float(np.sum(to_numpy(self.call(fwd, arrays, consts)[0]) * dout))

                    x0 = case.arrays[name]
                    fd = (loss(x0 + FD_STEP * u) - loss(x0 - FD_STEP * u)) / (2 * FD_STEP)
                    an = float(np.sum(g * u))
                    bound = FD_TOL * (float(np.linalg.norm(g) * np.linalg.norm(u)) + abs(fd)) + 1e-12
                    if not abs(fd - an) <= bound:
                        raise AssertionError(
                            f"{self.backward}: d{name} disagrees with central finite differences of "
                            f"sum({self.forward}(...) * dout): along a random direction u, <d{name}, u> = {an:.8g} "
                            f"but (L(x + h u) - L(x - h u)) / 2h = {fd:.8g} (h = {FD_STEP:g})")

        run_property(self.draw, body, n)

    def _ref(self, student: Any, ref: Any, n: int, backend: str, names: tuple[str, ...]) -> None:
        b = get_backend(backend)

        def body(case: Case) -> None:
            _, dout, got = self._student_grads(student, case, b, names)
            out, cache = self.call(getattr(ref, self.forward), *on_backend(case, b))
            want = self.grads(getattr(ref, self.backward), b.asarray(dout.copy(), "float64"), cache)
            for name in names:
                compare(f"{self.backward}: d{name}", got[name], to_numpy(want[name]), GRAD_TOL)

        run_property(self.draw, body, n)


@dataclass
class Custom:
    """Checks that are not a forward/backward pair (an optimizer step, a training step): each body gets
    (student, reference, backend, case) and raises AssertionError on a difference."""

    function: str
    draw: Callable[[Draw], Case]
    bodies: tuple[tuple[str, int, Callable[[Any, Any, Backend, Case], None]], ...]  # (what, points, body)

    def checks(self, backend: str) -> list[Check]:
        def make(body: Callable) -> Callable:
            b = get_backend(backend)
            return lambda s, r, n: run_property(self.draw, lambda case: body(s, r, b, case), n)

        return [Check(f"{self.function}: {what} [{backend}]", points, make(body))
                for what, points, body in self.bodies]
