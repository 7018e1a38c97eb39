"""Evaluate a model, or a ProGRPO-trained LoRA adapter, on math and code benchmarks: Pass@k and diversity.

Each problem gets n completions from the training prompt format and sampler (common.format_prompt,
common.sample), graded by the training rewards (task.grade). Per benchmark, what each mean divides by:
  pass@k            1 - C(n-c, k) / C(n, k) per problem (c correct of n), mean over problems
  length            completion tokens (EOS included), mean over all problems x n completions
  entropy           next-token entropy at the sampling temperature, mean over all completion tokens
  token_prob        pi(o_t | q, o_<t), mean over all completion tokens
  distinct_correct  distinct correct answers of a problem as equivalence classes (tasks.distinct_correct:
                    1 on math, where every correct answer equals the gold; code: normalised programs),
                    mean over solved problems (at least one correct), as progrpo.py logs it
  coverage          multi-answer sets: distinct correct answers / min(set size, n), mean over all problems
  reasoning_diversity  1 - mean pairwise Jaccard similarity of the word 3-gram sets of a problem's correct
                    completions (tasks.reasoning_diversity), mean over problems with >= 2 correct
  conf_var          variance over the n completions of c(o|q) (arm.answer_confidence, divides by n),
                    mean over problems: how differently confident the samples of one question are
  c_q_p10/50/90     c(q) quantiles over problems, template included (c_q_question_p50: the question only)
  c_o_p10/50/90     c(o|q) quantiles over all completions, at the sampling temperature
  conf_spread       sample std of c(o|q) in a problem (/ (n-1)), mean over problems: ARM's spread per alpha
  conf_offset       c(q) - a problem's mean c(o|q), mean over problems: ARM's group-wide shift, per alpha
  alpha_suggested   --arm-share / conf_spread: makes ARM's spread --arm-share of GRPO's (std 1); docs/alpha.md
  no_answer         share of all completions with no extractable final answer or code block (e.g. cut off)
Problems whose gold answer cannot be parsed (status bad_gold) are skipped, as in training, and counted.

Run:  python eval.py --n 8                                       # tiny model, demo task, CPU, seconds
      python eval.py --model Qwen2.5-1.5B --benchmarks math500,aime24 --n 32 --k 1,2,4,8,16,32
      python eval.py --model Qwen2.5-1.5B --adapter runs/NAME --data-dir ../shared/data --out trained.json
      python eval.py --compare base.json trained.json --plot compare.png   # side by side, Pass@k curves
      python eval.py --model Qwen2.5-1.5B-Instruct --benchmarks humaneval,mbpp --n 16  # code, in sandbox.py
      python eval.py --validate-grader --data-dir ../shared/data           # reference solutions vs gold
"""
import json
import math
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal, Optional

import torch
from tqdm import tqdm

import arm
import cli
import common
import runs
import tasks


@dataclass
class Args:
    model: str = "tiny"  # 'tiny' (demo), 'smollm2' (real weights, offline), a Qwen2.5 alias, hub id, folder
    adapter: str = ""  # a LoRA adapter folder, or a progrpo.py run folder (its last ckpt-* is used)
    benchmarks: str = ""  # comma-separated: demo or tasks.BENCHMARKS names (default: math500; demo for tiny)
    data: str = ""  # a local JSON Lines file of problems instead of benchmarks (as progrpo.py --data)
    question_field: str = "question"  # --data: the field holding the problem
    answer_field: str = "answer"  # --data: the field holding the answer (or a solution with \boxed{})
    instruction: Optional[str] = None  # appended to every problem ("" for none; default: the task's own)
    data_dir: str = ""  # read benchmarks from a folder laid out like ../shared/data, not the hub
    limit: int = 0  # evaluate the first N problems of each benchmark (0: all)
    n: int = 32  # completions sampled per problem
    k: str = ""  # comma-separated k for Pass@k, each in 1..n (default: 1, 2, 4, ... up to n, and n)
    max_new_tokens: int = 0  # completion budget (0: progrpo.py's default: 2 for demo, 1024 otherwise)
    temperature: float = 1.0  # sampling temperature (0: greedy); entropies and log-probs use the same one
    top_p: float = 1.0  # nucleus sampling
    batch_prompts: int = 8  # prompts per generate call (each gives n rows)
    load_in_4bit: bool = True  # NF4 4-bit base on CUDA, as in training (ignored on CPU and for tiny)
    dtype: Literal["auto", "bf16", "fp16", "fp32"] = "auto"  # auto: bf16 if native, else fp16; CPU: fp32
    fast_generation: bool = True  # sample from a LoRA-merged plain copy, as in training (if it fits)
    arm_low_frac: float = 0.2  # rho: share of lowest-probability completion tokens in c(o|q)
    arm_share: float = 0.1  # alpha_suggested makes ARM's in-group spread this share of GRPO's (docs/alpha.md)
    seed: int = 0  # set before each benchmark, so its samples do not depend on the others
    out: str = ""  # result JSON (default eval-<model>-<time>.json), rewritten after each benchmark
    compare: list[str] = field(default_factory=list)  # result JSONs to print side by side and plot; no model
    plot: str = "compare.png"  # --compare: PNG of Pass@k against k, one panel per benchmark
    validate_grader: bool = False  # grade reference solutions against their gold answers (with --data-dir)


# ---------------------------------------------------------------------------------------------
def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased Pass@k of one problem with c correct of n samples: 1 - C(n-c, k) / C(n, k), computed as
    1 - prod_{i=n-c+1}^{n} (1 - k/i) (Chen et al. 2021), so no huge binomial is ever formed."""
    if not 1 <= k <= n:
        raise ValueError(f"pass@{k} needs 1 <= k <= n, the samples per problem (n = {n})")
    if not 0 <= c <= n:
        raise ValueError(f"c = {c} correct of n = {n} samples is impossible")
    if n - c < k:  # every k-subset contains a correct sample
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def parse_ks(spec: str, n: int) -> list:
    """--k as a sorted list, each in 1..n (n >= 1: checked with the other flags); a bad value is one line."""
    if not spec:  # 2**i <= n exactly for i < n.bit_length()
        return sorted({2 ** i for i in range(n.bit_length())} | {n})
    try:
        ks = sorted({int(x) for x in spec.split(",")})
    except ValueError:
        raise SystemExit(f"error: --k {spec!r}: expected comma-separated integers such as 1,2,4") from None
    bad = [k for k in ks if not 1 <= k <= n]
    if bad:
        raise SystemExit(f"error: --k {bad[-1]} with --n {n}: Pass@k needs 1 <= k <= n samples per problem")
    return ks


def load_task(name: str, data_dir: str = "", limit: int = 0) -> tasks.Task:
    """'demo' (the toy task), 'multi' (the multi-answer task's held-out split) or a benchmark of
    tasks.BENCHMARKS (hub, or data_dir), first `limit` problems."""
    if name in ("demo", "multi"):
        task = tasks.demo_task() if name == "demo" else tasks.multi_task("test")
        task.rows = task.rows[:limit or None]
        return task
    return tasks.load_task(name, tasks.BENCHMARKS, data_dir, limit)


def resolve_adapter(path: str, model: str) -> str:
    """An adapter folder as given; a progrpo.py run folder -> its last ckpt-*. Either way, when the
    run's config.json is there (a run folder, or above a ckpt-*), its --model must be `model`."""
    if not path:
        return path
    ckpt = Path(path) if (Path(path) / "adapter_config.json").is_file() else runs.last_checkpoint(path)
    if ckpt is None:
        raise SystemExit(f"error: --adapter {path}: neither an adapter folder (adapter_config.json) "
                         f"nor a run folder with ckpt-* checkpoints")
    config = ckpt.parent / "config.json"
    if ckpt.name.startswith("ckpt-") and config.is_file():
        try:
            trained = json.loads(config.read_text())["model"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise SystemExit(f"error: --adapter {path}: {config} is not a readable run config "
                             f"({type(e).__name__})") from None
        if common.resolve_model(trained) != common.resolve_model(model):
            raise SystemExit(f"error: --adapter {path} was trained on --model {trained}, not {model}")
    return str(ckpt)


# ---------------------------------------------------------------------------------------------
@torch.no_grad()
def evaluate(model, tok, task, n, ks, max_new_tokens, temperature=1.0, top_p=1.0, batch_prompts=8,
             low_frac=0.2, progress=True, gen=None, arm_share=0.1) -> dict:
    """Sample n completions for each problem of `task` with the (peft) model, or from `gen`, its synced
    generation copy (common.generation_copy), when given; grade them, measure. Returns {"task", "n", "ks",
    "seconds", "summary": flat {metric: number}, ready to log, "problems": [{question, gold, n, c, answers,
    confidences, prompt_conf, prompt_conf_question, lengths, statuses, completions}]}."""
    for k in ks:  # a bad k fails before any sampling
        pass_at_k(n, 0, k)
    t0 = time.time()
    rows = [r for r in task.rows if task.gold_ok(r["answer"])]  # the others: skipped_gold
    logp_temp = temperature or 1.0  # greedy decoding (0): report the untempered distribution
    problems, ent_sum, prob_sum, n_tokens = [], 0.0, 0.0, 0.0
    bar = tqdm(total=len(rows), desc=task.name, disable=not progress, dynamic_ncols=True)
    for i in range(0, len(rows), batch_prompts):
        batch = rows[i:i + batch_prompts]
        prompts = [common.format_prompt(tok, r["question"], task.instruction) for r in batch]
        ro = common.sample(gen or model, tok, prompts, n, max_new_tokens, temperature, top_p,
                           static_cache=gen is not None and model.device.type == "cuda")
        mask = ro.mask.float()  # (N, T), N = len(batch) * n
        # Completion log-probs and entropies (N, T) and each problem's prompt log-probs (B, L-1), as the
        # trainer does; one problem's n rows per forward pass, so memory does not grow with batch_prompts.
        L, first = ro.prompt_len, torch.arange(len(ro.seqs), device=mask.device) % n == 0  # a problem's row 0
        logp, ent, logp_q = common.token_logprobs_batched(model, ro.seqs, ro.attn, L - 1, n, logp_temp, first)
        prompt_mask = (ro.attn[:, 1:L] * ro.attn[:, :L - 1])[first]  # (B, L-1): its prompt, once per problem
        question = prompt_mask * (common.question_mask(tok, prompts, [r["question"] for r in batch], L)[:, 1:]
                                  .to(prompt_mask.device))
        c_q = [arm.prompt_confidence(logp_q, m).tolist() for m in (prompt_mask, question)]  # 2 x (B,)
        conf = arm.answer_confidence(logp, mask, low_frac)  # (N,)
        ent_sum += (ent * mask).sum().item()
        prob_sum += (logp.exp() * mask).sum().item()
        n_tokens += mask.sum().item()
        graded = task.grade(ro.texts, [r["answer"] for r in batch for _ in range(n)])  # code: in parallel
        for p, row in enumerate(batch):
            s = slice(p * n, (p + 1) * n)
            statuses = [status for _, status in graded[s]]
            problems.append(dict(
                question=row["question"], gold=row["answer"], n=n, c=statuses.count(tasks.CORRECT),
                answers=[task.extract(text, row["answer"]) for text in ro.texts[s]],
                confidences=conf[s].tolist(), prompt_conf=c_q[0][p], prompt_conf_question=c_q[1][p],
                lengths=mask[s].sum(1).long().tolist(), statuses=statuses, completions=ro.texts[s]))
        bar.update(len(batch))
    bar.close()

    P = max(len(problems), 1)  # no problem left: every metric is 0
    summary = {f"pass@{k}": sum(pass_at_k(n, pr["c"], k) for pr in problems) / P for k in ks}
    solved = [pr for pr in problems if pr["c"]]
    right = [[t for t, st in zip(pr["completions"], pr["statuses"]) if st == tasks.CORRECT]
             for pr in problems]
    # ARM's scale: c(q) per problem, c(o|q) per completion (quantiles); the spread of c(o|q) within a problem
    # (sample std) is that of ARM's shift within a group, where GRPO's advantages have std 1 (their scale).
    deciles = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    q = lambda x: torch.tensor(x or [math.nan], dtype=torch.float64).quantile(deciles).tolist()  # p10/50/90
    cq, cq_question = (q([pr["prompt_conf"] for pr in problems]),
                       q([pr["prompt_conf_question"] for pr in problems]))
    co = q([c for pr in problems for c in pr["confidences"]])
    spread = sum(statistics.stdev(pr["confidences"]) if n > 1 else 0.0 for pr in problems) / P
    offset = sum(pr["prompt_conf"] - statistics.fmean(pr["confidences"]) for pr in problems) / P
    summary.update(  # divisors: P * n completions, n_tokens completion tokens, solved problems, P problems
        length=sum(sum(pr["lengths"]) for pr in problems) / (P * n),
        entropy=ent_sum / max(n_tokens, 1.0), token_prob=prob_sum / max(n_tokens, 1.0),
        **tasks.diversity(task, right, [pr["gold"] for pr in problems], n),  # distinct_correct, ..., coverage
        conf_var=sum(statistics.pvariance(pr["confidences"]) for pr in problems) / P,  # pvariance: / n
        c_q_p10=cq[0], c_q_p50=cq[1], c_q_p90=cq[2], c_q_question_p50=cq_question[1],
        c_o_p10=co[0], c_o_p50=co[1], c_o_p90=co[2], conf_spread=spread, conf_offset=offset,
        alpha_suggested=arm_share / spread if spread > 0 else math.nan,
        no_answer=sum(pr["statuses"].count("no_answer") + pr["statuses"].count("no_code")
                      for pr in problems) / (P * n),
        problems=len(problems), solved=len(solved), skipped_gold=len(task.rows) - len(rows))
    return dict(task=task.name, n=n, ks=ks, seconds=time.time() - t0, summary=summary, problems=problems)


# ---------------------------------------------------------------------------------------------
LABELS = {
    "length": "mean length (tokens)", "entropy": "mean token entropy", "token_prob": "mean token probability",
    "distinct_correct": "distinct correct answers / solved problem",
    "coverage": "coverage of the correct set",
    "reasoning_diversity": "reasoning diversity (1 - 3-gram Jaccard)",
    "conf_var": "answer-confidence variance", "c_q_p10": "c(q) p10", "c_q_p50": "c(q) median",
    "c_q_p90": "c(q) p90", "c_q_question_p50": "c(q) median, question only", "c_o_p10": "c(o|q) p10",
    "c_o_p50": "c(o|q) median", "c_o_p90": "c(o|q) p90", "conf_spread": "c(o|q) std within a problem",
    "conf_offset": "c(q) - mean c(o|q)", "alpha_suggested": "alpha suggested", "no_answer": "no-answer share",
    "problems": "problems", "solved": "solved (>= 1 correct)", "skipped_gold": "skipped (gold unparseable)"}


def table(title: str, summaries: dict) -> str:
    """Markdown table of {run label: summary}: one row per metric, one column per run ('-': not measured)."""
    passes = sorted({m for s in summaries.values() for m in s if m.startswith("pass@")},
                    key=lambda m: int(m[5:]))
    rows = [(m.replace("pass", "Pass"), m) for m in passes] + [(label, m) for m, label in LABELS.items()]
    fmt = lambda v: "-" if v is None or v != v else str(v) if isinstance(v, int) else f"{v:.4g}"  # nan != nan
    lines = [f"\n### {title}", "| metric | " + " | ".join(summaries) + " |",
             "|---" * (len(summaries) + 1) + "|"]
    lines += [f"| {label} | " + " | ".join(fmt(s.get(m)) for s in summaries.values()) + " |"
              for label, m in rows]
    return "\n".join(lines)


def read_result(path: str) -> dict:
    """{benchmark: result} of an eval.py JSON, each with its ks and a pass@k for each k."""
    try:
        runs = json.loads(Path(path).read_text())["benchmarks"]
        for r in runs.values() or [{}]:  # no benchmark: KeyError. What compare() reads: integer ks, numbers
            s = r["summary"]
            if (not all(type(k) is int and isinstance(s[f"pass@{k}"], (int, float)) for k in r["ks"])
                    or not all(v is None or isinstance(v, (int, float)) for v in s.values())):
                raise ValueError("a k that is not an integer, or a metric that is not a number")
        return runs
    except (OSError, ValueError, KeyError, TypeError, AttributeError,
            RecursionError) as e:  # missing, not JSON, ...
        raise SystemExit(f"error: --compare {path}: not a readable eval.py result "
                         f"({type(e).__name__}: {e})") from None


def compare(paths: list, plot: str) -> None:
    """Print the runs side by side, one table per benchmark, and plot Pass@k against k."""
    labels = [Path(p).stem for p in paths]
    labels = labels if len(set(labels)) == len(labels) else list(paths)  # same file names: full paths
    runs = {label: read_result(p) for label, p in zip(labels, paths)}
    benchmarks = list(dict.fromkeys(b for r in runs.values() for b in r))  # union, in first-seen order
    for b in benchmarks:
        print(table(b, {label: r[b]["summary"] for label, r in runs.items() if b in r}))
    try:
        import matplotlib
        matplotlib.use("Agg")  # files only, no display needed
        import matplotlib.pyplot as plt
        from matplotlib.ticker import FuncFormatter
    except ImportError:
        print(f"\nmatplotlib is not installed, so no plot was written to {plot} (pip install matplotlib); "
              "the tables above are complete")
        return
    fig, axes = plt.subplots(1, len(benchmarks), figsize=(5 * len(benchmarks), 4), squeeze=False)
    for ax, b in zip(axes[0], benchmarks):
        for label, r in runs.items():
            if b in r:
                ax.plot(r[b]["ks"], [r[b]["summary"][f"pass@{k}"] for k in r[b]["ks"]], marker="o",
                        label=label)
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))  # ticks 1, 2, 4, not 2^0, 2^1
        ax.set(title=b, xlabel="k (log scale)", ylabel="Pass@k")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(plot)
    print(f"\nsaved {plot}")


# ---------------------------------------------------------------------------------------------
def main(argv=None):
    args, given = cli.parse_args(Args, argv)
    cli.check_ranges(args, dict(limit="int >= 0", n="int >= 1", max_new_tokens="int >= 0", temperature=">= 0",
                                   top_p="in (0, 1]", batch_prompts="int >= 1", arm_low_frac="in (0, 1]",
                                   arm_share="> 0", seed="int >= 0"))
    if args.compare:
        cli.check_png(args.plot, "--plot")
        return compare(args.compare, args.plot)
    names = (args.benchmarks if "benchmarks" in given
             else "demo" if args.model == "tiny" else "math500").split(",")
    unknown = [b for b in names if b not in ("demo", "multi", *tasks.BENCHMARKS)]
    if unknown:
        raise SystemExit(f"error: unknown benchmark {unknown[0]!r}; "
                         f"known: demo, multi, {', '.join(tasks.BENCHMARKS)}")
    if args.validate_grader:
        return tasks.validate_grader(args.data_dir, [b for b in names if b in tasks.BENCHMARKS]
                                     if args.benchmarks else list(tasks.BENCHMARKS))  # all unless named
    ks = parse_ks(args.k, args.n)  # every check that needs no model comes first
    adapter = resolve_adapter(args.adapter, args.model)
    out = Path(args.out or f"eval-{Path(args.model).name}-{time.strftime('%Y%m%d-%H%M%S')}.json")
    if out.is_dir():
        raise SystemExit(f"error: --out {out} is a folder; give a file name such as {out / 'eval.json'}")
    cli.check_writable(out, "--out")
    todo = ([tasks.from_flags(names[0], args.data, args.question_field, args.answer_field, limit=args.limit)]
            if args.data else [load_task(b, args.data_dir, args.limit) for b in names])  # multi: answer lists
    budget = lambda t: args.max_new_tokens or (2 if t.name == "demo" else 16 if t.answer_set
                                               else common.MAX_NEW_TOKENS)
    device = common.pick_device()
    model, tok = common.load_model(args.model, device, args.load_in_4bit and device == "cuda",
                                   adapter=adapter, dtype=args.dtype)
    for t in todo:
        t.instruction = t.instruction if args.instruction is None else args.instruction
        common.check_prompt_lengths(model, tok, t, budget(t), t.name)
    gen = common.generation_copy(model) if args.fast_generation else None
    result = dict(config=asdict(args), adapter_used=adapter, device=device, benchmarks={})
    print(f"model {args.model}" + (f" + adapter {adapter}" if adapter else "") + f" on {device} | "
          f"n {args.n} | k {','.join(map(str, ks))} | "
          + ", ".join(f"{t.name}: {len(t.rows)} problems ({t.grader})" for t in todo))
    for task in todo:
        torch.manual_seed(args.seed)
        res = evaluate(model, tok, task, args.n, ks, budget(task), args.temperature, args.top_p,
                       args.batch_prompts, args.arm_low_frac, gen=gen, arm_share=args.arm_share)
        result["benchmarks"][task.name] = res
        print(table(f"{task.name} ({res['seconds']:.0f}s)", {out.stem: res["summary"]}))  # the write may fail
        cli.write_atomic(out, cli.to_json(result, indent=1))  # per benchmark: a crash keeps what is done
    print(f"\nsaved {out}")


if __name__ == "__main__":
    main()
