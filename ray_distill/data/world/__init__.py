"""A generated world: fictional entities, encyclopedia passages and questions
with known answers. The quickstart's data and the retrieval benchmarks' corpus."""

from ray_distill.data.world.entities import Layout, World
from ray_distill.data.world.passages import iter_passages
from ray_distill.data.world.questions import generate_questions
from ray_distill.data.world.writer import read_manifest, write_world

__all__ = ["Layout", "World", "generate_questions", "iter_passages", "read_manifest", "write_world"]
