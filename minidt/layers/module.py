"""Parameter and Module: the bookkeeping around the math, PyTorch's names and semantics, no autograd.

A Module's `forward` keeps the cache its `backward` needs (in training mode only); `backward(dout)` adds each
parameter's gradient into `Parameter.grad` (accumulating, as PyTorch does) and returns the gradient of the input.
"""

from __future__ import annotations

from typing import Any, Iterator

from ..backend import Backend, Generator, get_backend


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
        for m in self.modules():
            m.training = mode
            if not mode:
                m.clear_cache()
        return self

    def eval(self) -> "Module":
        return self.train(False)

    def clear_cache(self) -> None:
        """Drop what forward kept for backward. Modules with a cache override this."""
        if hasattr(self, "cache"):
            self.cache = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)

    # --- helpers for subclasses ------------------------------------------------------------------------------
    def keep(self, cache: Any) -> None:
        """Store the cache for backward in training mode; keep nothing in eval mode (inference needs none)."""
        self.cache = cache if self.training else None

    def take_cache(self) -> Any:
        """The cache of the last training-mode forward; each forward's cache serves one backward."""
        cache = getattr(self, "cache", None)
        if cache is None:
            raise RuntimeError(
                f"{type(self).__name__}.backward: no forward pass to differentiate. Call forward in training "
                "mode (module.train(); set the dropout probabilities to 0 for a deterministic pass) before backward"
            )
        self.cache = None
        return cache


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
