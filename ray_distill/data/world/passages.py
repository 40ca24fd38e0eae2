"""Encyclopedia-style passages of a world, in the Wikipedia-2018 corpus format.

Each passage is `{"id": str, "contents": "Title\\ntext"}`. The sentences
that state a relation are built by the `*_fact` functions below, which the
question generator cites too: a question's evidence is always a verbatim
sentence of a passage. Filler sentences bring passages near the ~100 words of
a DPR Wikipedia chunk and state nothing that a question asks about.
"""

from __future__ import annotations

import random
from typing import Iterator

from ray_distill.data.world.entities import City, Country, Org, Person, World


def _a(noun: str) -> str:
    return ("an " if noun[0] in "aeiou" else "a ") + noun


def born_fact(world: World, p: Person) -> str:
    return f"{p.name} was born in {world.names.city_name(p.birthplace)} in {p.born}."


def employer_fact(world: World, p: Person) -> str:
    return f"{p.name} works as {_a(p.occupation)} at {world.names.org_name(p.employer)}."


def founded_by_fact(world: World, o: Org) -> str:
    return f"{o.name} was founded in {o.founded} by {world.names.person_name(o.founder)}."


def headquarters_fact(world: World, o: Org) -> str:
    return f"The headquarters of {o.name} are in {world.names.city_name(o.headquarters)}."


def city_country_fact(world: World, c: City) -> str:
    return f"{c.name} is a city in {world.names.country_name(c.country)}."


def city_population_fact(c: City) -> str:
    return f"{c.name} has a population of {c.population}."


def city_founded_fact(c: City) -> str:
    return f"{c.name} was founded in {c.founded}."


def capital_fact(world: World, k: Country) -> str:
    return f"The capital of {k.name} is {world.names.city_name(k.capital)}."


_PLACE_FILLER = (
    "{short} is often mentioned in regional almanacs.",
    "Local archives hold several letters that describe {short} in detail.",
    "Visitors frequently remark on the quiet streets and old stone bridges near {short}.",
    "A small museum keeps maps, photographs and records connected to {short}.",
    "Historians still debate several minor details of the early years of {short}.",
    "Seasonal markets and a yearly music festival are associated with {short}.",
    "Surveys from the last century describe {short} as orderly and well documented.",
    "Several guidebooks recommend a walk along the {landmark} close to {short}.",
)


_PERSON_FILLER = (
    "Colleagues describe {short} as patient, precise and generous with time.",
    "{short} enjoys long walks and collects old postcards.",
    "Several interviews with {short} appeared in regional newspapers.",
    "{short} has given public lectures at libraries and community halls.",
    "Friends say that {short} rarely misses the yearly autumn fair.",
    "A short documentary once followed {short} through a week of ordinary work.",
    "{short} speaks three languages and still writes letters by hand.",
    "In spare hours {short} restores antique clocks near the {landmark}.",
)


def _filler(rng: random.Random, short: str, landmark: str, sentences: int, pool=_PLACE_FILLER) -> str:
    picked = rng.sample(pool, sentences)
    return " ".join(s.format(short=short, landmark=landmark) for s in picked)


def _passage(pid: int, title: str, text: str) -> dict[str, str]:
    return {"id": str(pid), "contents": f"{title}\n{text}"}


def country_passage(world: World, k: Country) -> dict[str, str]:
    rng = random.Random(f"{world.seed}:filler:country:{k.index}")
    text = (
        f"{k.name} is a sovereign country that was established in {k.founded}. "
        f"{capital_fact(world, k)} Its currency is the {k.currency}, and about "
        f"{k.population_millions} million people live there. "
        + _filler(rng, k.name, "coast", 4)
    )
    return _passage(world.country_passage(k.index), k.name, text)


def city_passage(world: World, c: City) -> dict[str, str]:
    rng = random.Random(f"{world.seed}:filler:city:{c.index}")
    text = (
        f"{city_country_fact(world, c)} {city_founded_fact(c)} {city_population_fact(c)} "
        f"The city lies beside {_a(c.landmark)} and is known for its covered markets. "
        + _filler(rng, c.name, c.landmark, 4)
    )
    return _passage(world.city_passage(c.index), c.name, text)


def org_passage(world: World, o: Org) -> dict[str, str]:
    rng = random.Random(f"{world.seed}:filler:org:{o.index}")
    text = (
        f"{founded_by_fact(world, o)} {headquarters_fact(world, o)} "
        f"The organisation employs about {o.employees} people and publishes an annual report. "
        + _filler(rng, o.name, "river", 4)
    )
    return _passage(world.org_passage(o.index), o.name, text)


def person_passages(world: World, p: Person) -> tuple[dict[str, str], dict[str, str]]:
    rng = random.Random(f"{world.seed}:filler:person:{p.index}")
    first = p.name.split()[0]
    bio_id, career_id = world.person_passages(p.index)
    bio = (
        f"{p.name} is {_a(p.occupation)}. {born_fact(world, p)} "
        f"As a child, {first} read widely and kept detailed notebooks about everyday life. "
        + _filler(rng, first, "river", 4, _PERSON_FILLER)
    )
    career = (
        f"{employer_fact(world, p)} Over the years {first} has received {p.awards} "
        f"professional awards and mentored many younger colleagues. "
        + _filler(rng, first, "lake", 4, _PERSON_FILLER)
    )
    return _passage(bio_id, p.name, bio), _passage(career_id, p.name, career)


def iter_passages(world: World) -> Iterator[dict[str, str]]:
    """Every passage of the world in id order, generated lazily."""
    layout = world.layout
    for i in range(layout.countries):
        yield country_passage(world, world.country(i))
    for i in range(layout.cities):
        yield city_passage(world, world.city(i))
    for i in range(layout.orgs):
        yield org_passage(world, world.org(i))
    for i in range(layout.persons):
        yield from person_passages(world, world.person(i))
