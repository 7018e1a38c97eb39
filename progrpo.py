r"""ProGRPO: GRPO with the Advantage Re-weighting Mechanism (ARM), arXiv 2602.05281, in one loop.

Variant: GRPO with group-normalised advantages (sample std), ARM shift
A~_i = A_i + alpha * (c(q) - c(o_i|q)) on every group with at least one correct completion,
PPO-style clipped surrogate with asymmetric clipping [1 - 0.2, 1 + 0.28], token-mean over the
batch, no KL by default, LoRA on a frozen (4-bit NF4 on CUDA) base. See arm.py for the math.

Choices where the paper is silent (docs/design.md's table says why; a flag where one is named):
 1. std is the sample standard deviation (divides by G - 1), plus 1e-6; --scale-rewards none = Dr.GRPO.
 2. |T_low| = ceil(rho * |o|) in exact arithmetic, at least 1 token; padding never counts, EOS does.
 3. c(q) is taken over the prompt tokens that have a predecessor, chat template included;
    --prompt-conf question: only the tokens inside the question's text (docs/alpha.md).
 4. Confidences use pi_old at the sampling temperature, taken (detached) from the first update's
    training forward, where pi_old = pi: no separate old-policy pass; c(q) from each group's first row.
 5. ARM shifts every group with at least one correct completion; --arm-groups mixed: mixed only.
 6. All-correct groups are kept (ARM is their only signal); all-wrong groups keep A_i = 0.
 7. Loss: token-mean over all completion tokens of the batch (divides by their count);
    --loss-agg seq-mean averages each completion first.
 8. No KL by default (--beta 0); k3 estimator, reference = the base with the LoRA adapter disabled.
 9. The importance ratio uses log-probs recomputed by the training forward, not sampling scores.
10. Sampling: temperature 1.0, top-p 1.0, no top-k, no repetition penalty; stops at the tokenizer's
    EOS, the generation config's EOS ids and the chat template's end-of-turn token.
11. alpha = 1.0 by default (docs/design.md: the demo experiment; on real weights: docs/real-weights.md).
12. A problem whose gold answer cannot be graded (rewards.gold_status, decided once) is skipped before
    sampling, and counted.
13. A grading timeout, or a completion without a final answer, scores 0 and is counted.
14. The final answer is the last outermost \boxed{} (else GSM8K's ####); an empty or cut-off last box
    is none; rewards.py refuses the answers math-verify would wrongly pass (docs/grading.md).
15. LoRA r16 / alpha 32 on all linear layers, dropout 0; AdamW, no weight decay, grad-norm clip 1.
16. Prompt order: a fresh permutation per epoch, a pure function of (seed, step).
17. One checkpoint kept (adapter + optimizer + step + RNG), written to a temp folder and renamed;
    Ctrl-C or SIGTERM finishes the step in flight, then saves (a second one quits without saving).
18. --resume reuses the run's config.json: a flag given again must equal it, except --steps (not
    below the checkpoint) and the memory flags (runs.MAY_CHANGE); later metrics lines are redone.
19. Rollouts sample from a LoRA-merged plain copy of the policy (static KV cache on CUDA), or from
    the peft model when the copy does not fit (--no-fast-generation forces that).
20. With beta = 0, groups whose advantages are all 0 and that have no correct completion (all-wrong
    groups with 0/1 rewards: never shifted) get no forward or backward (live_rows): the gradient is the
    same; the entropy metric covers the forwarded rows (null when there are none). "Correct" is the status
    tasks.CORRECT (full reward); any reward in [0, 1] trains: partial credit has advantages.
21. --dtype auto: bf16 where the GPU has it, else fp16 (fp32 LoRA and AdamW, a loss scale from 2^10).
22. Out of GPU memory in a step: the last finished step is saved, one line names the flag to lower.

Run:  python progrpo.py                          # offline demo: tiny model, toy task, CPU, ~20 s
      python progrpo.py --model Qwen2.5-1.5B    # GSM8K, LoRA on a 4-bit base, one GPU
      python progrpo.py --resume runs/NAME       # continue a run from its last checkpoint
"""
import importlib.util
import json
import math
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal, Optional

import torch
from tqdm import tqdm

import arm
import cli
import common
import eval as evaluation  # not the builtin
import memory
import runs
import tasks


@dataclass
class Args:
    model: str = "tiny"  # 'tiny' (demo), 'smollm2' (real weights, offline), a Qwen2.5 alias, hub id, folder
    task: str = ""  # demo | multi | gsm8k | math | dapo | mbpp (code); default: demo for tiny, else gsm8k
    data: str = ""  # a local JSON Lines file of problems instead of a named task
    question_field: str = "question"  # --data: the field holding the problem
    answer_field: str = "answer"  # --data: the field holding the answer (or a solution with \boxed{})
    instruction: Optional[str] = None  # appended to every problem ("" for none; default: the task's own)
    data_dir: str = ""  # read a named task from a folder laid out like ../shared/data, not the hub
    steps: Optional[int] = None  # optimizer steps on fresh rollouts (default: 300 demo, 500 otherwise)
    prompts_per_step: Optional[int] = None  # P, prompts per rollout batch (default 8)
    group_size: Optional[int] = None  # G, completions per prompt (default 8)
    max_new_tokens: Optional[int] = None  # completion budget (default: 2 demo, 1024 otherwise)
    lr: Optional[float] = None  # AdamW learning rate for LoRA (default: 1e-3 demo, 1e-5 otherwise)
    temperature: float = 1.0  # sampling temperature; log-probs use the same one
    top_p: float = 1.0  # nucleus sampling
    alpha: float = 1.0  # ARM strength; 0 reproduces plain GRPO exactly
    arm_low_frac: float = 0.2  # rho: share of lowest-probability completion tokens in c(o|q)
    arm_groups: Literal["any-correct", "mixed"] = "any-correct"  # which groups ARM shifts
    prompt_conf: Literal["template", "question"] = "template"  # c(q) over the prompt (paper) or the question
    scale_rewards: Literal["group", "none"] = "group"  # divide by the group std (GRPO) or not (Dr.GRPO)
    clip_low: float = 0.2  # ratio clipped below at 1 - clip_low
    clip_high: float = 0.28  # ratio clipped above at 1 + clip_high
    loss_agg: Literal["token-mean", "seq-mean"] = "token-mean"  # how token losses are averaged
    beta: float = 0.0  # KL(pi || ref) coefficient, k3 estimator; ref = base without the adapter
    updates_per_batch: int = 1  # optimizer steps per rollout batch (>1: off-policy, clipping matters)
    micro_batch: Optional[int] = None  # rows per forward/backward, 0: all at once (default: 0 demo, else 8)
    max_grad_norm: float = 1.0  # gradient clipping
    lora_rank: int = 16  # LoRA rank
    lora_alpha: int = 32  # LoRA scaling numerator
    lora_targets: str = "all-linear"  # comma-separated module names, or all-linear
    load_in_4bit: bool = True  # NF4 4-bit base on CUDA (ignored on CPU and for the tiny model)
    dtype: Literal["auto", "bf16", "fp16", "fp32"] = "auto"  # auto: bf16 if the GPU has it, else fp16
    dry_run: bool = False  # print the GPU memory estimate for these flags and exit (config only, no GPU)
    gradient_checkpointing: bool = True  # recompute activations in backward (CUDA only)
    fast_generation: bool = True  # sample from a LoRA-merged plain copy (static KV cache, compiled on CUDA)
    seed: int = 0  # seeds sampling and the prompt order
    out: str = ""  # run folder (default runs/<model>-<task>-<time>): metrics, config, checkpoints
    resume: str = ""  # continue the run in this folder from its last checkpoint (its config.json)
    save_every: int = 50  # checkpoint every N steps (and at the end, and on Ctrl-C)
    sample_every: int = 20  # print one sampled completion every N steps (0: never)
    wandb: bool = False  # also log to Weights & Biases (imported only when set)
    eval_every: int = 0  # every N steps, Pass@k on held-out problems (eval.py's evaluator) into metrics
    eval_benchmarks: str = ""  # comma-separated benchmarks (default: demo for the demo, else math500)
    eval_n: int = 8  # samples per held-out problem; Pass@k for k = 1, 2, 4, ... up to it
    eval_limit: int = 32  # held-out problems per benchmark (the first N)


PRESETS = {  # values for the fields left at None above
    "demo": dict(steps=300, prompts_per_step=8, group_size=8, max_new_tokens=2, lr=1e-3, micro_batch=0),
    "multi": dict(steps=40, prompts_per_step=4, group_size=8, max_new_tokens=16, lr=1e-3, micro_batch=0),
    "hub": dict(steps=500, prompts_per_step=8, group_size=8, max_new_tokens=common.MAX_NEW_TOKENS, lr=1e-5,
                micro_batch=8),
}


def check_args(args):
    """Every numeric flag in its range, before any model or data loads; one line naming the flag."""
    cli.check_ranges(args, dict(
        steps="int >= 1", prompts_per_step="int >= 1", group_size="int >= 2", max_new_tokens="int >= 1",
        lr="in (0, 1]", temperature="> 0", top_p="in (0, 1]", alpha=">= 0", arm_low_frac="in (0, 1]",
        clip_low="in [0, 1)", clip_high=">= 0", beta=">= 0", updates_per_batch="int >= 1",
        micro_batch="int >= 0", max_grad_norm="> 0", lora_rank="int >= 1", lora_alpha="int >= 1",
        seed="int >= 0", save_every="int >= 1",
        sample_every="int >= 0", eval_every="int >= 0", eval_n="int >= 1", eval_limit="int >= 0"))
    if args.wandb and importlib.util.find_spec("wandb") is None:
        raise SystemExit("error: --wandb needs the wandb package: pip install wandb")


def k3(ref_logp, logp):
    """k3 = exp(ref - logp) - (ref - logp) - 1 per token: an unbiased, positive KL(pi || ref) estimate."""
    d = ref_logp - logp
    return d.exp() - d - 1


def policy_loss(logp, old_logp, adv, clip_low, clip_high, ref_logp=None, beta=0.0):
    """Per-token loss and clip indicator, both (N, T). logp/old_logp/ref_logp (N, T), adv (N,)."""
    ratio = (logp - old_logp).exp()
    a = adv[:, None]
    loss = -torch.min(ratio * a, ratio.clamp(1 - clip_low, 1 + clip_high) * a)
    clipped = ((ratio > 1 + clip_high) & (a > 0)) | ((ratio < 1 - clip_low) & (a < 0))
    if beta:
        loss = loss + beta * k3(ref_logp, logp)
    return loss, clipped


def aggregate(x, mask, how, n_tokens, n_rows):
    """Sum of a micro-batch's share of the batch mean: token-mean divides by all completion tokens of
    the batch (n_tokens); seq-mean averages each row over its tokens, then divides by n_rows."""
    x = x * mask
    if how == "token-mean":
        return x.sum() / n_tokens
    return (x.sum(1) / mask.sum(1).clamp(min=1)).sum() / n_rows


def batch_rows(step, P, n, seed):
    """Indices of step's prompts: a fresh permutation each epoch, a pure function of (step, seed),
    so a resumed run sees the same prompts as an uninterrupted one."""
    out = []
    for pos in range(step * P, (step + 1) * P):
        epoch, j = divmod(pos, n)
        out.append(torch.randperm(n, generator=torch.Generator().manual_seed(seed * 7919 + epoch))[j].item())
    return out


def load(argv):
    """Flags (a --resume run's own config), presets and checks, the task, the model (LoRA on a frozen base,
    from the last checkpoint when resuming) and its optimizer: everything before the run folder is written.
    Returns (args, start step, lock or None, device, task, eval tasks, model, tokenizer, optimizer,
    fp16 loss scaler, generation copy)."""
    args, given = cli.parse_args(Args, argv)
    lock = None
    if args.resume:  # the run's own config; a second live process on the folder is refused
        args = runs.resumed_args(Args, args, given)
        lock = runs.claim(Path(args.resume), new=False)  # held (open) until the process ends
    common.resolve_model(args.model)  # fail on a bad name before loading any data
    args.task = args.task or ("demo" if args.model == "tiny" else "gsm8k")
    for k, v in PRESETS[args.task if args.task in ("demo", "multi") else "hub"].items():
        setattr(args, k, v if getattr(args, k) is None else getattr(args, k))
    check_args(args)
    if args.dry_run:  # the GPU plan from the config alone, on any machine
        raise SystemExit(print(memory.dry_run(args)))  # exit status 0
    ckpt, start = runs.check_run_folder(args)
    device = common.pick_device()
    # config.json records what runs: NF4 and checkpointing are CUDA-only; the tiny model is not 4-bit.
    args.load_in_4bit &= device == "cuda" and args.model != "tiny"
    args.gradient_checkpointing &= device == "cuda"
    args.dtype = common.resolve_dtype(args.dtype, device)
    torch.manual_seed(args.seed)
    task = tasks.from_flags(args.task, args.data, args.question_field, args.answer_field, args.data_dir,
                            args.instruction)
    args.data = args.data and os.path.abspath(args.data)  # so that --resume works from any folder
    default = "demo" if task.name == "demo" else "multi" if task.answer_set else "math500"
    eval_tasks = [evaluation.load_task(b, args.data_dir, args.eval_limit)
                  for b in (args.eval_benchmarks or default).split(",")] if args.eval_every else []
    if device == "cuda":  # before any weight loads: the plan, or one line naming the flags that make it fit
        print(memory.preflight(args, task))
    model, tok = common.load_model(args.model, device, args.load_in_4bit, args.lora_rank, args.lora_alpha,
                                   args.lora_targets, str(ckpt or ""), args.gradient_checkpointing,
                                   args.dtype)
    for t in [task, *eval_tasks]:
        common.check_prompt_lengths(model, tok, t, args.max_new_tokens, args.data or t.name)
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr, weight_decay=0.0)
    scaler = loss_scaler(args.dtype, device)
    if ckpt:
        runs.load_state(ckpt, opt, scaler)  # the optimizer, loss scale and random streams of the checkpoint
    gen = common.generation_copy(model) if args.fast_generation else None  # None: no room on the GPU
    return args, start, lock, device, task, eval_tasks, model, tok, opt, scaler, gen


def loss_scaler(dtype, device):
    """fp16's dynamic loss scale from 2^10 (docs/design.md, row 21); for other dtypes, one doing nothing."""
    return torch.amp.GradScaler(device, init_scale=2.0**10, enabled=dtype == "fp16")


def open_run_folder(args, task, start, device, gen):
    """The run folder, written only now that every check has passed: (folder, metrics so far, lock)."""
    lock, history = None, []
    if args.resume:
        out = Path(args.out)
        history = runs.read_metrics(out / "metrics.jsonl", start)
    else:
        out = Path(args.out) if args.out else runs.unique_folder(
            f"runs/{Path(args.model).name}-{task.name}-{time.strftime('%Y%m%d-%H%M%S')}")
        lock = runs.claim(out, new=True)  # held (open) until the process ends
    args.out = str(out)
    data_sha256 = runs.file_sha256(args.data) if args.data else ""  # --resume refuses a changed file
    cli.write_atomic(out / "config.json", cli.to_json({**asdict(args), "data_sha256": data_sha256}, indent=1))
    cli.write_atomic(out / "metrics.jsonl", "".join(cli.to_json(m) + "\n" for m in history))
    print(json.dumps(vars(args)))
    source = "a merged copy" if gen is not None else "the peft model"
    print(f"model {args.model} on {device} | task {task.name}: {len(task.rows)} problems, graded by "
          f"{task.grader} | out {out} | sampling from {source}"
          + (f" | resuming at step {start}" if start else ""))
    return out, history, lock


def rollout(model, gen, tok, prompts, args, device):
    """G completions for each prompt, from the policy as of the last update: a common.Rollout, rows grouped by
    prompt (row p * G + g)."""
    if gen is not None:
        common.sync_generation_copy(model, gen)
    return common.sample(gen or model, tok, prompts, args.group_size, args.max_new_tokens, args.temperature,
                         args.top_p, static_cache=gen is not None and device == "cuda")


def grade(task, ro, rows, G):
    """Rewards (P, G), each in [0, 1], whether each completion is correct (P, G) (tasks.CORRECT: the one
    meaning of "correct"), and the N statuses."""
    graded = task.grade(ro.texts, [rows[i // G]["answer"] for i in range(len(ro.texts))])
    statuses = [s for _, s in graded]
    R = torch.tensor([r for r, _ in graded], dtype=torch.float32).view(-1, G)
    return R, torch.tensor([s == tasks.CORRECT for s in statuses]).view(-1, G), statuses


def arm_alpha(alpha: float, correct: torch.Tensor) -> torch.Tensor:
    """ARM's strength per group (P,): --alpha for every group. The place to try a per-group alpha."""
    return torch.full((correct.shape[0],), float(alpha))


def live_rows(A, has_correct, beta) -> torch.Tensor:
    """The rows whose loss can be non-zero, whole groups in order (indices, (<= N,)): groups with an advantage
    != 0 or with a correct completion (which ARM may shift), every group when a KL term (beta > 0) is on.
    The others (all-wrong groups with 0/1 rewards) have A = 0 and no shift: no forward, no backward."""
    live = (A != 0).any(1) | has_correct | (beta > 0)  # (P,)
    return live.repeat_interleave(A.shape[1]).nonzero()[:, 0]


def update(model, opt, tok, ro, prompts, questions, A, correct, args, step, out, scaler=None) -> dict:
    """ARM and the clipped policy-gradient update(s), micro-batch by micro-batch, in one forward per row.

    Why ARM's shift is computed here: A~ = A + alpha * (c(q) - c(o|q)) needs pi_old's log-probs of the prompt
    and of the completion. On-policy, pi_old is the policy itself, so the first update's forward gives them
    (detached; ratio 1) and each row's A~ is known before its loss is formed: no separate old-policy pass.
    c(q) comes from each group's first row (every row of a group has the same prompt). Later updates
    (--updates-per-batch) reuse those log-probs. The token-mean divides by every completion token of the
    batch, forwarded or not, so skipping the rows that live_rows leaves out keeps the gradient unchanged.
    In fp16, `scaler` multiplies the loss before backward (small activation gradients would round to 0)
    and skips an update whose gradient overflowed, lowering the scale."""
    G, N, L = args.group_size, len(ro.texts), ro.prompt_len
    dev, mask = ro.seqs.device, ro.mask.float()  # mask (N, T)
    A = A.to(dev)
    shifted = arm.shifted_groups(correct, args.arm_groups).to(dev) & (args.alpha != 0)  # (P,)
    alpha = arm_alpha(args.alpha, correct).to(dev)  # (P,)
    live, mb = live_rows(A, correct.any(1).to(dev), args.beta), args.micro_batch or N
    prompt_mask = ro.attn[:, 1:L] * ro.attn[:, :L - 1]  # (N, L-1) prompt tokens that have a predecessor
    if args.prompt_conf == "question":  # only those inside the question's text
        prompt_mask *= common.question_mask(tok, prompts, questions, L)[:, 1:].to(dev).repeat_interleave(G, 0)
    c_q, adv = torch.ones(len(prompts), device=dev), torch.zeros(N, device=dev)  # (P,), (N,): filled below
    old, ent = torch.zeros_like(mask), torch.zeros_like(mask)  # (N, T), from the first update's forward
    ref = None
    if args.beta:  # the reference policy: the same base with the adapter switched off
        with model.disable_adapter():
            ref = common.token_logprobs_batched(model, ro.seqs, ro.attn, L - 1, mb, args.temperature)[0]
    n_tokens, clip_sum = mask.sum().clamp(min=1), 0.0
    scaler = scaler or loss_scaler(args.dtype, dev.type)  # off: scale, unscale_ and update do nothing
    for u in range(args.updates_per_batch):
        opt.zero_grad(set_to_none=True)
        loss = 0.0
        for i in range(0, len(live), mb):
            idx = live[i:i + mb]  # whole groups in order: a group's first row, which scores c(q), comes first
            first = idx % G == 0
            logp, e, *logp_q = common.token_logprobs(model, ro.seqs[idx], ro.attn[idx], L - 1,
                                                     args.temperature, first if u == 0 else None)
            if u == 0:  # ARM: pi_old's confidences, then each row's shifted advantage (arm.py)
                old[idx], ent[idx] = logp.detach(), e.detach()
                c_q[idx[first] // G] = arm.prompt_confidence(logp_q[0], prompt_mask[idx[first]])
                c_o = arm.answer_confidence(old[idx], mask[idx], args.arm_low_frac)  # (rows,)
                g = idx // G  # each row's group
                adv[idx] = arm.reweight_rows(A.view(N)[idx], shifted[g], c_o, c_q[g], alpha[g])
            loss_tok, clipped = policy_loss(logp, old[idx], adv[idx], args.clip_low, args.clip_high,
                                            ref[idx] if ref is not None else None, args.beta)
            part = aggregate(loss_tok, mask[idx], args.loss_agg, n_tokens, N)
            scaler.scale(part).backward()
            loss += part.item()
            clip_sum += (clipped.float() * mask[idx]).sum().item()
        scaler.unscale_(opt)  # the true gradient, for clipping (fp16; otherwise nothing)
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm).item()
        if not (math.isfinite(loss) and (math.isfinite(grad_norm) or scaler.is_enabled())):  # no update then
            raise SystemExit(f"error: step {step}: loss {loss}, gradient norm {grad_norm}; the update was "
                             f"not applied and {runs.stands(out)} (try a lower --lr)")
        scaler.step(opt)  # fp16: skipped when the scaled gradient overflowed (grad_norm inf)
        scaler.update()
    entropy = ((ent * mask).sum() / mask[live].sum()).item()  # over the forwarded rows; nan: none
    return dict(adv=adv.view(-1, G), A=A, entropy=entropy,
                kl=(k3(ref, old) * mask).sum().item() / n_tokens.item() if args.beta else 0.0, loss=loss,
                grad_norm=grad_norm, clip_frac=clip_sum / (n_tokens.item() * args.updates_per_batch),
                loss_scale=scaler.get_scale() if scaler.is_enabled() else 1.0)


def main(argv=None):
    args, start, lock, device, task, eval_tasks, model, tok, opt, scaler, gen = load(argv)  # noqa: F841
    out, history, new_lock = open_run_folder(args, task, start, device, gen)  # noqa: F841 (held to the end)
    if args.wandb:
        import wandb
        wandb.init(project="progrpo", config=vars(args), name=out.name, resume="allow")
    P, G, eval_ks = args.prompts_per_step, args.group_size, evaluation.parse_ks("", args.eval_n)
    skipped_gold, t_run, done, quiet = history[-1]["skipped_gold"] if history else 0, time.time(), start, 0
    bar = tqdm(total=args.steps, initial=start, desc="steps", dynamic_ncols=True)
    stop = runs.stop_on_signals(bar)
    try:
        for step in range(start + 1, args.steps + 1):
            if stop:
                runs.interrupted(out, start, done, model, opt, scaler, bar, stop[0])
            t0, phase = time.time(), "sampling"
            rows = [task.rows[i] for i in batch_rows(step - 1, P, len(task.rows), args.seed)]
            good = [r for r in rows if task.gold_ok(r["answer"])]  # an ungradable gold skips its prompt
            skipped_gold += len(rows) - len(good)
            if not good:  # nothing to train on; the step still counts, and still saves on schedule
                done = skip_step(step, skipped_gold, args, bar, out, model, opt, scaler)
                continue
            # 1. Sample G completions for each of the P prompts.
            prompts = [common.format_prompt(tok, r["question"], task.instruction) for r in good]
            ro = rollout(model, gen, tok, prompts, args, device)
            t_sample = time.time()
            # 2. Grade them: rewards R (P, G) in [0, 1].
            R, correct, statuses = grade(task, ro, good, G)
            t_grade = time.time()
            # 3. Group advantages: GRPO's A = (R - mean) / std within each group.
            A = arm.group_advantages(R, scale=args.scale_rewards == "group")
            # 4-5. ARM's shift A~ = A + alpha * (c(q) - c(o|q)) and the clipped update, in one forward.
            phase, questions = "update", [r["question"] for r in good]
            u = update(model, opt, tok, ro, prompts, questions, A, correct, args, step, out, scaler)
            done, t_update = step, time.time()  # the step whose update the weights now hold
            # 6. Log.
            m = step_metrics(task, ro, good, R, correct, statuses, u, G, skipped_gold, step)
            m.update(seconds=time.time() - t0, seconds_sample=t_sample - t0, seconds_grade=t_grade - t_sample,
                     seconds_update=t_update - t_grade)
            if args.eval_every and step % args.eval_every == 0:
                m.update(evaluate(model, tok, gen, eval_tasks, eval_ks, args, device, bar))
            quiet = warn_if_arm_is_quiet(quiet, m, args, bar)
            runs.append_metrics(out, step, m)
            history.append(m)
            if args.wandb:
                wandb.log(m, step=step)
            bar.write(step_line(m, args, (time.time() - t_run) / (step - start) * (args.steps - step)))
            if args.sample_every and step % args.sample_every == 0:
                bar.write(sample_line(good[0]["question"], ro.texts[0], R[0, 0]))
            bar.update(1)
            if step % args.save_every == 0 or step == args.steps:
                runs.save_checkpoint(out, step, model, opt, scaler)
    except torch.OutOfMemoryError:  # one line and the last finished step kept, not a traceback
        runs.out_of_memory(phase, step, start, done, out, model, opt, scaler, args, bar)
    except KeyboardInterrupt:
        bar.close()
        print(f"quit without saving; {runs.stands(out)}")
        sys.exit(130)
    finally:
        bar.close()  # also when an error stops the run
    summary(history, skipped_gold, G, out)


def skip_step(step, skipped_gold, args, bar, out, model, opt, scaler) -> int:
    """A step none of whose prompts has a gradable gold: said, counted, saved on schedule."""
    bar.write(f"step {step:>4}/{args.steps} | skipped: no prompt of the batch has a gradable gold "
              f"answer ({skipped_gold} skipped so far); nothing logged to metrics.jsonl")
    bar.update(1)
    if step % args.save_every == 0 or step == args.steps:
        runs.save_checkpoint(out, step, model, opt, scaler)
    return step


def sample_line(q, a, reward) -> str:
    """One sampled completion for the log, cut at spaces (whole words)."""
    return (f"  sample: {q if len(q) <= 200 else q[:200].rsplit(' ', 1)[0] + ' ...'!r} -> "
            f"{a if len(a) <= 300 else '... ' + a[-300:].split(' ', 1)[-1]!r} (reward {reward:.0f})")


def step_metrics(task, ro, rows, R, correct, statuses, u, G, skipped_gold, step) -> dict:
    """One metrics.jsonl line (docs/runs.md): every mean over completion tokens divides by their count;
    diversity is per group with a correct completion."""
    groups, mask = correct.sum(1), ro.mask.float()
    right = [[ro.texts[p * G + g] for g in range(G) if correct[p, g]] for p in range(len(rows))]  # per group
    return dict(step=step, reward=R.mean().item(), accuracy=correct.float().mean().item(),
                entropy=u["entropy"],
                completion_len=mask.sum(1).mean().item(), clip_frac=u["clip_frac"], kl=u["kl"],
                **{f"arm_{k}": v for k, v in arm.shift_stats(u["A"], u["adv"]).items()},
                all_correct=(groups == G).float().mean().item(),
                mixed=((groups > 0) & (groups < G)).float().mean().item(),
                all_wrong=(groups == 0).float().mean().item(),
                **tasks.diversity(task, right, [r["answer"] for r in rows], G),  # distinct, coverage, ...
                no_answer=statuses.count("no_answer") + statuses.count("no_code"),  # nothing to grade
                timeouts=statuses.count("timeout"), skipped_gold=skipped_gold, loss=u["loss"],
                grad_norm=u["grad_norm"], loss_scale=u["loss_scale"])


def evaluate(model, tok, gen, eval_tasks, ks, args, device, bar) -> dict:
    """eval.py's metrics on held-out problems (--eval-every), in a forked random stream."""
    if gen is not None:
        common.sync_generation_copy(model, gen)
    out = {}
    try:
        with torch.random.fork_rng(devices=[torch.cuda.current_device()] if device == "cuda" else []):
            for t in eval_tasks:  # the fork leaves the training run's random stream untouched
                res = evaluation.evaluate(model, tok, t, args.eval_n, ks, args.max_new_tokens,
                                          args.temperature, args.top_p, low_frac=args.arm_low_frac,
                                          progress=False, gen=gen)
                out.update({f"eval/{t.name}/{k}": v for k, v in res["summary"].items()})
                passes = " ".join(f"pass@{k} {res['summary'][f'pass@{k}']:.3f}" for k in ks)
                bar.write(f"  eval {t.name}: {passes}")
    except torch.OutOfMemoryError:  # held-out numbers are extra: training goes on without them
        torch.cuda.empty_cache()
        bar.write("warning: out of GPU memory in the evaluation: skipped (a new run with a lower --eval-n "
                  "or --eval-limit avoids it)")
    return out


def warn_if_arm_is_quiet(quiet, m, args, bar):
    """Steps in a row where ARM's within-group shift stayed under 1% of |A|; at 20, warn once (then None)."""
    if not args.alpha or quiet is None or not math.isfinite(m["arm_rel_spread"]):  # nan: no A to compare with
        return quiet
    quiet = quiet + 1 if m["arm_rel_spread"] < 0.01 else 0
    if quiet == 20:
        bar.write(f"warning: the part of ARM's shift that differs within a group has stayed below 1% of |A| "
                  f"for 20 steps: --alpha {args.alpha} barely reorders completions (docs/alpha.md)")
        return None
    return quiet


def step_line(m, args, eta) -> str:
    return (f"step {m['step']:>4}/{args.steps} | reward {m['reward']:.3f} | acc {m['accuracy']:.3f} | "
            f"ent {m['entropy']:.3f} | len {m['completion_len']:.1f} | clip {m['clip_frac']:.3f} | "
            + (f"kl {m['kl']:.4f} | " if args.beta else "")
            + f"ARM |dA| {m['arm_shift']:.3f} all/mixed/none {m['all_correct']:.2f}/{m['mixed']:.2f}/"
            f"{m['all_wrong']:.2f} | distinct {m['distinct_correct']:.2f} | {m['seconds']:.2f}s/step | "
            f"ETA {eta / 60:.1f}m")


def summary(history, skipped_gold, G, out):
    last = history[-min(10, len(history)):]
    if not last:  # every step skipped: no gold answer of the batches could be graded
        print(f"summary: no step was trained: every prompt drawn had a gold answer that cannot be graded "
              f"(skipped gold {skipped_gold}; check --answer-field and the answers in the data); "
              f"saved to {out}")
        return
    finite = lambda k: [m[k] for m in last if m[k] is not None and math.isfinite(m[k])]
    mean = lambda k: statistics.fmean(finite(k) or [math.nan])
    print(f"summary (mean of the last {len(last)} steps): accuracy {mean('accuracy'):.3f} | "
          f"entropy {mean('entropy'):.3f} | distinct correct answers per prompt "
          f"{mean('distinct_correct'):.2f} "
          f"(of {G} samples) | no answer {sum(m['no_answer'] for m in last)} | grading timeouts "
          f"{sum(m['timeouts'] for m in last)} | skipped gold {skipped_gold} | saved to {out}")


if __name__ == "__main__":
    main()
