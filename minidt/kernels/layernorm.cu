// LayerNorm over the last axis, C features per row: the twin is layernorm_forward / layernorm_backward in
// minidt/layers/layernorm.py, and each line here is one of its lines, in its order.
//
// One warp per row: C = 128 is four values per lane, and the row's sums are warp shuffles, with no shared memory
// and no __syncthreads. Backward is two launches: dx and per-warp partial sums of dweight and dbias, then
// column_sum over the warps (a fixed order: the same bits every run, where atomics would not be).
#include "common.cuh"

// out = (x - mean) * rstd * weight + bias; mean and rstd (rows,) are kept for backward.
template <typename T>
__global__ void layernorm_forward(T* out, T* mean, T* rstd, const T* x, const T* weight, const T* bias,
                                  int rows, int C, T eps) {
    int lane = threadIdx.x % WARP;
    int row = blockIdx.x * (blockDim.x / WARP) + threadIdx.x / WARP;
    if (row >= rows) return;  // a whole warp leaves together: the shuffles below see full warps
    const T* xr = x + (long long)row * C;
    T* outr = out + (long long)row * C;
    T s = T(0);
    for (int c = lane; c < C; c += WARP) s += xr[c];
    T m = warp_sum(s) / T(C);
    T ss = T(0);
    for (int c = lane; c < C; c += WARP) {
        T d = xr[c] - m;
        ss += d * d;
    }
    T var = warp_sum(ss) / T(C);  // biased: divide by C, not C - 1
    T r = T(1) / sqrt(var + eps);  // rstd, not std: backward needs 1/sigma twice
    for (int c = lane; c < C; c += WARP) outr[c] = (xr[c] - m) * r * weight[c] + bias[c];
    if (lane == 0) {
        mean[row] = m;
        rstd[row] = r;
    }
}

// dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), g = dout * weight, xhat = (x - mean) * rstd.
// Warp w (of `warps` in the grid) adds dout * xhat and dout of its rows into row w of part (warps, 2C): dweight's
// partial sums in its first C columns, dbias's in the next C; column_sum over the 2C columns finishes both.
template <typename T>
__global__ void layernorm_backward(T* dx, T* part, const T* dout, const T* x,
                                   const T* weight, const T* mean, const T* rstd, int rows, int C) {
    int lane = threadIdx.x % WARP;
    int w = blockIdx.x * (blockDim.x / WARP) + threadIdx.x / WARP;
    int warps = gridDim.x * (blockDim.x / WARP);
    T* dw = part + (long long)w * 2 * C;
    T* db = dw + C;
    for (int c = lane; c < C; c += WARP) dw[c] = db[c] = T(0);
    for (int row = w; row < rows; row += warps) {
        const T* xr = x + (long long)row * C;
        const T* dr = dout + (long long)row * C;
        T m = mean[row], r = rstd[row];
        T sum_g = T(0), sum_gx = T(0);
        for (int c = lane; c < C; c += WARP) {
            T xhat = (xr[c] - m) * r;
            T g = dr[c] * weight[c];
            sum_g += g;
            sum_gx += g * xhat;
            dw[c] += dr[c] * xhat;  // only this lane touches column c of row w: no race
            db[c] += dr[c];
        }
        T mean_g = warp_sum(sum_g) / T(C), mean_gx = warp_sum(sum_gx) / T(C);
        T* dxr = dx + (long long)row * C;
        for (int c = lane; c < C; c += WARP) {
            T xhat = (xr[c] - m) * r;
            dxr[c] = (dr[c] * weight[c] - mean_g - xhat * mean_gx) * r;
        }
    }
}
