"""Benchmarks (not tests): numbers for the README, measured on a GPU.

    python bench.py kernel [--n 16384 --vocab 151936 --hidden 1536,3584 --json bench_kernel.json]

`kernel`: per-token log-prob + entropy from hidden states, fwd+bwd, bf16, against the two lm_head
matmuls alone (the floor), the naive torch path, a chunked torch path and, when the package is
importable, Liger's fused linear cross-entropy. `--device cpu` runs tiny shapes through Triton's
interpreter to check the code paths; its timings mean nothing.
"""
import argparse
import json
import os
import statistics
import sys
import time

import torch
from torch.utils.checkpoint import checkpoint

TEMPERATURE = 1.0  # Liger's loss has no temperature; every row uses the same logits


def naive_logprobs_entropy(hidden, weight, targets, temperature=1.0):
    """The straightforward path: full (N, V) logits, a float32 copy, log_softmax, gather."""
    logits = (hidden @ weight.T).float().div_(temperature)  # (N, V) in bf16, then in float32
    logp_all = torch.log_softmax(logits, dim=-1)  # (N, V) float32, saved for backward
    logp = logp_all.gather(1, targets[:, None]).squeeze(1)
    with torch.no_grad():
        entropy = -(logp_all.exp() * logp_all).sum(dim=-1)  # sum over V
    return logp, entropy


def chunked_logprobs_entropy(hidden, weight, targets, temperature=1.0, chunk=2048):
    """The naive path on `chunk` tokens at a time, each under activation checkpointing: a chunk's
    (chunk, V) float32 tensors are freed after its forward and rebuilt in backward (a third matmul)."""
    outs = [
        checkpoint(naive_logprobs_entropy, hidden[s : s + chunk], weight, targets[s : s + chunk], temperature,
                   use_reentrant=False)
        for s in range(0, len(targets), chunk)
    ]
    return torch.cat([logp for logp, _ in outs]), torch.cat([entropy for _, entropy in outs])


def _median_ms(fn, device, warmup, reps):
    """Median wall time of fn() in ms: CUDA events on the GPU, the host clock on CPU."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def _peak_extra_mib(fn, device):
    """Peak memory fn() allocates on top of what is already allocated (the inputs), in MiB."""
    if device != "cuda":
        return None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def _methods(kernels, chunk):
    """(name, fn(hidden, weight, targets) -> (logp, entropy or None)); the naive path comes first:
    the others are checked against it."""
    methods = [
        ("naive torch", lambda h, w, t: naive_logprobs_entropy(h, w, t, TEMPERATURE)),
        (f"chunked torch ({chunk}, ckpt)", lambda h, w, t: chunked_logprobs_entropy(h, w, t, TEMPERATURE, chunk)),
        ("kernels.py", lambda h, w, t: kernels.token_logprobs_entropy_triton(h, w, t, TEMPERATURE)),
    ]
    try:
        from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss
    except ImportError:
        return methods
    liger = LigerFusedLinearCrossEntropyLoss(reduction="none")  # per-token -logp; no entropy
    methods.append(("liger FLCE (no entropy)", lambda h, w, t: (-liger(w, h, t), None)))
    return methods


def _check(outputs, expected):
    """max |logp - expected|, max |entropy - expected|, max |d hidden - expected| / max |expected|."""
    (logp, entropy, grad), (logp0, entropy0, grad0) = outputs, expected
    return dict(
        logp=(logp - logp0).abs().max().item(),
        entropy=None if entropy is None else (entropy - entropy0).abs().max().item(),
        grad=((grad.float() - grad0.float()).abs().max() / grad0.float().abs().max()).item(),
    )


def _print_row(row):
    def cell(value, width, spec):
        return format(value, f"{width}{spec}") if isinstance(value, float) else format(value or "-", f">{width}")

    check = " ".join(f"{k} {cell(v, 7, '.1e')}" for k, v in (row["check"] or {}).items())
    print(f"{row['hidden']:>5} {row['method']:28s} {cell(row['ms'], 10, '.2f')} {cell(row['x_floor'], 7, '.2f')} "
          f"{cell(row['fwd_ms'], 8, '.2f')} {cell(row['peak_mib'], 9, '.0f')}  {check}", flush=True)


def _bench_hidden_size(h, args, kernels):
    """One table block: the floor, then each path at hidden size h; returns its rows."""
    device, n, vocab = args.device, args.n, args.vocab
    torch.manual_seed(0)
    hidden = torch.randn(n, h, device=device, dtype=torch.bfloat16)
    weight = torch.randn(vocab, h, device=device, dtype=torch.bfloat16) * 2 * h**-0.5  # logits of std ~2
    targets = torch.randint(0, vocab, (n,), device=device)
    grad_out = torch.randn(n, device=device)

    def floor():  # h @ W^T, then an (N, V) @ (V, H) product like the grad-input matmul
        return torch.mm(torch.mm(hidden, weight.T), weight)

    floor_ms = _median_ms(floor, device, args.warmup, args.reps)
    fwd_ms = _median_ms(lambda: torch.mm(hidden, weight.T), device, args.warmup, args.reps)
    rows = [dict(hidden=h, method="lm_head matmuls (floor)", ms=floor_ms, x_floor=1.0, fwd_ms=fwd_ms,
                 peak_mib=_peak_extra_mib(floor, device), check=None)]
    _print_row(rows[-1])

    expected = None  # the naive path's (logp, entropy, d hidden): the others are checked against it
    for i, (name, fn) in enumerate(_methods(kernels, args.chunk)):
        def step(fn=fn):
            x = hidden.detach().requires_grad_()
            logp, entropy = fn(x, weight, targets)
            (grad,) = torch.autograd.grad(logp, x, grad_out)
            return logp.detach(), entropy, grad

        def forward(fn=fn):
            with torch.no_grad():
                fn(hidden, weight, targets)

        if device == "cuda":
            torch.cuda.empty_cache()  # each path starts from the same allocator state
        row = dict(hidden=h, method=name, ms=None, x_floor=None, fwd_ms=None, peak_mib=None, check=None)
        try:
            outputs = step()
            row["ms"] = _median_ms(step, device, args.warmup, args.reps)
            row["fwd_ms"] = _median_ms(forward, device, args.warmup, args.reps)
            row["peak_mib"] = _peak_extra_mib(step, device)
        except torch.cuda.OutOfMemoryError:
            outputs, row["peak_mib"] = None, "OOM"
        if row["ms"] is not None:
            row["x_floor"] = row["ms"] / floor_ms
        if i == 0:
            expected = outputs
        elif outputs is not None and expected is not None:
            row["check"] = _check(outputs, expected)
        rows.append(row)
        _print_row(row)
        del outputs
    return rows


def bench_kernel(args):
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("bench.py kernel: no CUDA device found (`--device cpu` with tiny shapes only checks the code paths)")
    if args.device == "cpu":
        os.environ["TRITON_INTERPRET"] = "1"  # must precede the first import of kernels' @triton.jit
    import kernels

    gpu = torch.cuda.get_device_name() if args.device == "cuda" else "cpu (Triton interpreter)"
    triton_version = kernels.triton.__version__ if kernels.HAS_TRITON else None
    print(f"kernel: N={args.n} V={args.vocab} bf16 T={TEMPERATURE} on {gpu}, torch {torch.__version__}, "
          f"triton {triton_version}; median ms of {args.reps} after {args.warmup} warm-up; fwd = under no_grad; "
          "peak = extra MiB over the inputs in fwd+bwd; check = max |logp - naive|, max |entropy - naive|, "
          "max |d hidden - naive| / max |naive d hidden|")
    print(f"{'H':>5} {'method':28s} {'fwd+bwd ms':>10} {'x floor':>7} {'fwd ms':>8} {'peak MiB':>9}  check")
    rows = [row for h in args.hidden for row in _bench_hidden_size(h, args, kernels)]
    if args.json:
        meta = dict(n=args.n, vocab=args.vocab, dtype="bfloat16", temperature=TEMPERATURE, device=gpu,
                    torch=torch.__version__, triton=triton_version, warmup=args.warmup, reps=args.reps)
        with open(args.json, "w") as f:
            json.dump(dict(meta, rows=rows), f, indent=1)
        print(f"wrote {args.json}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    k = sub.add_parser("kernel", help="log-prob + entropy kernel vs. the matmul floor and torch baselines")
    k.add_argument("--n", type=int, default=16384, help="tokens")
    k.add_argument("--vocab", type=int, default=151936, help="vocabulary size (Qwen2.5: 151936)")
    k.add_argument("--hidden", type=lambda s: [int(x) for x in s.split(",")], default=[1536, 3584],
                   help="comma-separated hidden sizes (Qwen2.5-1.5B: 1536, 7B: 3584)")
    k.add_argument("--chunk", type=int, default=2048, help="tokens per chunk of the chunked torch path")
    k.add_argument("--warmup", type=int, default=3)
    k.add_argument("--reps", type=int, default=10)
    k.add_argument("--json", default=None, help="also write the rows to this JSON file")
    k.add_argument("--device", choices=["cuda", "cpu"], default="cuda", help="cpu: code-path check only")
    k.set_defaults(func=bench_kernel)
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
