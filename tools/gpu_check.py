"""The one GPU check (docs/performance.md), about 9 minutes on one card with >= 78 GB:

    python tools/gpu_check.py --out DIR [--device cpu] [--budget 540]

runs tests/test_gpu.py, `bench.py kernel`, `bench.py e2e --sizes 1.5B`, and a 3-step progrpo.py run on a
random-weight Qwen2.5-1.5B-shaped folder (NF4 base, 256 new tokens), each in a subprocess started in the
repository root with its own time limit (--budget: seconds for all steps together); every figure goes into
DIR/gpu_check.json, rewritten after each step. `--device cpu` runs the same steps with tiny shapes (~35 s, in
tests/test_gpu_check.py).
"""
import argparse
import importlib.metadata
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]  # the steps run from here
# Run as `python tools/gpu_check.py`, Python puts tools/ on sys.path, not the root that holds bench.py
# (its GSM8K problems and random_qwen) and common.py: this tool lives outside the reference's files.
sys.path.insert(0, str(ROOT))
import bench  # noqa: E402


def random_qwen_chat(size, folder, device):
    """bench.random_qwen, with ChatML's two turn tokens and template (bench.CHATML) added to the demo
    tokenizer (ids 13 and 14, under every vocabulary here), so that a training run goes through the chat
    path: format_prompt, the end-of-turn stop."""
    import common
    bench.random_qwen(size, Path(folder), device)
    tok = common.tiny_model()[1]
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tok.chat_template = bench.CHATML
    tok.save_pretrained(folder)


def _run_step(name, cmd, timeout, env):
    """Run one step from the repository root in its own process group; past `timeout` seconds kill the group
    (pytest's and progrpo's children too). Returns its record: exit code, seconds, its output's last lines."""
    cmd = [str(c) for c in cmd]
    print(f"check: {name}: {' '.join(cmd)} (limit {timeout:.0f} s)", flush=True)
    t0, timed_out = time.perf_counter(), False
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, errors="replace", start_new_session=True)
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
    found = re.findall(r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed)", last)
    return {word: int(n) for n, word in found}


def _read_json(path):
    return json.loads(path.read_text()) if path.exists() else None


def check(args):
    """The one GPU check: five steps, each in a subprocess with its own time limit; one JSON of results."""
    cpu, py = args.device == "cpu", sys.executable
    if not cpu and not torch.cuda.is_available():
        sys.exit("gpu_check.py: no CUDA device found (`--device cpu` runs the same steps with tiny shapes)")
    out = Path(args.out).resolve()
    if (out / "run").is_dir() and any((out / "run").iterdir()):
        sys.exit(f"gpu_check.py: {out / 'run'} holds an earlier run: give a new --out")
    out.mkdir(parents=True, exist_ok=True)
    for name in ("gpu_check.json", "kernel.json", "e2e.json"):  # no figure of an earlier check is read back
        (out / name).unlink(missing_ok=True)
    t_start = time.perf_counter()
    deadline = t_start + args.budget
    # Compiled Triton on the GPU (a CPU kernel step sets the interpreter itself); no hub, no download.
    env = {**os.environ, "TRITON_INTERPRET": "0", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "PYTHONUNBUFFERED": "1"}
    if cpu:
        env["CUDA_VISIBLE_DEVICES"] = ""  # the same CPU steps on a machine with a GPU too
    problems = out / "problems.jsonl"
    problems.write_text("".join(json.dumps(dict(question=q, answer=a)) + "\n" for q, a in bench.GSM8K * 2))
    size = "tiny" if cpu else "1.5B"
    tmp = tempfile.TemporaryDirectory()  # the random-weight model: 3 GB for 1.5B, removed at the end
    folder = Path(tmp.name) / f"qwen{size}-random"
    steps = [  # (name, command, seconds kept for it whatever the steps before it take)
        ("gpu tests", [py, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", "tests/test_gpu.py"], 120),
        ("kernel", [py, "bench.py", "kernel", "--json", out / "kernel.json"]
         + (["--device", "cpu", "--n", 37, "--vocab", 1000, "--hidden", 24, "--warmup", 0, "--reps", 1]
            if cpu else []), 60),
        # e2e: NF4 (the user's base) at 64 rows only; both bases and 256 rows ran past 191 s on an H100
        ("e2e", [py, "bench.py", "e2e", "--sizes", size, "--steps", 1, "--json", out / "e2e.json"]
         + (["--device", "cpu", "--quant", "bf16", "--seqs", 8, "--new-tokens", 4, "--step-tokens", 4] if cpu
            else ["--quant", "nf4", "--seqs", 64]), 200),
        ("random folder", [py, "-c", "import sys; sys.path.insert(0, 'tools'); import gpu_check; "
                           "gpu_check.random_qwen_chat(*sys.argv[1:])", size, folder, args.device], 45),
        ("progrpo", [py, "progrpo.py", "--model", folder, "--data", problems, "--max-new-tokens",
                     4 if cpu else 256, "--steps", 3, "--out", out / "run"], 120),
    ]
    versions = {}
    for package in ("torch", "triton", "transformers", "peft", "accelerate", "bitsandbytes", "liger-kernel"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    report = dict(device=args.device, gpu=None, gpu_memory_gib=None, versions=versions,
                  python=sys.version.split()[0], budget_s=args.budget, steps=[], wall_s=None)

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
        print(f"| {r['name']} | {r['returncode']}{' (time limit)' if r['timed_out'] else ''} | "
              f"{r['seconds']:.1f} | {r['limit_s']:.0f} |")
    print(f"gpu tests: {report['steps'][0]['counts']}; progrpo seconds per step: "
          f"{[round(s, 2) for s in report['steps'][-1]['seconds_per_step']]}; wall {report['wall_s']:.0f} s; "
          f"wrote {out / 'gpu_check.json'}")
    failed = [r["name"] for r in report["steps"] if r["returncode"] != 0]
    if failed:
        sys.exit(f"gpu_check.py: failed: {', '.join(failed)} (their output's last lines are in "
                 f"{out / 'gpu_check.json'})")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True,
                        help="folder for gpu_check.json, the sub-JSONs and the run's metrics")
    parser.add_argument("--budget", type=float, default=540, help="seconds for all steps together")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda",
                        help="cpu: the same steps, tiny shapes")
    check(parser.parse_args(argv))


if __name__ == "__main__":
    main()
