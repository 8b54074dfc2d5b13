"""A forward/backward function pair as graded (checks.py has the pieces), on each backend:

    output vs reference          the forward's output against the reference's, relative error <= 1e-9
    dX vs finite differences     for each group of inputs X: central differences of L = sum(forward(...) * dout)
                                 along a random direction u of the whole group, against <dX, u>
    dX vs reference              the backward's gradients against the reference's, relative error <= 1e-8

The backward runs on the reference forward's cache and the differences are of the reference forward, so a
mistake in a forward costs the forward's checks and nothing else. Where the pair is causal, a probe: a change at
position j must leave earlier positions, and a change at a padded position every real position, exactly as they
were (and a position must react to itself where the reference does).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from .checks import (FD_STEP, FD_TOL, FORWARD_TOL, GRAD_TOL, PROBE_TOL, Call, Case, Draw, Failure, Kind, Step,
                     compare, describe, host, returned, returned_backward)
from .hints import precision_hint


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
        raw = returned_backward(steps[1], self.forward, self.backward)
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
