"""The sweep's grid: which trials a sweep config makes, and each trial's experiment config.

A trial is one cell of the paper's Table 2: a student and a method. Its
config is the sweep's config with the student, the training data (agent
trajectories with or without FTP, or the CoT baseline) and the evaluation
(mode, SAG) set; everything else, teacher data included, is shared.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ray_distill.config import ExperimentConfig
from ray_distill.evaluation.methods import method_label


@dataclass(frozen=True)
class Trial:
    student: str
    method: str
    config: ExperimentConfig

    @property
    def trains(self) -> bool:
        return self.config.evaluate.models == ["distilled"]


def _variant(config: ExperimentConfig, student: str, *, data: str | None, mode: str, ftp: bool | None = None,
             sag: int = 1) -> Trial:
    c = config
    trial = replace(
        c,
        models=replace(c.models, student=student),
        generate=replace(c.generate, ftp=c.generate.ftp if ftp is None else ftp),
        train=replace(c.train, data=data or c.train.data),
        evaluate=replace(c.evaluate, models=["distilled" if data else "base"], mode=mode,
                         sag=sag if mode == "agent" else 1),
    )
    training = None if data is None else ("cot" if data == "cot" else "agent-ftp" if ftp else "agent-no-ftp")
    return Trial(student, method_label(training, mode, sag, c.evaluate.self_consistency), trial)


def sweep_trials(config: ExperimentConfig) -> list[Trial]:
    """Every trial of the sweep, a student at a time in the paper's column order."""
    s = config.sweep
    cot_ftp = s.ftp[0] if s.ftp else config.generate.ftp  # whose filter output holds the CoT baseline's data
    trials = []
    for student in s.students or [config.models.student]:
        if s.cot_prompt:
            trials.append(_variant(config, student, data=None, mode="cot"))
        if s.cot_distill:
            trials.append(_variant(config, student, data="cot", mode="cot", ftp=cot_ftp))
        for sag in s.sag:
            for ftp in s.ftp:
                trials.append(_variant(config, student, data="agent", mode="agent", ftp=ftp, sag=sag))
    return trials


def trained_students(config: ExperimentConfig) -> list[str]:
    """The students the sweep trains (the CoT-prompt trials only evaluate the base student)."""
    return list(dict.fromkeys(t.student for t in sweep_trials(config) if t.trains))


def teacher_settings(config: ExperimentConfig) -> list[ExperimentConfig]:
    """One config per FTP setting the trials train on: the teacher data each needs is generated once."""
    settings = sorted({t.config.generate.ftp for t in sweep_trials(config) if t.trains})
    return [replace(config, generate=replace(config.generate, ftp=ftp)) for ftp in settings]
