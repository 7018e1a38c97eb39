"""Per-token log-probabilities and entropies straight from hidden states, without (N, V) logits.

GRPO needs, for each of N completion tokens, log pi(target) (with gradient) and the entropy of
the next-token distribution. The obvious path builds logits = hidden @ W^T of shape (N, V), casts
them to float32 and takes log_softmax. With Qwen2.5's vocabulary (V = 151,936) and N = 16,384
that is 2.5e9 logits: 5 GB in bf16 and 10 GB for each float32 copy (the cast, log_softmax's
output saved for backward, its gradient, the entropy's temporaries), 33 GB at peak, and every
copy is a full trip through device memory. The two lm_head matmuls themselves need only ~23 ms
on an H200; the naive path took 66 ms fwd+bwd.

What is actually needed per token is a handful of scalars: the log-sum-exp, the target logit
and the entropy. So we walk the tokens in chunks of C rows (C x V logits <= CHUNK_BYTES):

    1. logits[C, V] = hidden[C, H] @ W^T           cuBLAS, into one reused buffer
    2. one Triton program per row: an online pass over V keeps the running max m, the sum
       s = sum exp(z - m) and t = sum exp(z - m) * (z - m), so that lse = m + log s and
       entropy = lse - sum p z = log s - t / s; logp = z[target] - lse.
       If a gradient is wanted, a second pass overwrites the row in place with
       d logp / d logits = (onehot(target) - softmax(z)) / temperature.
    3. d logp / d hidden[C, H] = dlogits[C, V] @ W  cuBLAS, straight out of that buffer.

The gradient is computed in the forward, before the upstream gradient g is known, because g is
one scalar per token: backward is just g[:, None] * (d logp / d hidden), an (N, H) product.
The alternative (backward recomputes the chunk's logits) costs a third lm_head matmul, i.e.
>= 1.5x the two-matmul floor; this way the total is the floor (whose first matmul writes the
logits and whose second reads them) plus the row kernel's two reads and one write per logit.
No tensor of size N x V exists at any time. Under torch.no_grad(), or when hidden needs no
gradient, step 2's second pass and step 3 are skipped and nothing is kept.

Logits are rounded to the input dtype by the matmul (as in `model(...).logits.float()`); all
reductions run in float32. Weight gradients are not computed: W is the frozen lm_head. In fp16, whose
largest number is 65504, a chunk whose logits could pass FP16_SAFE (by Cauchy-Schwarz: max |x| <=
max ||h_i|| * max ||w_v||) is multiplied by a power of two 2^-k before the matmul, exact in binary
floating point, and the kernel multiplies the logits back by 2^k in float32: any logit fits.
"""
import math

import torch

try:
    import triton
    import triton.language as tl

    HAS_TRITON = True
except ImportError:
    HAS_TRITON = False

CHUNK_BYTES = 512 * 2**20  # size cap of the (C, V) logits buffer: 1648 tokens at V=151,936 bf16
BLOCK_V = 4096  # vocabulary entries per step of the row loop: 8 KiB of bf16, 16 per thread
FP16_SAFE = 32768.0  # fp16 chunks are scaled so that no logit can pass this (fp16's max: 65504)


def reference(hidden, weight, targets, temperature=1.0):
    """The specification, and the CPU path: full (N, V) logits in float32 (float64 for float64
    inputs), log_softmax, gather. logp is differentiable through autograd; entropy is detached.
    hidden (N, H), weight (V, H), targets (N,) int64 in [0, V) -> logp (N,), entropy (N,)."""
    dtype = torch.promote_types(hidden.dtype, torch.float32)
    logits = hidden.to(dtype) @ weight.to(dtype).T / temperature  # (N, V)
    logp_all = torch.log_softmax(logits, dim=-1)  # (N, V)
    logp = logp_all.gather(1, targets[:, None]).squeeze(1)
    logp_all = logp_all.detach()
    entropy = -(logp_all.exp() * logp_all).sum(dim=-1)  # sum over the V entries of each row
    return logp, entropy


if HAS_TRITON:

    @triton.jit
    def _logprob_entropy_kernel(
        logits_ptr,  # (C, V) raw logits x = h @ W^T of one chunk; overwritten by d logp / d x if NEED_GRAD
        targets_ptr,  # (C,) int64
        logp_ptr,  # (C,) float32 out: z[target] - lse
        entropy_ptr,  # (C,) float32 out: -sum_v p_v log p_v
        V,
        stride_row,
        z_scale,  # z = x * z_scale: the tempered logits (1 / temperature, times 2^k for a scaled fp16 chunk)
        inv_temp,  # 1 / temperature: d logp / d logits = (onehot - p) * inv_temp
        NEED_GRAD: tl.constexpr,
        BLOCK_V: tl.constexpr,
    ):
        row = tl.program_id(0).to(tl.int64)  # int64: row * stride_row can pass 2**31
        row_ptr = logits_ptr + row * stride_row
        cols = tl.arange(0, BLOCK_V)
        target = tl.load(targets_ptr + row)

        # 1. Online pass over the row: running max m, s = sum exp(z - m), t = sum exp(z - m) (z - m).
        # m starts at the first logit, a finite lower bound of the row's max: -inf would make the
        # rescale of t below 0 * inf = nan, a guess above the max could underflow every exp.
        # Keeping t relative to m avoids cancelling two numbers of the size of the logits in
        # lse - t / s.
        m = tl.load(row_ptr).to(tl.float32) * z_scale
        s = 0.0
        t = 0.0
        for start in range(0, V, BLOCK_V):
            mask = start + cols < V
            z = tl.load(row_ptr + start + cols, mask=mask, other=-float("inf")).to(tl.float32) * z_scale
            m_new = tl.maximum(m, tl.max(z, axis=0))
            alpha = tl.exp(m - m_new)  # rescales the sums kept relative to the old max
            zs = z - m_new
            e = tl.exp(zs)  # 0 where masked
            t = alpha * (t + (m - m_new) * s) + tl.sum(e * tl.where(mask, zs, 0.0), axis=0)
            s = alpha * s + tl.sum(e, axis=0)
            m = m_new

        # 2. Per-token results, with lse = m + log s: logp = (z[target] - m) - log s (subtracting m
        # first keeps the digits that lse would lose when |m| is large), and
        # entropy = lse - sum_v p_v z_v = log s - t / s (s, t summed over V).
        # An out-of-range target reads NaN rather than another row's memory.
        log_s = tl.log(s)
        z_target = tl.load(row_ptr + target, mask=(target >= 0) & (target < V), other=float("nan"))
        tl.store(logp_ptr + row, (z_target.to(tl.float32) * z_scale - m) - log_s)
        tl.store(entropy_ptr + row, log_s - t / s)

        # 3. Optional second pass: d logp / d logits_v = (onehot_v(target) - p_v) * inv_temp (per unscaled
        # logit: step 3 multiplies by W, not by 2^-k W), written over the logits in their own dtype so that
        # cuBLAS can take the buffer as it is.
        if NEED_GRAD:
            for start in range(0, V, BLOCK_V):
                mask = start + cols < V
                x = tl.load(row_ptr + start + cols, mask=mask,
                            other=-float("inf")).to(tl.float32)  # p = 0 there
                p = tl.exp((x * z_scale - m) - log_s)
                dx = (tl.where(start + cols == target, 1.0, 0.0) - p) * inv_temp
                tl.store(row_ptr + start + cols, dx.to(logits_ptr.dtype.element_ty), mask=mask)


def _chunk_tokens(n, vocab, itemsize):
    """Tokens per chunk: as many as fit CHUNK_BYTES, spread evenly so the last chunk is no sliver,
    in multiples of 16 so every chunk's slices of logp, entropy and targets stay 16-byte aligned
    (Triton compiles one variant of the kernel per alignment)."""
    cap = max(16, CHUNK_BYTES // (vocab * itemsize) // 16 * 16)
    n_chunks = max(1, -(-n // cap))
    return 16 * max(1, -(-n // (16 * n_chunks)))


def _chunked_forward(hidden, weight, targets, temperature, need_grad, chunk_tokens):
    """logp (N,), entropy (N,) float32 and, if need_grad, d logp / d hidden (N, H) in hidden's dtype."""
    n, h = hidden.shape
    vocab = weight.shape[0]
    if weight.shape[1] != h or hidden.dtype != weight.dtype or targets.shape != (n,):
        raise ValueError(f"shapes/dtypes: hidden {tuple(hidden.shape)} {hidden.dtype}, weight "
                         f"{tuple(weight.shape)} {weight.dtype}, targets {tuple(targets.shape)}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    chunk = chunk_tokens or _chunk_tokens(n, vocab, hidden.element_size())
    device = hidden.device
    logp = torch.empty(n, dtype=torch.float32, device=device)
    entropy = torch.empty(n, dtype=torch.float32, device=device)
    dhidden = torch.empty((n, h), dtype=hidden.dtype, device=device) if need_grad else None
    logits = torch.empty((min(chunk, n), vocab), dtype=hidden.dtype, device=device)  # reused
    targets = targets.contiguous()
    block_v = min(BLOCK_V, triton.next_power_of_2(vocab))
    fp16 = hidden.dtype == torch.float16
    w_norm = torch.linalg.vector_norm(weight, dim=1, dtype=torch.float32).max().item() if fp16 else 0.0
    for start in range(0, n, chunk):
        end = min(start + chunk, n)
        buf, h = logits[: end - start], hidden[start:end]
        k = 0  # fp16: the chunk's largest possible logit, max ||h|| * max ||w||, brought under FP16_SAFE
        if fp16:
            bound = torch.linalg.vector_norm(h, dim=1, dtype=torch.float32).max().item() * w_norm
            k = (math.ceil(math.log2(bound / FP16_SAFE)) if FP16_SAFE < bound < math.inf
                 else 0)  # inf/nan: as is
            h = h * 2.0**-k if k else h  # a power of two: exact unless values fall below fp16's normal range
        torch.mm(h, weight.T, out=buf)  # step 1: (C, H) @ (H, V)
        _logprob_entropy_kernel[(end - start,)](
            buf, targets[start:end], logp[start:end], entropy[start:end], vocab, buf.stride(0),
            2.0**k / temperature, 1.0 / temperature, NEED_GRAD=need_grad, BLOCK_V=block_v,
            num_warps=8,  # 256 threads a row
        )
        if need_grad:
            torch.mm(buf, weight, out=dhidden[start:end])  # step 3: (C, V) @ (V, H)
    return logp, entropy, dhidden


class _TokenLogprobEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, temperature, chunk_tokens):
        logp, entropy, dhidden = _chunked_forward(hidden, weight, targets, temperature, True, chunk_tokens)
        ctx.save_for_backward(dhidden)
        ctx.mark_non_differentiable(entropy)
        return logp, entropy

    @staticmethod
    def backward(ctx, grad_logp, grad_entropy):
        (dhidden,) = ctx.saved_tensors
        # One upstream scalar per token; the product is formed in float32, then rounded once.
        grad_hidden = (dhidden * grad_logp[:, None]).to(dhidden.dtype)
        return grad_hidden, None, None, None, None


def token_logprobs_entropy_triton(hidden, weight, targets, temperature=1.0, *, chunk_tokens=None):
    """The Triton path, callable directly (on CPU tensors under TRITON_INTERPRET=1, as in the tests).
    Same contract as `reference`; chunk_tokens overrides the tokens per chunk (default: CHUNK_BYTES)."""
    if not HAS_TRITON:
        raise RuntimeError("token_logprobs_entropy_triton needs the triton package")
    if torch.is_grad_enabled() and weight.requires_grad:
        raise ValueError("this kernel gives no gradient for weight (the frozen lm_head): "
                         "pass weight.detach()")
    if torch.is_grad_enabled() and hidden.requires_grad:
        return _TokenLogprobEntropy.apply(hidden, weight, targets, temperature, chunk_tokens)
    logp, entropy, _ = _chunked_forward(hidden, weight, targets, temperature, False, chunk_tokens)
    return logp, entropy


def token_logprobs_entropy(hidden, weight, targets, temperature=1.0):
    """log pi(targets) and entropy per token, float32 (N,) each, from hidden (N, H), lm_head weight
    (V, H) and targets (N,) int64 in [0, V); logits are divided by temperature. logp carries the
    gradient w.r.t. hidden, entropy is detached. Triton on CUDA, the torch reference elsewhere."""
    if hidden.is_cuda and HAS_TRITON:
        return token_logprobs_entropy_triton(hidden, weight, targets, temperature)
    return reference(hidden, weight, targets, temperature)


if __name__ == "__main__":
    # Check the Triton path against the reference, then time both (fwd+bwd). The full table
    # against the matmul floor and the other baselines: `python bench.py kernel`. On CUDA (bf16)
    # the differences are ~1e-2, from rounding the logits to bf16; on CPU (float32) ~1e-7.
    import os
    import sys

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        sys.exit("no CUDA: run `TRITON_INTERPRET=1 python logprob_kernel.py` "
                 "to check in Triton's interpreter")
    n, h, vocab = (4096, 1536, 151936) if device == "cuda" else (64, 96, 5000)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    torch.manual_seed(0)
    hidden = torch.randn(n, h, device=device, dtype=dtype, requires_grad=True)
    weight = torch.randn(vocab, h, device=device, dtype=dtype) * 3 * h**-0.5  # logits of std ~3
    targets = torch.randint(0, vocab, (n,), device=device)
    g = torch.randn(n, device=device)
    results = {}
    for name, fn in [("reference", reference), ("triton", token_logprobs_entropy_triton)]:
        def step(fn=fn):
            logp, entropy = fn(hidden, weight, targets, 0.7)
            (grad,) = torch.autograd.grad(logp, hidden, g)
            return logp.detach(), entropy, grad.float()

        results[name] = step()
        if device == "cuda":
            ms = triton.testing.do_bench(step, return_mode="median")
            print(f"{name:9s} fwd+bwd {ms:.2f} ms at N={n} H={h} V={vocab} bf16")
    for what, out, ref in zip(["logp", "entropy", "d hidden"], results["triton"], results["reference"]):
        err = ((out - ref).abs().max() / ref.abs().max()).item()
        print(f"{what:9s} max |triton - reference| / max |reference| = {err:.2e}")
