"""Benchmarks (not tests) of the kernel and the trainer's step, for docs/kernel.md and docs/performance.md:

    python bench.py kernel [--n 16384 --vocab 151936 --hidden 1536,3584 --json bench_kernel.json]
    python bench.py e2e [--sizes 1.5B,7B --quant bf16,nf4 --json bench_e2e.json]
    python bench.py step --model FOLDER [--prompts 4 --step-tokens 128 --json bench_step.json]

each with --dtype auto|bf16|fp16|fp32 (auto: common.resolve_dtype), the resolved one written into the JSON.
`kernel`: per-token log-prob + entropy from hidden states, fwd+bwd, against the two lm_head matmuls alone
(the floor), the naive torch path, a chunked torch path and, when the package is importable, Liger's
fused linear cross-entropy. `--device cpu` runs tiny shapes through Triton's interpreter: code paths only.
`e2e`: Qwen2.5-1.5B- and 7B-shaped models with random weights (the published configs, no download),
unquantised (`--quant bf16`: the base in --dtype) and NF4 bases with a LoRA adapter: rollout tokens/s at
64 and 256 sequences through the plain peft model (naive) and the merged generation copy with a static,
compiled KV cache (fast), then RL steps (G = 8, 8 prompts, 512 new tokens) timed by phase through the
trainer's own functions (_rl_step), with peak GPU memory per phase; `--sizes tiny --device cpu` checks
the code paths. `step`: the same RL step on a real model (SmolLM2-135M-Instruct on CPU, say), GSM8K
prompts in its chat template. Elsewhere: the one GPU check, which runs `kernel` and `e2e` among its steps
(tools/gpu_check.py), CPU sampling (tools/bench_cpu.py), sandbox throughput (tools/bench_sandbox.py)."""
import argparse
import functools
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.checkpoint import checkpoint

TEMPERATURE = 1.0  # Liger's loss has no temperature; every row uses the same logits
PEAKS = {}  # phase -> peak GiB allocated during its last _timed call (CUDA)


def _timed(fn, device, phase=None):
    """(fn(), its wall seconds), the device synchronised before and after; on CUDA with a phase name,
    the peak memory allocated meanwhile goes to PEAKS[phase]."""
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    out = fn()
    if device == "cuda":
        torch.cuda.synchronize()
        if phase:
            PEAKS[phase] = torch.cuda.max_memory_allocated() / 2**30
    return out, time.perf_counter() - t0


def _write_json(args, record):
    if args.json:
        Path(args.json).write_text(json.dumps(record, indent=1))
        print(f"wrote {args.json}")


def naive_logprobs_entropy(hidden, weight, targets, temperature=1.0):
    """The straightforward path: full (N, V) logits, a float32 copy, log_softmax, gather."""
    logits = (hidden @ weight.T).float().div_(temperature)  # (N, V) in the inputs' dtype, then in float32
    logp_all = torch.log_softmax(logits, dim=-1)  # (N, V) float32, saved for backward
    logp = logp_all.gather(1, targets[:, None]).squeeze(1)
    with torch.no_grad():
        entropy = -(logp_all.exp() * logp_all).sum(dim=-1)  # sum over V
    return logp, entropy


def chunked_logprobs_entropy(hidden, weight, targets, temperature=1.0, chunk=2048):
    """The naive path on `chunk` tokens at a time, each under activation checkpointing: a chunk's
    (chunk, V) float32 tensors are freed after its forward and rebuilt in backward (a third matmul)."""
    outs = [checkpoint(naive_logprobs_entropy, hidden[s:s + chunk], weight, targets[s:s + chunk], temperature,
                       use_reentrant=False) for s in range(0, len(targets), chunk)]
    return torch.cat([logp for logp, _ in outs]), torch.cat([entropy for _, entropy in outs])


def _methods(kernel, chunk):
    """(name, fn(hidden, weight, targets) -> (logp, entropy or None)); the naive path comes first:
    the others are checked against it."""
    methods = [("naive torch", lambda h, w, t: naive_logprobs_entropy(h, w, t, TEMPERATURE)),
               (f"chunked torch ({chunk}, ckpt)",
                lambda h, w, t: chunked_logprobs_entropy(h, w, t, TEMPERATURE, chunk)),
               ("logprob_kernel.py",
                lambda h, w, t: kernel.token_logprobs_entropy_triton(h, w, t, TEMPERATURE))]
    try:
        from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss
    except ImportError:
        return methods
    liger = LigerFusedLinearCrossEntropyLoss(reduction="none")  # per-token -logp; no entropy
    return methods + [("liger FLCE (no entropy)", lambda h, w, t: (-liger(w, h, t), None))]


def _print_row(row):
    def cell(value, width, spec):  # a number, or the text ("OOM") or "-" in its place
        return format(value, f"{width}{spec}") if isinstance(value, float) else f"{value or '-':>{width}}"

    cells = [cell(row[k], w, spec) for k, w, spec in (("ms", 10, ".2f"), ("x_floor", 7, ".2f"),
                                                       ("fwd_ms", 8, ".2f"), ("peak_mib", 9, ".0f"))]
    check = " ".join(f"{k} {cell(v, 7, '.1e')}" for k, v in (row["check"] or {}).items())
    print(f"{row['hidden']:>5} {row['method']:28s} {' '.join(cells)}  {check}", flush=True)


def _bench_hidden_size(h, args, kernel, dtype):
    """One table block: the floor, then each path at hidden size h; returns its rows. ms: the median of
    --reps after --warmup calls; peak: MiB allocated on top of the inputs (CUDA)."""
    device, n, vocab = args.device, args.n, args.vocab
    torch.manual_seed(0)
    hidden = torch.randn(n, h, device=device, dtype=dtype)
    weight = torch.randn(vocab, h, device=device, dtype=dtype) * 2 * h**-0.5  # logits of std ~2
    targets = torch.randint(0, vocab, (n,), device=device)
    grad_out = torch.randn(n, device=device)

    def ms(fn):
        for _ in range(args.warmup):
            fn()
        return statistics.median(_timed(fn, device)[1] for _ in range(args.reps)) * 1e3

    def peak_mib(fn):
        if device != "cuda":
            return None
        base = torch.cuda.memory_allocated()
        _timed(fn, device, "kernel")
        return PEAKS.pop("kernel") * 1024 - base / 2**20

    def floor():  # h @ W^T, then an (N, V) @ (V, H) product like the grad-input matmul
        return torch.mm(torch.mm(hidden, weight.T), weight)

    floor_ms = ms(floor)
    rows = [dict(hidden=h, method="lm_head matmuls (floor)", ms=floor_ms, x_floor=1.0,
                 fwd_ms=ms(lambda: torch.mm(hidden, weight.T)), peak_mib=peak_mib(floor), check=None)]
    _print_row(rows[-1])
    expected = None  # the naive path's (logp, entropy, d hidden): the others are checked against it
    for i, (name, fn) in enumerate(_methods(kernel, args.chunk)):
        def step(fn=fn):
            x = hidden.detach().requires_grad_()
            logp, entropy = fn(x, weight, targets)
            return logp.detach(), entropy, torch.autograd.grad(logp, x, grad_out)[0]

        forward = lambda fn=fn: torch.no_grad()(fn)(hidden, weight, targets)  # noqa: E731

        if device == "cuda":
            torch.cuda.empty_cache()  # each path starts from the same allocator state
        row = dict(hidden=h, method=name, ms=None, x_floor=None, fwd_ms=None, peak_mib=None, check=None)
        try:
            outputs = step()
            row.update(ms=(t := ms(step)), x_floor=t / floor_ms, fwd_ms=ms(forward), peak_mib=peak_mib(step))
        except torch.cuda.OutOfMemoryError:
            outputs, row["peak_mib"] = None, "OOM"
        if i == 0:
            expected = outputs
        elif outputs is not None and expected is not None:  # max |x - naive|; d hidden: / max |naive|
            (logp, entropy, grad), (logp0, entropy0, grad0) = outputs, expected
            row["check"] = dict(logp=(logp - logp0).abs().max().item(),
                                entropy=None if entropy is None else (entropy - entropy0).abs().max().item(),
                                grad=((grad.float() - grad0.float()).abs().max()
                                      / grad0.float().abs().max()).item())
        rows.append(row)
        _print_row(row)
        del outputs
    return rows


def bench_kernel(args):
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("bench.py kernel: no CUDA device found (`--device cpu`: tiny shapes, the code paths only)")
    if args.device == "cpu":
        os.environ["TRITON_INTERPRET"] = "1"  # must precede the first import of the kernel's @triton.jit
    import common  # imports logprob_kernel
    import logprob_kernel as kernel

    dtype = common.resolve_dtype(args.dtype, args.device)
    gpu = torch.cuda.get_device_name() if args.device == "cuda" else "cpu (Triton interpreter)"
    triton_version = kernel.triton.__version__ if kernel.HAS_TRITON else None
    print(f"kernel: N={args.n} V={args.vocab} {dtype} T={TEMPERATURE} on {gpu}, torch {torch.__version__}, "
          f"triton {triton_version}; median ms of {args.reps} after {args.warmup} warm-up; fwd = under "
          "no_grad; peak = extra MiB over the inputs in fwd+bwd; check = max |logp - naive|, max |entropy - "
          "naive|, max |d hidden - naive| / max |naive d hidden|\n"
          f"{'H':>5} {'method':28s} {'fwd+bwd ms':>10} {'x floor':>7} {'fwd ms':>8} {'peak MiB':>9}  check")
    rows = [row for h in args.hidden for row in _bench_hidden_size(h, args, kernel, common.DTYPES[dtype])]
    _write_json(args, dict(n=args.n, vocab=args.vocab, dtype=dtype, temperature=TEMPERATURE, device=gpu,
                           torch=torch.__version__, triton=triton_version, warmup=args.warmup, reps=args.reps,
                           rows=rows))


TINY = dict(vocab_size=1024, hidden_size=64, intermediate_size=128, num_hidden_layers=2,  # `--sizes tiny`:
            num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)  # a CPU code-path check
# ChatML, as Qwen2.5's template writes turns (without its system-prompt and tool branches).
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def random_qwen(size, folder, device):
    """Save a random-weight Qwen2.5-shaped model (bf16) and the demo tokenizer to `folder`, so that
    both bases load through common.load_model, 4-bit quantisation included."""
    from transformers import AutoModelForCausalLM, Qwen2Config

    import common
    import memory
    if (folder / "config.json").exists():
        return
    shape = TINY if size == "tiny" else memory.QWEN25[size.removesuffix("B")]  # the published config.json
    config = Qwen2Config(**shape, max_position_embeddings=32768, rope_theta=1e6, rms_norm_eps=1e-6,
                         bos_token_id=None, eos_token_id=1, pad_token_id=0)  # the demo tokenizer's ids
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(folder)
    common.tiny_model()[1].save_pretrained(folder)


ROLLOUT_PATHS = {"naive": ("naive (peft, unmerged)", False), "fast": ("fast (merged, static)", True),
                 "peft": ("peft, static cache", True)}  # --paths: (row name, static KV cache)


def _rollout_rows(model, gen, tok, args, device):
    """Tokens/s of each --paths at each batch size, after a warm-up call; `peft`: docs/performance.md (7B)."""
    import common
    rows = []
    for seqs in args.seqs:
        prompts = [" ".join(["sum"] + [str(i % 10) for i in range(31)])] * (seqs // 8)  # 32 tokens, 8 samples
        for key in args.paths:
            (path, static), policy = ROLLOUT_PATHS[key], gen if key == "fast" else model
            if policy is None:
                rows.append(dict(path=path, seqs=seqs, tok_s=None, note="no room for a generation copy"))
                continue
            run = functools.partial(common.sample, policy, tok, prompts, 8, args.new_tokens,
                                    static_cache=static)
            run()  # warm-up / compile
            ro, sec = _timed(run, device)
            rows.append(dict(path=path, seqs=seqs, tok_s=ro.mask.sum().item() / sec, seconds=sec))
            print(f"    rollout {path:24s} {seqs:4d} seqs x {args.new_tokens} tokens: "
                  f"{rows[-1]['tok_s']:9,.0f} tok/s", flush=True)
    return rows


def _rl_step(model, gen, tok, opt, scaler, args, device, task, rows, step):
    """One step of progrpo.py, timed by phase, through the trainer's own functions in its order:
    progrpo.rollout (the generation copy's sync included), progrpo.grade, then arm.group_advantages and
    progrpo.update (ARM and the clipped update, one forward per row) twice on the same rollout: "update (as
    graded)" with the real rewards (all-wrong groups get no forward, as in the trainer) and "update (all
    groups mixed)" with every group made half right (every row forwarded: the worst case). "skippable": the
    share of rows the trainer does not forward, as graded. `args`: a progrpo.Args."""
    import arm
    import common
    import progrpo
    prompts = [common.format_prompt(tok, r["question"], task.instruction) for r in rows]
    questions, G = [r["question"] for r in rows], args.group_size
    out = Path(tempfile.gettempdir())  # named only in update's error message (a non-finite loss)
    t = {}
    ro, t["rollout"] = _timed(lambda: progrpo.rollout(model, gen, tok, prompts, args, device), device,
                              "rollout")
    (R, correct, _), t["grading"] = _timed(lambda: progrpo.grade(task, ro, rows, G), device, "grading")

    def update(R, correct):  # progrpo.main's steps 3 and 4-5
        A = arm.group_advantages(R, scale=args.scale_rewards == "group")
        progrpo.update(model, opt, tok, ro, prompts, questions, A, correct, args, step, out, scaler)
        return A

    A, t["update (as graded)"] = _timed(lambda: update(R, correct), device, "update (as graded)")
    t["skippable"] = 1 - len(progrpo.live_rows(A, correct.any(1), args.beta)) / len(ro.texts)
    half = torch.tensor([[float(g % 2) for g in range(G)]] * len(rows))
    _, t["update (all groups mixed)"] = _timed(lambda: update(half, half > 0), device,
                                               "update (all groups mixed)")
    return t


def _median_steps(model, gen, tok, opt, args, device, task, rows):
    """(--steps timed _rl_steps after a warm-up one (compiling, optimizer state), their median per phase);
    the trainer's defaults (alpha 1, clip 0.2 / 0.28, no KL, fp16's loss scale), G 8, --step-tokens,
    --micro-batch."""
    import common
    import progrpo
    step_args = progrpo.Args(group_size=8, max_new_tokens=args.step_tokens, micro_batch=args.micro_batch)
    scaler = progrpo.loss_scaler(common.resolve_dtype(args.dtype, device), device)
    steps = [_rl_step(model, gen, tok, opt, scaler, step_args, device, task, rows, i)
             for i in range(args.steps + 1)]
    return steps[1:], {k: statistics.median(s[k] for s in steps[1:]) for k in steps[0]}


PHASES = ("rollout", "grading", "update (as graded)", "update (all groups mixed)")
STEP_TABLE = ("| model | base | rollout | grading | update (as graded) | update (all groups mixed) | "
              "all-wrong rows (not forwarded) | step (as graded) | step (all groups mixed) |")


def _step_totals(s):
    """Seconds of a step as graded and with every group mixed, from _rl_step's phases."""
    return tuple(s["rollout"] + s["grading"] + s[update] for update in PHASES[2:])


def _step_row(label, s):
    return (f"| {label} | " + " | ".join(f"{s[k]:.2f}s" for k in PHASES) + f" | {s['skippable']:.0%} | "
            + " | ".join(f"{total:.2f}s" for total in _step_totals(s)) + " |")


def bench_e2e(args):
    import common
    import tasks
    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        sys.exit("bench.py e2e: no CUDA device found (`--sizes tiny --device cpu`: the code paths only)")
    gpu = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    dtype, results, task = common.resolve_dtype(args.dtype, device), [], tasks.demo_task()
    report = dict(device=gpu, torch=torch.__version__, dtype=dtype, args=vars(args) | {"func": None},
                  results=results)  # written after each model: a run stopped by a time limit keeps it
    print(f"e2e on {gpu}, torch {torch.__version__}, {dtype}; random-weight Qwen2.5 shapes, LoRA r16 "
          f"all-linear; rollouts: {args.new_tokens} new tokens, 8 samples per prompt; RL step: G=8 x 8 "
          f"prompts, {args.step_tokens} new tokens, micro-batch {args.micro_batch}, gradient checkpointing",
          flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            random_qwen(size, Path(tmp) / size, device)
            for quant in args.quant:
                if device == "cuda":
                    torch.cuda.empty_cache()
                model, tok = common.load_model(str(Path(tmp) / size), device, quant == "nf4", dtype=dtype,
                                               gradient_checkpointing=True)
                model.train()
                gen = common.generation_copy(model)
                print(f"  {size} {quant}: generation copy {'yes' if gen else 'no (no room)'}", flush=True)
                rollouts = _rollout_rows(model, gen, tok, args, device)
                del gen  # the step measures its own memory: a fresh copy, as the trainer holds one
                if device == "cuda":
                    torch.cuda.empty_cache()
                gen = common.generation_copy(model)
                opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
                PEAKS.clear()
                _, split = _median_steps(model, gen, tok, opt, args, device, task, task.rows[:8])
                peaks = dict(PEAKS)  # of the last step, per phase: the copy is resident in all of them
                peak = max(peaks.values()) if peaks else None
                shared = {id(p) for p in model.parameters()}  # the copy's embeddings, norms: the base's own
                copy_gib = sum(p.numel() * p.element_size() for p in (gen.parameters() if gen else [])
                               if id(p) not in shared) / 2**30
                graded, mixed = _step_totals(split)
                results.append(dict(size=size, quant=quant, rollouts=rollouts, step_seconds=split,
                                    peak_by_phase=peaks, step_total_graded=graded, step_total_mixed=mixed,
                                    peak_gib=peak, copy_gib=copy_gib))
                print(f"    RL step {_step_row(f'{size} | {quant}', split)} peak {peak or 0:.2f} GiB, of "
                      f"which the copy {copy_gib:.2f} GiB; per phase "
                      + ", ".join(f"{k} {v:.2f}" for k, v in peaks.items()), flush=True)
                _write_json(args, report)
                del model, gen, opt
    print("\n| model | base | path | " + " | ".join(f"{s} seqs tok/s" for s in args.seqs)
          + " | speed-up |\n" + "|---" * (4 + len(args.seqs)) + "|")
    for r in results:
        by = {(x["path"], x["seqs"]): x.get("tok_s") for x in r["rollouts"]}
        naive = by.get((r["rollouts"][0]["path"], args.seqs[0]))
        for path in dict.fromkeys(x["path"] for x in r["rollouts"]):
            cells = [by.get((path, s)) for s in args.seqs]
            print(f"| {r['size']} | {r['quant']} | {path} | "
                  + " | ".join(f"{c:,.0f}" if c else "-" for c in cells)
                  + f" | {f'{cells[0] / naive:.1f}x' if cells[0] and naive else '-'} |")
    print(f"\n{STEP_TABLE} peak GiB | of it: copy GiB |\n" + "|---" * 11 + "|")
    for r in results:
        print(_step_row(f"{r['size']} | {r['quant']}", r["step_seconds"])
              + f" {r['peak_gib'] or 0:.2f} | {r['copy_gib']:.2f} |")


# The first eight problems of GSM8K's test split (question, final answer): the fixed prompts of `step` and
# tools/bench_cpu.py, and, twice over, the 16 problems of tools/gpu_check.py's run (the GPU has no data sets).
GSM8K = [
    ("Janet\u2019s ducks lay 16 eggs per day. She eats three for breakfast every morning and bakes muffins "
     "for her friends every day with four. She sells the remainder at the farmers' market daily for $2 per "
     "fresh duck egg. How much in dollars does she make every day at the farmers' market?", "18"),
    ("A robe takes 2 bolts of blue fiber and half that much white fiber.  How many bolts in total does it "
     "take?", "3"),
    ("Josh decides to try flipping a house.  He buys a house for $80,000 and then puts in $50,000 in "
     "repairs.  This increased the value of the house by 150%.  How much profit did he make?", "70000"),
    ("James decides to run 3 sprints 3 times a week.  He runs 60 meters each sprint.  How many total meters "
     "does he run a week?", "540"),
    ("Every day, Wendi feeds each of her chickens three cups of mixed chicken feed, containing seeds, "
     "mealworms and vegetables to help keep them healthy.  She gives the chickens their feed in three "
     "separate meals. In the morning, she gives her flock of chickens 15 cups of feed.  In the afternoon, "
     "she gives her chickens another 25 cups of feed.  How many cups of feed does she need to give her "
     "chickens in the final meal of the day if the size of Wendi's flock is 20 chickens?", "20"),
    ("Kylar went to the store to buy glasses for his new apartment. One glass costs $5, but every second "
     "glass costs only 60% of the price. Kylar wants to buy 16 glasses. How much does he need to pay for "
     "them?", "64"),
    ("Toulouse has twice as many sheep as Charleston. Charleston has 4 times as many sheep as Seattle. How "
     "many sheep do Toulouse, Charleston, and Seattle have together if Seattle has 20 sheep?", "260"),
    ("Carla is downloading a 200 GB file. Normally she can download 2 GB/minute, but 40% of the way through "
     "the download, Windows forces a restart to install updates, which takes 20 minutes. Then Carla has to "
     "restart the download from the beginning. How load does it take to download the file?", "160"),
]


def bench_step(args):
    """_rl_step on a real model (a folder or hub id; e.g. SmolLM2-135M-Instruct on CPU), on the first
    --prompts GSM8K test problems in the chat template: median of --steps after one warm-up step."""
    import common
    import tasks
    device = common.pick_device()
    dtype = common.resolve_dtype(args.dtype, device)
    model, tok = common.load_model(args.model, device, device == "cuda", dtype=dtype,
                                   gradient_checkpointing=device == "cuda")
    model.train()
    gen = common.generation_copy(model) if device == "cuda" else None  # CPU: the peft model, as progrpo.py's
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-6)
    rows = [dict(question=q, answer=a) for q, a in GSM8K[:args.prompts]]
    torch.manual_seed(0)
    steps, split = _median_steps(model, gen, tok, opt, args, device, tasks.math_task("gsm8k", rows), rows)
    print(f"step: {args.model} on {device}, {args.prompts} prompts x 8, {args.step_tokens} new tokens, "
          f"micro-batch {args.micro_batch}, median of {args.steps}\n{STEP_TABLE}\n" + "|---" * 9 + "|\n"
          + _step_row(f"{Path(args.model).name} | {'NF4, ' if device == 'cuda' else ''}{dtype}", split))
    _write_json(args, dict(model=args.model, device=device, dtype=dtype, args=vars(args) | {"func": None},
                           steps=steps, median=split))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    ints = lambda s: [int(x) for x in s.split(",")]  # noqa: E731

    def add(name, func, help, device=False):  # a sub-command, with the options every one of them takes
        p = sub.add_parser(name, help=help)
        p.set_defaults(func=func)
        p.add_argument("--json", default=None, help="also write the results to this JSON file")
        p.add_argument("--dtype", choices=["auto", "bf16", "fp16", "fp32"], default="auto",
                       help="weights and compute (auto: bf16 on a GPU that has it, else fp16; fp32 on CPU)")
        if device:
            p.add_argument("--device", choices=["cuda", "cpu"], default="cuda", help="cpu: code paths only")
        return p

    k = add("kernel", bench_kernel, "the log-prob + entropy kernel vs. the matmul floor", device=True)
    k.add_argument("--n", type=int, default=16384, help="tokens")
    k.add_argument("--vocab", type=int, default=151936, help="vocabulary size (Qwen2.5: 151936)")
    k.add_argument("--hidden", type=ints, default=[1536, 3584],
                   help="comma-separated hidden sizes (Qwen2.5-1.5B: 1536, 7B: 3584)")
    k.add_argument("--chunk", type=int, default=2048, help="tokens per chunk of the chunked torch path")
    k.add_argument("--warmup", type=int, default=3)
    k.add_argument("--reps", type=int, default=10)
    e = add("e2e", bench_e2e, "rollout throughput, RL step time split and peak memory", device=True)
    e.add_argument("--sizes", type=lambda s: s.split(","), default=["1.5B", "7B"], help="1.5B,7B (or tiny)")
    e.add_argument("--quant", type=lambda s: s.split(","), default=["bf16", "nf4"],
                   help="bases: bf16 (unquantised, in --dtype), nf4")
    e.add_argument("--seqs", type=ints, default=[64, 256], help="rollout batch sizes (multiples of 8)")
    e.add_argument("--new-tokens", type=int, default=128, help="new tokens per sequence in the rollout rows")
    e.add_argument("--paths", type=lambda s: s.split(","), default=["naive", "fast"],
                   help="rollout paths: naive,fast (default) and peft (static cache through the peft model)")
    st = add("step", bench_step, "one RL step on a real model by phase, the update as graded and all mixed")
    st.add_argument("--model", required=True, help="a Hugging Face model folder (or hub id)")
    st.add_argument("--prompts", type=int, default=4, help="GSM8K test problems 1..N (at most 8), 8 samples")
    for p, tokens, micro_batch in ((e, 512, 16), (st, 128, 8)):
        p.add_argument("--step-tokens", type=int, default=tokens, help="new tokens per row in the RL step")
        p.add_argument("--micro-batch", type=int, default=micro_batch, help="rows per forward/backward")
        p.add_argument("--steps", type=int, default=2, help="timed RL steps after one warm-up step")
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
