"""The agent's tools: retrieval (and, in later modules, the code sandbox)."""
