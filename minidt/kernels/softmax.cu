// The attention softmax: scale, additive mask, causal skip, softmax and dropout in one launch forward, and the
// dropout's mask recomputed in the one backward launch. The twin: the middle of attention_forward /
// attention_backward in minidt/layers/attention.py (scores *= scale; scores += bias; softmax_forward; dropout).
//
// scores (B, H, Tq, Tk): row (b, h, i) is query i of head h. bias (B or 1, 1, Tq, Tk): 0, -inf for a future key,
// the dtype's most negative number for a padded key; bias_batch and bias_row are its strides in elements along b
// (0 when one bias serves every b) and along the queries.
// Query i sits at absolute position i + Tk - Tq (earlier keys may come from a cache): with `causal`, the keys
// after it are skipped without being read (their bias is -inf, so their probability is exactly 0 anyway).
// One warp per row; a row of the paper's config is 60 keys, two per lane. With `dropout` 0, `dropped` is unwritten.
#include "common.cuh"

template <typename T>
__global__ void softmax_forward(T* probs, T* dropped, const T* scores, const T* bias, long long bias_batch,
                                long long bias_row, int rows, int H, int Tq, int Tk, T scale, int causal,
                                const unsigned long long* rng, unsigned long long offset, unsigned int threshold,
                                T keep_scale, int dropout) {
    int lane = threadIdx.x % WARP;
    int row = blockIdx.x * (blockDim.x / WARP) + threadIdx.x / WARP;
    if (row >= rows) return;
    int i = row % Tq, b = row / (H * Tq);
    int last = causal ? i + Tk - Tq : Tk - 1;  // the last key this query sees
    const T* s = scores + (long long)row * Tk;
    const T* m = bias + b * bias_batch + i * bias_row;
    T* y = probs + (long long)row * Tk;
    T mx = T(NEG_INF);
    for (int j = lane; j <= last; j += WARP) mx = max(mx, s[j] * scale + m[j]);
    mx = warp_max(mx);  // the row max: exp never overflows
    T sum = T(0);
    for (int j = lane; j <= last; j += WARP) sum += exp(s[j] * scale + m[j] - mx);
    sum = warp_sum(sum);
    for (int j = lane; j < Tk; j += WARP) {
        T e = j <= last ? exp(s[j] * scale + m[j] - mx) / sum : T(0);  // recomputed: cheaper than a store
        y[j] = e;
        if (dropout) {  // attention dropout, its mask from the hash of the element's index
            long long k = (long long)row * Tk + j;
            dropped[k] = dropout_keep(rng, offset, k, threshold) ? e * keep_scale : T(0);
        }
    }
}

// dscores = y * (g - sum_j g_j y_j) * scale with g = dprobs * mask (the dropout mask of the forward, drawn
// again); y = probs before dropout. In place: dscores may be dprobs.
template <typename T>
__global__ void softmax_backward(T* dscores, const T* dprobs, const T* probs, int rows, int Tk, T scale,
                                 const unsigned long long* rng, unsigned long long offset, unsigned int threshold,
                                 T keep_scale, int dropout) {
    int lane = threadIdx.x % WARP;
    int row = blockIdx.x * (blockDim.x / WARP) + threadIdx.x / WARP;
    if (row >= rows) return;
    long long start = (long long)row * Tk;
    T dot = T(0);
    for (int j = lane; j < Tk; j += WARP) {
        T g = dprobs[start + j];
        if (dropout) g = dropout_keep(rng, offset, start + j, threshold) ? g * keep_scale : T(0);
        dot += g * probs[start + j];
    }
    dot = warp_sum(dot);
    for (int j = lane; j < Tk; j += WARP) {
        T g = dprobs[start + j];
        if (dropout) g = dropout_keep(rng, offset, start + j, threshold) ? g * keep_scale : T(0);
        dscores[start + j] = (g - dot) * probs[start + j] * scale;
    }
}
