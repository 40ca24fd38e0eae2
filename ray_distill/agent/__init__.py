"""The CodeAct agent: prompts, step parsing, episodes, FTP and SAG."""

from ray_distill.agent.episode import Agent, AgentConfig, SAGConfig, first_thought_prefix
from ray_distill.agent.parsing import ParsedStep, parse_step
from ray_distill.agent.records import CandidateRecord, EpisodeRecord, StepRecord
from ray_distill.agent.toolbox import retrieval_tools

__all__ = [
    "Agent", "AgentConfig", "CandidateRecord", "EpisodeRecord", "ParsedStep", "SAGConfig", "StepRecord",
    "first_thought_prefix", "parse_step", "retrieval_tools",
]
