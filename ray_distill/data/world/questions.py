"""Questions about a world, with known answers and cited evidence.

Fact questions follow 2-3 relations between entities (or compare two), in
the style of HotpotQA; each carries `hops`, the passages and verbatim
sentences that derive its answer. Math questions are arithmetic word
problems dressed in the world's names, in the style of GSM8K/MATH, with the
answer computed exactly; each carries `solution`, a Python program that prints
its answer (what a worked solution in code looks like).
"""

from __future__ import annotations

import random
from fractions import Fraction
from typing import Callable, Optional

from ray_distill.data.world import passages as P
from ray_distill.data.world.entities import World

Question = dict


def _hop(passage: dict[str, str], fact: str) -> dict[str, str]:
    title = passage["contents"].split("\n", 1)[0]
    return {"passage_id": passage["id"], "title": title, "fact": fact}


def _fact_question(text: str, answer, kind: str, hops: list[dict]) -> Question:
    return {"question": text, "answer": str(answer), "type": kind, "level": len(hops), "hops": hops}


# Each builder returns None when the sampled entities make a degenerate question.
def _birth_country(w: World, r: random.Random) -> Optional[Question]:
    p = w.person(r.randrange(w.layout.persons))
    c = w.city(p.birthplace)
    bio, _ = P.person_passages(w, p)
    return _fact_question(
        f"In which country is the city where {p.name} was born?",
        w.names.country_name(c.country), "bridge_birth_country",
        [_hop(bio, P.born_fact(w, p)), _hop(P.city_passage(w, c), P.city_country_fact(w, c))],
    )


def _employer_founded(w: World, r: random.Random) -> Optional[Question]:
    p = w.person(r.randrange(w.layout.persons))
    o = w.org(p.employer)
    _, career = P.person_passages(w, p)
    return _fact_question(
        f"In what year was the organisation that {p.name} works for founded?",
        o.founded, "bridge_employer_founded",
        [_hop(career, P.employer_fact(w, p)), _hop(P.org_passage(w, o), P.founded_by_fact(w, o))],
    )


def _employer_founder(w: World, r: random.Random) -> Optional[Question]:
    p = w.person(r.randrange(w.layout.persons))
    o = w.org(p.employer)
    if o.founder == p.index:
        return None
    _, career = P.person_passages(w, p)
    return _fact_question(
        f"Who founded the organisation where {p.name} works?",
        w.names.person_name(o.founder), "bridge_employer_founder",
        [_hop(career, P.employer_fact(w, p)), _hop(P.org_passage(w, o), P.founded_by_fact(w, o))],
    )


def _birth_city_founded(w: World, r: random.Random) -> Optional[Question]:
    p = w.person(r.randrange(w.layout.persons))
    c = w.city(p.birthplace)
    bio, _ = P.person_passages(w, p)
    return _fact_question(
        f"In what year was the birthplace of {p.name} founded?",
        c.founded, "bridge_birth_city_founded",
        [_hop(bio, P.born_fact(w, p)), _hop(P.city_passage(w, c), P.city_founded_fact(c))],
    )


def _city_capital(w: World, r: random.Random) -> Optional[Question]:
    c = w.city(r.randrange(w.layout.cities))
    k = w.country(c.country)
    if k.capital == c.index:
        return None
    return _fact_question(
        f"What is the capital of the country in which {c.name} lies?",
        w.names.city_name(k.capital), "bridge_city_capital",
        [_hop(P.city_passage(w, c), P.city_country_fact(w, c)), _hop(P.country_passage(w, k), P.capital_fact(w, k))],
    )


def _employer_hq_country(w: World, r: random.Random) -> Optional[Question]:
    p = w.person(r.randrange(w.layout.persons))
    o = w.org(p.employer)
    c = w.city(o.headquarters)
    _, career = P.person_passages(w, p)
    return _fact_question(
        f"In which country are the headquarters of the organisation that employs {p.name}?",
        w.names.country_name(c.country), "bridge3_employer_hq_country",
        [
            _hop(career, P.employer_fact(w, p)),
            _hop(P.org_passage(w, o), P.headquarters_fact(w, o)),
            _hop(P.city_passage(w, c), P.city_country_fact(w, c)),
        ],
    )


def _founder_birthplace_population(w: World, r: random.Random) -> Optional[Question]:
    o = w.org(r.randrange(w.layout.orgs))
    p = w.person(o.founder)
    c = w.city(p.birthplace)
    bio, _ = P.person_passages(w, p)
    return _fact_question(
        f"What is the population of the city where the founder of {o.name} was born?",
        c.population, "bridge3_founder_birthplace_population",
        [
            _hop(P.org_passage(w, o), P.founded_by_fact(w, o)),
            _hop(bio, P.born_fact(w, p)),
            _hop(P.city_passage(w, c), P.city_population_fact(c)),
        ],
    )


def _born_earlier(w: World, r: random.Random) -> Optional[Question]:
    a = w.person(r.randrange(w.layout.persons))
    b = w.person(r.randrange(w.layout.persons))
    if a.index == b.index or a.born == b.born:
        return None
    earlier = a if a.born < b.born else b
    return _fact_question(
        f"Who was born earlier, {a.name} or {b.name}?",
        earlier.name, "comparison_born_earlier",
        [_hop(P.person_passages(w, a)[0], P.born_fact(w, a)), _hop(P.person_passages(w, b)[0], P.born_fact(w, b))],
    )


FACT_BUILDERS: tuple[Callable[[World, random.Random], Optional[Question]], ...] = (
    _birth_country, _employer_founded, _employer_founder, _birth_city_founded,
    _city_capital, _employer_hq_country, _founder_birthplace_population, _born_earlier,
)


def _math_goods(w: World, r: random.Random) -> Question:
    p, q = w.names.person_name(r.randrange(w.layout.persons)), w.names.person_name(r.randrange(w.layout.persons))
    city = w.names.city_name(r.randrange(w.layout.cities))
    boxes, per_box = r.randrange(3, 25), r.randrange(4, 30)
    given = r.randrange(1, boxes * per_box)
    return {
        "question": f"{p} buys {boxes} crates of pears at the market in {city}; each crate holds "
        f"{per_box} pears. {p} then gives {given} pears to {q}. How many pears does {p} have left?",
        "answer": str(boxes * per_box - given), "type": "math_multiply_subtract", "level": 2,
        "solution": f"pears = {boxes} * {per_box}\nprint(pears - {given})",
    }


def _math_journey(w: World, r: random.Random) -> Question:
    a, b = w.names.city_name(r.randrange(w.layout.cities)), w.names.city_name(r.randrange(w.layout.cities))
    v1, h1, v2, h2 = r.randrange(40, 130), r.randrange(2, 7), r.randrange(30, 110), r.randrange(2, 7)
    return {
        "question": f"A train leaves {a} for {b}. It travels at {v1} km/h for {h1} hours, then at "
        f"{v2} km/h for {h2} hours before it arrives. How many kilometres long is the journey?",
        "answer": str(v1 * h1 + v2 * h2), "type": "math_distance", "level": 2,
        "solution": f"print({v1} * {h1} + {v2} * {h2})",
    }


def _math_staff(w: World, r: random.Random) -> Question:
    org = w.names.org_name(r.randrange(w.layout.orgs))
    pct = r.choice((10, 20, 25, 50))
    staff = r.randrange(2, 60) * (100 // pct) * 4
    left = r.randrange(1, staff // 4)
    return {
        "question": f"{org} has {staff} employees. This year it grows its staff by {pct}%, and then "
        f"{left} employees retire. How many employees does {org} have at the end of the year?",
        "answer": str(staff + staff * pct // 100 - left), "type": "math_percent", "level": 3,
        "solution": f"staff = {staff} + {staff} * {pct} // 100\nprint(staff - {left})",
    }


def _math_average(w: World, r: random.Random) -> Question:
    p = w.names.person_name(r.randrange(w.layout.persons))
    scores = [r.randrange(55, 100) for _ in range(3)]
    need = r.randrange(50, 101)
    need -= (sum(scores) + need) % 4  # a whole-number average
    target = (sum(scores) + need) // 4
    return {
        "question": f"{p} scored {scores[0]}, {scores[1]} and {scores[2]} on three exams. What score "
        f"does {p} need on the fourth exam for the average of all four to be exactly {target}?",
        "answer": str(need), "type": "math_average", "level": 3,
        "solution": f"scores = {scores}\nprint({target} * 4 - sum(scores))",
    }


def _math_fraction(w: World, r: random.Random) -> Question:
    org = w.names.org_name(r.randrange(w.layout.orgs))
    a = r.randrange(2, 7)
    b = r.randrange(a + 1, 13)
    rest = 1 - Fraction(1, a) - Fraction(1, b)  # in (0, 1) since a >= 2 and b >= 3
    return {
        "question": f"{org} spends 1/{a} of its budget on salaries and 1/{b} on rent. What fraction of "
        f"the budget is left? Express your answer as a common fraction.",
        "answer": f"\\frac{{{rest.numerator}}}{{{rest.denominator}}}", "type": "math_fraction", "level": 2,
        "solution": f"from fractions import Fraction\nprint(1 - Fraction(1, {a}) - Fraction(1, {b}))",
    }


def _math_area(w: World, r: random.Random) -> Question:
    city = w.names.city_name(r.randrange(w.layout.cities))
    width, length, path = r.randrange(10, 60), r.randrange(10, 80), r.randrange(1, 4)
    return {
        "question": f"A rectangular park in {city} is {width} m wide and {length} m long. A path "
        f"{path} m wide runs all around the outside of the park. What is the area of the path in square metres?",
        "answer": str((width + 2 * path) * (length + 2 * path) - width * length), "type": "math_area", "level": 3,
        "solution": f"outer = ({width} + 2 * {path}) * ({length} + 2 * {path})\nprint(outer - {width} * {length})",
    }


MATH_BUILDERS: tuple[Callable[[World, random.Random], Question], ...] = (
    _math_goods, _math_journey, _math_staff, _math_average, _math_fraction, _math_area,
)


def generate_questions(world: World, count: int, kind: str, seed: int) -> list[Question]:
    """`count` distinct questions of `kind` ("fact" or "math"), cycling over the templates."""
    builders = {"fact": FACT_BUILDERS, "math": MATH_BUILDERS}[kind]
    rng = random.Random(f"{seed}:{kind}-questions")
    seen: set[str] = set()
    out: list[Question] = []
    misses = 0
    while len(out) < count:
        # Round-robin over templates keeps the mix even; a degenerate or repeated
        # draw retries the same template with fresh random entities.
        question = builders[len(out) % len(builders)](world, rng)
        if question is None or question["question"] in seen:
            misses += 1
            if misses > 2000:
                raise ValueError(
                    f"could only make {len(out)} distinct {kind} questions out of {count}: the world is too small"
                )
            continue
        misses = 0
        seen.add(question["question"])
        question["id"] = f"{kind}-{len(out):06d}"
        out.append(question)
    return out
