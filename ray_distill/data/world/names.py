"""Unique fictional names as a pure function of (seed, kind, index).

Each kind has a namespace of syllable tuples; an affine permutation
i -> (a*i + b) mod size, with a coprime to size, maps indices to distinct
tuples. No name table is kept, so a world of tens of millions of entities
names every entity in O(1) memory. Syllables are all consonant+vowel pairs,
so a string decodes to exactly one tuple, and every kind has its own shape
(two words, suffix, trailing noun), so names never collide across kinds.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

_CONSONANTS = "bdfghklmnprstvz"
_VOWELS = "aeiou"
SYLLABLES = tuple(c + v for c in _CONSONANTS for v in _VOWELS)  # 75

CITY_SUFFIXES = ("ford", "haven", "mont", "wick", "stad", "holm", "grad", "port")
COUNTRY_SUFFIXES = ("land", "stan", "mark", "nesia")
ORG_NOUNS = (
    "Dynamics", "Foundry", "Records", "Institute", "Laboratories", "Press",
    "Shipping", "Textiles", "Observatory", "Conservatory", "Mining", "Airlines",
)


def _word(digits: list[int]) -> str:
    return "".join(SYLLABLES[d] for d in digits).capitalize()


def _digits(value: int, radices: tuple[int, ...]) -> list[int]:
    out = []
    for radix in reversed(radices):
        value, d = divmod(value, radix)
        out.append(d)
    return out[::-1]


@dataclass(frozen=True)
class NameSpace:
    """Bijective index -> name map for one entity kind."""

    kind: str
    radices: tuple[int, ...]
    a: int
    b: int

    @classmethod
    def create(cls, seed: int, kind: str, radices: tuple[int, ...]) -> "NameSpace":
        size = math.prod(radices)
        rng = random.Random(f"names:{seed}:{kind}")
        a = rng.randrange(1, size)
        while math.gcd(a, size) != 1:
            a = rng.randrange(1, size)
        return cls(kind, radices, a, rng.randrange(size))

    @property
    def size(self) -> int:
        return math.prod(self.radices)

    def digits(self, index: int) -> list[int]:
        if not 0 <= index < self.size:
            raise IndexError(f"{self.kind} index {index} outside namespace of {self.size}")
        return _digits((self.a * index + self.b) % self.size, self.radices)


class Names:
    """Names of every kind of entity in one world."""

    def __init__(self, seed: int):
        s = len(SYLLABLES)
        self.person = NameSpace.create(seed, "person", (s, s, s, s, s))
        self.city = NameSpace.create(seed, "city", (s, s, s, len(CITY_SUFFIXES)))
        self.country = NameSpace.create(seed, "country", (s, s, s, len(COUNTRY_SUFFIXES)))
        self.org = NameSpace.create(seed, "org", (s, s, s, len(ORG_NOUNS)))

    def person_name(self, i: int) -> str:
        d = self.person.digits(i)
        return f"{_word(d[:2])} {_word(d[2:])}"

    def city_name(self, i: int) -> str:
        d = self.city.digits(i)
        return _word(d[:3]) + CITY_SUFFIXES[d[3]]

    def country_name(self, i: int) -> str:
        d = self.country.digits(i)
        return _word(d[:3]) + COUNTRY_SUFFIXES[d[3]]

    def org_name(self, i: int) -> str:
        d = self.org.digits(i)
        return f"{_word(d[:3])} {ORG_NOUNS[d[3]]}"
