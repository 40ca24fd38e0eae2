"""Our SFT against TRL's SFTTrainer: the same kept trajectories, student, LoRA and sequence length.

    .venv/bin/python scripts/bench/peer_sft.py [--quick]

Data: the training bench's teacher-like trajectories (`training.py`), as
the student's conversations (`sft_data.conversation`: the student's system
prompt, observations as user turns, nothing after the last assistant turn).
Ours tokenizes, masks and packs them (`build_sft`: first-fit decreasing,
rows of at most max_length tokens). TRL gets the same conversations as a
`datasets.Dataset` of `{"messages": [...]}` and renders, masks and packs
them itself: `assistant_only_loss=True`, `packing=True` with its default
best-fit-decreasing strategy, which turns on padding-free batches.

Masks: TRL's assistant-only loss needs `{% generation %}` markers, which
SmolLM2's template lacks, and TRL ships no training template for it (it
refuses the template; the bench records what it says). So TRL gets
SmolLM2's template with each assistant turn's content and end-of-turn token
inside the markers (`marked_template`). Checked: it renders every
conversation byte for byte as the original; TRL's token ids and
`assistant_masks` equal our ids and role-based masks token for token; and
on one of TRL's packed rows (several examples), TRL's per-token losses
(its collator's batch through its fused LM head, what its `compute_loss`
averages) equal ours (the same examples laid out as our packer lays out a
row, through our attention path and loss kernel), same weights (random
LoRA B, so the adapters count), dropout off.

Speed and memory: each side trains in a fresh process of its own (peak RSS,
read after every step, is that process's), on this machine's cores, with
the student in float32, LoRA r=64, alpha=128, dropout 0.05 on every linear
layer but the head, two rows per optimizer step (one per micro-batch,
accumulation of two), AdamW at lr 2e-4 on a cosine schedule, clipping at
1.0, no gradient checkpointing (ours leaves it off on CPU; TRL's default,
on, is turned off), no evaluation, no saving. Ours: the trainer's loop
(`training/loop.py`, what a Ray Train worker runs) on `TorchEngine`
(torch's AdamW), without Ray. TRL: `SFTTrainer.train()` with its default
optimizer (torch's fused AdamW). Tokens/s counts every token of a step's
rows (neither side pads: a micro-batch is one packed row); it is the median
over the steps after each run's first. The sides run in turn, twice each,
and pool their runs' steps, since this machine's speed drifts over minutes.

Attention: ours takes `auto`, on CPU one causal SDPA call per example
(`segments`), no mask. TRL's padding-free rows carry position ids that
restart at each example and no attention mask; without flash attention,
transformers' SDPA path turns them into a dense block-diagonal mask (no
warning). Neither lets an example attend to another (the per-token loss
check spans an example boundary). Loss: ours projects only the positions
that predict a target (`training/loss.py`); TRL's fused LM head scores every
position where Triton is absent (CPU), recomputes them in the backward
pass, and computes each position's entropy and top-1 for its metrics.
"""

from __future__ import annotations

import argparse
import itertools
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

from peers import print_result
from training import rate, trajectories

MODEL = "smollm2-135m-instruct"
# The one expression of SmolLM2's template that prints a turn; `marked_template` splits it for assistant turns.
TURN = "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
MARKED_TURN = ("{% if message['role'] == 'assistant' %}{{'<|im_start|>assistant\n'}}{% generation %}"
               "{{message['content'] + '<|im_end|>'}}{% endgeneration %}{{'\n'}}{% else %}" + TURN + "{% endif %}")


@dataclass(frozen=True)
class Sizes:
    examples: int
    max_length: int
    steps: int
    runs: int  # per side, alternating
    global_batch: int = 2
    micro_batch: int = 1


FULL = Sizes(examples=96, max_length=1024, steps=5, runs=2)
QUICK = Sizes(examples=10, max_length=512, steps=3, runs=1)


def marked_template(template: str) -> str:
    """SmolLM2's chat template with `{% generation %}` around what an assistant turn generates: its content and
    the end-of-turn token (not the newline the template prints after it)."""
    if template.count(TURN) != 1:
        raise ValueError("not SmolLM2's chat template: the bench knows where to put generation markers only there")
    return template.replace(TURN, MARKED_TURN)


def train_config(sizes: Sizes):
    from ray_distill.config.schema import TrainConfig

    return TrainConfig(max_length=sizes.max_length, global_batch_size=sizes.global_batch,
                       micro_batch_size=sizes.micro_batch, epochs=1, dtype="float32")


def peak_rss() -> int:
    """This process's peak resident memory in bytes (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run_ours(records: list[dict], sizes: Sizes) -> dict:
    """Our data path and training loop in this process: (tokens, seconds) and the peak RSS so far per optimizer
    step."""
    import pyarrow.parquet as pq
    import torch
    from transformers import AutoTokenizer

    from ray_distill.models import resolve_model
    from ray_distill.training.data_order import DataPosition, steps_per_epoch
    from ray_distill.training.engines import TorchEngine
    from ray_distill.training.loop import train_steps
    from ray_distill.training.sft_data import build_sft
    from ray_distill.training.sizing import worker_compute
    from ray_distill.training.student import load_student, pad_id, prepare

    model_dir, train, cpu = resolve_model(MODEL), train_config(sizes), torch.device("cpu")
    with tempfile.TemporaryDirectory(prefix="ray-distill-peer-sft-") as tmp:
        build_sft(records, "agent", model_dir, train, Path(tmp))
        rows = pq.read_table(Path(tmp) / "sequences.parquet").to_pylist()
    model = load_student(model_dir, train, torch.float32)
    compute, _ = worker_compute(train, model, cpu, engine="torch")
    prepare(model, compute)
    engine = TorchEngine(model, train, total_steps=sizes.steps)
    timings, peaks = [], []

    def on_step(entry, *_):
        timings.append((entry["tokens"], entry["seconds"]))
        peaks.append(peak_rss())

    train_steps(engine, lambda epoch: rows, train, rank=0, world=1, device=cpu,
                pad_id=pad_id(AutoTokenizer.from_pretrained(model_dir)),
                steps_per_epoch=steps_per_epoch(len(rows), train.global_batch_size), position=DataPosition(), step=0,
                stop_at=sizes.steps, on_step=on_step)
    return {"timings": timings, "peaks": peaks, "peak_rss": peak_rss(), "rows": len(rows),
            "computed_as": compute.describe(), "threads": torch.get_num_threads()}


def trl_config(sizes: Sizes, out_dir: str):
    from trl import SFTConfig

    train = train_config(sizes)
    return SFTConfig(
        output_dir=out_dir, max_length=sizes.max_length, packing=True, assistant_only_loss=True,
        per_device_train_batch_size=sizes.micro_batch,
        gradient_accumulation_steps=sizes.global_batch // sizes.micro_batch, max_steps=sizes.steps,
        learning_rate=train.lr, lr_scheduler_type=train.schedule, warmup_steps=train.warmup_ratio,
        weight_decay=train.weight_decay, max_grad_norm=train.max_grad_norm, seed=train.seed,
        bf16=False, gradient_checkpointing=False, use_cpu=True, report_to=[], save_strategy="no",
        eval_strategy="no", disable_tqdm=True, include_num_input_tokens_seen="all")


def trl_dataset(records: list[dict]):
    from datasets import Dataset

    from ray_distill.training.sft_data import conversation

    return Dataset.from_list([{"messages": conversation(record, "agent")} for record in records])


def trl_tokenizer():
    from transformers import AutoTokenizer

    from ray_distill.models import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(MODEL))
    tokenizer.chat_template = marked_template(tokenizer.chat_template)
    return tokenizer


def run_trl(records: list[dict], sizes: Sizes) -> dict:
    """TRL's SFTTrainer in this process: (tokens, seconds) and the peak RSS so far per optimizer step."""
    import torch
    from transformers import AutoModelForCausalLM, TrainerCallback
    from trl import SFTTrainer

    from ray_distill.models import resolve_model
    from ray_distill.training.student import lora_config

    class StepTimes(TrainerCallback):
        """(tokens, seconds) and the peak RSS so far at each optimizer step's end; a step is timed from the
        previous one's end, as our loop times its steps."""

        def __init__(self):
            self.timings, self.peaks, self.last, self.seen = [], [], None, 0

        def on_train_begin(self, args, state, control, **kwargs):
            self.last, self.seen = time.perf_counter(), state.num_input_tokens_seen

        def on_step_end(self, args, state, control, **kwargs):
            now = time.perf_counter()
            self.timings.append((state.num_input_tokens_seen - self.seen, now - self.last))
            self.peaks.append(peak_rss())
            self.last, self.seen = now, state.num_input_tokens_seen

    timer = StepTimes()
    model = AutoModelForCausalLM.from_pretrained(resolve_model(MODEL), dtype=torch.float32)
    with tempfile.TemporaryDirectory(prefix="ray-distill-peer-sft-trl-") as tmp:
        trainer = SFTTrainer(model=model, args=trl_config(sizes, tmp), train_dataset=trl_dataset(records),
                             processing_class=trl_tokenizer(), peft_config=lora_config(train_config(sizes)),
                             callbacks=[timer])
        trainer.train()
    return {"timings": timer.timings, "peaks": timer.peaks, "peak_rss": peak_rss(), "rows": len(trainer.train_dataset),
            "attention": model.config._attn_implementation, "padding_free": trainer.padding_free,
            "threads": torch.get_num_threads()}


def in_child(side: str, records_path: Path, sizes: Sizes) -> dict:
    """One side's training run in a fresh process (its own imports, memory peak and threads)."""
    with tempfile.TemporaryDirectory(prefix="ray-distill-peer-sft-") as tmp:
        out = Path(tmp) / "result.json"
        done = subprocess.run([sys.executable, __file__, "--child", side, "--records", str(records_path),
                               "--sizes", json.dumps(asdict(sizes)), "--json", str(out)],
                              capture_output=True, text=True)
        if done.returncode or not out.is_file():
            tail = "\n".join(done.stderr.strip().splitlines()[-15:])
            raise RuntimeError(f"the {side} run failed (exit {done.returncode}):\n{tail}")
        result = json.loads(out.read_text())
    if len(result["timings"]) != sizes.steps:
        raise RuntimeError(f"the {side} run made {len(result['timings'])} steps of {sizes.steps}: one epoch of "
                           f"{result['rows']} rows is too short; use more examples")
    return result


def our_tokenizer():
    """Our conversation tokenizer for the student, as `build_sft` makes it (the student's own template)."""
    from transformers import AutoTokenizer, GenerationConfig

    from ray_distill.models import resolve_model
    from ray_distill.training.examples import ConversationTokenizer, stop_token_ids

    model_dir = resolve_model(MODEL)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    return ConversationTokenizer(tokenizer, stop_token_ids(tokenizer, GenerationConfig.from_pretrained(model_dir)))


def compare_masks(records: list[dict]) -> dict:
    """Render each conversation with SmolLM2's template and the marked one, and compare our role-based masks with
    TRL's `assistant_masks` token for token; differences are counted by token text and by whose mask trains it."""
    from ray_distill.training.sft_data import conversation, record_key

    ours = our_tokenizer()
    tokenizer = ours.tokenizer
    marked = marked_template(tokenizer.chat_template)
    same_text = same_ids = same_mask = trained = their_trained = 0
    differences: Counter = Counter()
    for record in records:
        messages = conversation(record, "agent")
        same_text += (tokenizer.apply_chat_template(messages, tokenize=False)
                      == tokenizer.apply_chat_template(messages, tokenize=False, chat_template=marked))
        example = ours(record_key(record), messages)
        # As TRL tokenizes a conversation (trl.data_utils._tokenize).
        theirs = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True,
                                               return_assistant_tokens_mask=True, chat_template=marked)
        if theirs["input_ids"] != example.input_ids:
            continue
        same_ids += 1
        mask = [bool(bit) for bit in theirs["assistant_masks"]]
        same_mask += mask == example.trained
        trained, their_trained = trained + example.trained_tokens, their_trained + sum(mask)
        for token, our_bit, their_bit in zip(example.input_ids, example.trained, mask):
            if our_bit != their_bit:
                differences[(tokenizer.decode([token]), "ours only" if our_bit else "TRL only")] += 1
    return {"conversations": len(records), "same_text": same_text, "same_ids": same_ids, "same_mask": same_mask,
            "trained_tokens": trained, "their_trained_tokens": their_trained,
            "differences": [f"{text!r} trained by {who}: {n}" for (text, who), n in differences.most_common(5)]}


def our_examples(records: list[dict], max_length: int) -> dict[tuple, object]:
    """Our tokenized examples (as `build_sft` fits them to max_length), by their token ids."""
    from ray_distill.training.examples import fit_length
    from ray_distill.training.sft_data import conversation, record_key

    tokenize = our_tokenizer()
    examples = (fit_length(tokenize(record_key(r), conversation(r, "agent")), max_length, "truncate") for r in records)
    return {tuple(e.input_ids): e for e in examples if e is not None}


def compare_losses(records: list[dict], sizes: Sizes) -> dict:
    """Per-token losses of one of TRL's packed rows (several examples), from TRL's collator batch through its
    fused LM head, against ours on the same examples in the same order through our attention path and loss
    kernel, with the same weights and no dropout."""
    import torch
    from trl import SFTTrainer

    from ray_distill.models import resolve_model
    from ray_distill.training import attention
    from ray_distill.training.loss import linear_cross_entropy
    from ray_distill.training.packing import IGNORE_INDEX, collate, one_per_sequence
    from ray_distill.training.sizing import worker_compute
    from ray_distill.training.student import causal_lm, load_student, loss_sum, pad_id, prepare

    model_dir, train = resolve_model(MODEL), train_config(sizes)
    ours = load_student(model_dir, train, torch.float32)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, parameter in ours.named_parameters():
            if "lora_B" in name:  # fresh adapters are zero: random ones make the LoRA path count
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.02)
    theirs = load_student(model_dir, train, torch.float32)
    theirs.load_state_dict(ours.state_dict())
    tokenizer = trl_tokenizer()
    with tempfile.TemporaryDirectory(prefix="ray-distill-peer-sft-trl-") as tmp:
        trainer = SFTTrainer(model=theirs, args=trl_config(sizes, tmp), train_dataset=trl_dataset(records),
                             processing_class=tokenizer)
    row = next(row for row in trainer.train_dataset if len(row["seq_lengths"]) > 1)
    batch = trainer.data_collator([row])
    theirs.eval()
    with torch.no_grad():
        out = trainer.model(**batch, fused_lm_head=True)  # what TRL's compute_loss runs
        their_losses = -out.log_probs[out.label_mask]
        their_mean = float(trainer.compute_loss(trainer.model, dict(batch)))

    # Our examples of that row, in its order, laid end to end as our packer lays out a row.
    examples = our_examples(records, sizes.max_length)
    starts = [0, *itertools.accumulate(row["seq_lengths"])]
    parts = [examples.get(tuple(row["input_ids"][a:b])) for a, b in zip(starts, starts[1:])]
    if None in parts:
        raise RuntimeError("TRL's packed row holds an example whose tokens none of ours has")
    laid = [sequence.to_row() for sequence in one_per_sequence(parts)]
    ours_batch = collate([{key: sum((r[key] for r in laid), []) for key in ("input_ids", "labels", "position_ids")}],
                         pad_id(tokenizer))
    same_labels = torch.equal(ours_batch["labels"], batch["labels"])

    compute, _ = worker_compute(train, ours, torch.device("cpu"), engine="torch")
    prepare(ours, compute)
    ours.eval()
    lm = causal_lm(ours)
    with torch.no_grad():
        # `student._loss_forward`'s steps, with the kernel called one position at a time (it returns a sum).
        ids, positions, labels, kwargs = attention.row_inputs(compute.attention, ours_batch["input_ids"],
                                                              ours_batch["position_ids"], ours_batch["labels"])
        hidden = lm.get_decoder()(input_ids=ids, position_ids=positions, use_cache=False, **kwargs).last_hidden_state
        keep = labels[:, 1:] != IGNORE_INDEX
        h, t = hidden[:, :-1][keep], labels[:, 1:][keep]
        weight = lm.get_output_embeddings().weight
        our_losses = torch.stack([linear_cross_entropy(h[i:i + 1], weight, t[i:i + 1], compute.loss_kernel)
                                  for i in range(t.numel())])
        our_sum = float(loss_sum(ours, ours_batch)[0])
    return {"examples": len(parts), "tokens": len(row["input_ids"]), "targets": int(t.numel()),
            "same_labels": same_labels,
            "max_abs_diff": float((our_losses - their_losses).abs().max()) if same_labels else None,
            "mean_loss": float(our_losses.mean()), "trl_compute_loss": their_mean,
            "sum_error": abs(our_sum - float(our_losses.sum())) / our_sum, "computed_as": compute.describe()}


def refuses_plain_template(records: list[dict], sizes: Sizes) -> str:
    """What TRL does with SmolLM2's own template (no generation markers) and assistant_only_loss."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTTrainer

    from ray_distill.models import resolve_model

    model = AutoModelForCausalLM.from_pretrained(resolve_model(MODEL), dtype=torch.float32)
    with tempfile.TemporaryDirectory(prefix="ray-distill-peer-sft-trl-") as tmp:
        try:
            SFTTrainer(model=model, args=trl_config(sizes, tmp), train_dataset=trl_dataset(records[:2]),
                       processing_class=AutoTokenizer.from_pretrained(resolve_model(MODEL)))
        except ValueError as e:
            return f"refuses it: {str(e).splitlines()[0]}"
    return "accepts it"


def gib(value: float) -> str:
    return f"{value / 2**30:.2f} GiB"


def measure(quick: bool = False) -> dict:
    import importlib.metadata

    import datasets
    import transformers

    # The checks below build models and TRL datasets in this process: their progress bars would bury the table.
    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    sizes = QUICK if quick else FULL
    records = trajectories(sizes.examples)
    runs: dict[str, list[dict]] = {"ours": [], "trl": []}
    with tempfile.TemporaryDirectory(prefix="ray-distill-peer-sft-") as tmp:
        path = Path(tmp) / "records.json"
        path.write_text(json.dumps(records))
        for _ in range(sizes.runs):
            for side in runs:
                runs[side].append(in_child(side, path, sizes))
    masks, losses = compare_masks(records), compare_losses(records, sizes)
    plain = refuses_plain_template(records, sizes)

    speed = {side: rate(*(run["timings"] for run in done)) for side, done in runs.items()}
    peak = {side: max(run["peak_rss"] for run in done) for side, done in runs.items()}
    speed_ratio, memory_ratio = speed["ours"] / speed["trl"], peak["trl"] / peak["ours"]
    masks_agree = masks["same_text"] == masks["same_ids"] == masks["same_mask"] == masks["conversations"]
    losses_agree = losses["same_labels"] and losses["max_abs_diff"] <= 1e-4 and losses["sum_error"] <= 1e-5
    ours, trl = runs["ours"][0], runs["trl"][0]
    rows = [
        {"metric": "training tokens/s", "ours": f"{speed['ours']:,.0f} tokens/s",
         "peer": f"{speed['trl']:,.0f} tokens/s", "ratio": speed_ratio,
         "target": ">= 1.0x at equal or lower peak memory", "met": speed_ratio >= 1.0 and peak["ours"] <= peak["trl"]},
        {"metric": "training peak RSS (ratio: TRL / ours)", "ours": gib(peak["ours"]),
         "peer": gib(peak["trl"]), "ratio": memory_ratio, "target": "ours <= TRL's",
         "met": peak["ours"] <= peak["trl"]},
        {"metric": f"assistant-only masks: {masks['same_mask']}/{masks['conversations']} conversations agree token "
                   "for token", "ours": f"{masks['trained_tokens']:,} trained tokens",
         "peer": f"{masks['their_trained_tokens']:,} trained tokens", "ratio": None, "target": "all agree",
         "met": masks_agree},
        {"metric": f"per-token loss on one of TRL's packed rows ({losses['examples']} examples, {losses['targets']} "
                   "targets), same weights: mean, and max abs difference per token",
         "ours": f"{losses['mean_loss']:.5f}, max difference "
                 + (f"{losses['max_abs_diff']:.1e}" if losses["same_labels"] else "not compared: the labels differ"),
         "peer": f"{losses['trl_compute_loss']:.5f}", "ratio": None, "target": "difference <= 1e-4 (float32 rounding)",
         "met": losses_agree},
    ]
    steps = {side: "; ".join(", ".join(f"{tokens / seconds:,.0f}" for tokens, seconds in run["timings"])
                             for run in done) for side, done in runs.items()}
    peaks = {side: "; ".join(", ".join(f"{value / 2**30:.2f}" for value in run["peaks"]) for run in done)
             for side, done in runs.items()}
    differences = "; ".join(masks["differences"]) or "none"
    notes = [
        "SmolLM2-135M-Instruct in float32 on CPU, LoRA r=64 alpha=128 on every linear layer but the head; "
        f"{sizes.examples} trajectories of the training bench, rows of <= {sizes.max_length} tokens, "
        f"{sizes.global_batch} rows per optimizer step ({sizes.micro_batch} per micro-batch), {sizes.steps} steps "
        f"per run, {sizes.runs} run(s) per side alternating; tokens/s is the median over every run's steps but its "
        f"first; {ours['threads']} torch threads on each side. Ours packs {ours['rows']} rows (first-fit "
        f"decreasing), TRL {trl['rows']} (best-fit decreasing).",
        f"tokens/s of each step (runs split by ';'): ours {steps['ours']}; TRL {steps['trl']}. Peak RSS in GiB "
        f"after each step: ours {peaks['ours']}; TRL {peaks['trl']}.",
        f"ours computes with {ours['computed_as']}. TRL: transformers' {trl['attention']} attention with "
        f"padding-free rows {'on' if trl['padding_free'] else 'off'}; without flash attention transformers turns "
        "their restarting position ids into a dense block-diagonal mask (no warning). Neither lets an example "
        "attend to another: the per-token loss row holds several.",
        "What trains, on both sides: each assistant turn's content and its <|im_end|>; not the role header, not "
        "the newline after <|im_end|>, not the system prompt, the task or the observations (user turns, as the "
        f"agent sends them), not an example's first token. {masks['trained_tokens']} trained tokens in "
        f"{masks['conversations']} conversations; tokens trained by one side only: {differences}. The marked "
        f"template renders {masks['same_text']}/{masks['conversations']} conversations byte for byte as SmolLM2's; "
        f"TRL's token ids equal ours in {masks['same_ids']}/{masks['conversations']}.",
        f"TRL given SmolLM2's own template with assistant_only_loss: {plain}",
        f"per-token loss: LoRA B random, dropout off; TRL's compute_loss on the row ({losses['trl_compute_loss']:.6f}) "
        f"is the mean of its per-token losses; ours, one position at a time through our kernel, sum to our "
        f"loss_sum within {losses['sum_error']:.1e} (relative).",
        "TRL's fused LM head scores every position on a device without Triton (CPU here), not only those that "
        "predict a target, recomputes them in the backward pass, and computes each position's entropy and top-1 for "
        "its metrics; ours projects only the positions that predict a target.",
    ]
    versions = {name: importlib.metadata.version(name) for name in ("trl", "datasets", "accelerate", "peft")}
    return {"title": "SFT vs TRL SFTTrainer", "rows": rows,
            "notes": notes, "versions": versions}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="16 short trajectories, rows of 512 tokens, 3 steps")
    parser.add_argument("--child", choices=("ours", "trl"), help=argparse.SUPPRESS)  # in_child's side
    parser.add_argument("--records", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--sizes", help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run = run_ours if args.child == "ours" else run_trl
        args.json.write_text(json.dumps(run(json.loads(args.records.read_text()), Sizes(**json.loads(args.sizes)))))
        return
    print_result(measure(quick=args.quick))

if __name__ == "__main__":
    main()
