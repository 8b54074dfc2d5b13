"""Where minidt's time goes: per-layer timers and cProfile for the training step and batch-1 get_action.

    python -m benchmarks.profile              both, paper config (B 64, K 20) and batch 1
    python -m benchmarks.profile --what infer --cprofile 25

Per-layer timers wrap every module's forward and backward (here, not in the library) and report *exclusive*
time by module class: a Block's own time excludes the LayerNorms, attention and MLP inside it, so the column sums
to the total. cProfile then names the functions, and counts the calls (batch-1 inference is a count of calls).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import sys
import time
from collections import defaultdict

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.run import PAPER, batch, minidt_train_step  # noqa: E402
from minidt import DecisionTransformerConfig, DecisionTransformerModel  # noqa: E402
from minidt.optim import AdamW  # noqa: E402


class LayerTimers:
    """Exclusive seconds per (module class, forward|backward), via instance attributes that shadow the methods."""

    def __init__(self, model):
        self.total: dict[tuple[str, str], float] = defaultdict(float)
        self.calls: dict[tuple[str, str], int] = defaultdict(int)
        self.stack: list[float] = []  # time spent in children of each open frame
        for m in model.modules():
            for kind in ("forward", "backward"):
                if kind in type(m).__dict__ or any(kind in c.__dict__ for c in type(m).__mro__[:-1]):
                    setattr(m, kind, self.wrap(type(m).__name__, kind, getattr(m, kind)))

    def wrap(self, name, kind, f):
        def g(*a, **kw):
            self.stack.append(0.0)
            t0 = time.perf_counter()
            out = f(*a, **kw)
            dt = time.perf_counter() - t0
            children = self.stack.pop()
            self.total[name, kind] += dt - children
            self.calls[name, kind] += 1
            if self.stack:
                self.stack[-1] += dt
            return out

        return g

    def report(self, reps: int, wall: float) -> str:
        lines = [f"{'module':<28} {'pass':<9} {'ms/step':>9} {'%':>6} {'calls':>6}"]
        for (name, kind), t in sorted(self.total.items(), key=lambda kv: -kv[1]):
            lines.append(f"{name:<28} {kind:<9} {t / reps * 1e3:9.2f} {100 * t / wall:6.1f} "
                         f"{self.calls[name, kind] // reps:6d}")
        inside = sum(self.total.values())
        lines.append(f"{'(outside: loss+clip+AdamW, get_action)':<38} {(wall - inside) / reps * 1e3:9.2f} "
                     f"{100 * (wall - inside) / wall:6.1f}")
        lines.append(f"{'total':<38} {wall / reps * 1e3:9.2f}")
        return "\n".join(lines)


def work(what: str):
    config = DecisionTransformerConfig(**PAPER)
    model = DecisionTransformerModel(config, dtype="float32", seed=0)
    if what == "train":
        model.train()
        x = batch(config, 64, 20)
        return model, minidt_train_step(model, AdamW(model.parameters(), lr=1e-4, weight_decay=1e-4), x), 10
    model.eval()
    x = batch(config, 1, 20)
    x["attention_mask"][:] = 1.0
    return model, lambda: model.get_action(**x), 300  # one rollout step, as item 2 of benchmarks.run times


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--what", default="train,infer")
    p.add_argument("--cprofile", type=int, default=20, help="rows of the cProfile table (0: none)")
    args = p.parse_args(argv)
    for what in args.what.split(","):
        model, step, reps = work(what)
        for _ in range(3):
            step()
        timers = LayerTimers(model)
        t0 = time.perf_counter()
        for _ in range(reps):
            step()
        wall = time.perf_counter() - t0
        print(f"\n=== {what}: per-layer exclusive time, mean of {reps} steps ===")
        print(timers.report(reps, wall))
        if args.cprofile:
            model, step, reps = work(what)  # unwrapped
            step()
            prof = cProfile.Profile()
            prof.enable()
            for _ in range(reps):
                step()
            prof.disable()
            s = io.StringIO()
            st = pstats.Stats(prof, stream=s)
            print(f"\n=== {what}: cProfile, {reps} steps, by own time; {st.total_calls // reps} calls per step ===")
            st.sort_stats("tottime").print_stats(args.cprofile)
            print("\n".join(s.getvalue().splitlines()[6:]))


if __name__ == "__main__":
    main()
