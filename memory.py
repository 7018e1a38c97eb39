"""The run's peak GPU memory, estimated from the model's config and the flags before anything loads.

Counted, in bytes (Qwen2/Llama shapes; N = prompts x group rows; the formulas in estimate's comments):
- base weights: linear layers in NF4 as bitsandbytes stores them (blocksize 64, nested absmax), the
  rest (embeddings, an untied lm_head, norms, biases) in the run's dtype;
- LoRA + optimizer: fp32 A and B of each targeted layer, their gradients (kept until the next update's
  zero_grad) and AdamW's two moments;
- generation copy (--fast-generation): the linear weights that differ from the base's tensors, in dtype;
- KV cache, rollout temporaries (one layer's, at the prefill or a decoding step), the last position's
  logits: the rollout of N rows;
- activations of one training micro-batch (saved tensors, one recomputed layer under checkpointing, the
  backward's gradients) and logprob_kernel's logits buffer and d logp / d hidden.
Phases: sampling = weights + LoRA/opt + copy + KV cache + rollout temporaries + logits; update = weights
+ LoRA/opt + copy + activations + logprob kernel (an upper bound: the logits buffer is freed before
backward); peak = the larger. Not counted: the CUDA context (CUDA_CONTEXT, apart: mem_get_info's free
memory excludes it), fragmentation, torch.compile / CUDA-graph pools, the attention mask (mb x T^2),
the optimizer's and the weight sync's short-lived temporaries, top-p's sort (--top-p < 1). docs/memory.md.
"""
import dataclasses
import itertools
import math

import logprob_kernel

GiB = 2**30
CUDA_CONTEXT = 512 * 2**20  # CUDA context + cuBLAS workspace, typically 0.3-0.6 GiB: reported, in no phase
DTYPE_BYTES = {"bf16": 2, "fp16": 2, "fp32": 4}
ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
NF4_STATE = 16 * 4 + 256 * 4 + 4  # per quantised weight: NF4 code (16 fp32), absmax's code (256 fp32), offset
RESIDENT = ("base weights", "LoRA + optimizer", "generation copy")
PHASE_PARTS = {"sampling": RESIDENT + ("KV cache", "rollout temporaries", "sampling logits"),
               "update": RESIDENT + ("activations", "logprob kernel")}
QWEN25 = {  # published shapes (hub config.json): for an alias whose config is neither cached nor fetchable
    "0.5": dict(hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                intermediate_size=4864, vocab_size=151936, tie_word_embeddings=True),
    "1.5": dict(hidden_size=1536, num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2,
                intermediate_size=8960, vocab_size=151936, tie_word_embeddings=True),
    "7": dict(hidden_size=3584, num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
              intermediate_size=18944, vocab_size=152064, tie_word_embeddings=False)}


def shapes(config) -> dict:
    """Per-layer linear layers {name: (in, out)}, the layers' biases (elements), and the sizes used below."""
    H, heads, kv = config.hidden_size, config.num_attention_heads, config.num_key_value_heads
    hd = getattr(config, "head_dim", None) or H // heads
    I, q, k = config.intermediate_size, heads * hd, kv * hd
    linear = dict(q_proj=(H, q), k_proj=(H, k), v_proj=(H, k), o_proj=(q, H),
                  gate_proj=(H, I), up_proj=(H, I), down_proj=(I, H))
    # Qwen2: q, k, v have biases; Llama: q, k, v, o when attention_bias.
    biased = ALL_LINEAR[:3] if config.model_type == "qwen2" else \
        ALL_LINEAR[:4] if getattr(config, "attention_bias", False) else ()
    return dict(H=H, I=I, q=q, k=k, heads=heads, L=config.num_hidden_layers, V=config.vocab_size,
                tied=bool(config.tie_word_embeddings), linear=linear, bias=sum(linear[m][1] for m in biased))


def param_count(config) -> int:
    """Every weight once: L x (linear + biases + 2 norms) + final norm + embeddings (+ lm_head if untied)."""
    s = shapes(config)
    layer = sum(i * o for i, o in s["linear"].values()) + s["bias"] + 2 * s["H"]
    return s["L"] * layer + s["H"] + s["V"] * s["H"] * (1 if s["tied"] else 2)


def nf4_bytes(n: int) -> int:
    """One n-element weight as bitsandbytes NF4 with double quantisation: 4 bits a weight, one uint8
    absmax per 64 weights, one fp32 absmax per 256 of those, and NF4_STATE."""
    blocks = math.ceil(n / 64)
    return math.ceil(n / 2) + blocks + 4 * math.ceil(blocks / 256) + NF4_STATE


def lora_count(config, lora_rank: int, lora_targets: str = "all-linear") -> int:
    """LoRA's parameters: r x (in + out) per targeted module per layer (peft's all-linear skips lm_head)."""
    s = shapes(config)
    targets = ALL_LINEAR if lora_targets == "all-linear" else lora_targets.split(",")
    return s["L"] * lora_rank * sum(i + o for m, (i, o) in s["linear"].items() if m in targets)


def estimate(config, *, prompt_tokens, new_tokens, prompts, group, micro_batch, load_in_4bit, dtype,
             gradient_checkpointing, fast_generation, lora_rank, lora_targets="all-linear",
             static_cache=True) -> dict:
    """{'parts': bytes per part, 'phases': bytes per phase, 'peak', 'peak_phase', 'params', 'lora_params',
    'cuda_context', 'config', 'flags'}. prompt_tokens: the longest prompt in tokens; micro_batch 0: all rows.
    static_cache: the rollout's static KV cache (progrpo uses one only with the generation copy, on CUDA)."""
    flags = {k: v for k, v in locals().items() if k != "config"}  # the keyword arguments, for advice()
    s, b = shapes(config), DTYPE_BYTES[dtype]
    H, I, L, V = s["H"], s["I"], s["L"], s["V"]
    N, params = prompts * group, param_count(config)
    static = static_cache and fast_generation
    targets = ALL_LINEAR if lora_targets == "all-linear" else lora_targets.split(",")
    # base: NF4 linear weights + the rest in dtype, or every weight in dtype
    linear = [i * o for i, o in s["linear"].values()]
    dense = params - L * sum(linear)
    base = L * sum(map(nf4_bytes, linear)) + dense * b if load_in_4bit else params * b
    # LoRA: (weight + grad + 2 AdamW moments) x 4 bytes per parameter
    lora = lora_count(config, lora_rank, lora_targets)
    # generation copy: L x sum(in x out) x b over the linear weights that are NF4 or LoRA-wrapped
    # (common.generation_copy shares embeddings, lm_head, norms, biases and untouched weights with the base)
    copy = L * b * sum(i * o for m, (i, o) in s["linear"].items() if load_in_4bit or m in targets) \
        if fast_generation else 0
    # KV cache: N x (prompt + new - 1) x L x 2 (K, V) x kv_heads x head_dim x b. generate() sizes it
    # max_length - 1 (the last token is not fed back); a static cache's prompt is padded to a multiple of 64.
    prompt = math.ceil(prompt_tokens / 64) * 64 if static else prompt_tokens
    kv = N * (prompt + new_tokens - 1) * L * 2 * s["k"] * b
    # rollout temporaries, a layer at a time, the max of: the prefill's MLP, rows x prompt x (3 I + 4 H) x b
    # (the static path prefills all N rows, the peft path each prompt once, then repeats its cache, and adds
    # peft's fp32 cast of down_proj's input, 4 I), and sdpa's K and V repeated to every head (a padding mask
    # rules out sdpa's own GQA): 2 x N x cache length x heads x head_dim x b, at each decoding step.
    prefill = (N if static else prompts) * prompt * ((3 * I + 4 * H) * b + (0 if fast_generation else 4 * I))
    temps = max(prefill, 2 * N * (prompt + new_tokens - 1) * s["q"] * b)
    logits = N * V * (b + 4 + 4)  # last position: dtype logits, their fp32 copy, softmax probabilities
    # activations: mb rows x T = prompt + new tokens, bytes per token below. What autograd saves in one layer:
    # each RMSNorm's fp32 input and 1 / rms (4 H + 4), peft's fp32 cast of each LoRA layer's input and
    # lora_A's output (4 (in + r)), sdpa's q, k, v (k, v repeated to all heads under a padding mask) and
    # output (4 q b) and log-sum-exp (4 heads), the MLP's gate, silu(gate) and up (3 I b). Frozen weights
    # (NF4 or dense: linear layers, the norms' scales) make autograd save none of their inputs.
    mb, T = min(micro_batch or N, N), prompt_tokens + new_tokens
    lora_in = {m: (4 * (s["linear"][m][0] + lora_rank) if m in targets else 0) for m in ALL_LINEAR}
    norm = 4 * H + 4
    layer = 2 * norm + sum(lora_in.values()) + 4 * s["q"] * b + 4 * s["heads"] + 3 * I * b
    # The backward of a layer adds gradients: two I-wide in dtype, down_proj's input's fp32 one (4 I) and the
    # residual stream's in and out (2 H b).
    # Checkpointing keeps each layer's input (H b) and recomputes one layer.
    backward = 2 * I * b + 4 * I + 2 * H * b
    per_token = (L * H * b + layer if gradient_checkpointing else L * layer) + backward
    activations = mb * T * per_token  # (the final norm's saves are freed before any layer's backward)
    # logprob kernel: (C, V) x b logits buffer (C as logprob_kernel chunks n = mb x new rows) + (n, H) x b
    n = mb * new_tokens
    kernel = min(logprob_kernel._chunk_tokens(n, V, b), n) * V * b + n * H * b
    parts = {"base weights": base, "LoRA + optimizer": 16 * lora, "generation copy": copy, "KV cache": kv,
             "rollout temporaries": temps, "sampling logits": logits, "activations": activations,
             "logprob kernel": kernel}
    phases = {phase: sum(parts[p] for p in names) for phase, names in PHASE_PARTS.items()}
    peak_phase = max(phases, key=phases.get)
    return dict(parts=parts, phases=phases, peak=phases[peak_phase], peak_phase=peak_phase, params=params,
                lora_params=lora, cuda_context=CUDA_CONTEXT, config=config, flags=flags)


SHORT = {"base weights": "base", "LoRA + optimizer": "LoRA/opt", "generation copy": "copy",
         "KV cache": "KV cache", "rollout temporaries": "temps", "sampling logits": "logits",
         "activations": "activations", "logprob kernel": "kernel"}  # describe()'s names


def describe(est: dict, free_bytes: int | None = None) -> str:
    """One line for the run header: the peak and its phase as a sum of parts, the other phase, the card."""
    peak, other = est["peak_phase"], "sampling" if est["peak_phase"] == "update" else "update"
    terms = " + ".join(f"{SHORT[p]} {est['parts'][p] / GiB:.1f}" for p in PHASE_PARTS[peak]
                       if est["parts"][p] or p == "base weights")
    line = (f"memory estimate: peak {est['peak'] / GiB:.1f} GiB ({peak}) = {terms} | {other} "
            f"{est['phases'][other] / GiB:.1f} GiB | + CUDA context ~{est['cuda_context'] / GiB:.1f} GiB")
    return line + (f" | card: {free_bytes / GiB:.1f} GiB free" if free_bytes is not None else "")


def halvings(x: int, floor: int = 1) -> list:
    """x // 2, x // 4, ... while >= floor: the values tried for a flag, least change first."""
    return [x >> i for i in range(1, x.bit_length()) if x >> i >= floor]


def advice(est: dict, free_bytes: int, flags: dict) -> str | None:
    """None when the peak fits free_bytes; else one line: the estimate, the card's free memory and the flags
    that make the re-estimated peak fit. Of the changes that fit, the one that changes the run least: first
    the fewest halvings of --max-new-tokens and --prompts-per-step (they change what is trained), then the
    fewest flags, then keeping the generation copy, then the largest --micro-batch (--micro-batch and
    --no-fast-generation, which samples via the peft model at 1/2-1/3 the speed, change only the speed)."""
    if est["peak"] <= free_bytes:
        return None
    mb = flags["micro_batch"] or flags["prompts"] * flags["group"]
    levers = [("--micro-batch", "micro_batch", [mb, *halvings(mb)]),  # index 0: unchanged
              ("--no-fast-generation", "fast_generation",
               [True, False] if flags["fast_generation"] else [False]),
              ("--max-new-tokens", "new_tokens", [flags["new_tokens"], *halvings(flags["new_tokens"], 64)]),
              ("--prompts-per-step", "prompts", [flags["prompts"], *halvings(flags["prompts"])])]
    fits = []  # (cost, the flags as typed, the peak with them)
    for idx in itertools.product(*(range(len(values)) for _, _, values in levers)):
        change = {key: values[i] for (_, key, values), i in zip(levers, idx) if i}
        peak = estimate(est["config"], **{**flags, **change})["peak"] if change else math.inf
        if peak <= free_bytes:
            said = [flag if key == "fast_generation" else f"{flag} {values[i]}"
                    for (flag, key, values), i in zip(levers, idx) if i]
            fits.append(((idx[2] + idx[3], len(said), idx[1], idx[0]), said, peak))
    head = (f"memory: estimated peak {est['peak'] / GiB:.2f} GiB ({est['peak_phase']}) > "
            f"{free_bytes / GiB:.2f} GiB free")
    if not fits:
        return (f"{head}; no single change or combination of --micro-batch, --no-fast-generation, "
                f"--max-new-tokens, --prompts-per-step fits (weights + LoRA/opt alone: "
                f"{(est['parts']['base weights'] + est['parts']['LoRA + optimizer']) / GiB:.2f} GiB)")
    _, said, peak = min(fits)
    line = f"{head}; fits with {' '.join(said)} ({peak / GiB:.2f} GiB)"
    if len(said) > 1:
        single = next((s[0] for _, s, _ in sorted(fits) if len(s) == 1), None)
        line += f"; alone, {single} would (it changes the run more)" if single else "; no single change fits"
    return line


def config_for(name: str):
    """The model's config without its weights: 'tiny' built in code, a folder or a cached (or reachable)
    hub id through AutoConfig, and for a Qwen2.5 0.5B/1.5B/7B alias the published shapes as a last resort."""
    import common  # peft, transformers: only here
    from transformers import AutoConfig, Qwen2Config
    if name == "tiny":
        return common.tiny_model()[0].config
    source = common.model_source(name)
    try:
        return AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as e:
        size = common.QWEN.fullmatch(name) or common.QWEN.fullmatch(source.removeprefix("Qwen/"))
        if size and size.group(2) in QWEN25:
            return Qwen2Config(**QWEN25[size.group(2)])
        raise SystemExit(f"error: cannot read the config of {source!r}: {common.first_line(e)}") from None


PROMPT_TOKENS = 256  # --dry-run's prompt length: no tokenizer or data read (a GSM8K prompt: ~100-200 tokens)


def for_run(args, prompt_tokens: int) -> dict:
    """estimate() for progrpo.Args as the run goes on a GPU: the tiny model unquantised, --dtype auto as
    bf16 (fp16 on a card without it: the same bytes), the static KV cache with the generation copy."""
    dtype = "bf16" if args.dtype == "auto" else args.dtype
    return estimate(config_for(args.model), prompt_tokens=prompt_tokens, new_tokens=args.max_new_tokens,
                    prompts=args.prompts_per_step, group=args.group_size, micro_batch=args.micro_batch,
                    load_in_4bit=args.load_in_4bit and args.model != "tiny", dtype=dtype,
                    lora_rank=args.lora_rank, gradient_checkpointing=args.gradient_checkpointing,
                    fast_generation=args.fast_generation, lora_targets=args.lora_targets, static_cache=True)


def dry_run(args) -> str:
    """progrpo --dry-run: the GPU plan from the config alone (no weights, no data, no GPU needed), beside the
    free memory of the card this machine has, with the advice when it does not fit."""
    import torch
    est = for_run(args, PROMPT_TOKENS)
    free = torch.cuda.mem_get_info()[0] if torch.cuda.is_available() else None
    tip = advice(est, free, est["flags"]) if free is not None else None
    return (describe(est, free) + f" | prompts taken as {PROMPT_TOKENS} tokens; no GPU here" * (free is None)
            + (f"\n{tip}" if tip else ""))


def preflight(args, task) -> str:
    """Before a CUDA run loads its weights: the estimate at the task's longest prompt (its tokenizer only)
    beside the card's free memory, for the run header; stops with one line (the advice) when it cannot fit."""
    import torch

    import common
    tok = common.load_tokenizer(args.model)
    prompts = [common.format_prompt(tok, r["question"], task.instruction) for r in task.rows]
    longest = max(map(len, tok(prompts, add_special_tokens=False).input_ids), default=0)
    est, free, note = for_run(args, longest), torch.cuda.mem_get_info()[0], ""
    lean = for_run(dataclasses.replace(args, fast_generation=False), longest) if args.fast_generation else est
    if est["peak"] > free >= lean["peak"]:  # as before this check: the copy gives way, sampling uses peft
        args.fast_generation, est = False, lean  # (config.json records it)
        note = " | no room for the generation copy: sampling through the peft model (--no-fast-generation)"
    tip = advice(est, free, est["flags"])
    if tip:
        raise SystemExit(f"error: {tip} (--dry-run shows the parts)")
    return describe(est, free) + note
