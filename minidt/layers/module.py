"""Parameter, Module and grad mode: the bookkeeping around the math, PyTorch's names and semantics, no autograd.

A Module's `forward` keeps the cache its `backward` needs; `backward(dout)` adds each parameter's gradient into
`Parameter.grad` (accumulating, as PyTorch does) and returns the gradient of the input.

Two switches, independent, as in PyTorch:
- `train()` / `eval()` decide what dropout does, nothing else: gradients flow in eval mode too.
- grad mode decides whether a forward keeps its cache: on by default, off inside `with minidt.no_grad():`
  (per thread, like torch's), where a forward keeps nothing and costs no memory for backward. Inference
  (`get_action`, rollouts) runs that way.
"""

from __future__ import annotations

import functools
import math
import threading
from typing import Any, Callable, Iterator

from ..backend import Backend, Generator, backend_for_device, device_name, get_backend, to_numpy

_grad_mode = threading.local()  # .enabled: this thread's grad mode (absent: on, as a new thread starts in torch)


def is_grad_enabled() -> bool:
    """Whether a forward run now keeps what backward needs (this thread's grad mode)."""
    return getattr(_grad_mode, "enabled", True)


class _GradMode:
    """A context manager (and decorator) that sets this thread's grad mode to `self.mode` and restores it."""

    mode: bool

    def __enter__(self) -> None:
        self.prev = is_grad_enabled()
        _grad_mode.enabled = self.mode

    def __exit__(self, *exc: Any) -> None:
        _grad_mode.enabled = self.prev

    def __call__(self, fn: Callable) -> Callable:
        mode = self.mode

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with _scoped(mode):
                return fn(*args, **kwargs)
        return wrapper


class no_grad(_GradMode):
    """`with minidt.no_grad():` forwards keep no cache for backward (inference); `@minidt.no_grad()` on a
    function does the same for its calls. As torch.no_grad."""

    mode = False


class enable_grad(_GradMode):
    """`with minidt.enable_grad():` grad mode on again, inside a no_grad block. As torch.enable_grad."""

    mode = True


class set_grad_enabled(_GradMode):
    """`set_grad_enabled(False)` sets this thread's grad mode at once; `with set_grad_enabled(mode):` restores
    the previous mode on exit. As torch.set_grad_enabled."""

    def __init__(self, mode: bool):
        self.mode = bool(mode)
        self.prev = is_grad_enabled()
        _grad_mode.enabled = self.mode

    def __enter__(self) -> None:  # the mode was set when the object was made
        pass

    def __call__(self, fn: Callable) -> Callable:
        _grad_mode.enabled = self.prev  # as a decorator, the mode applies inside each call only
        return super().__call__(fn)


def _scoped(mode: bool) -> _GradMode:
    return no_grad() if not mode else enable_grad()


class Parameter:
    """A trainable array and the gradient accumulated into it (None until the first backward)."""

    def __init__(self, data: Any):
        self.data = data
        self.grad: Any = None

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    def accumulate(self, g: Any) -> None:
        """grad += g (the first call stores g itself: no zeros allocated, no copy)."""
        self.grad = g if self.grad is None else self.grad + g

    def __repr__(self) -> str:
        return f"Parameter(shape={self.shape}, dtype={self.data.dtype})"


class Module:
    """Holds Parameters and child Modules as attributes, in the order they were set (that order is
    `named_parameters()`'s order, as in PyTorch). Lists of modules are `ModuleList`s."""

    training: bool = True

    def __init__(self, backend: "str | Backend | None" = None, dtype: str = "float32"):
        self.backend = get_backend(backend)
        self.dtype = self.backend.dtype(dtype)
        self.training = True

    # --- the tree --------------------------------------------------------------------------------------------
    def children(self) -> Iterator[tuple[str, "Module"]]:
        for name, value in vars(self).items():
            if isinstance(value, Module):
                yield name, value

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        for name, value in vars(self).items():
            if isinstance(value, Parameter):
                yield prefix + name, value
            elif isinstance(value, Module):
                yield from value.named_parameters(prefix + name + ".")

    def parameters(self) -> list[Parameter]:
        return [p for _, p in self.named_parameters()]

    def modules(self) -> Iterator["Module"]:
        yield self
        for _, child in self.children():
            yield from child.modules()

    def zero_grad(self) -> None:
        """Clear every gradient (set to None, as PyTorch's default `set_to_none=True`)."""
        for p in self.parameters():
            p.grad = None

    def train(self, mode: bool = True) -> "Module":
        """Training mode (dropout active) or, with mode=False, eval mode (dropout off). Nothing else changes:
        gradients flow in both (grad mode, `minidt.no_grad()`, is the other switch)."""
        for m in self.modules():
            m.training = mode
        return self

    def eval(self) -> "Module":
        """Dropout off; the same as train(False)."""
        return self.train(False)

    def num_parameters(self) -> int:
        """The number of trainable numbers (as transformers' `model.num_parameters()`)."""
        return sum(math.prod(p.shape) for p in self.parameters())

    # --- devices ---------------------------------------------------------------------------------------------
    @property
    def device(self) -> str:
        """Where the parameters live, by PyTorch's names: "cpu" (numpy), "cuda:N" (cupy), "strict:device1"."""
        return device_name(self.backend)

    def to(self, device: "str | Backend") -> "Module":
        """Move every parameter (and gradient) to a device, in place; returns self. "cpu" is the numpy backend,
        "cuda" (or "cuda:N", the current CUDA device) the cupy one; backend names work too. What forward kept for
        backward stays behind: run forward again after a move."""
        b = backend_for_device(device)
        for m in self.modules():
            if hasattr(m, "backend"):
                m.backend = b
                m.dtype = b.dtype(m.dtype)
            for value in vars(m).values():
                if isinstance(value, Generator):
                    value.backend = b
            if hasattr(m, "cache"):
                m.cache = None
            m.kept = None
        for p in self.parameters():
            p.data = b.asarray(to_numpy(p.data))
            p.grad = None if p.grad is None else b.asarray(to_numpy(p.grad))
        return self

    # --- printing --------------------------------------------------------------------------------------------
    def extra_repr(self) -> str:
        """What this module's line says besides its children (as torch's extra_repr): its own parameters'
        shapes by default."""
        return ", ".join(f"{name}={p.shape}" for name, p in vars(self).items() if isinstance(p, Parameter))

    def __repr__(self) -> str:
        """The module tree, one child per line with its name, as torch prints it."""
        lines = [f"({name}): " + repr(child).replace("\n", "\n  ") for name, child in self.children()]
        if not lines:
            return f"{type(self).__name__}({self.extra_repr()})"
        head = self.extra_repr()
        body = "".join(f"\n  {line}" for line in ([head] if head else []) + lines)
        return f"{type(self).__name__}({body}\n)"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        out = self.forward(*args, **kwargs)
        self.kept = is_grad_enabled()  # whether this forward kept what backward needs (see require_forward)
        return out

    # --- helpers for subclasses ------------------------------------------------------------------------------
    def keep(self, cache: Any) -> None:
        """Store the cache for backward; keep nothing under `no_grad()` (inference needs none)."""
        self.cache = cache if is_grad_enabled() else None

    def take_cache(self) -> Any:
        """The cache of the last forward; each forward's cache serves one backward."""
        cache = getattr(self, "cache", None)
        if cache is None:
            self.require_forward()  # raises, saying why
        self.cache = self.kept = None
        return cache

    def require_forward(self) -> None:
        """The first line of a backward whose module keeps no cache of its own (it calls its children's
        backwards): raise, naming this module, unless the last forward kept what backward needs. Each forward
        serves one backward."""
        kept, self.kept = getattr(self, "kept", None), None
        if not kept:
            why = ("its last forward ran under minidt.no_grad(), which keeps nothing for backward: run the forward "
                   "outside no_grad" if kept is False else "call forward first; each forward serves one backward")
            raise RuntimeError(f"{type(self).__name__}.backward: no forward pass to differentiate; {why}")


class ModuleList(Module):
    """A list of modules named 0, 1, 2, ... (as `encoder.h.0.attn...` and `predict_action.0.weight`)."""

    def __init__(self, modules: list[Module]):
        self.training = True
        for i, m in enumerate(modules):
            setattr(self, str(i), m)

    def __getitem__(self, i: int) -> Module:
        return list(self)[i]

    def __iter__(self) -> Iterator[Module]:
        return (m for _, m in self.children())

    def __len__(self) -> int:
        return sum(1 for _ in self.children())


def init_normal(gen: Generator, shape: tuple[int, ...], std: float, dtype: str) -> Parameter:
    """A Parameter drawn from N(0, std^2); std = 0 gives zeros (as `initializer_range=0` must)."""
    return Parameter(gen.normal(shape, std, dtype))
