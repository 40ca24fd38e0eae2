from __future__ import annotations

import random

import pytest

from ray_distill.agent.records import CandidateRecord
from ray_distill.agent.sag import choose_candidate


def ok(stdout="", answer=None, has_answer=False):
    return CandidateRecord(text="", code="x", parse_error=None, stdout=stdout, final_answer=answer,
                           has_final_answer=has_answer, executed=True)


def failed(kind="ValueError"):
    return CandidateRecord(text="", code="x", parse_error=None, error={"type": kind, "message": ""}, executed=True)


UNPARSED = CandidateRecord(text="", code=None, parse_error="no code block found")


def test_majority_of_printed_outputs_wins_with_its_first_member():
    candidates = [ok("7\n"), ok("391\n"), failed(), ok("391"), UNPARSED, ok("391\n")]
    assert choose_candidate(candidates) == 1


def test_final_answers_vote_even_though_they_print_nothing():
    candidates = [ok(answer="Paris", has_answer=True), ok(answer="Lyon", has_answer=True),
                  ok(answer=" paris ", has_answer=True), ok("")]
    assert choose_candidate(candidates) == 0


def test_an_answer_and_a_print_are_different_votes():
    candidates = [ok("391"), ok(answer="391", has_answer=True), ok(answer="391", has_answer=True)]
    assert choose_candidate(candidates) == 1


def test_all_distinct_takes_the_first_valid_one():
    assert choose_candidate([failed(), UNPARSED, ok("a"), ok("b")]) == 2


def test_ties_go_to_the_group_that_came_first():
    assert choose_candidate([ok("b"), ok("a"), ok("a"), ok("b")]) == 0


def test_invalid_candidates_never_outvote_valid_ones():
    assert choose_candidate([failed(), failed(), failed(), ok("lonely")]) == 3


def test_no_valid_candidate_policies():
    candidates = [failed(), UNPARSED, failed("TimeoutError")]
    assert choose_candidate(candidates, "first") == 0
    picks = {choose_candidate(candidates, "random", random.Random(seed)) for seed in range(30)}
    assert picks == {0, 1, 2}
    with pytest.raises(ValueError, match="no_valid must be one of"):
        choose_candidate(candidates, "best")
    with pytest.raises(ValueError, match="no candidates"):
        choose_candidate([])
