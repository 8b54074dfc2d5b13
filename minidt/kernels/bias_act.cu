// An activation fused with the bias add before it (the MLP's c_fc): forward pre = h + bias, out = f(pre) in one
// pass; backward dpre = dout * f'(pre) and the bias gradient's per-block column partials in one pass, then
// column_sum. The twins: Conv1D's `out += bias` and the pairs in minidt/layers/activations.py, whose table of
// f and f' this follows line by line (same constants, same order of operations).
//
// act: 0 relu, 1 silu, 2 gelu (erf), 3 gelu_new (tanh), 4 tanh, ACTIVATIONS' order. relu and tanh differentiate
// from their output, the others from their input: `cache` is whichever the twin keeps.
#include "common.cuh"

#define SQRT_2_OVER_PI 0.7978845608028654
#define INV_SQRT_2 0.7071067811865476
#define INV_SQRT_2PI 0.3989422804014327

template <typename T> __device__ T act_forward(int act, T x) {
    switch (act) {
        case 0: return max(x, T(0));
        case 1: return x * (T(1) / (T(1) + exp(-x)));
        case 2: return T(0.5) * x * (T(1) + erf(x * T(INV_SQRT_2)));
        case 3: return T(0.5) * x * (T(1) + tanh(T(SQRT_2_OVER_PI) * (x + T(0.044715) * (x * x * x))));
        default: return tanh(x);
    }
}

// dout * f'(x), from the cache: the output for relu and tanh, the input for the rest.
template <typename T> __device__ T act_backward(int act, T dout, T c) {
    switch (act) {
        case 0: return dout * (c > T(0) ? T(1) : T(0));
        case 1: {
            T s = T(1) / (T(1) + exp(-c));
            return dout * s * (T(1) + c * (T(1) - s));
        }
        case 2: {
            T cdf = T(0.5) * (T(1) + erf(c * T(INV_SQRT_2)));
            T pdf = exp(T(-0.5) * c * c) * T(INV_SQRT_2PI);
            return dout * (cdf + c * pdf);
        }
        case 3: {
            T c2 = c * c;
            T t = tanh(T(SQRT_2_OVER_PI) * (c + T(0.044715) * (c2 * c)));
            T du = T(SQRT_2_OVER_PI) * (T(1) + T(3.0 * 0.044715) * c2);
            return dout * (T(0.5) * (T(1) + t) + T(0.5) * c * (T(1) - t * t) * du);
        }
        default: return dout * (T(1) - c * c);
    }
}

// h (N, C) becomes pre = h + bias in place; out = f(pre). One thread per element.
template <typename T>
__global__ void bias_act_forward(T* out, T* h, const T* bias, long long n, int C, int act) {
    long long stride = (long long)gridDim.x * blockDim.x;  // a grid-stride loop
    for (long long k = blockIdx.x * (long long)blockDim.x + threadIdx.x; k < n; k += stride) {
        T pre = h[k] + bias[k % C];
        h[k] = pre;
        out[k] = act_forward(act, pre);
    }
}

// dpre = dout * f'(x), and dbias_part[block, c] = the sum of dpre over the rows block `blockIdx.x` handles
// (rows block, block + grid, ...). A block is C threads wide in a loop over columns, so each thread owns columns.
template <typename T>
__global__ void bias_act_backward(T* dpre, T* dbias_part, const T* dout, const T* cache, int N, int C, int act) {
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        T s = T(0);
        for (int row = blockIdx.x; row < N; row += gridDim.x) {
            long long k = (long long)row * C + c;
            T d = act_backward(act, dout[k], cache[k]);
            dpre[k] = d;
            s += d;
        }
        dbias_part[(long long)blockIdx.x * C + c] = s;
    }
}
