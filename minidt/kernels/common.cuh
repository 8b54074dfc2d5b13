// What every kernel in minidt/kernels shares: warp and block reductions in a fixed order (the same bits on every
// run: no atomics in any sum), the column sum that finishes a two-launch reduction, and the dropout hash.
//
// A block is a multiple of 32 threads, at most 1024. Templates over T = float or double; the launchers name the
// instantiations (`layernorm_forward<float>`), NVRTC compiles both.
#pragma once

#define WARP 32
#define FULL_MASK 0xffffffffu
#define NEG_INF __longlong_as_double(0xfff0000000000000ULL)  // -infinity (NVRTC has no math.h)

// Every lane of the warp gets the sum of the 32 values (a butterfly: the same order on every lane and every run).
template <typename T> __device__ T warp_sum(T v) {
    for (int o = WARP / 2; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
    return v;
}

template <typename T> __device__ T warp_max(T v) {
    for (int o = WARP / 2; o > 0; o >>= 1) v = max(v, __shfl_xor_sync(FULL_MASK, v, o));
    return v;
}

// Every thread of the block gets the block's sum. `scratch` holds 32 values in shared memory; the first
// __syncthreads lets a caller reuse scratch from a previous call.
template <typename T> __device__ T block_sum(T v, T* scratch) {
    int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP, warps = blockDim.x / WARP;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < warps ? scratch[lane] : T(0);
    return warp_sum(v);
}

// out[c] = sum over p of partials[p, c], p in order: the second launch of every column reduction (LayerNorm's
// dweight and dbias, the bias gradient of an activation). One thread per column.
template <typename T>
__global__ void column_sum(T* out, const T* partials, int parts, int C) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    T s = T(0);
    for (int p = 0; p < parts; p++) s += partials[(long long)p * C + c];
    out[c] = s;
}

// --- dropout ----------------------------------------------------------------------------------------------------
// SplitMix64 (Steele, Lea and Flood 2014; Vigna's splitmix64.c) read as a counter-based generator: its n-th
// output (n = 0, 1, ...) for a seed is this mix of seed + (n + 1) * golden, so any element can be drawn without
// drawing the ones before it. Element i of a call draws n = rng[1] + offset + i: rng = {seed, base} lives in
// device memory, offset advances on the host by each call's size, as torch advances its Philox offset. Eager
// calls leave base at 0; a step captured as a CUDA graph bakes its offsets in, and replaying it with new masks
// means advancing base between replays (as torch does for graphs; not built yet). hash_keep in
// minidt/layers/dropout.py is the NumPy twin.
__device__ __forceinline__ unsigned long long splitmix64(unsigned long long seed, unsigned long long n) {
    unsigned long long z = seed + (n + 1ULL) * 0x9E3779B97F4A7C15ULL;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

// Whether element i survives dropout: its draw's high 32 bits below threshold = round((1 - p) * 2^32).
__device__ __forceinline__ bool dropout_keep(const unsigned long long* rng, unsigned long long offset,
                                             unsigned long long i, unsigned int threshold) {
    return (unsigned int)(splitmix64(rng[0], rng[1] + offset + i) >> 32) < threshold;
}
