"""Rank 0's record of every optimizer step: `steps.jsonl` and TensorBoard scalars."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ray_distill.fileio import append_jsonl, read_jsonl


class StepLog:
    """`steps.jsonl` holds each step's entry (with the example keys it trained on); TensorBoard gets its
    scalars. On resume, entries past the checkpoint (written before a crash) are dropped, so each step
    appears once."""

    def __init__(self, log_dir: Path, resumed_step: int):
        # local: torch's TensorBoard writer needs the tensorboard package, which the GPU bench machine (where
        # this module must import) lacks
        from torch.utils.tensorboard import SummaryWriter

        log_dir.mkdir(parents=True, exist_ok=True)
        self.path = log_dir / "steps.jsonl"
        kept = [entry for entry in read_jsonl(self.path) if entry["step"] <= resumed_step]
        tmp = self.path.with_name("steps.jsonl.tmp")
        tmp.write_text("".join(json.dumps(entry) + "\n" for entry in kept))
        os.replace(tmp, self.path)
        self.writer = SummaryWriter(str(log_dir / "tensorboard"), purge_step=resumed_step + 1)

    def write(self, entry: dict) -> None:
        append_jsonl(self.path, entry)
        for name in ("loss", "lr", "grad_norm", "tokens_per_second", "real_token_fraction"):
            if entry.get(name) is not None:
                self.writer.add_scalar(f"train/{name}", entry[name], entry["step"])
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
