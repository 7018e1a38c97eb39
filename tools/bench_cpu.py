"""CPU sampling (docs/performance.md: CPU sampling), a benchmark, not a test:

    python tools/bench_cpu.py --model FOLDER [--threads 1,all --prompts 1,8 --new-tokens 64 --reps 3
                                              --dtype auto --json bench_cpu.json]

Sampling tokens/s of a real model on CPU (`common.sample` through the peft model and through the generation
copy), one thread against all cores, dynamic against static KV cache, at 1 and 8 GSM8K prompts x 4 samples.
Tokens are completion tokens up to and including EOS (Rollout.mask). --dtype auto|bf16|fp16|fp32 (auto: fp32
on CPU, common.resolve_dtype); the JSON records the resolved one.
"""
import argparse
import os
import statistics
import sys
from pathlib import Path

import torch

# Run as `python tools/bench_cpu.py`, Python puts tools/ on sys.path, not the root that holds bench.py (its
# GSM8K prompts and timer) and common.py: this tool lives outside the reference's files.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import bench  # noqa: E402


def bench_cpu(args):
    """Sampling tokens/s on CPU: peft model and generation copy x threads x KV cache x batch size."""
    import transformers

    import common
    if max(args.prompts) > len(bench.GSM8K):
        sys.exit(f"bench_cpu.py: --prompts is at most {len(bench.GSM8K)}")
    load, dtype = os.getloadavg(), common.resolve_dtype(args.dtype, "cpu")
    model, tok = common.load_model(args.model, "cpu", dtype=dtype)
    policies = [("peft (unmerged)", model), ("generation copy", common.generation_copy(model))]
    prompts = [common.format_prompt(tok, q) for q, _ in bench.GSM8K]
    print(f"cpu: {args.model} ({dtype}), torch {torch.__version__}, transformers {transformers.__version__}, "
          f"{os.cpu_count()} cores (torch's default: {torch.get_num_threads()} threads), load average "
          f"{load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} (1 / 5 / 15 min); {args.samples} samples per "
          f"prompt, {args.new_tokens} new tokens, seed {args.seed}, median of {args.reps} after one warm-up",
          flush=True)
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
                    timed = [bench._timed(run, "cpu") for _ in range(args.reps)]
                    rows.append(r := dict(
                        policy=policy_name, threads=threads, cache="static" if static else "dynamic",
                        prompts=n_prompts, samples=args.samples, tokens=timed[-1][0].mask.sum().item(),
                        seconds=statistics.median(sec for _, sec in timed),
                        tok_s=statistics.median(ro.mask.sum().item() / sec for ro, sec in timed)))
                    print(f"  {policy_name:16s} {threads:2d} threads {r['cache']:7s} {n_prompts} x "
                          f"{args.samples}: {r['tokens']:5d} tokens in {r['seconds']:6.2f} s = "
                          f"{r['tok_s']:8.1f} tok/s", flush=True)
    torch.set_num_threads(default_threads)
    load_after = os.getloadavg()
    columns = [(t, c) for t in args.threads for c in ("dynamic", "static")]
    by = {(r["policy"], r["prompts"], r["threads"], r["cache"]): r["tok_s"] for r in rows}
    print(f"\ntokens/s (load average {load[0]:.2f} before, {load_after[0]:.2f} after)\n\n| path | prompts x "
          "samples | " + " | ".join(f"{t} thread{'s' * (t > 1)}, {c}" for t, c in columns) + " |\n"
          + "|---" * (2 + len(columns)) + "|")
    for policy_name, _ in policies:
        for n in args.prompts:
            print(f"| {policy_name} | {n} x {args.samples} | "
                  + " | ".join(f"{by[(policy_name, n, t, c)]:.1f}" for t, c in columns) + " |")
    bench._write_json(args, dict(
        model=args.model, dtype=dtype, torch=torch.__version__, transformers=transformers.__version__,
        cores=os.cpu_count(), load_before=load, load_after=load_after, new_tokens=args.new_tokens,
        samples=args.samples, seed=args.seed, reps=args.reps, rows=rows))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True,
                        help="a Hugging Face model folder (or hub id), e.g. SmolLM2-135M-Instruct")
    parser.add_argument("--threads", default="1,all",
                        type=lambda s: [os.cpu_count() if x == "all" else int(x) for x in s.split(",")],
                        help="comma-separated torch thread counts; all = every core")
    parser.add_argument("--prompts", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8],
                        help="comma-separated prompt counts (GSM8K test problems 1..N, at most 8)")
    parser.add_argument("--samples", type=int, default=4, help="samples per prompt")
    parser.add_argument("--new-tokens", type=int, default=64, help="new tokens per sample at most")
    parser.add_argument("--reps", type=int, default=3, help="timed runs after a warm-up; their median counts")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", choices=["auto", "bf16", "fp16", "fp32"], default="auto",
                        help="weights and compute (auto: fp32 on CPU)")
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    bench_cpu(parser.parse_args(argv))


if __name__ == "__main__":
    main()
