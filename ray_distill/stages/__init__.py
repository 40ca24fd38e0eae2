"""Pipeline stages, in pipeline order."""

from ray_distill.stages import cot, evaluate, filter, generate, index, report, sweep, train, world
from ray_distill.stages.base import Stage, StageContext

STAGES: dict[str, Stage] = {
    stage.name: stage
    for stage in (world.STAGE, index.STAGE, cot.STAGE, generate.STAGE, filter.STAGE, train.STAGE, evaluate.STAGE,
                  sweep.STAGE, report.STAGE)
}

__all__ = ["STAGES", "Stage", "StageContext"]
