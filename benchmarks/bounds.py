"""What bounds goals 1-3: the measurements behind benchmarks/README.md's "What bounds each goal".

    python -m benchmarks.bounds

1. Training step, total work: one replica's step with OpenBLAS held to one thread (threadpoolctl) is the CPU
   time of minidt's work; half of it is the best any use of the two cores could do. DataParallel (the trainer's
   step) splits the forward and backward over two threads; what it leaves on one thread (the loss, the gradient
   sum, clip_grad_norm_, AdamW) is timed too, and bounds it further. torch's step is timed in the same process.
2. Batch-1 get_action: the same math with the layer functions called directly (no Module, no checks), and its
   GEMMs alone (contiguous operands, the shapes it multiplies), against the goal (benchmarks.run.GOALS).
3. Evaluation: the FLOPs of 20,000 get_action rows at the measured sgemm rate of its shapes, against
   the goal times torch's loop (torch's number from `python -m benchmarks.run --only eval`, passed as --torch-eval-s).

Nothing here is used by the library.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.run import EVAL_K, GOALS, PAPER, PENDULUM, THREADS, batch, infer_pair, train_pair  # noqa: E402
from minidt import DataParallel, DecisionTransformerConfig, DecisionTransformerModel  # noqa: E402
from minidt.losses import dt_loss  # noqa: E402
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
    fa, fb = train_pair(config, 64, 20)  # DataParallel, as the trainer runs it
    one, _ = train_pair(config, 64, 20, workers=1)
    step_ms, torch_ms, one_ms = median_ms(fa, rounds), median_ms(fb, rounds), median_ms(one, rounds)
    with threadpool_limits(1, user_api="blas"):
        one_thread_ms = median_ms(one, rounds)

    # what DataParallel leaves on one thread: the loss, the gradient sum, clip_grad_norm_ and AdamW
    model = DecisionTransformerModel(config, seed=0).train()
    dp = DataParallel(model, 2)
    x = batch(config, 64, 20)
    opt = AdamW(model.parameters(), lr=1e-4, weight_decay=1e-4)
    out = dp(**x)
    loss, grads = dt_loss(out, x["states"], x["actions"], x["returns_to_go"], x["attention_mask"])

    def serial():
        dt_loss(out, x["states"], x["actions"], x["returns_to_go"], x["attention_mask"])
        for p, *copies in dp.params:
            sum(c.data for c in copies[:2])  # as many adds as the gradient sum
        clip_grad_norm_(model.parameters(), 0.25)
        opt.step()

    dp.backward(*grads)
    serial_ms = median_ms(serial, rounds)
    print(f"1 train step B 64 K 20: minidt (DataParallel, 2 workers) {step_ms:.1f} ms, torch {torch_ms:.1f} ms "
          f"(ratio {step_ms / torch_ms:.2f}; goal {GOALS['train']} = {GOALS['train'] * torch_ms:.1f} ms); one "
          f"replica {one_ms:.1f} ms ({one_ms / torch_ms:.2f})")
    print(f"  minidt's work on one core (one replica, BLAS 1 thread): {one_thread_ms:.1f} ms; half of it, the best two"
          f" cores could do: {one_thread_ms / 2:.1f} ms = {one_thread_ms / 2 / torch_ms:.2f} x torch")
    print(f"  left on one thread by DataParallel (loss, gradient sum, clip, AdamW): {serial_ms:.1f} ms; the two "
          f"cores' bound with it: {(one_thread_ms - serial_ms) / 2 + serial_ms:.1f} ms = "
          f"{((one_thread_ms - serial_ms) / 2 + serial_ms) / torch_ms:.2f} x torch")


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
    from minidt.layers import attention_bias
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, user_api="blas"):  # its 12 GEMMs unthreaded: is OpenBLAS's second thread worth it?
        one_thread_ms = median_ms(lambda: ours.get_action(**x), 300, 30)
    mask3 = np.repeat(x["attention_mask"], 3, axis=1)[:, :-1]
    bias_ms = median_ms(lambda: attention_bias(mask3, 59, 59, np.float32, mask3), 300, 30)
    checks_ms = median_ms(lambda: ours._timesteps(x["timesteps"], 1, 20), 300, 30)
    print(f"2 inference batch 1: get_action {ours_ms:.3f} ms, torch {torch_ms:.3f} ms (ratio {ours_ms / torch_ms:.2f};"
          f" goal {GOALS['infer']} = {GOALS['infer'] * torch_ms:.3f} ms)")
    print(f"  the same math with no Module layer (layer functions called directly): {pure_ms:.3f} ms = "
          f"{pure_ms / torch_ms:.2f} x torch")
    print(f"  with OpenBLAS on one thread: {one_thread_ms:.3f} ms; the attention bias built per call: {bias_ms:.3f} ms;"
          f" the timesteps' range check: {checks_ms:.3f} ms")
    print(f"  its affine maps' GEMMs alone, contiguous operands, OpenBLAS's default threads: {floor:.3f} ms = "
          f"{floor / torch_ms:.2f} x torch; the rest of the goal, {GOALS['infer'] * torch_ms - floor:.3f} ms, would "
          f"have to hold every other NumPy call (LayerNorms, attention, residuals, embeddings), which take "
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
    dp = DataParallel(model)
    ga_dp = median_ms(lambda: dp.get_action(**x), 5, 1) * steps / 1e3
    print(f"3 eval 100 Pendulum episodes x 200 steps: get_action alone {ga:.2f} s, on DataParallel ({dp.workers} "
          f"workers) {ga_dp:.2f} s; its GEMMs alone ({flops / 1e12:.2f} TFLOP) {t:.2f} s at {flops / t / 1e9:.0f} "
          "GFLOP/s (OpenBLAS on every core)")
    if torch_eval_s:
        print(f"  goal {GOALS['eval']} x torch's {torch_eval_s:.1f} s = {GOALS['eval'] * torch_eval_s:.2f} s; the "
              f"GEMMs alone are {t / torch_eval_s:.3f} x torch")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--torch-eval-s", type=float, default=0.0,
                   help="torch's time for 100 episodes, from python -m benchmarks.run --only eval")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(THREADS)
    train_bounds(args.rounds)
    infer_bounds(args.rounds)
    eval_bounds(args.torch_eval_s)


if __name__ == "__main__":
    main()
