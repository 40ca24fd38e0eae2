"""Evaluation without a cluster: metrics, self-consistency, method labels, the report, model sizes, the sweep grid."""

from __future__ import annotations

import struct

import pytest

from ray_distill.config import load_config
from ray_distill.errors import ConfigError
from ray_distill.evaluation.grid import sweep_trials, teacher_settings
from ray_distill.evaluation.methods import METHOD_ORDER, method_label
from ray_distill.evaluation.metrics import model_metrics, self_consistent, set_metrics
from ray_distill.evaluation.report import benchmark_table, markdown, plot, summary_table
from ray_distill.models.size import parameter_count, size_label


def episode(example_id, correct, *, dataset="world-fact-test", domain="fact", answered_by="final_answer",
            parse_errors=0, execution_errors=0, steps=2, em=None, f1=None, judge=None):
    return {"dataset": dataset, "example_id": example_id, "sample": 0, "domain": domain, "correct": correct,
            "exact_match": em if em is not None else float(correct), "f1": f1 if f1 is not None else float(correct),
            "judge_correct": judge, "final_answer": "x" if answered_by else None, "answered_by": answered_by,
            "parse_errors": parse_errors, "execution_errors": execution_errors, "num_steps": steps,
            "context_exhausted": None}


def cot(example_id, sample, answer, correct, domain="math", dataset="math500", finish="stop"):
    return {"dataset": dataset, "example_id": example_id, "sample": sample, "domain": domain, "answer": answer,
            "correct": correct, "exact_match": None, "f1": None, "finish_reason": finish}


def test_agent_metrics_count_what_went_wrong_beside_the_accuracy():
    rows = [episode("a", True, em=1.0, f1=1.0), episode("b", False, answered_by="forced", parse_errors=2, steps=5, f1=0.5),
            episode("c", False, answered_by=None, execution_errors=1, steps=5, f1=0.0, judge=True),
            episode("d", True, judge=False)]
    m = set_metrics(rows, "agent")
    assert m["questions"] == 4 and m["accuracy"] == 0.5
    assert m["exact_match"] == 0.5 and m["f1"] == pytest.approx((1 + 0.5 + 0 + 1) / 4, abs=1e-4)
    assert m["judge_accuracy"] == 0.5  # over the two judged answers only
    assert (m["answered_by_final_answer"], m["answered_by_forced"], m["unanswered"]) == (2, 1, 1)
    assert (m["parse_errors"], m["execution_errors"]) == (2, 1)
    assert (m["episodes_with_parse_errors"], m["episodes_with_execution_errors"]) == (1, 1)
    assert m["mean_steps"] == 3.5


def test_self_consistency_takes_the_most_common_answer_after_normalisation():
    samples = [cot("q", 0, "3", False), cot("q", 1, "\\frac{1}{2}", True), cot("q", 2, "0.5", True),
               cot("q", 3, "3", False), cot("q", 4, "1/2", True)]
    # Three spellings of a half are one answer, which beats "3" twice; the first of them represents it.
    assert self_consistent(samples, "answer")["sample"] == 1
    assert self_consistent(samples[:4], "answer")["answer"] == "3"  # 2 against 2: the answer seen first
    # Ties go to the answer given first; unanswered samples do not vote.
    tie = [cot("q", 0, None, False), cot("q", 1, "7", True), cot("q", 2, "8", False)]
    assert self_consistent(tie, "answer")["answer"] == "7"
    assert self_consistent([cot("q", 0, None, False)], "answer")["sample"] == 0
    facts = [cot("f", 0, "The Nile", True, domain="fact"), cot("f", 1, "nile", True, domain="fact"),
             cot("f", 2, "Amazon", False, domain="fact")]
    assert self_consistent(facts, "answer")["answer"] == "The Nile"


def test_cot_metrics_vote_per_question_and_average_over_sets():
    rows = [cot("1", 0, "4", True), cot("1", 1, "5", False), cot("1", 2, "4", True),
            cot("2", 0, None, False, finish="length"), cot("2", 1, "9", False), cot("2", 2, "9", False),
            cot("h", 0, "Paris", True, domain="fact", dataset="hotpotqa")]
    rows[-1].update(exact_match=1.0, f1=1.0)
    result = model_metrics(rows, ["math500", "hotpotqa", "aime"], "cot")
    assert list(result["sets"]) == ["math500", "hotpotqa"]  # a set without records is left out, order kept
    math = result["sets"]["math500"]
    assert (math["questions"], math["samples_per_question"], math["accuracy"]) == (2, 3.0, 0.5)
    assert (math["unanswered"], math["truncated"]) == (1, 1)
    assert result["sets"]["hotpotqa"]["exact_match"] == 1.0
    assert result["average"] == 0.75  # unweighted over sets, as the paper's Avg.


def test_methods_are_the_columns_of_table_2():
    assert method_label(None, "cot") == "CoT prompt"
    assert method_label("cot", "cot") == "CoT distill"
    assert method_label("agent-no-ftp", "agent") == "agent distill"
    assert method_label("agent-ftp", "agent") == "+FTP"
    assert method_label("agent-no-ftp", "agent", sag=8) == "+SAG"
    assert method_label("agent-ftp", "agent", sag=8) == "+FTP+SAG"
    assert method_label(None, "agent") == "agent prompt"
    assert method_label("cot", "cot", self_consistency=5) == "CoT distill +SC(N=5)"
    # SAG's N is named unless it is the paper's 8, so sweeps over several N keep their trials apart.
    assert method_label("agent-ftp", "agent", sag=4) == "+FTP+SAG(N=4)" != method_label("agent-ftp", "agent", sag=8)
    assert method_label("agent-ftp", "cot") not in METHOD_ORDER  # a combination the paper does not report


def result(student, parameters, method, average, sets=None, mode="agent"):
    sets = sets or {"hotpotqa": {"questions": 2, "samples_per_question": 1, "accuracy": average, "exact_match": 0.5,
                                 "f1": 0.6, "answered_by_final_answer": 2, "parse_errors": 1, "execution_errors": 0,
                                 "mean_steps": 2.5}}
    return {"student": student, "parameters": parameters, "method": method, "average": average, "mode": mode,
            "sets": sets}


def test_the_report_has_a_row_per_student_by_size_and_the_methods_in_the_papers_order():
    results = [result("qwen-7b", 7_600_000_000, "+FTP+SAG", 0.4268), result("qwen-0.5b", 494_000_000, "+FTP", 0.1),
               result("qwen-7b", 7_600_000_000, "agent distill", 0.3985),
               result("qwen-0.5b", 494_000_000, "agent distill", 0.05)]
    lines = summary_table(results).splitlines()
    assert lines[0] == "| student | agent distill | +FTP | +FTP+SAG |"
    assert lines[2] == "| qwen-0.5b (494M) | 5.00 | 10.00 |  |"
    assert lines[3] == "| qwen-7b (7.6B) | 39.85 |  | 42.68 |"
    per_benchmark = benchmark_table(results).splitlines()
    assert per_benchmark[2] == "| qwen-0.5b (494M) | agent distill | 5.00 | 5.00 | 2 / 2 | 1 | 0 | 2.50 |"
    assert "| qwen-7b (7.6B) | +FTP+SAG | hotpotqa | 50.00 | 60.00 | - |" in markdown(results)


def test_the_plot_draws_accuracy_against_student_size(tmp_path):
    results = [result("a", 5e8, "+FTP", 0.1), result("b", 1.5e9, "+FTP", 0.2), result("b", 1.5e9, "agent distill", 0.15)]
    path = plot(results, tmp_path / "accuracy.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
    assert plot([result("c", None, "+FTP", 0.1)], tmp_path / "none.png") is None  # no sizes: nothing to plot


def test_parameter_count_reads_safetensors_headers(tmp_path):
    import torch
    from safetensors.torch import save_file

    save_file({"a": torch.zeros(3, 4), "b": torch.zeros(5)}, str(tmp_path / "model-1.safetensors"))
    save_file({"c": torch.zeros(2, 2, 2)}, str(tmp_path / "model-2.safetensors"))
    assert parameter_count(tmp_path) == 12 + 5 + 8
    assert parameter_count(tmp_path / "missing") is None
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.safetensors").write_bytes(struct.pack("<Q", 2) + b"{}")
    assert parameter_count(tmp_path / "bad") == 0
    assert [size_label(n) for n in (134_515_008, 494_032_768, 1_543_714_304, 7_615_616_512, 427_000, None)] == \
        ["135M", "494M", "1.5B", "7.6B", "427K", "?"]


def test_the_embedded_students_size_is_counted():
    from ray_distill.models import resolve_model

    assert 130e6 < parameter_count(resolve_model("smollm2-135m-instruct")) < 140e6


def sweep_config(**sweep):
    overrides = [f"sweep.{k}={v}" for k, v in sweep.items()]
    return load_config("experiments/quickstart.yaml", ["sweep.students=[tiny-random,smollm2-135m-instruct]", *overrides])


def test_the_sweep_grid_is_students_by_methods_and_shares_teacher_data(tmp_path):
    config = sweep_config()
    trials = sweep_trials(config)
    methods = ["CoT prompt", "CoT distill", "agent distill", "+FTP", "+SAG", "+FTP+SAG"]
    assert [(t.student, t.method) for t in trials] == [(s, m) for s in ("tiny-random", "smollm2-135m-instruct")
                                                       for m in methods]
    by_method = {t.method: t.config for t in trials if t.student == "tiny-random"}
    assert by_method["CoT prompt"].evaluate.models == ["base"] and by_method["CoT prompt"].evaluate.mode == "cot"
    assert by_method["CoT distill"].train.data == "cot" and by_method["CoT distill"].evaluate.mode == "cot"
    assert (by_method["+FTP+SAG"].generate.ftp, by_method["+FTP+SAG"].evaluate.sag) == (True, 8)
    assert (by_method["+SAG"].generate.ftp, by_method["agent distill"].evaluate.sag) == (False, 1)
    assert all(t.config.models.student == t.student for t in trials)
    # Teacher data once per FTP setting; SAG never changes what is trained.
    assert [c.generate.ftp for c in teacher_settings(config)] == [False, True]
    from ray_distill.stages.base import StageContext
    from ray_distill.stages.paths import train_dir

    ctxs = {m: StageContext(c, tmp_path) for m, c in by_method.items()}
    assert train_dir(ctxs["+FTP"]) == train_dir(ctxs["+FTP+SAG"]) != train_dir(ctxs["+SAG"])


def test_a_2x2_grid_and_config_errors():
    trials = sweep_trials(sweep_config(students="[tiny-random]", sag="[1,2]", cot_distill=False, cot_prompt=False))
    assert [t.method for t in trials] == ["agent distill", "+FTP", "+SAG(N=2)", "+FTP+SAG(N=2)"]
    several = sweep_trials(sweep_config(students="[tiny-random]", sag="[1,4,8]", cot_distill=False, cot_prompt=False))
    assert len({t.method for t in several}) == len(several) == 6
    with pytest.raises(ConfigError, match="sweep.ftp: is empty and both CoT baselines are off"):
        sweep_config(ftp="[]", cot_distill=False, cot_prompt=False)
    with pytest.raises(ConfigError, match="evaluate.self_consistency: needs temperature > 0"):
        load_config(None, ["evaluate.self_consistency=4"])
    with pytest.raises(ConfigError, match="evaluate.sets: unknown question set 'nope'"):
        load_config(None, ["evaluate.sets=[nope]"])
    with pytest.raises(ConfigError, match="evaluate.mode: must be agent or cot"):
        load_config(None, ["evaluate.mode=chat"])
