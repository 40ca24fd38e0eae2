"""Self-consistent action generation: pick one of N sampled actions by vote.

Candidates that do not parse or raise when executed are dropped. The
survivors are grouped by what they produced - the final answer for a
candidate that called `final_answer` (so steps that only answer still vote,
unlike the reference, where they all printed nothing), otherwise the printed
output - and the first member of the largest group wins; ties go to the
group whose first member came first. With no valid candidate, the policy
picks one and its error becomes the observation.
"""

from __future__ import annotations

import random
from collections import defaultdict
from typing import Optional, Sequence

from ray_distill.agent.records import CandidateRecord

NO_VALID_POLICIES = ("first", "random")


def vote_key(candidate: CandidateRecord) -> tuple[str, str]:
    if candidate.has_final_answer:
        return ("answer", " ".join(str(candidate.final_answer).split()).lower())
    return ("output", candidate.stdout.strip())


def choose_candidate(candidates: Sequence[CandidateRecord], no_valid: str = "first",
                     rng: Optional[random.Random] = None) -> int:
    if not candidates:
        raise ValueError("no candidates to choose from")
    if no_valid not in NO_VALID_POLICIES:
        raise ValueError(f"no_valid must be one of {NO_VALID_POLICIES}, got {no_valid!r}")
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, candidate in enumerate(candidates):
        if candidate.valid:
            groups[vote_key(candidate)].append(i)
    if groups:
        return max(groups.values(), key=lambda members: (len(members), -members[0]))[0]
    if no_valid == "random":
        return (rng or random).randrange(len(candidates))
    return 0
