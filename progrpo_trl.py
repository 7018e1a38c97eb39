r"""ProGRPO inside TRL's GRPOTrainer: the ARM shift of arm.py (as it is) on top of TRL's GRPO advantages,
so that one run can use what TRL runs: many GPUs (accelerate, DeepSpeed, FSDP), vLLM rollouts
(colocate or server), LoRA / QLoRA. progrpo.py stays the one-GPU reference; docs/trl.md.

TRL has no advantage hook (trl#4525; trl#7291 proposes one), so ProGRPOTrainer overrides
_generate_and_score_completions. After TRL's own (sampling, rewards, GRPO advantages), one no-grad
pass of TRL's _get_per_token_logps_and_entropies over prompt + completion gives pi_old's log-probs at
the sampling temperature: c(q) from the prompt tokens that have a predecessor (TRL never scores the
prompt), c(o|q) from the completion tokens, as progrpo.py takes them (its default --prompt-conf template).
A group's G completions can sit on two processes: advantages, confidences and rewards are gathered to the
whole batch (N = P x G rows in rank order, TRL's own order), every process computes the same
arm.reweight of it, and each keeps its own rows (TRL's process slice).

Run (flags: TRL's GRPOConfig, plus alpha / arm_low_frac / arm_groups and progrpo.py's task and model flags):
    accelerate launch progrpo_trl.py --model Qwen2.5-7B --task gsm8k                # all GPUs of the machine
    accelerate launch progrpo_trl.py --model Qwen2.5-7B --use_vllm --vllm_mode colocate
    accelerate launch --multi_gpu --num_processes 2 progrpo_trl.py --max_steps 20   # demo, two CPU processes
"""
import importlib.util
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

import common  # first: it quiets bitsandbytes' import-time noise before peft imports it
import datasets
import torch
from accelerate.utils import gather_object
from peft import LoraConfig
from transformers import BitsAndBytesConfig

import arm
import cli
import progrpo
import tasks

TESTED = "trl==1.16.*"  # tested with the versions of constraints.txt (trl 1.16.0)
OVERRIDDEN = ("_generate_and_score_completions", "_calculate_rewards", "_get_per_token_logps_and_entropies")
try:
    from trl import GRPOConfig, GRPOTrainer
    from trl.models.utils import disable_gradient_checkpointing
except ImportError as e:
    missing = str(e)
else:
    missing = next((f"GRPOTrainer has no {m}" for m in OVERRIDDEN if not hasattr(GRPOTrainer, m)), "")
if missing:  # one line, not a traceback: this file reaches into TRL's private methods
    message = f"progrpo_trl.py needs TRL's GRPOTrainer as in {TESTED} ({missing}): pip install '{TESTED}'"
    if __name__ == "__main__":
        sys.exit(f"error: {message}")
    raise ImportError(message)


@dataclass
class ProGRPOConfig(GRPOConfig):
    """GRPOConfig plus ARM's settings (progrpo.py's flags of the same names)."""
    alpha: float = field(default=1.0, metadata={"help": "ARM strength; 0 keeps TRL's advantages exactly"})
    arm_low_frac: float = field(default=0.2,
                                metadata={"help": "rho: share of lowest-probability tokens in c(o|q)"})
    arm_groups: Literal["any-correct", "mixed"] = field(default="any-correct",
                                                       metadata={"help": "which groups ARM shifts"})

    def __post_init__(self):
        super().__post_init__()
        cli.check_ranges(self, dict(alpha=">= 0", arm_low_frac="in (0, 1]"))


class ProGRPOTrainer(GRPOTrainer):
    """GRPOTrainer whose advantages get ARM's shift. A completion is correct when the weighted sum of its
    rewards is above 0.5 (progrpo.py: a 0/1 reward). `task` (a tasks.Task) is only for the distinct_correct
    metric, which needs its answer extraction; without it that metric is not logged."""

    def __init__(self, *args, task: tasks.Task | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        if self._is_vlm:
            raise ValueError("ProGRPOTrainer scores text only: its confidence pass takes no images")
        self.task = task

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        """TRL's rewards (N, reward functions) from all processes; kept for ARM with this process's texts."""
        self._arm_rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._arm_texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]  # chat: reply
        self._arm_golds = [x.get("answer") for x in inputs]  # for the diversity metrics
        return self._arm_rewards

    def _generate_and_score_completions(self, inputs):
        out = super()._generate_and_score_completions(inputs)
        mode = "train" if self.model.training else "eval"
        G = self.num_generations if mode == "train" else self.num_generations_eval
        L = out["prompt_ids"].shape[1]  # prompts left-padded to L tokens, completions right-padded to T
        seqs = torch.cat([out["prompt_ids"], out["completion_ids"]], dim=1)  # (B, L + T): B rows on this rank
        attn = torch.cat([out["prompt_mask"], out["completion_mask"]], dim=1)  # (B, L + T)
        mask = out["completion_mask"] * out.get("tool_mask", 1)  # (B, T): the tokens the loss counts
        batch = (self.args.per_device_train_batch_size if mode == "train"
                 else self.args.per_device_eval_batch_size)
        # log pi_old of every token that has a predecessor, (B, L + T - 1): column t scores token t + 1,
        # divided by the temperature inside TRL's fused head as in its own passes; 0 on padding.
        with (torch.no_grad(),
              disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs)):
            logp = self._get_per_token_logps_and_entropies(self.model, seqs, attn, seqs.shape[1] - 1,
                                                           batch_size=batch)[0]
        prompt_mask = attn[:, 1:L] * attn[:, :L - 1]  # prompt tokens that have a predecessor, as progrpo.py
        c_q = arm.prompt_confidence(logp[:, :L - 1], prompt_mask)  # (B,): each row holds its group's prompt
        c_o = arm.answer_confidence(logp[:, L - 1:], mask, self.args.arm_low_frac)  # (B,)
        c_o = torch.where(mask.any(dim=1), c_o, c_q)  # nothing counted (mask_truncated_completions): no shift

        # The whole batch on every process, rows in rank order, as TRL gathers its rewards: (N,) each.
        A, c_q, c_o = (self.accelerator.gather(t.float()) for t in (out["advantages"], c_q, c_o))
        reward = (self._arm_rewards * self.reward_weights.to(self._arm_rewards.device)).nansum(dim=1)
        correct = (reward >= tasks.CORRECT_REWARD).view(-1, G)  # (P, G); unscorable (None): not correct
        A = A.view(-1, G)
        A_t = arm.reweight(A, correct, c_o, c_q[::G], self.args.alpha, self.args.arm_groups)  # c(q): 1st row
        n, rank = len(out["advantages"]), self.accelerator.process_index
        out["advantages"] = A_t.view(-1)[rank * n:(rank + 1) * n].to(out["advantages"].dtype)

        # Metrics as progrpo.py logs them; TRL averages each over the generation batches of a logging step.
        texts, golds, ok = (gather_object(self._arm_texts), gather_object(self._arm_golds),  # N, rank order
                            correct.tolist())
        right = [[texts[p * G + g] for g in range(G) if ok[p][g]] for p in range(len(ok))]  # per group
        metrics = {f"arm_{k}": v for k, v in arm.shift_stats(A, A_t).items()}
        metrics.update(all_correct=(correct.sum(dim=1) == G).float().mean().item(),  # share of the P groups
                       **tasks.diversity(self.task, right, golds[::G], G))  # distinct_correct needs a task
        for name, value in metrics.items():
            if math.isfinite(value):  # NaN: nothing to measure in this batch (no signal, no 2 correct)
                self._metrics[mode][name].append(value)
        logged = self._logs["advantages"]  # TRL's completions table shows the advantages the loss uses
        for _ in range(min(len(logged), A_t.numel())):
            logged.pop()
        logged.extend(A_t.view(-1).tolist())
        return out


# ---------------------------------------------------------------------------------------------
@dataclass
class Args(ProGRPOConfig):
    """TRL's flags and ARM's, plus progrpo.py's task and model flags (same names and meanings)."""
    model: str = "tiny"  # 'tiny' (demo), 'smollm2' (real weights, offline), a Qwen2.5 alias, hub id, folder
    task: str = ""  # demo | gsm8k | math | dapo | mbpp; default: demo for the tiny model, gsm8k otherwise
    data: str = ""  # a local JSON Lines file of problems instead of a named task
    question_field: str = "question"  # --data: the field holding the problem
    answer_field: str = "answer"  # --data: the field holding the answer (or a solution with \boxed{})
    instruction: Optional[str] = None  # appended to every problem ("" for none; default: the task's own)
    data_dir: str = ""  # read a named task from a folder laid out like ../shared/data, not the hub
    lora_rank: int = 16  # LoRA rank (through TRL's peft_config)
    lora_alpha: int = 32  # LoRA scaling numerator
    lora_targets: str = "all-linear"  # comma-separated module names, or all-linear
    load_in_4bit: bool = True  # QLoRA: NF4 4-bit base on CUDA (ignored on CPU and for the tiny model)
    # TRL's flags with progrpo.py's defaults, not TRL's. None: from progrpo.py's demo or hub preset; its P x G
    # completions per optimizer step are split over k processes (P x G / k rows each, one rollout per step).
    max_steps: Optional[int] = None  # --steps
    num_generations: Optional[int] = None  # --group-size
    learning_rate: Optional[float] = None  # --lr
    max_completion_length: Optional[int] = None  # --max-new-tokens
    per_device_train_batch_size: Optional[int] = None  # --micro-batch
    gradient_accumulation_steps: Optional[int] = None  # P x G / (k x micro-batch)
    output_dir: Optional[str] = None  # runs/<model>-<task>-trl
    epsilon_high: Optional[float] = 0.28  # --clip-high
    lr_scheduler_type: str = "constant"
    logging_steps: float = 1
    seed: int = 0
    use_cpu: bool = not torch.cuda.is_available()  # also gloo between CPU processes (accelerate's MULTI_CPU)

    def __post_init__(self):
        self.task = self.task or ("demo" if self.model == "tiny" and not self.data else "gsm8k")
        preset = progrpo.PRESETS[self.task if self.task in ("demo", "multi") else "hub"]  # as progrpo.py
        G = self.num_generations or preset["group_size"]
        rows = preset["prompts_per_step"] * G // int(os.environ.get("WORLD_SIZE", 1))  # k (accelerate launch)
        micro = self.per_device_train_batch_size or min(preset["micro_batch"] or rows, rows)
        for name, value in dict(
                max_steps=preset["steps"], num_generations=G, learning_rate=preset["lr"],
                max_completion_length=preset["max_new_tokens"], per_device_train_batch_size=micro,
                gradient_accumulation_steps=max(rows // micro, 1), bf16=False if self.use_cpu else None,
                output_dir=f"runs/{Path(self.model).name}-{Path(self.data).stem or self.task}-trl").items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        super().__post_init__()


def main(argv=None):
    """Train with TRL on the task and model of progrpo.py's flags; returns the trainer (for tests)."""
    args = cli.parse_args(Args, argv)[0]
    if args.use_vllm and importlib.util.find_spec("vllm") is None:
        raise SystemExit("error: --use_vllm needs vLLM: pip install vllm (a version that TRL supports)")
    name = common.resolve_model(args.model)  # fail on a bad name before loading any data
    task = tasks.from_flags(args.task, args.data, args.question_field, args.answer_field, args.data_dir,
                            args.instruction)  # as progrpo.py

    cuda = common.pick_device() == "cuda"  # CPU: one thread unless OMP_NUM_THREADS says (docs/performance.md)
    quant = None
    if args.model == "tiny":
        model, tok = common.tiny_model()
    else:  # TRL loads the weights (device placement per process); the prompts need the tokenizer first
        model, tok = common.model_source(args.model), common.load_tokenizer(args.model)
        dtype = common.DTYPES[common.resolve_dtype("auto", "cuda" if cuda else "cpu")]  # fp16 before Ampere
        args.model_init_kwargs = dict(dtype=dtype)
        if args.load_in_4bit and cuda:
            quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                       bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=dtype)
    turn = common.end_of_turn_id(tok)  # progrpo.py also stops at this end of turn (docs/design.md, row 10)
    if args.use_vllm and turn is not None:
        args.generation_kwargs = {**(args.generation_kwargs or {}), "stop_token_ids": [turn]}

    # Prompts as progrpo.py writes them (chat template applied here: TRL sees plain text); tasks.py's rewards.
    data = datasets.Dataset.from_list([{"prompt": common.format_prompt(tok, r["question"], task.instruction),
                                        "answer": r["answer"]} for r in task.rows])

    def accuracy(completions, answer, **_):
        """task.grade's 0/1 reward; None (TRL: unscorable, advantage 0) where the gold cannot be graded."""
        ok = [task.gold_ok(a) for a in answer]
        graded = iter(task.grade([c for c, k in zip(completions, ok) if k],
                                 [a for a, k in zip(answer, ok) if k]))
        return [next(graded)[0] if k else None for k in ok]

    targets = args.lora_targets if args.lora_targets == "all-linear" else args.lora_targets.split(",")
    peft = LoraConfig(r=args.lora_rank, lora_alpha=args.lora_alpha, lora_dropout=0.0, target_modules=targets,
                      task_type="CAUSAL_LM")
    trainer = ProGRPOTrainer(model, accuracy, args=args, train_dataset=data, processing_class=tok,
                             peft_config=peft, quantization_config=quant, task=task)
    if turn is not None and turn not in trainer.eos_token_ids:
        trainer.eos_token_ids.append(turn)  # where TRL tells a finished completion from a truncated one
        if not args.use_vllm:
            trainer.generation_config.eos_token_id = trainer.eos_token_ids  # where generate() stops
    trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
    return trainer


if __name__ == "__main__":
    main()
