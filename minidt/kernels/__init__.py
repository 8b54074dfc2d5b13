"""The fused GPU path: CUDA C kernels (`*.cu` here) beside their NumPy twins (the layer functions in layers/).

Opt-in, until a GPU run has compared every kernel with its twin: set MINIDT_KERNELS=1 in the environment (or call
`minidt.kernels.enable()`), and the layer functions route CuPy arrays to these kernels (`switch.kernel_path(x)` is
the question each asks first). Without it, and always on NumPy and on the strict backend, they run the array-op
code in layers/, which stays the textbook.

Where the line runs, and why there. A kernel takes over the work *between* two matrix products: LayerNorm, the
attention softmax (scale, mask, softmax and dropout in one launch), each activation with the bias add before it,
dropout with the residual add after it, the masked MSE loss, the embedding backward, and the optimizer (the
gradient norm and AdamW over the flat buffer). That is where the array-op path spends its launches: a LayerNorm
backward is about ten array operations, each a kernel launch and a pass over memory, where one fused kernel reads
its inputs once. The matrix products stay with cuBLAS (`@`), tuned for each GPU, a few launches per layer; the
price is that CuPy refuses to capture a step that calls cuBLAS as a CUDA graph (benchmarks.gpu_check's profile
part reports what refuses). Shape checks, caches and the module bookkeeping stay in Python: they launch nothing.
The launchers (NAME.py beside NAME.cu) only allocate outputs, pick the grid and pass arguments.

| kernel (file)                          | launches        | its twin (layers/, losses.py, optim.py)              |
|----------------------------------------|-----------------|------------------------------------------------------|
| layernorm_forward (layernorm.cu)       | 1               | layernorm_forward                                    |
| layernorm_backward + column_sum        | 2               | layernorm_backward                                   |
| softmax_forward (softmax.cu)           | 1               | scale, bias, softmax_forward, dropout (attention)    |
| softmax_backward                       | 1               | dropout backward, softmax_backward, scale            |
| bias_act_forward (bias_act.cu)         | 1               | Conv1D's bias add + the activation's forward         |
| bias_act_backward + column_sum         | 2               | the activation's backward + the bias gradient        |
| residual_dropout_forward (residual.cu) | 1               | residual + dropout_forward (hash_keep's mask)        |
| dropout_backward                       | 1               | dropout_backward                                     |
| mse_partials + mse_finish (mse.cu)     | 2               | masked_mse                                           |
| embedding_backward (embedding.cu)      | 1               | embedding_backward (scatter_add)                     |
| grad_norm (adamw.cu)                   | 1 (+1 scale)    | clip_grad_norm on the flat buffer (the scale: CuPy)  |
| adamw                                  | 1               | adamw_step over the flat buffer                      |

Dropout's mask on this path comes from a counter-based hash of (seed, offset, element) (SplitMix64, common.cuh;
its NumPy twin is `layers.dropout.hash_keep`), not from cuRAND: backward draws the mask again instead of storing
it, and cuRAND (which refuses CUDA graph capture, as cuBLAS does) is not called. The numpy path keeps PCG64's masks
(see layers/dropout.py for why), so the same seed gives different masks on the two paths, as it already did
between NumPy and cuRAND.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from .switch import enable, kernel_path  # noqa: F401  (minidt.kernels.enable(): the public switch)

HERE = Path(__file__).resolve().parent
SOURCES = ("layernorm", "softmax", "bias_act", "residual", "mse", "embedding", "adamw")  # each NAME.cu + NAME.py


def source(name: str) -> str:
    """NAME.cu's text with its local #include "..." lines replaced by the headers' text: what NVRTC compiles.
    Inlined rather than passed as an include path, so that CuPy's compile cache (keyed by the source text) sees a
    change to a header too."""
    def include(m: "re.Match") -> str:
        return (HERE / m.group(1)).read_text()

    return re.sub(r'^#include "([^"]+)"$', include, (HERE / f"{name}.cu").read_text(), flags=re.M)


def kernel_names(name: str) -> list[str]:
    """The __global__ templates NAME.cu defines (and column_sum, which every source gets from common.cuh)."""
    return re.findall(r"__global__ void (\w+)\(", source(name))


def name_expressions(name: str) -> list[str]:
    """Every instantiation a launcher asks for: each kernel for float and double."""
    return [f"{k}<{t}>" for k in kernel_names(name) for t in ("float", "double")]


NVRTC_OPTIONS = ("--std=c++17",)
_modules: dict[tuple[str, int], Any] = {}


def function(name: str, kernel: str, dtype: Any) -> Any:
    """The compiled kernel `kernel<float|double>` of NAME.cu, for the current device (compiled once per process,
    and cached on disk by CuPy across processes)."""
    import cupy

    key = (name, cupy.cuda.Device().id)
    if key not in _modules:
        _modules[key] = cupy.RawModule(code=source(name), options=NVRTC_OPTIONS,
                                       name_expressions=name_expressions(name))
    return _modules[key].get_function(f"{kernel}<{'double' if cupy.dtype(dtype) == cupy.float64 else 'float'}>")


def scalar(dtype: Any, value: float) -> Any:
    """A Python number as the kernel's T (float32 or float64): rounded once, as NumPy rounds a Python float
    operand of a float32 array."""
    import numpy as np

    return np.dtype(str(dtype)).type(value)


def blocks(n: int, threads: int, most: int = 1024) -> int:
    """Blocks for a grid-stride loop over n elements: enough to fill a GPU, few enough that a partial-sum buffer
    stays small."""
    return max(1, min(most, -(-n // threads)))
