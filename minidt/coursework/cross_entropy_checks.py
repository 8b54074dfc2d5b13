"""The checks of assignment 7 (cross_entropy.py): the masked cross-entropy's loss, its padding invariance, and its
gradient, on inputs drawn to tell the classic mistakes from the right answer.

    cross_entropy_forward: loss vs reference      relative error <= 1e-9
    cross_entropy_forward: padding invariance     the loss, with other garbage in the padded rows (NaN logits;
                                                  huge logits and one-hot targets), exactly as it was
    cross_entropy_backward: dlogits vs finite     called with the reference forward's cache; central differences
        differences, and vs reference             of the reference forward along a random direction

Every input has a left-padded row (an unmasked mean differs from the masked one), at least two real steps in
every row (a gradient without its 1/N is off by N >= 2), and most have rows of logits moved up or down by 800
(without the row maximum subtracted, exp overflows to inf or every exp underflows to 0).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .checks import (FD_STEP, FD_TOL, FORWARD_TOL, GRAD_TOL, PROBE_TOL, Call, Case, Draw, Failure, Kind, Step,
                     compare, describe, host, left_padding_mask, returned, returned_backward)

FORWARD, BACKWARD = "cross_entropy_forward", "cross_entropy_backward"


def _draw(d: Draw) -> Case:
    B, K, A = d.int(1, 3, "B"), d.int(3, 5, "K"), d.int(2, 6, "A")
    mask = left_padding_mask(d, B, K, min_real=2)  # row 0 padded, every row at least 2 real steps
    scale = d.float(0.3, 4.0, "logit scale")
    shift = d.choice((800.0, 0.0), "rows moved up or down by")
    nan_padding = d.bool("NaN logits at padding")
    rng = d.rng()
    logits = scale * rng.standard_normal((B, K, A)) + shift * rng.choice((-1.0, 1.0), size=(B, K, 1))
    padded = mask == 0
    logits[padded] = np.nan if nan_padding else 1e3 * rng.standard_normal((int(padded.sum()), A))
    target = np.eye(A)[rng.integers(A, size=(B, K))]  # one-hot rows, padding included (the garbage a batch holds)
    return Case({"logits": logits}, {"target": target, "mask": mask, "nan_padding": nan_padding, "shift": shift},
                seed=int(rng.integers(2**31)))


def _garbage(case: Case, rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
    """(logits, target) with other padded rows: NaN logits and no action; huge logits and other one-hot rows."""
    logits, target, padded = case.arrays["logits"], case.consts["target"], case.consts["mask"] == 0
    n, A = int(padded.sum()), logits.shape[-1]
    out = []
    for new_logits, new_target in ((np.full((n, A), np.nan), np.zeros((n, A))),
                                   (1e4 * rng.standard_normal((n, A)), np.eye(A)[rng.integers(A, size=n)])):
        z, y = logits.copy(), target.copy()
        z[padded], y[padded] = new_logits, new_target
        out.append((z, y))
    return out


@dataclass
class CrossEntropy:
    """The forward's loss against the reference's and its invariance to what padded rows hold; the backward, on
    the reference forward's cache, against central differences of the reference forward and against the
    reference backward."""

    functions = (FORWARD, BACKWARD)
    draw = staticmethod(_draw)

    def kinds(self) -> list[Kind]:
        return [Kind("loss", f"{FORWARD}: loss vs reference", 1, FORWARD),
                Kind("padding", f"{FORWARD}: padding invariance", 1, FORWARD),
                Kind("fd", f"{BACKWARD}: dlogits vs finite differences", 1, BACKWARD),
                Kind("ref", f"{BACKWARD}: dlogits vs reference", 1, BACKWARD)]

    def plan(self, case: Case, ref: Any) -> tuple[list, tuple]:
        logits, target, mask = case.arrays["logits"], case.consts["target"], case.consts["mask"]
        loss, cache = ref.cross_entropy_forward(logits.copy(), target, mask)
        dlogits = ref.cross_entropy_backward(cache)
        rng = np.random.default_rng(case.seed)
        u = rng.standard_normal(logits.shape)
        fd = (float(ref.cross_entropy_forward(logits + FD_STEP * u, target, mask)[0])
              - float(ref.cross_entropy_forward(logits - FD_STEP * u, target, mask)[0])) / (2 * FD_STEP)
        calls = [Call(FORWARD, (logits, target, mask), take=0), Call(BACKWARD, (cache,))]
        calls += [Call(FORWARD, (z, y, mask), take=0, inplace=False) for z, y in _garbage(case, rng)]
        return calls, (np.asarray(loss), np.asarray(dlogits), u, fd)

    def judge(self, key: str, case: Case, plan: tuple, steps: list[Step], backend: str) -> None:
        ref_loss, ref_dlogits, u, fd = plan
        if key in ("loss", "padding"):
            loss = self._loss(case, steps[0], backend)
            if key == "loss":
                compare(f"{FORWARD} loss", loss, ref_loss, FORWARD_TOL)
                return
            garbage = ("NaN logits and zero targets", "logits of size 1e4 and other one-hot targets")
            for step, what in zip(steps[2:], garbage):
                other = host(returned(step, FORWARD, inplace=False), backend, f"{FORWARD} loss")
                if other.shape != () or not abs(float(other) - float(loss)) <= PROBE_TOL * abs(float(loss)):
                    raise Failure(f"{FORWARD}: the loss changed from {float(loss):.10g} to {float(other):.10g} when "
                                  f"the padded steps were given {what}: what a padded step holds must not count "
                                  "(the mean is over the real steps, N of them, and every padded row is set aside "
                                  "with xp.where before anything is computed from it)")
            return
        raw = returned_backward(steps[1], FORWARD, BACKWARD)
        dlogits = host(raw, backend, f"{BACKWARD}: dlogits")
        if dlogits.shape != u.shape:
            raise Failure(f"{BACKWARD}: dlogits has shape {dlogits.shape} ({describe(raw)}), expected {u.shape} "
                          "(the shape of logits)")
        if not np.all(np.isfinite(dlogits)):
            idx = tuple(int(i) for i in np.argwhere(~np.isfinite(dlogits))[0])
            at = "a padded step" if case.consts["mask"][idx[:2]] == 0 else "a real step"
            raise Failure(f"{BACKWARD}: dlogits is not finite at index {idx}, {at} ({dlogits[idx]}); at padding it "
                          "must be exactly 0")
        if key == "ref":
            compare(f"{BACKWARD}: dlogits", dlogits, ref_dlogits, GRAD_TOL)
            return
        an = float(np.sum(dlogits * u))
        if not abs(fd - an) <= FD_TOL * (float(np.linalg.norm(dlogits) * np.linalg.norm(u)) + abs(fd)) + 1e-12:
            raise Failure(f"{BACKWARD}: dlogits disagrees with central finite differences of the reference "
                          f"{FORWARD}'s loss: along a random direction u, <dlogits, u> = {an:.8g} but "
                          f"(L(logits + h u) - L(logits - h u)) / 2h = {fd:.8g} (h = {FD_STEP:g})")

    @staticmethod
    def _loss(case: Case, step: Step, backend: str) -> np.ndarray:
        """The student's loss on the drawn input; when it is not finite, what in this input can cause that."""
        loss = host(returned(step, FORWARD), backend, f"{FORWARD} loss")
        if loss.shape != ():
            raise Failure(f"{FORWARD}: the loss has shape {loss.shape}, expected a 0-d array (one number: the mean "
                          "over the real steps)")
        if np.all(np.isfinite(loss)):
            return loss
        causes = []
        if case.consts["shift"]:
            causes.append(f"its rows of logits are moved up or down by {case.consts['shift']:g}: exp(800) overflows "
                          "to inf and exp(-800) underflows to 0 (log 0 = -inf); subtract each row's maximum first "
                          "(every exp is then at most 1, and one of them is 1)")
        if case.consts["nan_padding"]:
            causes.append("its logits are NaN at its padded steps (a model's padded outputs are garbage, possibly "
                          "NaN): set the padded rows aside with xp.where before the exponential; multiplying by the "
                          "mask keeps the NaN (NaN * 0 = NaN)")
        raise Failure(f"{FORWARD}: the loss is not finite ({float(loss)})"
                      + "".join(f"; this input: {c}" for c in causes))
