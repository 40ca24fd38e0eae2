"""ray-distill: distill tool-using LLM agents into small models with Ray."""

__version__ = "0.1.0"
