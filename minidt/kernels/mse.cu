// The masked mean squared error and its gradient (the twin: masked_mse in minidt/losses.py), in two launches:
//   1. diff = pred - target on real rows, 0 on padded ones (where, not multiply: padded predictions may be NaN),
//      written to dpred; per-block partial sums of diff^2 and of the real rows.
//   2. every block sums the partials (a few hundred, in order: the same bits every run), n = real rows * d,
//      dpred *= 2 / n; block 0 writes loss = sum / n.
// pred, target (rows, d) with rows = B * K, real (rows,) of 0 / 1 in pred's dtype.
#include "common.cuh"

template <typename T>
__global__ void mse_partials(T* diff, T* part_sq, T* part_real, const T* pred, const T* target, const T* real,
                             int rows, int d) {
    __shared__ T scratch[WARP];
    long long n = (long long)rows * d;
    T sq = T(0), cnt = T(0);
    long long stride = (long long)gridDim.x * blockDim.x;  // a grid-stride loop
    for (long long k = blockIdx.x * (long long)blockDim.x + threadIdx.x; k < n; k += stride) {
        bool on = real[k / d] > T(0);
        T e = on ? pred[k] - target[k] : T(0);
        diff[k] = e;
        sq += e * e;
        if (on && k % d == 0) cnt += T(1);  // each real row counted once, at its first entry
    }
    sq = block_sum(sq, scratch);
    cnt = block_sum(cnt, scratch);
    if (threadIdx.x == 0) {
        part_sq[blockIdx.x] = sq;
        part_real[blockIdx.x] = cnt;
    }
}

template <typename T>
__global__ void mse_finish(T* loss, T* dpred, const T* part_sq, const T* part_real, int parts, long long n_el,
                           int d) {
    __shared__ T total[2];
    if (threadIdx.x == 0) {  // one thread sums the partials in order: parts is small, and the order is fixed
        T sq = T(0), cnt = T(0);
        for (int p = 0; p < parts; p++) {
            sq += part_sq[p];
            cnt += part_real[p];
        }
        total[0] = sq;
        total[1] = cnt * T(d);  // the number of real entries
    }
    __syncthreads();
    T n = total[1];
    if (blockIdx.x == 0 && threadIdx.x == 0) loss[0] = total[0] / n;  // all padding: 0 / 0 = NaN, as the twin
    T g = T(2) / n;
    long long stride = (long long)gridDim.x * blockDim.x;  // a grid-stride loop
    for (long long k = blockIdx.x * (long long)blockDim.x + threadIdx.x; k < n_el; k += stride)
        dpred[k] = dpred[k] * g;
}
