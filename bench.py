"""Benchmarks (not tests): numbers for docs/performance.md and docs/kernel.md, measured on a GPU.

    python bench.py kernel [--n 16384 --vocab 151936 --hidden 1536,3584 --json bench_kernel.json]
    python bench.py e2e [--sizes 1.5B,7B --quant bf16,nf4 --json bench_e2e.json]
    python bench.py cpu --model FOLDER [--new-tokens 64 --reps 3 --json bench_cpu.json]
    python bench.py step --model FOLDER [--prompts 4 --step-tokens 128 --json bench_step.json]
    python bench.py sandbox [--data-dir ../shared/data --n 200]
    python bench.py check --out DIR [--device cpu]

`kernel`: per-token log-prob + entropy from hidden states, fwd+bwd, bf16, against the two lm_head
matmuls alone (the floor), the naive torch path, a chunked torch path and, when the package is
importable, Liger's fused linear cross-entropy. `--device cpu` runs tiny shapes through Triton's
interpreter to check the code paths; its timings mean nothing.

`e2e`: Qwen2.5-1.5B- and 7B-shaped models with random weights (the published configs, no
download), bf16 and NF4 bases with a LoRA adapter: rollout tokens/s at 64 and 256 sequences through
the plain peft model (naive) and the merged generation copy with a static, compiled KV cache (fast),
then full RL steps (G = 8, 8 prompts, 512 new tokens) split into rollout / scoring / update, the update
done both ways on the same batch: before (a no-grad old-policy pass, then forward + backward) and after
(progrpo.py's one forward), with peak GPU memory. `--sizes tiny --device cpu` checks the code paths.

`step`: the same step split on a real model (SmolLM2-135M-Instruct on CPU, say), GSM8K prompts in its
chat template, also with the share of rows in all-wrong groups, which progrpo.py does not forward.

`cpu`: sampling tokens/s of a real model on CPU (`common.sample` through the peft model and through
the generation copy), one thread against all cores, dynamic against static KV cache, at 1 and 8
GSM8K prompts x 4 samples. Tokens are completion tokens up to and including EOS (Rollout.mask).

`check`: the one GPU check, about 9 minutes on one card with >= 78 GB: tests/test_gpu.py, `kernel`,
`e2e --sizes 1.5B`, and a 3-step progrpo.py run on a random-weight Qwen2.5-1.5B-shaped folder (NF4
base, 256 new tokens), each in a subprocess with its own time limit; every figure goes into
DIR/gpu_check.json, rewritten after each step. `--device cpu` runs the same steps with tiny shapes.
"""
import argparse
import importlib.metadata
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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


def _methods(kernel, chunk):
    """(name, fn(hidden, weight, targets) -> (logp, entropy or None)); the naive path comes first:
    the others are checked against it."""
    methods = [
        ("naive torch", lambda h, w, t: naive_logprobs_entropy(h, w, t, TEMPERATURE)),
        (f"chunked torch ({chunk}, ckpt)", lambda h, w, t: chunked_logprobs_entropy(h, w, t, TEMPERATURE, chunk)),
        ("logprob_kernel.py", lambda h, w, t: kernel.token_logprobs_entropy_triton(h, w, t, TEMPERATURE)),
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


def _bench_hidden_size(h, args, kernel):
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
    for i, (name, fn) in enumerate(_methods(kernel, args.chunk)):
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
        os.environ["TRITON_INTERPRET"] = "1"  # must precede the first import of the kernel's @triton.jit
    import logprob_kernel as kernel

    gpu = torch.cuda.get_device_name() if args.device == "cuda" else "cpu (Triton interpreter)"
    triton_version = kernel.triton.__version__ if kernel.HAS_TRITON else None
    print(f"kernel: N={args.n} V={args.vocab} bf16 T={TEMPERATURE} on {gpu}, torch {torch.__version__}, "
          f"triton {triton_version}; median ms of {args.reps} after {args.warmup} warm-up; fwd = under no_grad; "
          "peak = extra MiB over the inputs in fwd+bwd; check = max |logp - naive|, max |entropy - naive|, "
          "max |d hidden - naive| / max |naive d hidden|")
    print(f"{'H':>5} {'method':28s} {'fwd+bwd ms':>10} {'x floor':>7} {'fwd ms':>8} {'peak MiB':>9}  check")
    rows = [row for h in args.hidden for row in _bench_hidden_size(h, args, kernel)]
    if args.json:
        meta = dict(n=args.n, vocab=args.vocab, dtype="bfloat16", temperature=TEMPERATURE, device=gpu,
                    torch=torch.__version__, triton=triton_version, warmup=args.warmup, reps=args.reps)
        with open(args.json, "w") as f:
            json.dump(dict(meta, rows=rows), f, indent=1)
        print(f"wrote {args.json}")


# As published in the models' config.json (Qwen2.5-1.5B, Qwen2.5-7B); tiny: a CPU code-path check.
QWEN25 = {
    "1.5B": dict(vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                 num_attention_heads=12, num_key_value_heads=2, tie_word_embeddings=True),
    "7B": dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
               num_attention_heads=28, num_key_value_heads=4, tie_word_embeddings=False),
    "tiny": dict(vocab_size=1024, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True),
}


def random_qwen(size, folder, device):
    """Save a random-weight Qwen2.5-shaped model (bf16) and the demo tokenizer to `folder`, so that
    both bases load through common.load_model, 4-bit quantisation included."""
    from transformers import AutoModelForCausalLM, Qwen2Config

    import common
    if (folder / "config.json").exists():
        return
    config = Qwen2Config(**QWEN25[size], max_position_embeddings=32768, rope_theta=1e6, rms_norm_eps=1e-6,
                         bos_token_id=None, eos_token_id=1, pad_token_id=0)  # the demo tokenizer's ids
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(folder)
    common.tiny_model()[1].save_pretrained(folder)
    del model


PEAKS = {}  # phase -> peak GiB allocated during its last _timed call (CUDA)


def _timed(fn, device, phase=""):
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    out = fn()
    if device == "cuda":
        torch.cuda.synchronize()
        PEAKS[phase] = torch.cuda.max_memory_allocated() / 2**30
    return out, time.perf_counter() - t0


def _rollout_rows(model, gen, tok, args, device):
    """Tokens/s of the naive and the fast path at each batch size (one warm-up call each first)."""
    import common
    rows = []
    for seqs in args.seqs:
        prompts = [" ".join(["sum"] + [str(i % 10) for i in range(31)])] * (seqs // 8)  # 32 tokens, 8 samples each
        for path, policy, static in (("naive (peft, unmerged)", model, False), ("fast (merged, static)", gen, True)):
            if policy is None:
                rows.append(dict(path=path, seqs=seqs, tok_s=None, note="no room for a generation copy"))
                continue
            common.sample(policy, tok, prompts, 8, args.new_tokens, static_cache=static)  # warm-up / compile
            ro, sec = _timed(lambda: common.sample(policy, tok, prompts, 8, args.new_tokens, static_cache=static),
                             device)
            rows.append(dict(path=path, seqs=seqs, tok_s=ro.mask.sum().item() / sec, seconds=sec))
            print(f"    rollout {path:24s} {seqs:4d} seqs x {args.new_tokens} tokens: {rows[-1]['tok_s']:9,.0f} tok/s",
                  flush=True)
    return rows


def _rl_step(model, gen, tok, opt, args, device, prompts=None, golds=None):
    """One RL step (G = 8 rows per prompt; the demo's 8 prompts unless given), timed by phase, with the update
    done both ways on the same batch: "two passes" (before: a no-grad pi_old pass over prompt + completion,
    then forward + backward of every row) and "one forward" (progrpo.py now: the training forward gives pi_old,
    c(q) and c(o|q)). Both are timed with every group made half right (nothing to skip); "skippable" is the
    share of rows in all-wrong groups as graded, which progrpo.py does not forward. Returns seconds per phase."""
    import arm
    import common
    import tasks
    from progrpo import aggregate, policy_loss
    task, G, mb = tasks.demo_task(), 8, args.micro_batch
    if prompts is None:
        prompts = [common.format_prompt(tok, r["question"], task.instruction) for r in task.rows[:8]]
        golds = [r["answer"] for r in task.rows[:8]]
    else:
        task = tasks.math_task("prompts", [])
    t = {}
    if gen is not None:
        _, t["sync copy"] = _timed(lambda: common.sync_generation_copy(model, gen), device, "sync copy")
    ro, t["rollout"] = _timed(lambda: common.sample(gen or model, tok, prompts, G, args.step_tokens,
                                                    static_cache=gen is not None and device == "cuda"), device, "rollout")
    graded, t["scoring"] = _timed(lambda: task.grade(ro.texts, [g for g in golds for _ in range(G)]), device, "scoring")
    t["skippable"] = 1 - torch.tensor([r for r, _ in graded]).view(-1, G).any(1).float().mean().item()
    L, N, mask = ro.prompt_len, len(ro.texts), ro.mask.float()
    R = torch.tensor([[float(g % 2) for g in range(G)]] * len(prompts))  # every group mixed: nothing skipped
    prompt_mask = ro.attn[:, 1:L] * ro.attn[:, :L - 1]

    dev = mask.device
    correct, A = R > 0.5, arm.group_advantages(R).to(dev)
    shifted, c_q = arm.shifted_groups(correct).to(dev), torch.ones(len(prompts), device=dev)

    def update(old, adv):  # forward + backward of every row, micro-batch by micro-batch, then the optimizer step
        opt.zero_grad(set_to_none=True)
        for i in range(0, N, mb):
            rows = torch.arange(i, min(i + mb, N), device=dev)
            first = rows % G == 0  # one forward: each group's first row also scores the prompt, for c(q)
            logp, _, *logp_q = common.token_logprobs(model, ro.seqs[rows], ro.attn[rows], L - 1, 1.0,
                                                     first if old is None else None)
            if old is None:  # as progrpo.py: pi_old and the confidences from this forward, row by row
                c_q[rows[first] // G] = arm.prompt_confidence(logp_q[0], prompt_mask[rows[first]])
                adv[rows] = arm.reweight_rows(A.view(N)[rows], shifted[rows // G],
                                              arm.answer_confidence(logp.detach(), mask[rows]), c_q[rows // G], 1.0)
            loss, _ = policy_loss(logp, logp.detach() if old is None else old[rows], adv[rows], 0.2, 0.28)
            aggregate(loss, mask[rows], "token-mean", mask.sum(), N).backward()
        opt.step()

    def two_passes():  # pi_old, c(q) and c(o|q) from a no-grad pass first; then the update
        old_all = common.token_logprobs_batched(model, ro.seqs, ro.attn, 0, mb)[0]
        c_q = arm.prompt_confidence(old_all[::G, :L - 1], prompt_mask[::G])
        old = old_all[:, L - 1:]
        return old, arm.reweight(A, correct.to(dev), arm.answer_confidence(old, mask), c_q, 1.0).view(N)

    (old, adv), t["two passes: old pass"] = _timed(two_passes, device, "two passes: old pass")
    _, t["two passes: update"] = _timed(lambda: update(old, adv), device, "two passes: update")
    _, t["one forward: update"] = _timed(lambda: update(None, torch.zeros(N, device=dev)), device,
                                         "one forward: update")
    return t


STEP_TABLE = ("\n| model | base | rollout | scoring | before: old pass | before: update | after: update | "
              "all-wrong rows (not forwarded) | step before | step after |")


def _step_totals(split):
    """Seconds of a step before (two passes) and after (one forward), from _rl_step's phases."""
    common = sum(v for k, v in split.items() if k in ("sync copy", "rollout", "scoring"))
    return (common + split["two passes: old pass"] + split["two passes: update"],
            common + split["one forward: update"])


def _step_row(label, s):
    before, after = _step_totals(s)
    return (f"| {label} | {s['rollout']:.2f}s | {s['scoring']:.2f}s | {s['two passes: old pass']:.2f}s | "
            f"{s['two passes: update']:.2f}s | {s['one forward: update']:.2f}s | {s['skippable']:.0%} | "
            f"{before:.2f}s | {after:.2f}s |")


def bench_e2e(args):
    import common
    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        sys.exit("bench.py e2e: no CUDA device found (`--sizes tiny --device cpu` only checks the code paths)")
    gpu = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    print(f"e2e on {gpu}, torch {torch.__version__}; random-weight Qwen2.5 shapes, LoRA r16 all-linear; "
          f"rollouts: {args.new_tokens} new tokens, 8 samples per prompt; RL step: G=8 x 8 prompts, "
          f"{args.step_tokens} new tokens, micro-batch {args.micro_batch}, gradient checkpointing", flush=True)
    results = []

    def save():  # after each model too: a run stopped by a time limit keeps what it measured
        if args.json:
            with open(args.json, "w") as f:
                json.dump(dict(device=gpu, torch=torch.__version__, args=vars(args) | {"func": None},
                               results=results), f, indent=1)

    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            folder = Path(tmp) / size
            random_qwen(size, folder, device)
            for quant in args.quant:
                if device == "cuda":
                    torch.cuda.empty_cache()
                    torch.cuda.reset_peak_memory_stats()
                model, tok = common.load_model(str(folder), device, quant == "nf4", gradient_checkpointing=True)
                model.train()
                gen = common.generation_copy(model)
                print(f"  {size} {quant}: generation copy {'yes' if gen is not None else 'no (no room)'}", flush=True)
                rollouts = _rollout_rows(model, gen, tok, args, device)
                del gen  # the step measures its own memory: a fresh copy, as the trainer holds one
                if device == "cuda":
                    torch.cuda.empty_cache()
                    torch.cuda.reset_peak_memory_stats()
                gen = common.generation_copy(model)
                opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
                _rl_step(model, gen, tok, opt, args, device)  # warm-up: compile, optimizer state
                steps = [_rl_step(model, gen, tok, opt, args, device) for _ in range(args.steps)]
                split = {k: statistics.median(s[k] for s in steps) for k in steps[0]}
                before, after = _step_totals(split)
                peaks = dict(PEAKS)  # of the last step, per phase: the copy is resident in all of them
                peak = max(peaks.values()) if peaks else None
                copy_gib = sum(p.numel() * p.element_size() for p in gen.parameters()) / 2**30 if gen else 0.0
                print("    RL step: " + " | ".join(f"{k} {v:.2f}" for k, v in split.items())
                      + f" | total {before:.2f}s before, {after:.2f}s after | peak {peak or 0:.2f} GiB, of which the generation "
                      f"copy {copy_gib:.2f} GiB; per phase " + ", ".join(f"{k} {v:.2f}" for k, v in peaks.items()),
                      flush=True)
                results.append(dict(size=size, quant=quant, rollouts=rollouts, step_seconds=split, peak_by_phase=peaks,
                                    step_total_before=before, step_total=after, peak_gib=peak, copy_gib=copy_gib))
                save()
                del model, gen, opt
    print("\n| model | base | path | " + " | ".join(f"{s} seqs tok/s" for s in args.seqs)
          + " | speed-up |\n" + "|---" * (4 + len(args.seqs)) + "|")
    for r in results:
        by = {(x["path"], x["seqs"]): x.get("tok_s") for x in r["rollouts"]}
        for path in dict.fromkeys(x["path"] for x in r["rollouts"]):
            cells = [by.get((path, s)) for s in args.seqs]
            naive = by.get((r["rollouts"][0]["path"], args.seqs[0]))
            gain = f"{cells[0] / naive:.1f}x" if cells[0] and naive else "-"
            print(f"| {r['size']} | {r['quant']} | {path} | " + " | ".join(f"{c:,.0f}" if c else "-" for c in cells)
                  + f" | {gain} |")
    print(STEP_TABLE + " peak GiB | of it: copy GiB |\n" + "|---" * 11 + "|")
    for r in results:
        print(_step_row(f"{r['size']} | {r['quant']}", r["step_seconds"]) + f" {r['peak_gib'] or 0:.2f} | "
              f"{r['copy_gib']:.2f} |")
    if args.json:
        save()
        print(f"wrote {args.json}")


# The first eight problems of GSM8K's test split (question, final answer): the fixed prompts of `cpu`,
# and, twice over, the 16 problems of `check`'s training run (the lent GPU has no data sets).
GSM8K = [
    ("Janet\u2019s ducks lay 16 eggs per day. She eats three for breakfast every morning and bakes muffins for her "
     "friends every day with four. She sells the remainder at the farmers' market daily for $2 per fresh duck egg. "
     "How much in dollars does she make every day at the farmers' market?", "18"),
    ("A robe takes 2 bolts of blue fiber and half that much white fiber.  How many bolts in total does it take?", "3"),
    ("Josh decides to try flipping a house.  He buys a house for $80,000 and then puts in $50,000 in repairs.  This "
     "increased the value of the house by 150%.  How much profit did he make?", "70000"),
    ("James decides to run 3 sprints 3 times a week.  He runs 60 meters each sprint.  How many total meters does he "
     "run a week?", "540"),
    ("Every day, Wendi feeds each of her chickens three cups of mixed chicken feed, containing seeds, mealworms and "
     "vegetables to help keep them healthy.  She gives the chickens their feed in three separate meals. In the "
     "morning, she gives her flock of chickens 15 cups of feed.  In the afternoon, she gives her chickens another 25 "
     "cups of feed.  How many cups of feed does she need to give her chickens in the final meal of the day if the "
     "size of Wendi's flock is 20 chickens?", "20"),
    ("Kylar went to the store to buy glasses for his new apartment. One glass costs $5, but every second glass costs "
     "only 60% of the price. Kylar wants to buy 16 glasses. How much does he need to pay for them?", "64"),
    ("Toulouse has twice as many sheep as Charleston. Charleston has 4 times as many sheep as Seattle. How many sheep "
     "do Toulouse, Charleston, and Seattle have together if Seattle has 20 sheep?", "260"),
    ("Carla is downloading a 200 GB file. Normally she can download 2 GB/minute, but 40% of the way through the "
     "download, Windows forces a restart to install updates, which takes 20 minutes. Then Carla has to restart the "
     "download from the beginning. How load does it take to download the file?", "160"),
]


def bench_cpu(args):
    """Sampling tokens/s on CPU: peft model and generation copy x threads x KV cache x batch size."""
    import transformers

    import common
    if max(args.prompts) > len(GSM8K):
        sys.exit(f"bench.py cpu: --prompts is at most {len(GSM8K)}")
    load = os.getloadavg()
    model, tok = common.load_model(args.model, "cpu")
    policies = [("peft (unmerged)", model), ("generation copy", common.generation_copy(model))]
    prompts = [common.format_prompt(tok, q) for q, _ in GSM8K]
    print(f"cpu: {args.model}, torch {torch.__version__}, transformers {transformers.__version__}, "
          f"{os.cpu_count()} cores (torch's default: {torch.get_num_threads()} threads), load average "
          f"{load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} (1 / 5 / 15 min); {args.samples} samples per prompt, "
          f"{args.new_tokens} new tokens, seed {args.seed}, median of {args.reps} after one warm-up", flush=True)
    rows, default_threads = [], torch.get_num_threads()
    for threads in args.threads:
        torch.set_num_threads(threads)
        for policy_name, policy in policies:
            for static in (False, True):
                for n_prompts in args.prompts:
                    def run():  # the same seed each time: the same tokens, the same work
                        torch.manual_seed(args.seed)
                        return common.sample(policy, tok, prompts[:n_prompts], args.samples, args.new_tokens,
                                             static_cache=static)

                    run()  # warm-up
                    rates, seconds = [], []
                    for _ in range(args.reps):
                        ro, sec = _timed(run, "cpu")
                        rates.append(ro.mask.sum().item() / sec)
                        seconds.append(sec)
                    rows.append(dict(policy=policy_name, threads=threads, cache="static" if static else "dynamic",
                                     prompts=n_prompts, samples=args.samples, tokens=ro.mask.sum().item(),
                                     seconds=statistics.median(seconds), tok_s=statistics.median(rates)))
                    r = rows[-1]
                    print(f"  {policy_name:16s} {threads:2d} threads {r['cache']:7s} {n_prompts} x {args.samples}: "
                          f"{r['tokens']:5d} tokens in {r['seconds']:6.2f} s = {r['tok_s']:8.1f} tok/s", flush=True)
    torch.set_num_threads(default_threads)
    load_after = os.getloadavg()
    columns = [(t, c) for t in args.threads for c in ("dynamic", "static")]
    by = {(r["policy"], r["prompts"], r["threads"], r["cache"]): r["tok_s"] for r in rows}
    print(f"\ntokens/s (load average {load[0]:.2f} before, {load_after[0]:.2f} after)\n\n| path | prompts x samples | "
          + " | ".join(f"{t} thread{'s' * (t > 1)}, {c}" for t, c in columns) + " |\n"
          + "|---" * (2 + len(columns)) + "|")
    for policy_name, _ in policies:
        for n in args.prompts:
            print(f"| {policy_name} | {n} x {args.samples} | "
                  + " | ".join(f"{by[(policy_name, n, t, c)]:.1f}" for t, c in columns) + " |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(model=args.model, torch=torch.__version__, transformers=transformers.__version__,
                           cores=os.cpu_count(), load_before=load, load_after=load_after, new_tokens=args.new_tokens,
                           samples=args.samples, seed=args.seed, reps=args.reps, rows=rows), f, indent=1)
        print(f"wrote {args.json}")


# ChatML, as Qwen2.5's template writes turns (without its system-prompt and tool branches).
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def random_qwen_chat(size, folder, device):
    """random_qwen, with ChatML's two turn tokens and template added to the demo tokenizer (ids 13 and 14, under
    every vocabulary here), so that a training run goes through the chat path: format_prompt, the end-of-turn stop."""
    import common
    random_qwen(size, Path(folder), device)
    tok = common.tiny_model()[1]
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tok.chat_template = CHATML
    tok.save_pretrained(folder)


def _run_step(name, cmd, timeout, env):
    """Run one step from the repository root in its own process group; past `timeout` seconds kill the group
    (pytest's and progrpo's children too). Returns its record: exit code, seconds, the last lines of its output."""
    cmd = [str(c) for c in cmd]
    print(f"check: {name}: {' '.join(cmd)} (limit {timeout:.0f} s)", flush=True)
    t0, timed_out = time.perf_counter(), False
    proc = subprocess.Popen(cmd, cwd=Path(__file__).resolve().parent, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, errors="replace", start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        timed_out = True
    seconds = time.perf_counter() - t0
    lines = [line.rsplit("\r", 1)[-1] for line in output.splitlines()]  # a progress bar's last state only
    lines = [line for line in lines if line.strip()]
    record = dict(name=name, command=cmd, returncode=proc.returncode, timed_out=timed_out, seconds=seconds,
                  limit_s=timeout, tail=lines[-40:])
    print(f"check: {name}: exit {proc.returncode}{' (time limit)' if record['timed_out'] else ''} "
          f"in {seconds:.1f} s", flush=True)
    return record


def _pytest_counts(tail):
    """{'passed': 2, 'skipped': 2, ...} from pytest's last line ("2 passed, 2 skipped in 3.10s")."""
    last = tail[-1] if tail else ""
    return {word: int(n) for n, word in re.findall(r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed)", last)}


def _read_json(path):
    return json.loads(path.read_text()) if path.exists() else None


def bench_step(args):
    """One RL step on a real model (a folder or hub id; e.g. SmolLM2-135M-Instruct on CPU), on the first
    --prompts GSM8K test problems in the chat template, G = 8: seconds per phase, the update before (two
    passes) and after (one forward) in the same run, median of --steps after one warm-up step."""
    import common
    device = common.pick_device()
    model, tok = common.load_model(args.model, device, device == "cuda", gradient_checkpointing=device == "cuda")
    model.train()
    gen = common.generation_copy(model) if device == "cuda" else None  # CPU: the peft model, as progrpo.py's default
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-6)
    prompts = [common.format_prompt(tok, q) for q, _ in GSM8K[:args.prompts]]
    golds = [a for _, a in GSM8K[:args.prompts]]
    torch.manual_seed(0)
    _rl_step(model, gen, tok, opt, args, device, prompts, golds)  # warm-up
    steps = [_rl_step(model, gen, tok, opt, args, device, prompts, golds) for _ in range(args.steps)]
    split = {k: statistics.median(s[k] for s in steps) for k in steps[0]}
    print(f"step: {args.model} on {device}, {args.prompts} prompts x 8, {args.step_tokens} new tokens, micro-batch "
          f"{args.micro_batch}, median of {args.steps}" + STEP_TABLE + "\n" + "|---" * 10 + "|\n"
          + _step_row(f"{Path(args.model).name} | {'NF4' if device == 'cuda' else 'fp32'}", split))
    if args.json:
        Path(args.json).write_text(json.dumps(dict(model=args.model, device=device, args=vars(args) | {"func": None},
                                                   steps=steps, median=split), indent=1))


def bench_check(args):
    """The one GPU check: five steps, each in a subprocess with its own time limit, the results in one JSON."""
    cpu, py = args.device == "cpu", sys.executable
    if not cpu and not torch.cuda.is_available():
        sys.exit("bench.py check: no CUDA device found (`--device cpu` runs the same steps with tiny shapes)")
    out = Path(args.out).resolve()
    if (out / "run").is_dir() and any((out / "run").iterdir()):
        sys.exit(f"bench.py check: {out / 'run'} holds an earlier run: give a new --out")
    out.mkdir(parents=True, exist_ok=True)
    for name in ("gpu_check.json", "kernel.json", "e2e.json"):  # no figure of an earlier check is read back
        (out / name).unlink(missing_ok=True)
    t_start = time.perf_counter()
    deadline = t_start + args.budget
    env = {**os.environ, "TRITON_INTERPRET": "0", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "PYTHONUNBUFFERED": "1"}  # compiled Triton on the GPU; a CPU kernel step sets the interpreter itself
    if cpu:
        env["CUDA_VISIBLE_DEVICES"] = ""  # the same CPU steps on a machine with a GPU too
    problems = out / "problems.jsonl"
    problems.write_text("".join(json.dumps(dict(question=q, answer=a)) + "\n" for q, a in GSM8K * 2))
    size = "tiny" if cpu else "1.5B"
    tmp = tempfile.TemporaryDirectory()  # the random-weight model: 3 GB for 1.5B, removed at the end
    folder = Path(tmp.name) / f"qwen{size}-random"
    steps = [  # (name, command, seconds kept for it whatever the steps before it take)
        ("gpu tests", [py, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_gpu.py"], 120),
        ("kernel", [py, "bench.py", "kernel", "--json", out / "kernel.json"]
         + (["--device", "cpu", "--n", 37, "--vocab", 1000, "--hidden", 24, "--warmup", 0, "--reps", 1] if cpu else []),
         60),
        ("e2e", [py, "bench.py", "e2e", "--sizes", size, "--steps", 1, "--json", out / "e2e.json"]  # NF4: the
         + (["--device", "cpu", "--quant", "bf16", "--seqs", 8, "--new-tokens", 4, "--step-tokens", 4] if cpu  # user's
            else ["--quant", "nf4", "--seqs", 64]), 200),  # base; both bases and 256 rows ran past 191 s on an H100
        ("random folder", [py, "-c", "import sys, bench; bench.random_qwen_chat(*sys.argv[1:])", size, folder,
                           args.device], 45),
        ("progrpo", [py, "progrpo.py", "--model", folder, "--data", problems, "--max-new-tokens", 4 if cpu else 256,
                     "--steps", 3, "--out", out / "run"], 120),
    ]
    versions = {}
    for package in ("torch", "triton", "transformers", "peft", "accelerate", "bitsandbytes", "liger-kernel"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    report = dict(device=args.device, gpu=None, gpu_memory_gib=None, versions=versions, python=sys.version.split()[0],
                  budget_s=args.budget, steps=[], wall_s=None)

    def save():  # after every step: a check stopped from outside keeps what it measured
        report["wall_s"] = time.perf_counter() - t_start
        (out / "gpu_check.json").write_text(json.dumps(report, indent=1))

    for i, (name, cmd, _) in enumerate(steps):
        left = deadline - time.perf_counter() - sum(keep for _, _, keep in steps[i + 1:])
        record = _run_step(name, cmd, max(left, 10), env)
        if name == "gpu tests":
            record["counts"] = _pytest_counts(record["tail"])
        elif name in ("kernel", "e2e"):
            record["result"] = _read_json(out / f"{name}.json")
        elif name == "progrpo":
            metrics = out / "run" / "metrics.jsonl"
            rows = [json.loads(line) for line in metrics.read_text().splitlines()] if metrics.exists() else []
            record["metrics"] = rows
            record["seconds_per_step"] = [m["seconds"] for m in rows]
        report["steps"].append(record)
        save()
    tmp.cleanup()
    for ckpt in (out / "run").glob("ckpt-*"):  # adapter and optimizer, ~220 MB at 1.5B: too big to fetch
        shutil.rmtree(ckpt)
    (out / "run" / ".lock").unlink(missing_ok=True)
    if not cpu:  # only now: the steps had the card to themselves
        report["gpu"] = torch.cuda.get_device_name()
        report["gpu_memory_gib"] = torch.cuda.get_device_properties(0).total_memory / 2**30
    save()
    print("\n| step | exit | seconds | limit |\n|---|---|---|---|")
    for r in report["steps"]:
        print(f"| {r['name']} | {r['returncode']}{' (time limit)' if r['timed_out'] else ''} | {r['seconds']:.1f} | "
              f"{r['limit_s']:.0f} |")
    print(f"gpu tests: {report['steps'][0]['counts']}; progrpo seconds per step: "
          f"{[round(s, 2) for s in report['steps'][-1]['seconds_per_step']]}; wall {report['wall_s']:.0f} s; "
          f"wrote {out / 'gpu_check.json'}")
    failed = [r["name"] for r in report["steps"] if r["returncode"] != 0]
    if failed:
        sys.exit(f"check: failed: {', '.join(failed)} (their output's last lines are in {out / 'gpu_check.json'})")


def bench_sandbox(args):
    """Programs/s through sandbox.run_many, every limit on, and the same programs run bare (``python -I -S -c``,
    same pool) as the floor: MBPP reference solutions fenced as a completion. The mix matters: task 123 alone
    runs for 3 s. CPU counts this process and its children only, so other jobs' load does not inflate it."""
    import collections
    import resource
    from concurrent.futures import ThreadPoolExecutor

    import rewards
    import sandbox
    rows = [json.loads(line) for f in sorted(Path(args.data_dir, "mbpp").glob("*.jsonl")) for line in open(f)]
    if not rows:
        sys.exit(f"bench.py sandbox: no MBPP rows in {Path(args.data_dir, 'mbpp')}")
    programs = [rewards.code_program(f"```python\n{r['code']}\n```", r["test_setup_code"], "\n".join(r["test_list"]))
                for r in rows[: args.n]]
    workers = args.workers or os.cpu_count()

    def bare(batch):  # trusted reference code, unsandboxed: what spawning an interpreter costs anyway
        argv = [sys.executable, "-I", "-S", "-c"]
        with ThreadPoolExecutor(workers) as pool:
            return list(pool.map(lambda p: subprocess.run(argv + [p], capture_output=True).returncode, batch))

    def measure(run_all):  # (result of the last rep, median wall seconds, CPU seconds a program)
        cpu = lambda: sum(r.ru_utime + r.ru_stime for r in map(resource.getrusage, (resource.RUSAGE_SELF,
                                                                                     resource.RUSAGE_CHILDREN)))
        walls, cpu_start = [], cpu()
        for _ in range(args.reps):
            start = time.perf_counter()
            result = run_all(programs)
            walls.append(time.perf_counter() - start)
        return result, statistics.median(walls), (cpu() - cpu_start) / (args.reps * len(programs))

    isolation, load = sandbox.isolation(), os.getloadavg()  # isolation(): also the warm-up
    statuses, wall, cpu = measure(lambda batch: sandbox.run_many(batch, workers=workers))
    codes, bare_wall, bare_cpu = measure(bare)
    print(f"sandbox: {len(programs)} MBPP programs, {workers} workers on {os.cpu_count()} cores, {isolation}, load "
          f"average {load[0]:.2f} before: {len(programs) / wall:.1f} programs/s (median of {args.reps}: {wall:.2f} s), "
          f"CPU {cpu * 1000:.1f} ms a program; bare python -I -S: {len(programs) / bare_wall:.1f} programs/s, CPU "
          f"{bare_cpu * 1000:.1f} ms; statuses {dict(collections.Counter(statuses))}, bare exit codes "
          f"{dict(collections.Counter(codes))}")


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
    e = sub.add_parser("e2e", help="rollout throughput, RL step time split and peak memory")
    e.add_argument("--sizes", type=lambda s: s.split(","), default=["1.5B", "7B"], help="1.5B,7B (or tiny)")
    e.add_argument("--quant", type=lambda s: s.split(","), default=["bf16", "nf4"], help="bases: bf16,nf4")
    e.add_argument("--seqs", type=lambda s: [int(x) for x in s.split(",")], default=[64, 256],
                   help="rollout batch sizes (multiples of 8)")
    e.add_argument("--new-tokens", type=int, default=128, help="new tokens per sequence in the rollout rows")
    e.add_argument("--step-tokens", type=int, default=512, help="new tokens per sequence in the RL step")
    e.add_argument("--micro-batch", type=int, default=16, help="rows per forward/backward in the RL step")
    e.add_argument("--steps", type=int, default=2, help="timed RL steps after one warm-up step")
    e.add_argument("--json", default=None, help="also write the results to this JSON file")
    e.add_argument("--device", choices=["cuda", "cpu"], default="cuda", help="cpu: code-path check only")
    e.set_defaults(func=bench_e2e)
    c = sub.add_parser("cpu", help="sampling tokens/s on CPU: threads 1 vs all, dynamic vs static KV cache")
    c.add_argument("--model", required=True, help="a Hugging Face model folder (or hub id), e.g. SmolLM2-135M-Instruct")
    c.add_argument("--threads", type=lambda s: [os.cpu_count() if x == "all" else int(x) for x in s.split(",")],
                   default="1,all", help="comma-separated torch thread counts; all = every core")
    c.add_argument("--prompts", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8],
                   help="comma-separated prompt counts (GSM8K test problems 1..N, at most 8)")
    c.add_argument("--samples", type=int, default=4, help="samples per prompt")
    c.add_argument("--new-tokens", type=int, default=64, help="new tokens per sample at most")
    c.add_argument("--reps", type=int, default=3, help="timed runs after one warm-up; the median is reported")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--json", default=None, help="also write the rows to this JSON file")
    c.set_defaults(func=bench_cpu)
    st = sub.add_parser("step", help="one RL step on a real model, the update before and after one-forward")
    st.add_argument("--model", required=True, help="a Hugging Face model folder (or hub id)")
    st.add_argument("--prompts", type=int, default=4, help="GSM8K test problems 1..N (at most 8), 8 samples each")
    st.add_argument("--step-tokens", type=int, default=128, help="new tokens per sequence")
    st.add_argument("--micro-batch", type=int, default=8, help="rows per forward/backward")
    st.add_argument("--steps", type=int, default=2, help="timed steps after one warm-up")
    st.add_argument("--json", default=None, help="also write the phases to this JSON file")
    st.set_defaults(func=bench_step)
    g = sub.add_parser("check", help="the one GPU check: GPU tests, kernel, e2e 1.5B, a 3-step progrpo.py run")
    g.add_argument("--out", required=True, help="folder for gpu_check.json, the sub-JSONs and the run's metrics")
    g.add_argument("--budget", type=float, default=540, help="seconds for all steps together")
    g.add_argument("--device", choices=["cuda", "cpu"], default="cuda", help="cpu: the same steps, tiny shapes")
    g.set_defaults(func=bench_check)
    b = sub.add_parser("sandbox", help="programs/s through sandbox.run_many (MBPP reference solutions)")
    b.add_argument("--data-dir", default="../shared/data", help="a folder laid out like ../shared/data (mbpp/*.jsonl)")
    b.add_argument("--n", type=int, default=200, help="programs (the first N rows of mbpp/*.jsonl, files sorted)")
    b.add_argument("--workers", type=int, default=None, help="parallel programs (default: one per core)")
    b.add_argument("--reps", type=int, default=3, help="timed runs; the median is reported")
    b.set_defaults(func=bench_sandbox)
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
