// The embedding backward, deterministic: dweight[v, c] = the sum of dout[i, c] over the tokens i whose id is v,
// added in token order, as np.add.at adds (the twin: embedding_backward and backend.scatter_add). No atomics: one
// block per table row v reads every id (a few thousand, from cache) and its threads add the matching rows of
// dout, one column each. A row nobody looked up gets 0: the kernel writes all of dweight, no zeros launch first.
#include "common.cuh"

template <typename T>
__global__ void embedding_backward(T* dweight, const T* dout, const long long* ids, int N, int V, int C) {
    for (int v = blockIdx.x; v < V; v += gridDim.x) {
        for (int c = threadIdx.x; c < C; c += blockDim.x) {
            T s = T(0);
            for (int i = 0; i < N; i++)
                if (ids[i] == v) s += dout[(long long)i * C + c];
            dweight[(long long)v * C + c] = s;
        }
    }
}
