"""The `ray-distill` command line: the parser and dispatch (`main.py`), and the commands that are not
pipeline stages (`chat.py`, `serve_retrieval.py`, `resources.py`)."""

from ray_distill.cli.main import main

__all__ = ["main"]
