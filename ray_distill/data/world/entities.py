"""The entities of a generated world and their facts.

Every fact is a pure function of (seed, kind, index): an entity's attributes
come from its own seeded RNG, and links to other entities are indices. Any
entity can be looked up in O(1) time and memory, which is what lets the
writer stream a corpus of any size and the question generator follow
relation chains without holding the world in memory.

Layout of a world of N passages: countries, cities, organisations and
persons, in that order; a person has two passages (biography and career),
every other entity one. City c lies in country c % C, so city k < C is the
capital of country k.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from ray_distill.data.world.names import Names

OCCUPATIONS = (
    "engineer", "cartographer", "violinist", "chemist", "architect", "novelist",
    "botanist", "economist", "sculptor", "astronomer", "physician", "historian",
)
CURRENCIES = ("crown", "mark", "florin", "ducat", "real", "sol", "dinar", "lira")
RIVERS = ("river", "lake", "bay", "delta", "canyon", "plateau")


@dataclass(frozen=True)
class Country:
    index: int
    name: str
    capital: int
    currency: str
    founded: int
    population_millions: int


@dataclass(frozen=True)
class City:
    index: int
    name: str
    country: int
    founded: int
    population: int
    landmark: str


@dataclass(frozen=True)
class Org:
    index: int
    name: str
    founded: int
    headquarters: int  # city
    founder: int  # person
    employees: int


@dataclass(frozen=True)
class Person:
    index: int
    name: str
    born: int
    birthplace: int  # city
    employer: int  # org
    occupation: str
    awards: int


@dataclass(frozen=True)
class Layout:
    """How many entities of each kind a world of `num_passages` holds."""

    countries: int
    cities: int
    orgs: int
    persons: int

    @classmethod
    def for_passages(cls, num_passages: int) -> "Layout":
        if num_passages < 100:
            raise ValueError(f"a world needs at least 100 passages, got {num_passages}")
        persons = round(num_passages * 0.35)
        orgs = round(num_passages * 0.15)
        countries = max(5, num_passages // 500)
        cities = num_passages - 2 * persons - orgs - countries
        return cls(countries, cities, orgs, persons)

    @property
    def num_passages(self) -> int:
        return self.countries + self.cities + self.orgs + 2 * self.persons


class World:
    """Facts of a world; cheap to construct, O(1) per lookup."""

    def __init__(self, seed: int, num_passages: int):
        self.seed = seed
        self.layout = Layout.for_passages(num_passages)
        self.names = Names(seed)

    def _rng(self, kind: str, index: int) -> random.Random:
        return random.Random(f"{self.seed}:{kind}:{index}")

    def country(self, i: int) -> Country:
        r = self._rng("country", i)
        return Country(
            index=i,
            name=self.names.country_name(i),
            capital=i,
            currency=r.choice(CURRENCIES),
            founded=r.randrange(1100, 1950),
            population_millions=r.randrange(1, 120),
        )

    def city(self, i: int) -> City:
        r = self._rng("city", i)
        return City(
            index=i,
            name=self.names.city_name(i),
            country=i % self.layout.countries,
            founded=r.randrange(800, 1900),
            population=r.randrange(2_000, 3_000_000),
            landmark=r.choice(RIVERS),
        )

    def org(self, i: int) -> Org:
        r = self._rng("org", i)
        return Org(
            index=i,
            name=self.names.org_name(i),
            founded=r.randrange(1850, 2015),
            headquarters=r.randrange(self.layout.cities),
            founder=r.randrange(self.layout.persons),
            employees=r.randrange(12, 90_000),
        )

    def person(self, i: int) -> Person:
        r = self._rng("person", i)
        return Person(
            index=i,
            name=self.names.person_name(i),
            born=r.randrange(1900, 2000),
            birthplace=r.randrange(self.layout.cities),
            employer=r.randrange(self.layout.orgs),
            occupation=r.choice(OCCUPATIONS),
            awards=r.randrange(0, 9),
        )

    # Passage ids follow the layout order; a person's career passage follows its biography.
    def country_passage(self, i: int) -> int:
        return i

    def city_passage(self, i: int) -> int:
        return self.layout.countries + i

    def org_passage(self, i: int) -> int:
        return self.layout.countries + self.layout.cities + i

    def person_passages(self, i: int) -> tuple[int, int]:
        base = self.layout.countries + self.layout.cities + self.layout.orgs + 2 * i
        return base, base + 1
