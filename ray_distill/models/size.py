"""A model's parameter count, read from its safetensors headers (no weights are loaded), and those headers
checked against their files."""

from __future__ import annotations

import math
import struct
from pathlib import Path
from typing import Optional

from ray_distill.errors import DataError, brief
from ray_distill.fileio import parse_json

# Bytes per element of the safetensors dtypes (one a newer format adds is not size-checked).
DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1, "I64": 8, "I32": 4, "I16": 2,
               "I8": 1, "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1}
MAX_HEADER_BYTES = 100_000_000  # the format's own limit


def parameter_count(model_dir: str | Path) -> Optional[int]:
    """Parameters stored in the directory's safetensors files (tied weights count once); None without any."""
    files = sorted(p for p in Path(model_dir).glob("*.safetensors") if p.is_file())
    if not files:
        return None
    return sum(math.prod(t["shape"]) for path in files for name, t in safetensors_header(path).items()
               if name != "__metadata__")


def safetensors_header(path: Path) -> dict:
    """The tensor table of a safetensors file, checked against the file's size, so a truncated, padded or
    corrupt file is a DataError naming it rather than a failure inside transformers when it loads."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(8)
        length = struct.unpack("<Q", head)[0] if len(head) == 8 else None
        if length is None or not 2 <= length <= min(size - 8, MAX_HEADER_BYTES):
            raise DataError(f"{path}: not a safetensors file (truncated, or a header length of {length} bytes)")
        header = parse_json(handle.read(length), path)
    if not isinstance(header, dict):
        raise DataError(f"{path}: the safetensors header is not a JSON object")
    metadata = header.get("__metadata__", {})
    if not (isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())):
        raise DataError(f"{path}: the safetensors header's __metadata__ is not a mapping of strings")
    end = 0
    for name, tensor in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (begin, stop) = tensor["dtype"], tensor["shape"], tensor["data_offsets"]
            well_formed = isinstance(dtype, str) and isinstance(shape, list) and begin <= stop and all(
                isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in [*shape, begin, stop])
        except (TypeError, KeyError, ValueError):
            well_formed = False
        if not well_formed:
            raise DataError(f"{path}: tensor {brief(name)}: not a safetensors entry: {brief(tensor)}")
        if dtype in DTYPE_BYTES and stop - begin != math.prod(shape) * DTYPE_BYTES[dtype]:
            raise DataError(f"{path}: tensor {brief(name)}: {dtype} {brief(shape)} does not take the "
                            f"{stop - begin} bytes the header gives it")
        end = max(end, stop)
    if end != size - 8 - length:
        raise DataError(f"{path}: the header's tensors take {end} bytes, the file holds {size - 8 - length} "
                        "after the header (truncated or corrupt)")
    return header


def size_label(parameters: Optional[int]) -> str:
    """135M, 1.5B, ...: how the paper names student sizes."""
    if parameters is None:
        return "?"
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if parameters >= scale:
            value = parameters / scale
            return f"{value:.1f}{unit}".replace(".0" + unit, unit) if value < 10 else f"{value:.0f}{unit}"
    return str(parameters)
