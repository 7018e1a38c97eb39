"""logprob_kernel.py: the Triton path (run by Triton's interpreter on CPU tensors, TRITON_INTERPRET=1 from
conftest), the torch reference and the dispatch, all checked against a float64 oracle.

Relative error throughout: ||out - ref||_2 / ||ref||_2 over the whole tensor. One scale per tensor,
so reference entries near zero (confident tokens' entropies, small gradient entries) don't inflate
it; in float32 one wrong vocabulary entry of a 37 x 8315 problem still moves it past 1e-5 (checked
by mutating the kernel). Tolerances: 1e-5 for float32 arithmetic (which lands near 1e-7). 16-bit
inputs: the logits are rounded to 16 bits by the matmul, as in the naive path, and the oracle is
given the same logits; logp and entropy are then float32 reductions (1e-5), while d hidden is
rounded to 16 bits three times (d logits, the matmul's output, times grad_out; Triton's
interpreter truncates the first where GPUs round to nearest), hence 1e-2 (bf16 lands at 4-6e-3).
Against exact math, rounding the logits to bf16 costs up to ~1e-2 by itself, in any
implementation: a property of the input dtype, not of the kernel.
"""
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import logprob_kernel

needs_triton = pytest.mark.skipif(not logprob_kernel.HAS_TRITON, reason="triton is not installed")

# (N, H, V): N odd, H not a multiple of 16, V neither a power of two nor a multiple of BLOCK_V.
MULTI_BLOCK = (37, 40, 2 * logprob_kernel.BLOCK_V + 123)  # three V blocks, the last one ragged
ONE_BLOCK = (5, 24, 1000)  # V below BLOCK_V: a single, masked block


def rel_err(out, ref):
    return ((out.double() - ref).norm() / ref.norm()).item()


def make_inputs(n, h, vocab, dtype, seed=0, strided=False):
    """Random inputs whose logits have a std of ~3 (peaked like a language model's, not uniform);
    targets include the first and last vocabulary entries. strided: hidden is a column slice."""
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, h + 3 * strided, generator=gen)[:, :h]
    weight = torch.randn(vocab, h, generator=gen) * 3 * h**-0.5
    targets = torch.randint(0, vocab, (n,), generator=gen)
    targets[:2] = torch.tensor([0, vocab - 1])
    return hidden.to(dtype).requires_grad_(), weight.to(dtype), targets


def float64_oracle(hidden, weight, targets, temperature, grad_out, round_logits):
    """logp, entropy and d(grad_out . logp)/d hidden in float64, written out independently of
    logprob_kernel.reference. round_logits: use the logits of the matmul in the inputs' own dtype, as
    the Triton path does (the gradient passes straight through that rounding)."""
    h64 = hidden.detach().double().requires_grad_()
    logits = h64 @ weight.double().T
    if round_logits:
        logits = logits + ((hidden.detach() @ weight.T).double() - logits).detach()
    logits = logits / temperature
    lse = logits.logsumexp(dim=-1)
    logp = logits.gather(1, targets[:, None]).squeeze(1) - lse
    probs = (logits - lse[:, None]).exp()
    entropy = lse - (probs * logits).sum(dim=-1)  # sum over V: lse - E_p[z]
    (grad,) = torch.autograd.grad(logp, h64, grad_out.double())
    return logp.detach(), entropy.detach(), grad


def assert_close_to_oracle(logp, entropy, grad, oracle, dtype):
    for what, out, ref in zip(["logp", "entropy", "d hidden"], (logp, entropy, grad), oracle):
        tol = 1e-2 if what == "d hidden" and dtype != torch.float32 else 1e-5
        assert rel_err(out, ref) < tol, what


@pytest.fixture
def allocations(monkeypatch):
    """Poison every torch.empty (NaN, or -1 for integers) so an element the kernel fails to write
    fails the comparison, and record the shapes allocated."""
    shapes = []
    real_empty = torch.empty

    def poisoned_empty(*args, **kwargs):
        out = real_empty(*args, **kwargs)
        shapes.append(tuple(out.shape))
        with torch.no_grad():
            return out.fill_(float("nan") if out.is_floating_point() else -1)

    monkeypatch.setattr(torch, "empty", poisoned_empty)
    return shapes


@needs_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=["fp32", "bf16", "fp16"])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
@pytest.mark.parametrize(
    "shape, chunk_tokens, strided",
    [(MULTI_BLOCK, None, False), (MULTI_BLOCK, 16, True), (ONE_BLOCK, None, False)],
    ids=["multi-block", "3-chunks-strided", "one-block"],
)
def test_triton_matches_float64(allocations, shape, chunk_tokens, strided, temperature, dtype):
    hidden, weight, targets = make_inputs(*shape, dtype, strided=strided)
    grad_out = torch.randn(shape[0], generator=torch.Generator().manual_seed(1))
    logp, entropy = logprob_kernel.token_logprobs_entropy_triton(
        hidden, weight, targets, temperature, chunk_tokens=chunk_tokens
    )
    (grad,) = torch.autograd.grad(logp, hidden, grad_out)
    assert len(allocations) >= 4  # logp, entropy, d hidden and the logits buffer were poisoned
    assert logp.dtype == entropy.dtype == torch.float32 and grad.dtype == dtype
    assert logp.shape == entropy.shape == targets.shape and not entropy.requires_grad
    oracle = float64_oracle(hidden, weight, targets, temperature, grad_out, round_logits=dtype != torch.float32)
    assert_close_to_oracle(logp, entropy, grad, oracle, dtype)


@needs_triton
def test_triton_never_allocates_n_by_v(allocations):
    n, h, vocab = MULTI_BLOCK
    hidden, weight, targets = make_inputs(n, h, vocab, torch.float32)
    logp, _ = logprob_kernel.token_logprobs_entropy_triton(hidden, weight, targets, chunk_tokens=16)
    logp.sum().backward()
    vocab_wide = [shape for shape in allocations if shape[-1] == vocab]
    assert vocab_wide == [(16, vocab)]  # one reused (chunk, V) logits buffer, nothing (N, V)


@needs_triton
@pytest.mark.parametrize("mode", ["no_grad", "input_without_grad"])
def test_triton_without_grad_skips_the_gradient(allocations, mode):
    n, h, vocab = MULTI_BLOCK
    hidden, weight, targets = make_inputs(n, h, vocab, torch.float32)
    with_grad = logprob_kernel.token_logprobs_entropy_triton(hidden, weight, targets, 0.7)
    allocations.clear()
    if mode == "no_grad":
        with torch.no_grad():
            without = logprob_kernel.token_logprobs_entropy_triton(hidden, weight, targets, 0.7)
    else:
        without = logprob_kernel.token_logprobs_entropy_triton(hidden.detach(), weight, targets, 0.7)
    assert not without[0].requires_grad and without[0].grad_fn is None
    assert (n, h) not in allocations  # no d logp / d hidden buffer computed or kept
    for out, ref in zip(without, with_grad):
        assert torch.equal(out, ref.detach())  # the same first pass, bit for bit


@needs_triton
def test_triton_refuses_a_weight_that_wants_a_gradient():
    hidden, weight, targets = make_inputs(*ONE_BLOCK, torch.float32)
    with pytest.raises(ValueError, match="weight"):
        logprob_kernel.token_logprobs_entropy_triton(hidden, weight.requires_grad_(), targets)


@needs_triton
def test_triton_out_of_range_target_gives_nan():
    hidden, weight, targets = make_inputs(*ONE_BLOCK, torch.float32)
    targets[3] = ONE_BLOCK[2]  # == V
    logp, entropy = logprob_kernel.token_logprobs_entropy_triton(hidden.detach(), weight, targets)
    assert torch.isnan(logp[3]) and not torch.isnan(logp[:3]).any() and not torch.isnan(entropy).any()


@needs_triton
@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # the unscaled overflow's inf - inf
@pytest.mark.parametrize("largest", [6e4, 1e6])
def test_fp16_logits_past_fp16s_range(largest, monkeypatch):
    """fp16 tops out at 65504. Logits up to `largest` (1e6: far beyond what RMS-normed hidden states give)
    come out finite and as exact as fp16 allows: the chunk is scaled by 2^-k before the matmul, so the
    oracle is given the same rounded logits (hidden * 2^-k @ W^T in fp16, times 2^k). Without the scaling
    (FP16_SAFE = inf) logits past 65504 overflow to inf and give nan."""
    hidden, weight, targets = make_inputs(*MULTI_BLOCK, torch.float16)
    with torch.no_grad():  # logits of std ~3 -> largest logit `largest`, half of the factor on each side
        factor = (largest / (hidden.float() @ weight.float().T).abs().max()).sqrt()
        hidden *= factor
        weight = weight * factor
    grad_out = torch.randn(len(targets), generator=torch.Generator().manual_seed(1))
    logp, entropy = logprob_kernel.token_logprobs_entropy_triton(hidden, weight, targets, 0.7)
    (grad,) = torch.autograd.grad(logp, hidden, grad_out)
    bound = hidden.detach().float().norm(dim=1).max().item() * weight.float().norm(dim=1).max().item()
    k = math.ceil(math.log2(bound / logprob_kernel.FP16_SAFE))
    assert k >= 1 and torch.isfinite(logp).all() and torch.isfinite(grad).all()
    scaled = (hidden.detach() * 2.0**-k).requires_grad_()  # the same logits / temperature, rounded as the kernel
    logp64, entropy64, grad64 = float64_oracle(scaled, weight, targets, 0.7 * 2.0**-k, grad_out, round_logits=True)
    assert rel_err(logp, logp64) < 1e-5 and rel_err(grad, grad64 * 2.0**-k) < 1e-2
    assert (entropy.double() - entropy64).abs().max() < 1e-5  # ~0: logits this far apart are one-hot
    monkeypatch.setattr(logprob_kernel, "FP16_SAFE", math.inf)
    unscaled = logprob_kernel.token_logprobs_entropy_triton(hidden.detach(), weight, targets, 0.7)[0]
    assert torch.isfinite(unscaled).all() == (largest < 65504)  # fp16's largest number


def test_default_chunk_fits_the_memory_budget():
    """At the benchmark's size the extra memory is the logits buffer plus d logp / d hidden."""
    n, vocab, itemsize = 16384, 151936, 2
    chunk = logprob_kernel._chunk_tokens(n, vocab, itemsize)
    n_chunks = -(-n // chunk)
    assert chunk * vocab * itemsize <= logprob_kernel.CHUNK_BYTES
    assert chunk % 16 == 0 and n_chunks * chunk - n < 16 * n_chunks  # even: the last one nearly full
    assert chunk * vocab * itemsize + n * 3584 * itemsize <= 2**30  # + d hidden at H = 3584
    assert logprob_kernel._chunk_tokens(3, vocab, itemsize) >= 3  # one chunk


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_reference_matches_float64(temperature, dtype):
    """The reference upcasts before its matmul: float32 logp and entropy whatever the input dtype
    (d hidden comes back in hidden's dtype)."""
    hidden, weight, targets = make_inputs(*MULTI_BLOCK, dtype)
    grad_out = torch.randn(len(targets), generator=torch.Generator().manual_seed(1))
    logp, entropy = logprob_kernel.reference(hidden, weight, targets, temperature)
    (grad,) = torch.autograd.grad(logp, hidden, grad_out)
    assert logp.dtype == entropy.dtype == torch.float32 and not entropy.requires_grad
    oracle = float64_oracle(hidden, weight, targets, temperature, grad_out, round_logits=False)
    assert_close_to_oracle(logp, entropy, grad, oracle, dtype)


@pytest.mark.parametrize("path", ["reference", pytest.param("triton", marks=needs_triton)])
def test_extreme_logits(path):
    """Uniform logits at 0 and at -1e4 (entropy log V), then logits of -1e4 (first entry) and +1e4
    (last entry, in the ragged last block): the online max must neither start from a fixed value
    nor turn exp(-1e4) = 0 into inf or nan."""
    vocab = MULTI_BLOCK[2]
    weight = torch.zeros(vocab, 3)  # logit v = hidden[0] + hidden[1] [v = 0] + hidden[2] [v = V-1]
    weight[:, 0] = 1.0
    weight[0, 1] = weight[vocab - 1, 2] = 1.0
    hidden = torch.tensor([[0.0, 0, 0], [-1e4, 0, 0], [0, -1e4, 1e4], [0, -1e4, 1e4]], requires_grad=True)
    targets = torch.tensor([7, 7, vocab - 1, 0])
    fn = logprob_kernel.reference if path == "reference" else logprob_kernel.token_logprobs_entropy_triton
    logp, entropy = fn(hidden, weight, targets)
    logp.sum().backward()
    log_v = math.log(vocab)
    torch.testing.assert_close(logp.detach(), torch.tensor([-log_v, -log_v, 0.0, -2e4]), atol=1e-5, rtol=1e-6)
    torch.testing.assert_close(entropy, torch.tensor([log_v, log_v, 0.0, 0.0]), atol=1e-5, rtol=0)
    # d logp / d hidden = W_target - sum_v p_v W_v: W_7 - mean(W) twice; 0; W_0 - W_(V-1).
    # Column 0 is 1 - sum_v p_v, a float32 sum over V cancelling against 1: good to ~V * 2**-24.
    expected_grad = torch.tensor([[0, -1 / vocab, -1 / vocab]] * 2 + [[0.0, 0, 0], [0, 1, -1]])
    torch.testing.assert_close(hidden.grad[:, 0], expected_grad[:, 0], atol=vocab * 2**-24, rtol=0)
    torch.testing.assert_close(hidden.grad[:, 1:], expected_grad[:, 1:], atol=1e-8, rtol=0)


def test_dispatch_on_cpu_is_the_reference(monkeypatch):
    def not_on_cpu(*args, **kwargs):
        raise AssertionError("the Triton path must not run for CPU tensors")

    monkeypatch.setattr(logprob_kernel, "token_logprobs_entropy_triton", not_on_cpu)
    hidden, weight, targets = make_inputs(*ONE_BLOCK, torch.float32)
    got = logprob_kernel.token_logprobs_entropy(hidden, weight, targets, 0.7)
    want = logprob_kernel.reference(hidden, weight, targets, 0.7)
    assert all(torch.equal(a, b) for a, b in zip(got, want))
    assert got[0].requires_grad


WITHOUT_TRITON = textwrap.dedent("""
    import sys
    sys.modules["triton"] = None  # `import triton` now raises ImportError
    import torch
    import logprob_kernel
    assert not logprob_kernel.HAS_TRITON
    h, w, t = torch.randn(3, 4), torch.randn(7, 4), torch.tensor([0, 6, 2])
    assert logprob_kernel.token_logprobs_entropy(h, w, t)[0].shape == (3,)
    try:
        logprob_kernel.token_logprobs_entropy_triton(h, w, t)
    except RuntimeError:
        pass
    else:
        raise AssertionError("the Triton path ran without triton")
""")


def test_imports_and_falls_back_without_triton():
    root = Path(logprob_kernel.__file__).parent
    result = subprocess.run([sys.executable, "-c", WITHOUT_TRITON], cwd=root, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
