"""memory.py: the estimator's arithmetic by hand for published Qwen2.5 shapes, and its parts against what
torch, peft, bitsandbytes and transformers allocate for small models built on the CPU."""
import tempfile
import weakref

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from transformers import Qwen2Config, Qwen2ForCausalLM

import common
import memory

GiB = 2**30
# Published shapes (the hub's config.json of Qwen/Qwen2.5-0.5B, -1.5B, -7B).
Q05 = dict(hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
           intermediate_size=4864, vocab_size=151936, tie_word_embeddings=True)
Q15 = dict(hidden_size=1536, num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2,
           intermediate_size=8960, vocab_size=151936, tie_word_embeddings=True)
Q7 = dict(hidden_size=3584, num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
          intermediate_size=18944, vocab_size=152064, tie_word_embeddings=False)
DEFAULT = dict(prompt_tokens=200, new_tokens=1024, prompts=8, group=8, micro_batch=8, load_in_4bit=True,
               dtype="bf16", gradient_checkpointing=True, fast_generation=True, lora_rank=16)  # progrpo's hub run


def default_estimate(shape, **change):
    return memory.estimate(Qwen2Config(**shape), **{**DEFAULT, **change})


def test_parameter_counts_by_hand_and_built():
    # per layer: q (H x H + H bias), k and v (H x kv_heads*128 + bias), o (H x H), 3 MLP (H x I), 2 norms (H)
    # 0.5B: head_dim 896 / 14 = 64, k/v width 2 x 64 = 128
    layer = (896 * 896 + 896) + 2 * (896 * 128 + 128) + 896 * 896 + 3 * 896 * 4864 + 2 * 896
    q05 = 24 * layer + 896 + 151936 * 896  # + final norm + tied embeddings
    # 1.5B: head_dim 128, k/v width 256
    layer = (1536 * 1536 + 1536) + 2 * (1536 * 256 + 256) + 1536 * 1536 + 3 * 1536 * 8960 + 2 * 1536
    q15 = 28 * layer + 1536 + 151936 * 1536
    # 7B: head_dim 128, k/v width 512, embeddings and lm_head separate
    layer = (3584 * 3584 + 3584) + 2 * (3584 * 512 + 512) + 3584 * 3584 + 3 * 3584 * 18944 + 2 * 3584
    q7 = 28 * layer + 3584 + 2 * 152064 * 3584
    assert (q05, q15, q7) == (494_032_768, 1_543_714_304, 7_615_616_512)  # 494M, 1.54B, 7.62B as published
    for shape, n in [(Q05, q05), (Q15, q15), (Q7, q7)]:
        assert memory.param_count(Qwen2Config(**shape)) == n
        with torch.device("meta"):  # the real module tree, no memory
            assert sum(p.numel() for p in Qwen2ForCausalLM(Qwen2Config(**shape)).parameters()) == n


@pytest.mark.parametrize("attention_bias", [False, True])
def test_llama_shapes(attention_bias):
    """Llama-family configs (SmolLM2-135M's shapes): head_dim from the config, biases only when asked."""
    from transformers import LlamaConfig, LlamaForCausalLM
    config = LlamaConfig(hidden_size=576, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                         intermediate_size=1536, vocab_size=49152, tie_word_embeddings=True,
                         attention_bias=attention_bias)
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    assert memory.param_count(config) == sum(p.numel() for p in model.parameters())
    assert memory.param_count(config) == 134_515_008 + attention_bias * 30 * (576 + 2 * 192 + 576)


def test_lora_count_by_hand_and_by_peft():
    from peft import LoraConfig, get_peft_model
    # r x (in + out) for q, k, v, o, gate, up, down; 28 layers; r 16
    per_layer = (1536 + 1536) + 2 * (1536 + 256) + (1536 + 1536) + 3 * (1536 + 8960)
    assert memory.lora_count(Qwen2Config(**Q15), 16) == 28 * 16 * per_layer == 18_464_768
    assert memory.lora_count(Qwen2Config(**Q15), 8, "q_proj,v_proj") == 28 * 8 * ((1536 + 1536) + (1536 + 256))
    with torch.device("meta"):
        model = get_peft_model(Qwen2ForCausalLM(Qwen2Config(**Q15)),
                               LoraConfig(r=16, target_modules="all-linear", task_type="CAUSAL_LM"))
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 18_464_768


def test_nf4_base_bytes_of_1_5b_by_hand():
    # One weight of n elements: n / 2 (4 bits) + n / 64 (uint8 absmax per block of 64) + 4 x ceil(n / 64 / 256)
    # (fp32 absmax of the absmax) + 1092 (NF4 code 16 x 4, absmax code 256 x 4, offset 4).
    q = 1536 * 1536 // 2 + 1536 * 1536 // 64 + 4 * 144 + 1092  # 2,359,296 weights, 36,864 blocks, 144 x 256
    k = 1536 * 256 // 2 + 1536 * 256 // 64 + 4 * 24 + 1092  # 393,216 weights, 6,144 blocks
    mlp = 1536 * 8960 // 2 + 1536 * 8960 // 64 + 4 * 840 + 1092  # 13,762,560 weights, 215,040 blocks
    nf4 = 28 * (2 * q + 2 * k + 3 * mlp)  # q, o; k, v; gate, up, down
    dense = 151936 * 1536 + 28 * (1536 + 2 * 256) + 28 * 2 * 1536 + 1536  # embeddings, biases, norms: bf16
    assert nf4 + 2 * dense == 1_143_140_752
    assert default_estimate(Q15)["parts"]["base weights"] == 1_143_140_752


def test_kv_cache_of_1_5b_by_hand():
    # 8 x 8 rows, the prompt padded to 256 (a multiple of 64) + 1024 new - 1 (generate() never caches the last
    # token) positions, 28 layers x K and V x 2 kv heads x 128 x 2 bytes
    kv = 64 * (256 + 1024 - 1) * 28 * 2 * 2 * 128 * 2
    assert default_estimate(Q15)["parts"]["KV cache"] == kv == 2_346_975_232
    assert default_estimate(Q15, prompt_tokens=256)["parts"]["KV cache"] == kv  # already a multiple of 64
    # sampling through the peft model: a dynamic cache, the prompt unpadded
    assert default_estimate(Q15, fast_generation=False)["parts"]["KV cache"] == 64 * (200 + 1023) * 28 * 2 * 256 * 2


def test_default_1_5b_run_by_hand():
    est = default_estimate(Q15)
    base, lora_opt = 1_143_140_752, 16 * 18_464_768  # fp32 weight, gradient, two AdamW moments
    copy = 2 * 28 * (2 * 1536 * 1536 + 2 * 1536 * 256 + 3 * 1536 * 8960)  # every NF4 linear weight in bf16
    kv = 2_346_975_232
    temps = max(64 * 256 * (3 * 8960 + 4 * 1536) * 2,  # prefill MLP of 64 rows x 256 tokens
                2 * 64 * 1279 * 12 * 128 * 2)  # K and V repeated to 12 heads over the 1279-long cache
    logits = 64 * 151936 * (2 + 4 + 4)  # bf16 logits, fp32 copy, softmax
    tokens = 8 * (200 + 1024)  # one micro-batch
    norm = 4 * 1536 + 4
    lora_inputs = 6 * 4 * (1536 + 16) + 4 * (8960 + 16)  # fp32 casts: q k v o gate up, down
    layer = 2 * norm + lora_inputs + 4 * 1536 * 2 + 4 * 12 + 3 * 8960 * 2  # + sdpa q k v out, lse; gate silu up
    backward = 2 * 8960 * 2 + 4 * 8960 + 2 * 1536 * 2
    activations = tokens * (28 * 1536 * 2 + layer + backward)  # 28 checkpointed inputs
    chunk = 16 * -(-8192 // (16 * 5))  # 8192 scored tokens in 5 chunks of <= 1760 (512 MiB / (151936 x 2))
    kernel = chunk * 151936 * 2 + 8192 * 1536 * 2  # logits buffer + d logp / d hidden
    parts = {"base weights": base, "LoRA + optimizer": lora_opt, "generation copy": copy, "KV cache": kv,
             "rollout temporaries": temps, "sampling logits": logits, "activations": activations,
             "logprob kernel": kernel}
    assert est["parts"] == parts
    assert est["phases"] == {"sampling": base + lora_opt + copy + kv + temps + logits,
                             "update": base + lora_opt + copy + activations + kernel}
    assert (est["peak_phase"], est["peak"]) == ("update", 7_673_155_472)  # 7.1 GiB
    assert est["lora_params"] == 18_464_768 and est["cuda_context"] == memory.CUDA_CONTEXT


def test_flags_move_the_estimate_the_right_way():
    est = default_estimate(Q15)
    assert default_estimate(Q15, micro_batch=0)["parts"]["activations"] == 8 * est["parts"]["activations"]
    assert default_estimate(Q15, micro_batch=4)["peak"] < est["peak"]
    assert default_estimate(Q15, fast_generation=False)["parts"]["generation copy"] == 0
    assert default_estimate(Q15, gradient_checkpointing=False)["parts"]["activations"] > 5 * est["parts"]["activations"]
    assert default_estimate(Q15, load_in_4bit=False)["parts"]["base weights"] == 2 * 1_543_714_304
    assert default_estimate(Q15, new_tokens=512)["peak"] < est["peak"]


def small_folder(tied=True) -> str:
    """A small random Qwen2 saved as a folder. Widths chosen so that one weight has absmax blocks that do
    not fill a block of 256 (640 of them)."""
    config = Qwen2Config(vocab_size=1000, hidden_size=128, intermediate_size=320, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=tied)
    folder = tempfile.mkdtemp()
    Qwen2ForCausalLM(config).save_pretrained(folder)
    return folder


def nbytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def own_bytes(gen, model) -> int:
    """The bytes of the generation copy's parameters that are not the base model's own tensors."""
    shared = {p.untyped_storage().data_ptr() for p in model.parameters()}
    return nbytes(p for p in gen.parameters() if p.untyped_storage().data_ptr() not in shared)


@pytest.mark.parametrize("tied", [True, False])
def test_base_lora_and_copy_bytes_of_built_models(tied):
    folder = small_folder(tied)
    flags = {**DEFAULT, "prompt_tokens": 8, "new_tokens": 8, "lora_rank": 8}
    model, _ = common.load_model(folder, "cpu", load_in_4bit=True, lora_rank=8, dtype="bf16")  # NF4, as on CUDA
    est = memory.estimate(model.config, **flags)
    quantised = [p for n, p in model.named_parameters() if hasattr(p, "quant_state")]
    states = [p.quant_state for p in quantised]
    assert len(quantised) == 2 * 7  # lm_head and the embeddings stay bf16
    stored = [p for n, p in model.named_parameters() if "lora_" not in n] + [s.absmax for s in states] + [
        s.code for s in states] + [s.state2.absmax for s in states] + [s.state2.code for s in states] + [
        s.offset for s in states]
    assert nbytes(stored) == est["parts"]["base weights"]
    assert own_bytes(common.generation_copy(model), model) == est["parts"]["generation copy"]  # dequantised

    model, _ = common.load_model(folder, "cpu", lora_rank=8, dtype="bf16")  # dense base; a real update step
    est = memory.estimate(model.config, **{**flags, "load_in_4bit": False})
    assert nbytes(p for n, p in model.named_parameters() if "lora_" not in n) == est["parts"]["base weights"]
    lora = [p for p in model.parameters() if p.requires_grad]
    assert all(p.dtype == torch.float32 for p in lora)
    opt = torch.optim.AdamW(lora, lr=1e-3)
    model(input_ids=torch.randint(0, 1000, (2, 8))).logits.float().mean().backward()
    opt.step()
    moments = [v for s in opt.state.values() for k, v in s.items() if k != "step"]  # step: a CPU scalar
    assert nbytes(lora) + nbytes(p.grad for p in lora) + nbytes(moments) == est["parts"]["LoRA + optimizer"]
    assert own_bytes(common.generation_copy(model), model) == est["parts"]["generation copy"]
    model, _ = common.load_model(folder, "cpu", lora_rank=8, lora_targets="q_proj,v_proj", dtype="bf16")
    est = memory.estimate(model.config, **{**flags, "load_in_4bit": False, "lora_targets": "q_proj,v_proj"})
    assert own_bytes(common.generation_copy(model), model) == est["parts"]["generation copy"] == 2 * (
        128 * 128 + 128 * 64) * 2  # 2 layers x (q + v) x bf16: the other weights are the base's own


def test_static_kv_cache_of_generate():
    config = Qwen2Config(vocab_size=100, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=32, tie_word_embeddings=True)
    model = Qwen2ForCausalLM(config).to(torch.bfloat16).eval()
    ids = torch.randint(1, 100, (6, 128))  # 6 rows; a 70-token prompt as common.sample pads it: 128
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=5, min_new_tokens=5,
                         do_sample=False, cache_implementation="static", return_dict_in_generate=True,
                         pad_token_id=0)
    cache = out.past_key_values
    stored = nbytes(t for layer in cache.layers for t in (layer.keys, layer.values))
    est = memory.estimate(config, **{**DEFAULT, "prompt_tokens": 70, "new_tokens": 5, "prompts": 3, "group": 2})
    assert stored == est["parts"]["KV cache"] == 6 * (128 + 5 - 1) * 3 * 2 * 2 * 32 * 2


class LiveBytes(TorchDispatchMode):
    """The most bytes of tensor storage allocated inside the block and alive at once (storages that existed
    before, listed in `old`, are not counted)."""

    def __init__(self, old):
        super().__init__()
        self.old, self.live, self.now, self.peak = {t.untyped_storage().data_ptr() for t in old}, set(), 0, 0

    def free(self, key, n):
        self.now -= n
        self.live.discard(key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                key = storage.data_ptr()
                if key and key not in self.live and key not in self.old:
                    self.live.add(key)
                    self.now += storage.nbytes()
                    weakref.finalize(storage, self.free, key, storage.nbytes())
        self.peak = max(self.peak, self.now)
        return out


MEASURED = Qwen2Config(vocab_size=1000, hidden_size=256, intermediate_size=704, num_hidden_layers=4,
                       num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)


@pytest.mark.parametrize("checkpointing", [True, False])
def test_training_activations_measured_on_cpu(checkpointing):
    """A micro-batch's forward and backward through the LoRA decoder: the peak of what it allocates
    (saved tensors, the recomputed layer, the gradients) within 5% of the 'activations' part."""
    folder = tempfile.mkdtemp()
    Qwen2ForCausalLM(MEASURED).save_pretrained(folder)
    model, _ = common.load_model(folder, "cpu", lora_rank=8, dtype="bf16", gradient_checkpointing=checkpointing)
    model.train()
    seqs = torch.randint(0, 1000, (4, 128))  # 4 rows x (32 prompt + 96 new)
    attn = torch.ones_like(seqs)
    attn[0, :5], attn[1, -7:] = 0, 0  # left and right padding: sdpa gets a mask
    pos = (attn.cumsum(1) - 1).clamp(min=0)

    def step():
        model.get_base_model().model(input_ids=seqs, attention_mask=attn, position_ids=pos,
                                     use_cache=False).last_hidden_state.sum().backward()

    step()  # the LoRA gradients exist from here on, as between training steps
    old = [*model.parameters(), *model.buffers(), *(p.grad for p in model.parameters() if p.grad is not None),
           seqs, attn, pos]
    with LiveBytes(old) as live:
        step()
    est = memory.estimate(MEASURED, **{**DEFAULT, "prompt_tokens": 32, "new_tokens": 96, "prompts": 1, "group": 4,
                                       "micro_batch": 4, "load_in_4bit": False, "lora_rank": 8,
                                       "gradient_checkpointing": checkpointing})
    assert live.peak == pytest.approx(est["parts"]["activations"], rel=0.05)


def test_rollout_measured_on_cpu():
    """common.sample on a merged copy with a static cache: the KV cache, the prefill and the logits within
    10% of the estimate (what is left: rotary cos/sin and the mask, 2 x head_dim + cache length per token)."""
    _, tok = common.tiny_model()
    tok.padding_side = "left"
    config = Qwen2Config(**{**MEASURED.to_dict(), "vocab_size": len(tok), "pad_token_id": 0, "eos_token_id": 1})
    gen = Qwen2ForCausalLM(config).to(torch.bfloat16).eval()
    with LiveBytes([*gen.parameters(), *gen.buffers()]) as live:
        common.sample(gen, tok, ["sum 7", "sum 2"], 8, 16, static_cache=True)  # prompts padded to 64
    est = memory.estimate(config, **{**DEFAULT, "prompt_tokens": 2, "new_tokens": 16, "prompts": 2})
    parts = est["parts"]
    assert live.peak == pytest.approx(parts["KV cache"] + parts["rollout temporaries"] + parts["sampling logits"],
                                      rel=0.10)


def suggested(line: str) -> dict:
    """The flags an advice line suggests, as estimate() keywords."""
    words, change = line.split("fits with ")[1].split(" (")[0].split(), {}
    names = {"--micro-batch": "micro_batch", "--max-new-tokens": "new_tokens", "--prompts-per-step": "prompts"}
    for i, w in enumerate(words):
        if w == "--no-fast-generation":
            change["fast_generation"] = False
        elif w in names:
            change[names[w]] = int(words[i + 1])
    return change


def test_advice():
    est = default_estimate(Q15)
    assert memory.advice(est, 16 * GiB, est["flags"]) is None  # fits a 16 GB card
    big = default_estimate(Q7)  # the 7B generation copy alone is 12.2 GiB (bf16 linear weights)
    line = memory.advice(big, int(15.6 * GiB), big["flags"])
    assert line.startswith(f"memory: estimated peak {big['peak'] / GiB:.2f} GiB (update) > 15.60 GiB free; ")
    assert suggested(line) == {"fast_generation": False}
    assert suggested(memory.advice(est, int(7.1 * GiB), est["flags"])) == {"micro_batch": 4}  # before the copy
    line = memory.advice(big, int(12 * GiB), big["flags"])  # only a combination fits
    assert suggested(line) == {"micro_batch": 4, "fast_generation": False} and line.endswith("no single change fits")
    line = memory.advice(est, 1 * GiB, est["flags"])  # the weights alone do not fit
    assert "no single change or combination" in line and "fits with" not in line
    for free in range(2, 30):  # whatever is suggested fits when re-estimated, and is one line
        for e in (est, big, default_estimate(Q7, new_tokens=512, micro_batch=0)):
            line = memory.advice(e, free * GiB, e["flags"])
            if line and "fits with" in line:
                assert memory.estimate(e["config"], **{**e["flags"], **suggested(line)})["peak"] <= free * GiB
                assert "\n" not in line


def test_describe():
    est = default_estimate(Q15)
    line = memory.describe(est, int(15.6 * GiB))
    assert line.startswith("memory estimate: peak 7.1 GiB (update) = base 1.1 + LoRA/opt 0.3 + copy 2.4 + ")
    assert "activations 2.9 + kernel 0.5" in line and "sampling 7.1 GiB" in line
    assert line.endswith("card: 15.6 GiB free") and "\n" not in line
    assert "card" not in memory.describe(est)
    assert "copy" not in memory.describe(default_estimate(Q15, fast_generation=False))


def test_dry_run_plans_the_gpu_run_on_any_machine(capsys):
    """--dry-run: the estimate from the config alone, and exit 0; on a machine without a GPU it plans the GPU
    run (NF4, bf16, checkpointing as flagged), not the CPU one."""
    import progrpo
    with pytest.raises(SystemExit) as e:
        progrpo.main(["--model", "Qwen2.5-1.5B", "--dry-run"])
    assert e.value.code is None
    line = capsys.readouterr().out.strip()
    expected = memory.describe(default_estimate(Q15, prompt_tokens=memory.PROMPT_TOKENS))
    assert line == expected + " | prompts taken as 256 tokens; no GPU here"


def test_preflight_on_a_card_too_small(monkeypatch):
    """On CUDA, before any weight loads: the plan beside the card's free memory; no room for the generation
    copy drops it (as generation_copy did), no room at all is one line with the flags that fit."""
    import progrpo
    import tasks
    args, task = progrpo.Args(max_new_tokens=2, prompts_per_step=8, group_size=8, micro_batch=0), tasks.demo_task()
    full = memory.for_run(args, 10)["peak"]  # the demo's prompts are 10 tokens, at most
    lean = memory.for_run(progrpo.Args(max_new_tokens=2, prompts_per_step=8, group_size=8, micro_batch=0,
                                       fast_generation=False), 10)["peak"]
    for free, fast in ((full + 1, True), (lean, False)):
        monkeypatch.setattr(torch.cuda, "mem_get_info", lambda free=free: (free, 16 * GiB))
        run = progrpo.Args(max_new_tokens=2, prompts_per_step=8, group_size=8, micro_batch=0)
        line = memory.preflight(run, task)
        assert line.startswith("memory estimate: peak ") and run.fast_generation == fast
        assert ("no room for the generation copy" in line) == (not fast)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda: (lean // 4, 16 * GiB))
    with pytest.raises(SystemExit, match=r"^error: memory: estimated peak .* free; fits with --micro-batch"):
        memory.preflight(progrpo.Args(max_new_tokens=2, prompts_per_step=8, group_size=8, micro_batch=0), task)


def test_config_for_without_weights():
    assert memory.config_for("tiny").hidden_size == 64
    folder = small_folder()
    assert memory.config_for(folder).intermediate_size == 320
    config = memory.config_for("Qwen2.5-1.5B")  # cached config, or offline the published shapes
    assert memory.param_count(config) == 1_543_714_304
    with pytest.raises(SystemExit, match="cannot read the config"):
        memory.config_for("no-such-org/no-such-model")
