"""DataParallel: one training step on every CPU core, as torch.nn.DataParallel spreads one over GPUs.

Why. NumPy runs each elementwise pass (LayerNorm, softmax, dropout, ReLU, the residual adds: about half of a
paper-config step) on one thread; OpenBLAS threads only the matrix products. On two cores one of them idles
through half of every step (benchmarks/README.md, findings 1-14). Split the batch in two and run each half in its
own Python thread: NumPy releases the GIL inside its loops, so the two halves' passes run at the same time, on
both cores. Meanwhile OpenBLAS is held to one thread per worker (threadpoolctl, as scikit-learn does; restored
afterwards): otherwise each worker's GEMMs would spread over every core and the workers would fight over them.

    dp = minidt.DataParallel(model)            # workers: the cores this process may use
    out = dp(**batch)                          # replica r runs rows r of the batch in thread r; outputs joined
    loss, grads = dt_loss(out, ...)            # the loss of the whole batch, computed once
    dp.backward(*grads)                        # replica r backpropagates its rows of grads; summed into p.grad

The sum is the whole batch's gradient, with no weights. The loss is computed once, on the joined outputs, so each
row's gradient already carries the whole batch's normalization (dt_loss divides by the number of real tokens in
the whole batch, not in a replica's rows). Row b's predictions depend on row b's inputs alone, so replica r's
backward of its rows of grads is the parameter gradient of the loss through those rows, and the sum over replicas
is the gradient through all of them. (Summing per-replica gradients of per-replica *mean* losses would weight each
replica by its number of rows: wrong as soon as the replicas' rows hold different numbers of real tokens.)

Replicas. Each is a copy of the model's module tree whose Parameters point to the model's arrays (no weight is
copied) but keep their own `.grad`, and whose modules keep their own caches. Before each call they take the
model's current arrays (the optimizer replaces `p.data` every step) and its train/eval mode, and the caller's grad
mode holds in every worker thread (`minidt.no_grad()` is per thread). A batch of one row (a rollout step of one
episode) runs the model itself: there is nothing to split.

Dropout. Replica r draws its rows of the very masks the model would draw for the whole batch: the model's one
stream (PCG64), advanced past the earlier rows' bits (`PCG64.advance`, no bits generated for them) and then past
the later rows', so every replica leaves the stream where the whole-batch draw would. So the step is the single
model's step whatever the number of workers, with dropout on too (to float round-off: the halves' GEMMs sum in a
different order), and the only state is the model's generator, which checkpoints already save: a resumed run
continues bit for bit. (The alternative, a stream per replica, would make results depend on the number of cores
and every checkpoint carry one state per replica.)

One replica per GPU (CuPy). On the cupy backend the default is one worker: one GPU's kernels already use all of
it, and threads would only interleave launches on its stream. For one replica per GPU, what would change: each
replica would hold its own copy of the weights on its device (broadcast after every optimizer step, where here
they share the model's arrays), each worker thread would enter its device (`with cupy.cuda.Device(r):`) and move
its rows there, the gradients would be reduced onto the model's device (a copy and an add, or an NCCL all-reduce)
instead of added on the host, and there would be no BLAS threads to limit. The split, the backward's slicing,
the dropout rows and the sum stay as they are.
"""

from __future__ import annotations

import copy
import inspect
import os
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import nullcontext
from dataclasses import fields
from typing import Any, Callable

import numpy as np

from .backend import Generator, array_namespace
from .layers.module import Module, Parameter, is_grad_enabled, set_grad_enabled
from .model import DecisionTransformerModel

BATCH_INPUTS = ("states", "actions", "rewards", "returns_to_go", "timesteps", "attention_mask")
SPLIT = BATCH_INPUTS + ("state_preds", "action_preds", "return_preds")  # what is cut into rows: inputs, gradients


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask, which a container or `taskset` narrows)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


class DataParallel:
    """`DataParallel(model, workers=None)`: the model's forward, backward and get_action split along the batch
    axis over `workers` replicas run in threads (default: the usable cores on the numpy backend, 1 on the others).
    `workers=1` is the model itself. Used as the model is: `dp(**batch)`, `dp.backward(...)`, `dp.get_action(...)`,
    `train()`, `eval()`, `zero_grad()`, `parameters()`, `named_parameters()`; `dp.module` is the model."""

    def __init__(self, model: DecisionTransformerModel, workers: int | None = None):
        if workers is None:
            workers = usable_cores() if model.backend.name == "numpy" else 1
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers: expected a positive integer, got {workers!r}")
        if workers > 1 and model.backend.name == "cupy":  # its dropout masks come from cuRAND, not rows of PCG64
            raise ValueError(f"workers: expected 1 on the cupy backend (one GPU's kernels already use all of it; "
                             f"the docstring says what one replica per GPU would take), got {workers}")
        self.module, self.workers = model, workers
        self.pool = ThreadPoolExecutor(workers - 1, thread_name_prefix="minidt-dp") if workers > 1 else None
        self.blas = None  # OpenBLAS's thread control, found once (it scans the loaded libraries)
        if workers > 1 and model.backend.name == "numpy":
            from threadpoolctl import ThreadpoolController

            self.blas = ThreadpoolController()
        self.replicas: list[Module] = []
        self.rows: list[tuple[int, int]] | None = None  # the last forward's rows per replica, for backward
        self.forward_sig = inspect.signature(model.forward)
        self.get_action_sig = inspect.signature(model.get_action)

    # --- the model's interface -------------------------------------------------------------------------------
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The model's forward (same arguments), each replica on its rows; outputs joined along the batch axis."""
        inputs = self.forward_sig.bind(*args, **kwargs).arguments
        rows = self.split(inputs)
        out = join(self.run("__call__", rows, inputs))
        self.rows = rows
        return out

    def get_action(self, *args: Any, **kwargs: Any) -> Any:
        """The model's get_action (same arguments), each replica on its rows: (B, act_dim)."""
        inputs = self.get_action_sig.bind(*args, **kwargs).arguments
        return join(self.run("get_action", self.split(inputs), inputs))

    def backward(self, state_preds: Any = None, action_preds: Any = None, return_preds: Any = None) -> None:
        """The model's backward (the gradients of the joined predictions, (B, ...) each): replica r backpropagates
        its rows; the replicas' parameter gradients are summed into the model's `.grad` (accumulating)."""
        if self.rows is None:
            raise RuntimeError("DataParallel.backward: no forward pass to differentiate; call forward first; each "
                               "forward serves one backward")
        grads = {"state_preds": state_preds, "action_preds": action_preds, "return_preds": return_preds}
        B = self.rows[-1][1]
        for name, g in grads.items():
            if g is not None and (len(g.shape) == 0 or g.shape[0] != B):
                raise ValueError(f"{name}: expected the gradient of a batch of {B} (the last forward's), got shape "
                                 f"{tuple(g.shape)}")
        rows, self.rows = self.rows, None
        self.run("backward", rows, grads)
        if len(rows) > 1:
            self.sum_gradients(len(rows))

    def parameters(self) -> list[Parameter]:
        return self.module.parameters()

    def named_parameters(self, prefix: str = "") -> Any:
        return self.module.named_parameters(prefix)

    def zero_grad(self) -> None:
        self.module.zero_grad()

    def train(self, mode: bool = True) -> "DataParallel":
        self.module.train(mode)
        return self

    def eval(self) -> "DataParallel":
        return self.train(False)

    @property
    def training(self) -> bool:
        return self.module.training

    @property
    def config(self) -> Any:
        return self.module.config

    @property
    def backend(self) -> Any:
        return self.module.backend

    @property
    def dtype(self) -> Any:
        return self.module.dtype

    def __repr__(self) -> str:
        return f"DataParallel(workers={self.workers}\n  (module): " + repr(self.module).replace("\n", "\n  ") + "\n)"

    # --- the machinery ---------------------------------------------------------------------------------------
    def split(self, inputs: dict[str, Any]) -> list[tuple[int, int]]:
        """Rows (start, stop) per replica: B rows in min(workers, B) near-equal parts (the first B % n one row
        longer, as numpy.array_split). Checks that every batch input has B rows, B from states."""
        for name in BATCH_INPUTS:
            if inputs.get(name) is not None and not hasattr(inputs[name], "shape"):
                inputs[name] = np.asarray(inputs[name])
        states = inputs.get("states")
        if states is None or len(states.shape) == 0:
            return [(0, 0)]  # nothing to split: the model says what is wrong
        B = states.shape[0]
        for name in BATCH_INPUTS:
            x = inputs.get(name)
            if x is not None and (len(x.shape) == 0 or x.shape[0] != B):
                raise ValueError(f"{name}: expected {B} rows first (the batch, as states has), got shape "
                                 f"{tuple(x.shape)}")
        n = max(1, min(self.workers, B))
        bounds = [r * (B // n) + min(r, B % n) for r in range(n + 1)]
        return list(zip(bounds[:-1], bounds[1:]))

    def run(self, method: str, rows: list[tuple[int, int]], inputs: dict[str, Any]) -> list[Any]:
        """Call `method` of replica r on rows[r] of every batch input, all at once; their results in order."""
        if len(rows) == 1:
            return [getattr(self.module, method)(**inputs)]
        replicas = self.take_weights()[:len(rows)]
        B, stream = rows[-1][1], self.module.gen.get_state()
        calls = []
        for replica, (start, stop) in zip(replicas, rows):
            replica.gen.set_state(stream)
            replica.gen.rows = (start, stop, B)
            part = {k: v[start:stop, ...] if k in SPLIT and v is not None else v for k, v in inputs.items()}
            calls.append(lambda r=replica, part=part: getattr(r, method)(**part))
        results = self.in_threads(calls)
        self.module.gen.set_state(replicas[0].gen.get_state())  # every replica left it where the whole draw would
        return results

    def in_threads(self, calls: list[Callable[[], Any]]) -> list[Any]:
        """calls[0] here, the others in the pool, in the caller's grad mode, OpenBLAS on one thread meanwhile.
        Waits for every call before returning or raising (no replica is still running when an error surfaces)."""
        mode = is_grad_enabled()

        def in_mode(call: Callable[[], Any]) -> Any:
            with set_grad_enabled(mode):
                return call()

        with self.blas.limit(limits=1, user_api="blas") if self.blas else nullcontext():
            futures = [self.pool.submit(in_mode, call) for call in calls[1:]]
            try:
                first = calls[0]()
            finally:
                wait(futures)
        return [first] + [f.result() for f in futures]

    def take_weights(self) -> list[Module]:
        """The replicas, pointed at the model's current arrays and mode (made on first use, and again after the
        model moved to another backend)."""
        if not self.replicas or self.replicas[0].backend is not self.module.backend:
            self.replicas = [replicate(self.module, RowsOfBatch(None, self.module.backend))
                             for _ in range(self.workers)]
            self.modules = list(zip(self.module.modules(), *(r.modules() for r in self.replicas)))
            self.params = list(zip(self.module.parameters(), *(r.parameters() for r in self.replicas)))
        for m, *copies in self.modules:
            for c in copies:
                c.training = m.training
        for p, *copies in self.params:
            for c in copies:
                c.data = p.data
        return self.replicas

    def sum_gradients(self, n: int) -> None:
        """p.grad += the first n replicas' gradients of p, which are cleared."""
        for p, *copies in self.params:
            grads = [c.grad for c in copies[:n] if c.grad is not None]
            for c in copies[:n]:
                c.grad = None
            if grads:
                total = grads[0]
                for g in grads[1:]:
                    total = total + g
                p.accumulate(total)


class RowsOfBatch(Generator):
    """A replica's view of the model's dropout stream: a draw for rows start:stop of a batch of B (`rows`) gives
    exactly the bits that the whole batch's draw gives those rows, and leaves the stream where the whole draw
    leaves it. Every dropout draw has the batch axis first, so a draw of n bits is n / (stop - start) per row."""

    rows: tuple[int, int, int]  # start, stop, B

    def random_bits(self, n: int) -> np.ndarray:
        start, stop, B = self.rows
        per_row, rem = divmod(n, stop - start)
        if rem:
            raise RuntimeError(f"DataParallel: a random draw of {n} bits is not {stop - start} rows of the batch")
        a, b, total = start * per_row, stop * per_row, B * per_row  # this replica's bits: a .. b-1 of 0 .. total-1
        stream = self.rng.bit_generator
        stream.advance(a // 2)  # bit j is half of 64-bit word j // 2 (Generator.random_bits)
        words = stream.random_raw((b + 1) // 2 - a // 2)
        stream.advance((total + 1) // 2 - (b + 1) // 2)
        return words.view(np.uint32)[a % 2:a % 2 + n]


def replicate(module: Module, gen: Generator) -> Module:
    """A copy of a module tree computing with the same weight arrays: new Modules (their own caches), new
    Parameters on the same `.data` (their own `.grad`), `gen` for every generator. No array is copied."""
    copied = copy.copy(module)
    for name, value in vars(module).items():
        if isinstance(value, Parameter):
            setattr(copied, name, Parameter(value.data))
        elif isinstance(value, Module):
            setattr(copied, name, replicate(value, gen))
        elif isinstance(value, Generator):
            setattr(copied, name, gen)
    vars(copied).pop("cache", None)  # what the model kept for its own backward
    vars(copied).pop("kept", None)
    return copied


def join(parts: list[Any]) -> Any:
    """Replicas' results joined along the batch axis: arrays, tuples of them, or output dataclasses; None stays."""
    first = parts[0]
    if len(parts) == 1 or first is None:
        return first
    if isinstance(first, tuple):
        return tuple(join(list(z)) for z in zip(*parts))
    if hasattr(first, "__dataclass_fields__"):
        return type(first)(**{f.name: join([getattr(p, f.name) for p in parts]) for f in fields(first)})
    return array_namespace(first).concat(parts, axis=0)
