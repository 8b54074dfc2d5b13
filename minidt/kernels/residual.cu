// Dropout fused into the residual add after it: out = residual + dropout(y), the end of every attention and MLP
// branch of a block; with with_residual 0 it is plain dropout (the embeddings' dropout; residual is unread).
// Backward recomputes the mask from the hash instead of reading a stored one: dy = dropout(dout); the residual's
// gradient is dout itself, nothing to launch. The twin: dropout_forward / dropout_backward with hash_keep's mask
// in minidt/layers/dropout.py, and the `+` in Block.forward.
#include "common.cuh"

template <typename T>
__global__ void residual_dropout_forward(T* out, const T* residual, const T* y, long long n,
                                         const unsigned long long* rng, unsigned long long offset,
                                         unsigned int threshold, T keep_scale, int with_residual) {
    long long stride = (long long)gridDim.x * blockDim.x;  // a grid-stride loop
    for (long long k = blockIdx.x * (long long)blockDim.x + threadIdx.x; k < n; k += stride) {
        T d = dropout_keep(rng, offset, k, threshold) ? y[k] * keep_scale : T(0);
        out[k] = with_residual ? residual[k] + d : d;
    }
}

// dy = dout * mask: the forward's mask, drawn again from the same (seed, offset).
template <typename T>
__global__ void dropout_backward(T* dy, const T* dout, long long n, const unsigned long long* rng,
                                 unsigned long long offset, unsigned int threshold, T keep_scale) {
    long long stride = (long long)gridDim.x * blockDim.x;  // a grid-stride loop
    for (long long k = blockIdx.x * (long long)blockDim.x + threadIdx.x; k < n; k += stride)
        dy[k] = dropout_keep(rng, offset, k, threshold) ? dout[k] * keep_scale : T(0);
}
