"""A model's parameter count, read from its safetensors headers (no weights are loaded)."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Optional


def parameter_count(model_dir: str | Path) -> Optional[int]:
    """Parameters stored in the directory's safetensors files (tied weights count once); None without any."""
    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        return None
    total = 0
    for path in files:
        with open(path, "rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(length))
        total += sum(math.prod(t["shape"]) for name, t in header.items() if name != "__metadata__")
    return total


def size_label(parameters: Optional[int]) -> str:
    """135M, 1.5B, ...: how the paper names student sizes."""
    if parameters is None:
        return "?"
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if parameters >= scale:
            value = parameters / scale
            return f"{value:.1f}{unit}".replace(".0" + unit, unit) if value < 10 else f"{value:.0f}{unit}"
    return str(parameters)
