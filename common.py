"""What the trainer (progrpo.py) and the evaluator (eval.py) share: model loading, the built-in
demo model, the prompt format, sampling, and per-token log-probs (data sets and grading: tasks.py).

Shapes: N rows (= P prompts x G samples), L prompt tokens (left-padded), T completion tokens.
"""
import functools
import logging
import math
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

# Third-party noise, silenced at its own loggers before the imports that make it (a run prints only
# its own lines). peft imports bitsandbytes whenever it is installed, and on AVX512-BF16 CPUs
# bitsandbytes then asks the hub, through the `kernels` package, for an optional CPU kernel and logs
# that it could not get it ("Skipping publisher trust check ...", "Failed to load CPU gemm_4bit_forward
# ..."); this project never runs a 4-bit base on the CPU. transformers 5.25 renamed gradient_checkpointing*
# to activation_checkpointing*, which peft, TRL 1.16 and load_model still call (a FutureWarning each).
for name in ("bitsandbytes", "kernels"):
    logging.getLogger(name).setLevel(logging.ERROR)
warnings.filterwarnings("ignore", message=".*gradient_checkpointing", category=FutureWarning)

import torch  # noqa: E402
from peft import LoraConfig, PeftModel, get_peft_model  # noqa: E402
from tokenizers import Tokenizer, models, pre_tokenizers  # noqa: E402
from transformers import (AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig, DynamicCache,  # noqa: E402
                          GenerationConfig, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM)
from transformers.utils import logging as hf_logging  # noqa: E402

import logprob_kernel  # noqa: E402
import smollm2  # noqa: E402
import tasks  # noqa: E402

hf_logging.disable_progress_bar()  # transformers' "Loading weights" bars: the run shows its own progress
MAX_NEW_TOKENS = 1024  # the completion budget on real tasks, in training and evaluation alike
QWEN = re.compile(r"Qwen2\.5-(Math-)?(0\.5|1\.5|3|7|14|32|72)B(-Instruct)?")


# ---------------------------------------------------------------------------------------------
# The offline demo model: a tiny random-weight Qwen2 (tasks.demo_task is its task).
def tiny_model():
    """A 2-layer Qwen2 with random weights and a word-level tokenizer, both built in code."""
    words = ["<pad>", "<eos>", "sum", *map(str, range(10))]
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<pad>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="<eos>",
                                  unk_token="<pad>")
    # initializer_range 0.1, not 0.02: the logits are RMS-normed hidden states times the (tied, frozen)
    # embeddings, so at 0.02 no LoRA update could make the policy more than mildly confident.
    config = Qwen2Config(vocab_size=len(words), hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=256, tie_word_embeddings=True, initializer_range=0.1,
                         pad_token_id=0, eos_token_id=1, bos_token_id=None)
    with torch.random.fork_rng():  # the same base weights for every --seed: seeds vary the RL only
        torch.manual_seed(0)
        model = Qwen2ForCausalLM(config)
    return model, tok


def resolve_model(name: str) -> str:
    """'Qwen2.5-1.5B' -> 'Qwen/Qwen2.5-1.5B', a folder -> its absolute path, 'tiny' and hub ids
    ('org/name') as they are: one model, one resolved name (eval.py compares them). 'smollm2' stays a
    name here (its packages are checked); load_model converts it once (smollm2.folder)."""
    if name == "tiny":
        return name
    if name == "smollm2":
        smollm2.gguf()
        return name
    if QWEN.fullmatch(name):
        return f"Qwen/{name}"
    if Path(name).is_dir():
        return str(Path(name).resolve())
    if "/" in name:
        return name.rstrip("/")
    raise SystemExit(f"error: unknown model {name!r}: use 'tiny', 'smollm2', a Qwen2.5 alias such as "
                     f"'Qwen2.5-1.5B' or 'Qwen2.5-Math-7B-Instruct', a hub id 'org/name' or a local folder")


def model_source(name: str) -> str:
    """What from_pretrained loads for --model `name`: smollm2's converted folder, else resolve_model's."""
    return str(smollm2.folder()) if name == "smollm2" else resolve_model(name)


def pick_device() -> str:
    """'cuda' when there is a GPU, else 'cpu' on one thread unless OMP_NUM_THREADS says otherwise: with any
    other load on the cores, threads waiting for each other cost 10-70x (docs/performance.md: CPU threads)."""
    if torch.cuda.is_available():
        return "cuda"
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(1)
    return "cpu"


DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def resolve_dtype(name: str, device: str) -> str:
    """--dtype: 'auto' is bf16 on a GPU that has it natively (compute capability >= 8.0: Ampere and
    later), fp16 on older ones (T4, V100, RTX 20xx), fp32 on CPU; any other name is taken as given."""
    if name != "auto":
        return name
    if device != "cuda":
        return "fp32"
    return "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp16"


def first_line(e: BaseException) -> str:
    return (str(e) or type(e).__name__).splitlines()[0]


def load_tokenizer(name: str):
    """The model's tokenizer (the tiny model's is built in code), left-padded: prompts end where generation
    starts."""
    if name == "tiny":
        tok = tiny_model()[1]  # a forked random stream: the same weights, no draw from the run's
    else:
        try:
            tok = AutoTokenizer.from_pretrained(model_source(name))
        except (OSError, ValueError) as e:  # unknown id, no network, gated repository, a broken folder
            raise SystemExit(f"error: cannot load model {model_source(name)!r}: {first_line(e)}") from None
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(name: str, device: str, load_in_4bit: bool = False, lora_rank: int = 16,
               lora_alpha: int = 32, lora_targets: str = "all-linear", adapter: str = "",
               gradient_checkpointing: bool = False, dtype: str = "auto"):
    """(peft model, tokenizer). LoRA on a frozen base (NF4 4-bit when asked) whose other weights and
    compute are in `dtype` (resolve_dtype); LoRA's own weights stay fp32 (peft upcasts them), so
    that fp16 and bf16 runs keep full-precision trainable weights and optimizer state. `adapter`
    loads a saved LoRA adapter (peft format) instead of a fresh one."""
    torch_dtype, tok = DTYPES[resolve_dtype(dtype, device)], load_tokenizer(name)
    if name == "tiny":
        model = tiny_model()[0].to(device, torch_dtype)
    else:
        hub_id = model_source(name)
        quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                   bnb_4bit_use_double_quant=True,
                                   bnb_4bit_compute_dtype=torch_dtype) if load_in_4bit else None
        try:
            model = AutoModelForCausalLM.from_pretrained(hub_id, dtype=torch_dtype, quantization_config=quant,
                                                         device_map={"": device})
        except (OSError, ValueError) as e:  # unknown id, no network, gated repository, a broken folder
            raise SystemExit(f"error: cannot load model {hub_id!r}: {first_line(e)}") from None
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if adapter:
        try:
            model = PeftModel.from_pretrained(model, adapter, is_trainable=True)
        except Exception as e:  # a missing, truncated or foreign file: json, safetensors, torch errors vary
            raise SystemExit(f"error: cannot load the LoRA adapter in {adapter}: {type(e).__name__}: "
                             f"{(str(e) or '-').splitlines()[0][:200]}") from None
    else:
        targets = lora_targets if lora_targets == "all-linear" else lora_targets.split(",")
        names = [n for n, _ in model.named_modules()]  # peft matches a target to the last part(s) of a name
        missing = [] if targets == "all-linear" else [
            t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
        if missing:  # peft would skip it silently if another name matches, or raise NoMatchingPeftModuleError
            linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules()
                             if isinstance(m, torch.nn.Linear)})
            raise SystemExit(f"error: --lora-targets {lora_targets}: the model has no module {missing[0]!r} "
                             f"(its linear layers: {', '.join(linear)})")
        model = get_peft_model(model, LoraConfig(r=lora_rank, lora_alpha=lora_alpha, lora_dropout=0.0,
                                                 target_modules=targets, task_type="CAUSAL_LM"))
    for m in model.modules():  # bitsandbytes on AVX512-BF16 CPUs repacks 4-bit weights into a path
        if hasattr(m, "support_avx512bf16_for_cpu"):  # without LoRA gradients after generate()
            m.support_avx512bf16_for_cpu = False
    return model, tok


def check_prompt_lengths(model, tok, task: tasks.Task, max_new_tokens: int, source: str) -> None:
    """Stop with one line when a prompt plus the completion budget does not fit the model's context."""
    context = getattr(model.config, "max_position_embeddings", None) or math.inf
    prompts = [format_prompt(tok, r["question"], task.instruction) for r in task.rows]
    for i, ids in enumerate(tok(prompts, add_special_tokens=False).input_ids if prompts else []):
        if len(ids) + max_new_tokens > context:
            raise SystemExit(f"error: {source}: problem {i}'s prompt is {len(ids)} tokens, which with "
                             f"--max-new-tokens {max_new_tokens} exceeds the model's context of {context}: "
                             f"drop it or lower it")


def format_prompt(tok, question: str, instruction: str = tasks.INSTRUCTION) -> str:
    """The chat template when the tokenizer has one, else the bare question and instruction."""
    text = f"{question}\n{instruction}".strip()
    if tok.chat_template:
        return tok.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                       add_generation_prompt=True)
    return text


def question_mask(tok, prompts: list, questions: list, width: int) -> torch.Tensor:
    """(P, width) 1 on the tokens of each prompt that lie inside its question's text (not the chat
    template, not the instruction), left-padded to width like sample's prompts: c(q) over the question."""
    rows = []
    for prompt, question in zip(prompts, map(str.strip, questions)):  # format_prompt strips the user's text
        a = prompt.rfind(question)  # format_prompt puts the question once, before the instruction
        if a < 0:  # a template that rewrites the user's text: no question tokens to score
            raise SystemExit(f"error: --prompt-conf question: the chat template changed the question's "
                             f"text, so its tokens cannot be found in the prompt ({question[:60]!r}); "
                             f"use --prompt-conf template")
        spans = tok(prompt, add_special_tokens=False, return_offsets_mapping=True).offset_mapping
        rows.append([0] * (width - len(spans)) + [int(a <= s < e <= a + len(question)) for s, e in spans])
    return torch.tensor(rows)


# ---------------------------------------------------------------------------------------------
@dataclass
class Rollout:
    seqs: torch.Tensor  # (N, L + T) prompt (left-padded) + completion (right-padded)
    attn: torch.Tensor  # (N, L + T) 1 on real tokens
    mask: torch.Tensor  # (N, T) 1 on completion tokens up to and including the first EOS
    prompt_len: int  # L
    texts: list  # N decoded completions


def eos_ids(model, tok) -> list:
    """Where sampling stops: the tokenizer's EOS, the generation config's EOS ids and the special token that
    closes an assistant turn in the chat template. They can disagree: Qwen2.5 base ends with <|endoftext|> in
    its configs, but its chat template ends turns with <|im_end|> (docs/design.md, row 10)."""
    ids = model.generation_config.eos_token_id
    ids = {ids} if isinstance(ids, int) else set(ids or [])
    return sorted(ids | {tok.eos_token_id, end_of_turn_id(tok)} - {None})


@functools.cache  # called before every rollout; the answer is fixed per tokenizer
def end_of_turn_id(tok) -> int | None:
    """The first special token after the assistant's text in a rendered one-turn conversation."""
    if not tok.chat_template:
        return None
    marker = "PROGRPO-TURN-TEXT"
    try:
        text = tok.apply_chat_template([{"role": "user", "content": "q"},
                                        {"role": "assistant", "content": marker}], tokenize=False)
    except Exception:  # a template's own raise_exception (jinja2 errors vary): no turn token to add
        return None
    if marker not in text:  # the template rewrote the assistant's text
        return None
    special = set(tok.all_special_ids) | {i for i, t in tok.added_tokens_decoder.items() if t.special}
    after = tok(text[text.rfind(marker) + len(marker):], add_special_tokens=False).input_ids
    return next((i for i in after if i in special), None)


@torch.no_grad()
def sample(model, tok, prompts: list, n: int, max_new_tokens: int, temperature: float = 1.0,
           top_p: float = 1.0, static_cache: bool = False) -> Rollout:
    """n completions for each prompt (rows grouped by prompt: row p * n + i). static_cache: a
    fixed-size KV cache, which transformers compiles (CUDA graphs) on CUDA; prompts are then padded
    to a multiple of 64 tokens so that a few shapes cover every batch and compiled graphs are reused."""
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False,
              pad_to_multiple_of=64 if static_cache else None).to(model.device)
    ids, attn = enc.input_ids.repeat_interleave(n, 0), enc.attention_mask.repeat_interleave(n, 0)
    stop = eos_ids(model, tok)
    # A full config, so that the model's own defaults (Qwen's top_k=20, repetition penalty) stay out.
    sampling = dict(do_sample=True, temperature=temperature, top_p=top_p, top_k=0) if temperature > 0 else {}
    config = GenerationConfig(**sampling, repetition_penalty=1.0, max_new_tokens=max_new_tokens,
                              remove_invalid_values=True,  # NaN logits: sample; the loss check stops the run
                              eos_token_id=stop, pad_token_id=tok.pad_token_id,
                              cache_implementation="static" if static_cache else None)
    was_training = model.training
    model.eval()
    cache = None
    if not static_cache and n > 1 and enc.input_ids.shape[1] > 1:  # each prompt's prefill once, not n times:
        cache = DynamicCache(config=model.config)  # its KV cache is repeated for its n samples (same numbers)
        pos = (enc.attention_mask.cumsum(1) - 1).clamp(min=0)  # as generate() places left-padded prompts
        model(input_ids=enc.input_ids[:, :-1], attention_mask=enc.attention_mask[:, :-1],
              position_ids=pos[:, :-1], cache=cache, use_cache=True)
        cache.batch_repeat_interleave(n)
    out = model.generate(input_ids=ids, attention_mask=attn, generation_config=config, cache=cache)
    model.train(was_training)
    completion = out[:, ids.shape[1]:]  # (N, T)
    is_eos = torch.isin(completion, torch.tensor(stop, device=completion.device)).long()
    mask = ((is_eos.cumsum(1) - is_eos) == 0).long()  # up to and including the first EOS
    texts = tok.batch_decode(completion * mask + tok.pad_token_id * (1 - mask), skip_special_tokens=True)
    return Rollout(out, torch.cat([attn, mask], dim=1), mask, ids.shape[1], texts)


def generation_copy(model):
    """A plain copy of the policy for sampling: no LoRA indirection, no 4-bit dequantisation per
    matmul. Generating through peft's unmerged LoRA costs 2-3x in throughput (issue 5's table);
    merging in place and unmerging after drifts the bf16 base a little every step. The copy holds,
    in the run's dtype, the weights that differ from the base's tensors (LoRA-wrapped or 4-bit ones,
    written by sync_generation_copy before each rollout); the rest (embeddings, an untied lm_head,
    norms, biases) are the base's own tensors, shared: at Qwen2.5-7B 2.2 GB less. None is returned
    when the copy would take more than 80% of the free GPU memory."""
    base = model.get_base_model()
    dtype = base.get_output_embeddings().weight.dtype  # the run's dtype (never quantised)
    with torch.device("meta"):  # no random init: every weight is written by the sync or shared
        gen = AutoModelForCausalLM.from_config(base.config, dtype=dtype)
    own = []  # (module, attr, meta parameter) that the copy holds itself
    for name, p in list(gen.named_parameters()):  # tied weights appear once
        module, attr = name.rsplit(".", 1)
        w, changes = policy_weight(base, name)
        if changes:
            own.append((gen.get_submodule(module), attr, p))
        else:  # the base's frozen Parameter itself
            setattr(gen.get_submodule(module), attr, w)
    size = sum(p.numel() * p.element_size() for _, _, p in own)
    if model.device.type == "cuda" and size > 0.8 * torch.cuda.mem_get_info()[0]:
        return None
    for module, attr, p in own:
        setattr(module, attr, torch.nn.Parameter(torch.empty_like(p, device=model.device),
                                                 requires_grad=False))
    gen.tie_weights()  # an lm_head tied to the embeddings follows them to the shared tensor
    for name, buf in list(gen.named_buffers()):  # e.g. rotary inv_freq: fixed, copied once
        module, attr = name.rsplit(".", 1)
        gen.get_submodule(module).register_buffer(attr, base.get_buffer(name).clone(), persistent=False)
    gen.generation_config = base.generation_config
    gen.eval().requires_grad_(False)  # the shared tensors are frozen base weights already
    sync_generation_copy(model, gen)
    return gen


def policy_weight(base, name: str):
    """(the base's tensor behind parameter `name`, whether the policy's weight differs from it): it does for
    a 4-bit weight (NF4 codes, to dequantise) and a LoRA-wrapped weight (plus LoRA's update)."""
    module, attr = name.rsplit(".", 1)
    src = base.get_submodule(module)
    layer = getattr(src, "base_layer", src)  # a LoRA-wrapped layer keeps the original here
    w = getattr(layer, attr)
    return w, hasattr(w, "quant_state") or (attr == "weight" and layer is not src)


@torch.no_grad()
def sync_generation_copy(model, gen):
    """gen's own weights = the policy's: base weight (dequantised if 4-bit) + LoRA's scale * B @ A."""
    base = model.get_base_model()
    for name, p in gen.named_parameters():  # tied weights appear once
        w, changes = policy_weight(base, name)
        if not changes:  # shared with the base
            continue
        if hasattr(w, "quant_state"):  # bitsandbytes 4-bit: NF4 codes + scales -> dense
            import bitsandbytes.functional as bnbf  # only with a 4-bit base
            w = bnbf.dequantize_4bit(w.data, w.quant_state)
        src = base.get_submodule(name.rsplit(".", 1)[0])
        if hasattr(src, "base_layer") and name.endswith(".weight"):
            w = w + sum(src.get_delta_weight(a) for a in src.active_adapters)
        p.copy_(w)


def token_logprobs(model, seqs: torch.Tensor, attn: torch.Tensor, start: int, temperature: float = 1.0,
                   prompt_rows: torch.Tensor | None = None):
    """log pi(seqs[:, t] | seqs[:, <t]) and the entropy of that next-token distribution for
    t = start+1 .. end: two (N, L+T-1-start) float32 tensors, 0 where a column is padding in every row.
    prompt_rows (N,) bool: also, without gradient, the log-probs of tokens 1 .. start of those rows
    (their prompts, for c(q)): a third tensor (rows, start), from the same forward.
    Columns that are padding in every row (left of the longest prompt, right of the longest
    completion) are cut off first, so padding costs no compute. The decoder stops at the hidden
    states; logprob_kernel.token_logprobs_entropy applies the frozen lm_head without building the logits."""
    width, used = seqs.shape[1], attn.any(0).nonzero()
    a, b = used[0].item(), used[-1].item() + 1  # keep columns [a, b)
    first = max(start - a, 0)  # where predictions start in the cut sequence
    seqs, attn = seqs[:, a:b], attn[:, a:b]
    base = model.get_base_model()
    pos = (attn.cumsum(1) - 1).clamp(min=0)  # positions as generate() saw them under left padding
    hidden = decode(base, seqs, attn, pos, first + 1)

    def score(h, targets):  # (n, t, H) hidden states, position t predicting targets (n, t)
        n, t, H = h.shape
        logp, ent = logprob_kernel.token_logprobs_entropy(h.reshape(n * t, H), base.lm_head.weight,
                                                          targets.reshape(n * t), temperature)
        return logp.view(n, t), ent.view(n, t)

    logp, ent = score(hidden[:, first:-1], seqs[:, first + 1:])
    pad = (max(a - start, 0), width - b)  # back to full width: zeros for the columns cut off
    out = torch.nn.functional.pad(logp, pad), torch.nn.functional.pad(ent, pad)
    if prompt_rows is None:
        return out
    with torch.no_grad():  # confidences are constants: no graph kept for them
        prompt = score(hidden[prompt_rows, :first], seqs[prompt_rows, 1:first + 1])[0]
    return *out, torch.nn.functional.pad(prompt, (start - first, 0))


def decode(base, seqs, attn, pos, prompt: int) -> torch.Tensor:
    """The decoder's last hidden states (N, W, H) for seqs (N, W). When rows come in blocks of n > 1 that
    share their first `prompt` tokens (a group's samples of one prompt), those tokens run once per block and
    their KV cache is repeated for the block's rows: the same numbers and gradients (repeat_interleave sums
    them back), a prompt's compute once instead of n times. Not under gradient checkpointing (no cache)."""
    head = torch.cat([seqs[:, :prompt], attn[:, :prompt]], 1)  # (N, 2 * prompt): what a block shares
    n = next((i for i in range(1, len(head)) if not torch.equal(head[i], head[0])), len(head))
    blocks = head.view(len(head) // n, n, -1) if len(head) % n == 0 else None
    if n == 1 or blocks is None or not (blocks == blocks[:, :1]).all() or base.is_gradient_checkpointing:
        return base.model(input_ids=seqs, attention_mask=attn, position_ids=pos,
                          use_cache=False).last_hidden_state
    cache = DynamicCache(config=base.config)
    shared = base.model(input_ids=seqs[::n, :prompt], attention_mask=attn[::n, :prompt],
                        position_ids=pos[::n, :prompt], cache=cache,
                        use_cache=True).last_hidden_state  # (N / n, prompt, H)
    cache.batch_repeat_interleave(n)
    rest = base.model(input_ids=seqs[:, prompt:], attention_mask=attn, position_ids=pos[:, prompt:],
                      cache=cache, use_cache=True).last_hidden_state  # (N, W - prompt, H)
    return torch.cat([shared.repeat_interleave(n, 0), rest], 1)


@torch.no_grad()
def token_logprobs_batched(model, seqs, attn, start: int, micro_batch: int, temperature: float = 1.0,
                           prompt_rows: torch.Tensor | None = None):
    """token_logprobs without gradient, micro_batch rows per forward pass (reference, evaluation)."""
    parts = [token_logprobs(model, seqs[i:i + micro_batch], attn[i:i + micro_batch], start, temperature,
                            None if prompt_rows is None else prompt_rows[i:i + micro_batch])
             for i in range(0, len(seqs), micro_batch)]
    return tuple(torch.cat(p) for p in zip(*parts))
