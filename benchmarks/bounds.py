"""What bounds goals 1-3: the measurements behind benchmarks/README.md's "What bounds each goal".

    pip install threadpoolctl            # runtime control of OpenBLAS's thread count, for experiment 1 only
                                         # (without it, experiment 1 is skipped and says so)
    python -m benchmarks.bounds

1. Training step, total work: the step with OpenBLAS held to one thread (threadpoolctl) is the CPU time of
   minidt's work; half of it is the best any use of the two cores could do. Then the experiment that comes
   closest: two replicas on half-batches in two Python threads (NumPy releases the GIL inside its loops), each
   with single-threaded BLAS, so the elementwise passes use both cores, as torch's do. torch's step is timed in
   the same process.
2. Batch-1 get_action: the same math with the layer functions called directly (no Module, no checks), and its
   GEMMs alone (contiguous operands, the shapes it multiplies), against 0.3 x torch.
3. Evaluation: the FLOPs of 20,000 get_action rows at the measured sgemm rate of its shapes, against
   0.05 x torch's loop (torch's number from `python -m benchmarks.run --only eval`, passed as --torch-eval-s).

Nothing here is used by the library; the threads-and-replicas experiment is not how minidt trains (see the
README for why).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.run import EVAL_K, PAPER, PENDULUM, THREADS, batch, infer_pair, train_pair  # noqa: E402
from minidt import DecisionTransformerConfig, DecisionTransformerModel  # noqa: E402
from minidt.losses import masked_mse  # noqa: E402
from minidt.optim import AdamW, clip_grad_norm_  # noqa: E402


def median_ms(f, n: int = 7, warmup: int = 2) -> float:
    for _ in range(warmup):
        f()
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts) * 1e3


def gemm_ms(shapes: list[tuple[int, int, int]], reps: int = 200) -> float:
    """Milliseconds for one pass over float32 products (M, K) @ (K, N) on contiguous operands, best of reps."""
    rng = np.random.default_rng(0)
    ops = [(rng.standard_normal((m, k), np.float32), rng.standard_normal((k, n), np.float32)) for m, k, n in shapes]
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        for a, w in ops:
            a @ w
        best = min(best, time.perf_counter() - t0)
    return best * 1e3


def get_action_gemms(config: DecisionTransformerConfig, B: int, K: int) -> list[tuple[int, int, int]]:
    """The affine maps of get_action at batch B: every block but the last on all 3K-1 tokens, the last block's
    keys and values on 3K-2 tokens and the rest on one row per sequence (attention's batched products are left
    out: they are small next to these)."""
    C, inner, T = config.hidden_size, config.inner_dim, 3 * K - 1
    full = [(B * T, C, 3 * C), (B * T, C, C), (B * T, C, inner), (B * T, inner, C)]
    last = [(B * (T - 1), C, 2 * C), (B, C, 3 * C), (B, C, C), (B, C, inner), (B, inner, C), (B, C, config.act_dim)]
    embed = [(B * K, 1, C), (B * K, config.state_dim, C), (B * K, config.act_dim, C)]
    return embed + full * (config.n_layer - 1) + last


def train_bounds(rounds: int) -> None:
    from threadpoolctl import threadpool_limits

    config = DecisionTransformerConfig(**PAPER)
    fa, fb = train_pair(config, 64, 20)
    step_ms, torch_ms = median_ms(fa, rounds), median_ms(fb, rounds)
    with threadpool_limits(1, user_api="blas"):
        one_thread_ms = median_ms(fa, rounds)

    # two replicas, half a batch each, in two threads with single-threaded BLAS
    x = batch(config, 64, 20)
    halves = [{k: v[:32] for k, v in x.items()}, {k: v[32:] for k, v in x.items()}]
    replicas = [DecisionTransformerModel(config, seed=0).train() for _ in range(2)]
    n_real = float(np.sum(x["attention_mask"]))

    def forward_backward(model, xs):
        out = model(**xs)
        _, d = masked_mse(out.action_preds, xs["actions"], xs["attention_mask"])
        d *= float(np.sum(xs["attention_mask"])) / n_real  # each half's share of the whole batch's mean
        model.backward(action_preds=d)

    # for timing only: replica 1 never receives the updated weights (a real data-parallel step would share them)
    opt = AdamW(replicas[0].parameters(), lr=1e-4, weight_decay=1e-4)
    pool = ThreadPoolExecutor(1)

    def parallel_step():
        other = pool.submit(forward_backward, replicas[1], halves[1])
        forward_backward(replicas[0], halves[0])
        other.result()
        for p, q in zip(replicas[0].parameters(), replicas[1].parameters()):
            if q.grad is not None:
                p.grad = p.grad + q.grad
                q.grad = None
        clip_grad_norm_(replicas[0].parameters(), 0.25)
        opt.step()
        opt.zero_grad()

    with threadpool_limits(1, user_api="blas"):
        parallel_ms = median_ms(parallel_step, rounds)
    print(f"1 train step B 64 K 20: minidt {step_ms:.1f} ms, torch {torch_ms:.1f} ms (ratio {step_ms / torch_ms:.2f}; "
          f"goal 0.80 = {0.8 * torch_ms:.1f} ms)")
    print(f"  minidt's work on one core (BLAS 1 thread): {one_thread_ms:.1f} ms; half of it, the best two cores "
          f"could do: {one_thread_ms / 2:.1f} ms = {one_thread_ms / 2 / torch_ms:.2f} x torch")
    print(f"  two replicas on half-batches in two threads, BLAS 1 thread each, + clip + AdamW: {parallel_ms:.1f} ms"
          f" = {parallel_ms / torch_ms:.2f} x torch")


def pure_get_action(model: DecisionTransformerModel, x: dict) -> np.ndarray:
    """get_action's math with no Module in the way: the layer functions called directly, no checks, no caches
    (the paper's config only: relu, action_tanh). What is left of its time is NumPy's own per-call cost and the
    elementwise passes. (Its last block computes every token's query too, which get_action does not: it is, if
    anything, slower than it needs to be.)"""
    from minidt.layers.activations import relu_forward
    from minidt.layers.attention import attention_bias, attention_forward, merge_heads, split_heads
    from minidt.layers.layernorm import layernorm_forward
    from minidt.layers.linear import conv1d_forward, linear_forward

    def ln(m, h):
        return layernorm_forward(h, m.weight.data, m.bias.data, m.eps)[0]

    def conv(m, h):
        return conv1d_forward(h, m.weight.data, m.bias.data)[0]

    def block(b, h, bias, rows):  # rows: the queries, the last `rows` tokens
        a = ln(b.ln_1, h)
        C = a.shape[-1]
        qkv = conv(b.attn.c_attn, a)
        q, k, v = (split_heads(qkv[:, :, i * C:(i + 1) * C], b.attn.n_head) for i in range(3))
        y, _, _ = attention_forward(q[:, :, -rows:, :], k, v, bias[:, :, -rows:, :], b.attn.scale, 0.0, None)
        h = h[:, -rows:, :] + conv(b.attn.c_proj, merge_heads(y))
        return h + conv(b.mlp.c_proj, relu_forward(conv(b.mlp.c_fc, ln(b.ln_2, h)))[0])

    tokens, mask3 = model._tokens(x["states"], x["actions"], x["returns_to_go"], x["timesteps"],
                                  x["attention_mask"])
    h, mask3 = tokens[:, :-1, :] + model.encoder.wpe.weight.data[0], mask3[:, :-1]
    bias = attention_bias(mask3, h.shape[1], h.shape[1], h.dtype, h)
    blocks = list(model.encoder.h)
    for b in blocks[:-1]:
        h = block(b, h, bias, h.shape[1])
    h = ln(model.encoder.ln_f, block(blocks[-1], h, bias, 1))
    head = model.predict_action[0]
    return np.tanh(linear_forward(h, head.weight.data, head.bias.data)[0])[:, 0, :]


def infer_bounds(rounds: int) -> None:
    config = DecisionTransformerConfig(**PAPER)
    ours, x, torch_step = infer_pair(config)
    ours_ms = median_ms(lambda: ours.get_action(**x), 300, 30)
    torch_ms = median_ms(torch_step, 300, 30)
    pure = pure_get_action(ours, x)
    assert np.allclose(pure, ours.get_action(**x), rtol=1e-5, atol=1e-6)
    pure_ms = median_ms(lambda: pure_get_action(ours, x), 300, 30)
    floor = gemm_ms(get_action_gemms(config, 1, 20))
    print(f"2 inference batch 1: get_action {ours_ms:.3f} ms, torch {torch_ms:.3f} ms (ratio {ours_ms / torch_ms:.2f};"
          f" goal 0.30 = {0.3 * torch_ms:.3f} ms)")
    print(f"  the same math with no Module layer (layer functions called directly): {pure_ms:.3f} ms = "
          f"{pure_ms / torch_ms:.2f} x torch")
    print(f"  its affine maps' GEMMs alone, contiguous operands, OpenBLAS's default threads: {floor:.3f} ms = "
          f"{floor / torch_ms:.2f} x torch; the rest of the goal, {0.3 * torch_ms - floor:.3f} ms, would have to hold "
          f"every other NumPy call (LayerNorms, attention, residuals, embeddings), which take "
          f"{pure_ms - floor:.3f} ms in the path above")


def eval_bounds(torch_eval_s: float) -> None:
    config = DecisionTransformerConfig(**PENDULUM)
    B, steps = 100, 200
    shapes = get_action_gemms(config, B, EVAL_K)
    flops = sum(2.0 * m * k * n for m, k, n in shapes) * steps
    t = gemm_ms(shapes, reps=5) * steps / 1e3
    model = DecisionTransformerModel(config, seed=0).eval()
    x = batch(config, B, EVAL_K)
    x["attention_mask"][:] = 1.0
    ga = median_ms(lambda: model.get_action(**x), 5, 1) * steps / 1e3
    print(f"3 eval 100 Pendulum episodes x 200 steps: get_action alone {ga:.2f} s; its GEMMs alone "
          f"({flops / 1e12:.2f} TFLOP) {t:.2f} s at {flops / t / 1e9:.0f} GFLOP/s")
    if torch_eval_s:
        print(f"  goal 0.05 x torch's {torch_eval_s:.1f} s = {0.05 * torch_eval_s:.2f} s; the GEMMs alone are "
              f"{t / torch_eval_s:.3f} x torch")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--torch-eval-s", type=float, default=0.0,
                   help="torch's time for 100 episodes, from python -m benchmarks.run --only eval")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(THREADS)
    import importlib.util

    if importlib.util.find_spec("threadpoolctl") is None:
        print("1 train step: SKIPPED: needs threadpoolctl to hold OpenBLAS to one thread (pip install threadpoolctl)")
    else:
        train_bounds(args.rounds)
    infer_bounds(args.rounds)
    eval_bounds(args.torch_eval_s)


if __name__ == "__main__":
    main()
