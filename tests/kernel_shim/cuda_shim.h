// Just enough of CUDA for g++ to compile minidt/kernels/*.cu and run a grid on the CPU, serially: each block in
// turn, each of its threads a fiber (ucontext) that yields at __syncthreads and at every warp shuffle, so threads
// meet at barriers as they do on a GPU. For testing the kernels' arithmetic and indexing where there is no GPU;
// it says nothing about speed, memory coalescing or races that a GPU's real concurrency would expose.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <ucontext.h>
#include <vector>

#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static  // one copy, and blocks run one after another: per block, as on a GPU

using std::erf;
using std::exp;
using std::sqrt;
using std::tanh;
inline float max(float a, float b) { return std::fmax(a, b); }  // CUDA's max is fmax: a NaN loses
inline double max(double a, double b) { return std::fmax(a, b); }
inline float min(float a, float b) { return std::fmin(a, b); }
inline double min(double a, double b) { return std::fmin(a, b); }
inline double __longlong_as_double(unsigned long long x) { double d; std::memcpy(&d, &x, 8); return d; }
inline void __threadfence() {}
inline unsigned atomicAdd(unsigned* p, unsigned v) { unsigned old = *p; *p += v; return old; }

struct shim_dim3 { unsigned x, y, z; };
struct shim_fiber { ucontext_t ctx; std::vector<char> stack; unsigned tid; bool done; };
struct shim_barrier { int count = 0, gen = 0, active = 0; };

struct shim_state {
    ucontext_t main;
    std::vector<shim_fiber> fibers;
    shim_fiber* cur = nullptr;
    unsigned grid = 1, block = 1, bid = 0;
    std::vector<shim_barrier> warps;
    shim_barrier all;
    unsigned char lanes[1024][8];  // what each thread offers a shuffle
    std::function<void()>* body = nullptr;
};
inline shim_state S;

#define threadIdx (shim_dim3{S.cur->tid, 0, 0})
#define blockIdx (shim_dim3{S.bid, 0, 0})
#define blockDim (shim_dim3{S.block, 1, 1})
#define gridDim (shim_dim3{S.grid, 1, 1})

inline void shim_yield() { swapcontext(&S.cur->ctx, &S.main); }

// Wait until every thread still running in the group has arrived (a thread that returned no longer counts).
inline void shim_wait(shim_barrier& b) {
    int g = b.gen;
    if (++b.count >= b.active) {
        b.count = 0;
        b.gen++;
        return;
    }
    while (b.gen == g) shim_yield();
}

inline void __syncthreads() { shim_wait(S.all); }

template <typename T> T __shfl_xor_sync(unsigned, T v, int o) {
    unsigned t = S.cur->tid;
    std::memcpy(S.lanes[t], &v, sizeof(T));
    shim_wait(S.warps[t / 32]);
    T r;
    std::memcpy(&r, S.lanes[(t & ~31u) | ((t & 31u) ^ (unsigned)o)], sizeof(T));
    shim_wait(S.warps[t / 32]);  // nobody overwrites a lane before every lane has read
    return r;
}

inline void shim_trampoline() {
    (*S.body)();
    S.cur->done = true;
    swapcontext(&S.cur->ctx, &S.main);
}

inline void shim_release(shim_barrier& b) {  // a thread returned: the others may now be all there are
    b.active--;
    if (b.count > 0 && b.count >= b.active) {
        b.count = 0;
        b.gen++;
    }
}

// Run body() as every thread of a grid of `grid` blocks of `block` threads (1-D, as minidt's kernels launch).
inline void shim_launch(unsigned grid, unsigned block, std::function<void()> body) {
    S.body = &body;
    S.grid = grid;
    S.block = block;
    S.fibers.resize(block);
    for (auto& f : S.fibers) f.stack.resize(1 << 16);
    for (S.bid = 0; S.bid < grid; S.bid++) {
        S.warps.assign((block + 31) / 32, shim_barrier{});
        for (unsigned t = 0; t < block; t++) S.warps[t / 32].active++;
        S.all = shim_barrier{0, 0, (int)block};
        for (unsigned t = 0; t < block; t++) {
            shim_fiber& f = S.fibers[t];
            f.tid = t;
            f.done = false;
            getcontext(&f.ctx);
            f.ctx.uc_stack.ss_sp = f.stack.data();
            f.ctx.uc_stack.ss_size = f.stack.size();
            f.ctx.uc_link = nullptr;
            makecontext(&f.ctx, shim_trampoline, 0);
        }
        for (bool running = true; running;) {
            running = false;
            for (auto& f : S.fibers) {
                if (f.done) continue;
                running = true;
                S.cur = &f;
                swapcontext(&S.main, &f.ctx);
                if (f.done) {
                    shim_release(S.warps[f.tid / 32]);
                    shim_release(S.all);
                }
            }
        }
    }
}
