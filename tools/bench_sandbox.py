"""Sandbox throughput (docs/sandbox.md), a benchmark, not a test:

    python tools/bench_sandbox.py [--data-dir ../shared/data --n 200 --workers N --reps 3]

Programs/s through sandbox.run_many, every limit on, and the same programs run bare (``python -I -S -c``, same
pool) as the floor: MBPP reference solutions fenced as a completion. The mix matters: task 123 alone runs for
3 s. CPU counts this process and its children only, so other jobs' load does not inflate it.
"""
import argparse
import collections
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

# Run as `python tools/bench_sandbox.py`, Python puts tools/ on sys.path, not the root that holds sandbox.py
# and rewards.py: this tool lives outside the reference's files.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import rewards  # noqa: E402
import sandbox  # noqa: E402


def bench_sandbox(args):
    rows = [json.loads(line) for f in sorted(Path(args.data_dir, "mbpp").glob("*.jsonl")) for line in open(f)]
    if not rows:
        sys.exit(f"bench_sandbox.py: no MBPP rows in {Path(args.data_dir, 'mbpp')}")
    programs = [rewards.code_program(f"```python\n{r['code']}\n```", r["test_setup_code"],
                                     "\n".join(r["test_list"])) for r in rows[: args.n]]
    workers = args.workers or os.cpu_count()

    def bare(batch):  # trusted reference code, unsandboxed: what spawning an interpreter costs anyway
        argv = [sys.executable, "-I", "-S", "-c"]
        with ThreadPoolExecutor(workers) as pool:
            return list(pool.map(lambda p: subprocess.run(argv + [p], capture_output=True).returncode, batch))

    def measure(run_all):  # (result of the last rep, median wall seconds, CPU seconds a program)
        cpu = lambda: sum(r.ru_utime + r.ru_stime  # noqa: E731
                          for r in map(resource.getrusage, (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)))
        walls, cpu_start = [], cpu()
        for _ in range(args.reps):
            start = time.perf_counter()
            result = run_all(programs)
            walls.append(time.perf_counter() - start)
        return result, statistics.median(walls), (cpu() - cpu_start) / (args.reps * len(programs))

    isolation, load = sandbox.isolation(), os.getloadavg()  # isolation(): also the warm-up
    statuses, wall, cpu = measure(lambda batch: sandbox.run_many(batch, workers=workers))
    codes, bare_wall, bare_cpu = measure(bare)
    n = len(programs)
    print(f"sandbox: {n} MBPP programs, {workers} workers on {os.cpu_count()} cores, {isolation}, load "
          f"average {load[0]:.2f} before: {n / wall:.1f} programs/s (median of {args.reps}: {wall:.2f} s), "
          f"CPU {cpu * 1000:.1f} ms a program; bare python -I -S: {n / bare_wall:.1f} programs/s, CPU "
          f"{bare_cpu * 1000:.1f} ms; statuses {dict(collections.Counter(statuses))}, bare exit codes "
          f"{dict(collections.Counter(codes))}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="../shared/data",
                        help="a folder laid out like ../shared/data (mbpp/*.jsonl)")
    parser.add_argument("--n", type=int, default=200,
                        help="programs (the first N rows of mbpp/*.jsonl, files sorted)")
    parser.add_argument("--workers", type=int, default=None, help="parallel programs (default: one per core)")
    parser.add_argument("--reps", type=int, default=3, help="timed runs; the median is reported")
    bench_sandbox(parser.parse_args(argv))


if __name__ == "__main__":
    main()
