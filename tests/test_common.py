"""Shared pieces: model names, answer fields, the prompt format, where sampling stops, and the
mapping of every local set."""
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

import common
import tasks


@pytest.mark.parametrize("name, hub_id", [
    ("Qwen2.5-1.5B", "Qwen/Qwen2.5-1.5B"),
    ("Qwen2.5-7B-Instruct", "Qwen/Qwen2.5-7B-Instruct"),
    ("Qwen2.5-Math-1.5B", "Qwen/Qwen2.5-Math-1.5B"),
    ("Qwen2.5-0.5B", "Qwen/Qwen2.5-0.5B"),
    ("someorg/some-model", "someorg/some-model"),
    ("tiny", "tiny"),
])
def test_model_aliases(name, hub_id):
    assert common.resolve_model(name) == hub_id


@pytest.mark.parametrize("name", ["Qwen2.5-2B", "qwen", "Llama-3-8B"])
def test_unknown_model_is_a_clear_error(name):
    with pytest.raises(SystemExit, match="unknown model"):
        common.resolve_model(name)


@pytest.mark.parametrize("value, expected", [
    ("Janet sells 9 eggs.\n#### 1,000", "1000"),  # GSM8K worked solution
    (r"so the answer is $\boxed{\frac{1}{2}}$.", r"\frac{1}{2}"),  # MATH solution
    (27.0, "27"),  # AMC: a JSON number
    (["$\\sqrt{2}$"], "\\sqrt{2}"),  # OlympiadBench: a list of strings
    (r"\frac{\pi}{2}", r"\frac{\pi}{2}"),  # already a final answer
])
def test_gold_reduces_an_answer_field_to_the_final_answer(value, expected):
    assert tasks.gold(value) == expected


def test_prompt_uses_the_chat_template_when_there_is_one():
    _, tok = common.tiny_model()
    assert common.format_prompt(tok, "sum 7", "") == "sum 7"
    tok.chat_template = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}<assistant>"
    assert common.format_prompt(tok, "What is 1+1?") == f"<user>What is 1+1?\n{tasks.INSTRUCTION}<assistant>"


@pytest.mark.parametrize("name, rows", [("math500", 500), ("aime24", 30), ("amc23", 40), ("gsm8k", 1319),
                                        ("minerva_math", 272), ("olympiadbench", 675)])
def test_every_local_benchmark_maps_every_row(shared_data, name, rows):
    problems = tasks.load_problems(name, tasks.BENCHMARKS, str(shared_data))
    assert len(problems) == rows
    assert all(p["question"].strip() and p["answer"].strip() for p in problems)


def test_local_training_set_and_limit(shared_data):
    problems = tasks.load_problems("gsm8k", tasks.TASKS, str(shared_data), limit=5)
    assert len(problems) == 5 and problems[0]["answer"] == "72"  # Natalia's clips


def test_unknown_set_and_missing_local_copy_are_clear_errors(tmp_path):
    with pytest.raises(SystemExit, match="unknown data set 'nope'"):
        tasks.load_problems("nope", tasks.TASKS)
    with pytest.raises(SystemExit, match="No such file or directory"):
        tasks.load_problems("math500", tasks.BENCHMARKS, str(tmp_path))
    with pytest.raises(SystemExit, match="no local layout"):
        tasks.load_problems("dapo", tasks.TASKS, str(tmp_path))


CHATML = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


def qwen_base_like():
    """A tokenizer and model whose configs disagree as Qwen2.5 base's do: EOS and the generation
    config say <|endoftext|>, the chat template ends each turn with <|im_end|>. The model's lm_head
    is zero, so greedy decoding picks token 0, <|im_end|>, every time."""
    words = ["<|im_end|>", "<|endoftext|>", "<|im_start|>", "user", "assistant", "q", "a"]
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="a"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|endoftext|>", pad_token="<|endoftext|>",
                                  additional_special_tokens=["<|im_start|>", "<|im_end|>"])
    tok.chat_template, tok.padding_side = CHATML, "left"
    config = Qwen2Config(vocab_size=len(words), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=False,
                         eos_token_id=1, pad_token_id=1, bos_token_id=None)
    model = Qwen2ForCausalLM(config)
    model.generation_config.eos_token_id = 1
    with torch.no_grad():
        model.lm_head.weight.zero_()
    return model, tok


def test_sampling_stops_at_the_chat_templates_end_of_turn(monkeypatch):
    model, tok = qwen_base_like()
    im_end, eot = tok.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"])
    assert common.end_of_turn_id(tok) == im_end and common.eos_ids(model, tok) == [im_end, eot]
    prompt = common.format_prompt(tok, "q", instruction="")
    ro = common.sample(model, tok, [prompt], 1, max_new_tokens=6, temperature=0)
    assert ro.seqs.shape[1] == ro.prompt_len + 1 and ro.mask.tolist() == [[1]]  # stopped at <|im_end|>
    monkeypatch.setattr(common, "end_of_turn_id", lambda tok: None)  # the configs' EOS alone: runs on
    assert common.sample(model, tok, [prompt], 1, max_new_tokens=6, temperature=0).seqs.shape[1] == ro.prompt_len + 6


def test_no_end_of_turn_without_a_chat_template():
    model, tok = common.tiny_model()
    assert common.end_of_turn_id(tok) is None and common.eos_ids(model, tok) == [tok.eos_token_id]


def test_cpu_runs_on_one_thread_unless_omp_num_threads_says_otherwise(monkeypatch):
    threads = torch.get_num_threads()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    try:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        assert common.pick_device() == "cpu" and torch.get_num_threads() == 1
        torch.set_num_threads(2)
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        assert common.pick_device() == "cpu" and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)
