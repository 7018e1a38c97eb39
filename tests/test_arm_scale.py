"""ARM's scale and the diversity metrics on hand-made inputs: the question mask behind --prompt-conf
question, equivalence classes and reasoning diversity, eval.py's confidence report and its alpha, the
trainer's warning when ARM barely acts, --instruction, --data for eval.py, and skipped_gold across
--resume. (ARM's relative-shift numbers themselves: tests/test_arm.py.)"""
import json
import math

import pytest
import torch

import bench
import common
import eval as ev
import progrpo
import tasks

pytestmark = pytest.mark.usefixtures("keep_signal_handlers")  # in-process runs of progrpo.main (conftest)


def chat_tokenizer():
    tok = common.tiny_model()[1]
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tok.chat_template = bench.CHATML  # ChatML, as Qwen2.5 writes turns
    return tok


def test_question_mask_marks_the_question_only():
    tok = chat_tokenizer()
    prompt = common.format_prompt(tok, "sum 7", "sum 1 2")  # the instruction reuses the question's words
    ids = tok(prompt, add_special_tokens=False).input_ids
    mask = common.question_mask(tok, [prompt], ["sum 7"], len(ids) + 3)  # 3 columns of left padding
    marked = [tok.convert_ids_to_tokens(i) for i, m in zip(ids, mask[0, 3:].tolist()) if m]
    assert mask[0, :3].tolist() == [0, 0, 0] and marked == ["sum", "7"]


def test_question_mask_strips_as_format_prompt_does_and_refuses_a_rewritten_question():
    tok = chat_tokenizer()
    prompt = common.format_prompt(tok, " sum 7 ", "")  # format_prompt strips the user's text
    width = len(tok(prompt, add_special_tokens=False).input_ids)
    assert common.question_mask(tok, [prompt], [" sum 7 "], width).sum().item() == 2  # "sum", "7"
    with pytest.raises(SystemExit, match="^error: --prompt-conf question: the chat template changed"):
        common.question_mask(tok, ["<|im_start|>user\nSUM 7<|im_end|>\n"], ["sum 7"], 10)


def test_prompt_conf_question_trains(tmp_path):
    progrpo.main(["--prompt-conf", "question", "--steps", "3", "--sample-every", "0", "--out", str(tmp_path / "run")])
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(math.isfinite(r["loss"]) for r in rows)


def test_distinct_correct_counts_equivalence_classes():
    math_task = tasks.math_task("m", [])
    assert tasks.distinct_correct(math_task, [r"\boxed{10}", r"\boxed{7 + 3}", r"\boxed{10.0}"]) == 1
    assert tasks.distinct_correct(math_task, []) == 0
    assert tasks.distinct_correct(tasks.demo_task(), ["3 4", "4 3", "3 4", "0 7"]) == 3


def test_reasoning_diversity_by_hand():
    # word 3-grams {a b c, b c d} and {a b c, b c e}: Jaccard 1/3 -> diversity 2/3
    assert tasks.reasoning_diversity(["a b c d", "a b c e"]) == pytest.approx(2 / 3)
    # three texts: pairs (1, 2) identical (J = 1), (1, 3) and (2, 3) disjoint (J = 0): 1 - 1/3
    assert tasks.reasoning_diversity(["x y z", "x y z", "p q r"]) == pytest.approx(2 / 3)
    assert tasks.reasoning_diversity(["only one"]) is None


def test_eval_reports_confidences_and_the_alpha_they_imply(tmp_path):
    out = tmp_path / "e.json"
    ev.main(["--n", "4", "--arm-share", "0.2", "--out", str(out)])
    res = json.loads(out.read_text())["benchmarks"]["demo"]
    s, problems = res["summary"], res["problems"]
    assert s["c_q_p10"] <= s["c_q_p50"] <= s["c_q_p90"] and s["c_o_p10"] <= s["c_o_p50"] <= s["c_o_p90"]
    # the demo has no chat template and no instruction: its prompt is the question
    assert s["c_q_question_p50"] == pytest.approx(s["c_q_p50"])
    spread = sum(torch.tensor(p["confidences"], dtype=torch.float64).std().item() for p in problems) / len(problems)
    assert s["conf_spread"] == pytest.approx(spread) and s["alpha_suggested"] == pytest.approx(0.2 / spread)
    offset = sum(p["prompt_conf"] - sum(p["confidences"]) / 4 for p in problems) / len(problems)
    assert s["conf_offset"] == pytest.approx(offset)
    assert all(len(p["completions"]) == 4 for p in problems)  # grading can be audited from the JSON


def test_eval_reads_a_data_file_with_its_own_instruction(tmp_path):
    data = tmp_path / "mine.jsonl"
    data.write_text(json.dumps({"q": "sum 7", "a": "7"}) + "\n" + json.dumps({"q": "sum 3", "a": r"\frac{1}{0}"}) + "\n")
    out = tmp_path / "e.json"
    ev.main(["--data", str(data), "--question-field", "q", "--answer-field", "a", "--instruction", "", "--n", "2",
             "--max-new-tokens", "2", "--out", str(out)])
    result = json.loads(out.read_text())
    res = result["benchmarks"]["mine"]
    assert result["config"]["instruction"] == "" and res["summary"]["skipped_gold"] == 1  # 1/0 is not a gold
    assert [p["question"] for p in res["problems"]] == ["sum 7"]


def test_instruction_flag_replaces_the_task_instruction():
    assert tasks.from_flags("demo", instruction="think").instruction == "think"
    assert tasks.from_flags("demo").instruction == ""  # the demo's own
    assert tasks.math_task("m", []).instruction == tasks.INSTRUCTION


def test_warning_when_arm_barely_acts(tmp_path, capsys):
    progrpo.main(["--alpha", "1e-6", "--steps", "40", "--sample-every", "0", "--out", str(tmp_path / "run")])
    text = capsys.readouterr().out
    assert text.count("warning: the part of ARM's shift that differs within a group has stayed below 1% of |A| "
                      "for 20 steps: --alpha 1e-06 barely reorders completions") == 1
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["arm_rel_spread"] is None or r["arm_rel_spread"] < 0.01 for r in rows)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["load_in_4bit"] is False and config["gradient_checkpointing"] is False  # as they ran, on CPU


@pytest.mark.parametrize("alpha", ["1", "0"])  # 0: plain GRPO, where ARM is off on purpose
def test_no_warning_at_the_demo_alpha_or_without_arm(tmp_path, capsys, alpha):
    progrpo.main(["--alpha", alpha, "--steps", "30", "--sample-every", "0", "--out", str(tmp_path / "run")])
    assert "warning: ARM" not in capsys.readouterr().out


def test_skipped_gold_stays_cumulative_across_resume(tmp_path):
    data = tmp_path / "p.jsonl"
    data.write_text(json.dumps({"question": "sum 5", "answer": "5"}) + "\n"
                    + json.dumps({"question": "sum 6", "answer": r"\frac{1}{0}"}) + "\n")
    run = tmp_path / "run"
    common_args = ["--data", str(data), "--prompts-per-step", "2", "--group-size", "2", "--max-new-tokens", "2",
                   "--micro-batch", "0", "--save-every", "1", "--sample-every", "0"]
    progrpo.main([*common_args, "--steps", "2", "--out", str(run)])
    progrpo.main(["--resume", str(run), "--steps", "3"])
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["skipped_gold"] for r in rows] == [1, 2, 3]
    assert all(math.isfinite(r["loss"]) for r in rows)
