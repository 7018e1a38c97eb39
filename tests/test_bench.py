"""The benchmarks run blind on a lent GPU: keep their code paths working on CPU (tiny shapes)."""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def bench(*args):
    return subprocess.run([sys.executable, "bench.py", *map(str, args)], cwd=ROOT, env=ENV, capture_output=True,
                          text=True, timeout=600)


def test_e2e_code_paths_on_cpu(tmp_path):
    out = tmp_path / "e2e.json"
    p = bench("e2e", "--sizes", "tiny", "--quant", "bf16,nf4", "--device", "cpu", "--seqs", 8, "--new-tokens", 4,
              "--step-tokens", 4, "--steps", 1, "--json", out)
    assert p.returncode == 0, p.stderr[-3000:]
    results = json.loads(out.read_text())["results"]
    assert [(r["size"], r["quant"]) for r in results] == [("tiny", "bf16"), ("tiny", "nf4")]
    for r in results:
        assert {x["path"] for x in r["rollouts"]} == {"naive (peft, unmerged)", "fast (merged, static)"}
        assert all(x["tok_s"] > 0 for x in r["rollouts"])
        assert set(r["step_seconds"]) == {"sync copy", "rollout", "scoring", "old log-probs", "update"}


def test_kernel_code_paths_on_cpu(tmp_path):
    out = tmp_path / "kernel.json"
    p = bench("kernel", "--device", "cpu", "--n", 37, "--vocab", 1000, "--hidden", 24, "--warmup", 0, "--reps", 1,
              "--json", out)
    assert p.returncode == 0, p.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert rows[0]["method"].startswith("lm_head matmuls") and any(r["method"] == "logprob_kernel.py" for r in rows)
    check = next(r["check"] for r in rows if r["method"] == "logprob_kernel.py")  # against the naive path, bf16
    assert check["logp"] < 1e-4 and check["entropy"] < 1e-4 and check["grad"] < 2e-2, check


def test_without_cuda_a_gpu_benchmark_says_so_in_one_line():
    for sub in ("kernel", "e2e"):
        p = bench(sub)
        assert p.returncode == 1 and "no CUDA device" in p.stderr.strip().splitlines()[-1]
