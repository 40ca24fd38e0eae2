"""The CodeAct agent: prompts, step parsing, episodes, FTP and SAG."""

from ray_distill.agent.episode import Agent, AgentConfig, SAGConfig, first_thought_prefix, retrieval_tools
from ray_distill.agent.parsing import ParsedStep, parse_step
from ray_distill.agent.records import CandidateRecord, EpisodeRecord, StepRecord

__all__ = [
    "Agent", "AgentConfig", "CandidateRecord", "EpisodeRecord", "ParsedStep", "SAGConfig", "StepRecord",
    "first_thought_prefix", "parse_step", "retrieval_tools",
]
