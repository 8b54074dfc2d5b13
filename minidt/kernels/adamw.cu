// The optimizer over the flat buffer, llm.c's way: one launch for the gradient norm, one for AdamW, for the whole
// model. The twins: clip_grad_norm (the norm of the concatenated gradients) and adamw_step in minidt/optim.py,
// whose operations this follows in their order.
#include "common.cuh"

// norm = ||g||_2 over the flat gradient, and coef = min(max_norm / (norm + eps), 1), written to out[0], out[1].
// Each block writes the sum of squares of its elements (a grid-stride loop) to part; the last block to finish
// (counted by `done`, which it resets for the next call) adds the parts in block order: the same bits every run.
template <typename T>
__global__ void grad_norm(T* out, T* part, unsigned int* done, const T* g, long long n, T max_norm, T eps) {
    __shared__ T scratch[WARP];
    __shared__ bool last;
    T s = T(0);
    long long stride = (long long)gridDim.x * blockDim.x;  // a grid-stride loop
    for (long long k = blockIdx.x * (long long)blockDim.x + threadIdx.x; k < n; k += stride)
        s += g[k] * g[k];
    s = block_sum(s, scratch);
    if (threadIdx.x == 0) {
        part[blockIdx.x] = s;
        __threadfence();  // the part is visible to every block before the count says so
        last = atomicAdd(done, 1u) == gridDim.x - 1;
    }
    __syncthreads();
    if (!last) return;
    T total = T(0);
    for (int p = threadIdx.x; p < gridDim.x; p += blockDim.x) total += ((volatile T*)part)[p];
    total = block_sum(total, scratch);
    if (threadIdx.x == 0) {
        T norm = sqrt(total);
        out[0] = norm;
        out[1] = min(max_norm / (norm + eps), T(1));
        *done = 0u;
    }
}

// One AdamW step at step t of every element: new arrays param_out, m_out, v_out (the inputs are never written:
// param may alias arrays the caller holds). The scalars come from the host, each rounded once to T as the twin's
// Python floats are: one_m_beta1 = 1 - beta1, one_m_beta2 = 1 - beta2, lr_corr = lr / (1 - beta1^t),
// v_corr = sqrt(1 - beta2^t), decay = 1 - lr * weight_decay.
template <typename T>
__global__ void adamw(T* param_out, T* m_out, T* v_out, const T* param, const T* grad, const T* m, const T* v,
                      long long n, T one_m_beta1, T beta2, T one_m_beta2, T lr_corr, T v_corr, T eps,
                      T decay) {
    long long stride = (long long)gridDim.x * blockDim.x;  // a grid-stride loop
    for (long long k = blockIdx.x * (long long)blockDim.x + threadIdx.x; k < n; k += stride) {
        T g = grad[k];
        T mk = (g - m[k]) * one_m_beta1 + m[k];  // exp_avg + (1 - beta1) (grad - exp_avg), torch's lerp_
        T vk = one_m_beta2 * g * g + beta2 * v[k];
        T denom = sqrt(vk) / v_corr + eps;
        m_out[k] = mk;
        v_out[k] = vk;
        param_out[k] = param[k] * decay - lr_corr * mk / denom;  // decoupled decay first, then the Adam step
    }
}
