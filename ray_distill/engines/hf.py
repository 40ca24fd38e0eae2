"""The transformers engine: CPU (tests, laptops) or a single GPU.

Continuous batching: requests join the running batch between decode steps
(they are prefilled, then decode alongside the rows already there), and a
row leaves the moment it finishes. A request's `n` samples share one
prefill. The rows' common prompt prefix is held once and attended once per
step (`batch_kv`), and a prefix cache keeps the KV of earlier prompts: the
system prompt and worked examples every agent request starts with, and each
episode's previous prompt, which its next one extends; only the rest is
prefilled. Decoding is our own loop rather than `model.generate`, because
each row needs its own temperature, top-p, stop strings and random
generator: a seeded request then gives the same samples whatever else shares
its batch (in float32 all but always: the batch changes the order of some
sums, rarely enough to flip a token; in bfloat16 more often).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Optional

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from ray_distill.compute import default_dtype, run_compute
from ray_distill.engines import batch_kv
from ray_distill.engines.batch_kv import BatchKV
from ray_distill.engines.prefix_cache import KVBlock, PrefixCache
from ray_distill.engines.protocol import (
    Completion, ContextLengthError, GenerationRequest, Sample, cut_at_stop, render_prompt,
)
from ray_distill.models import resolve_model

log = logging.getLogger(__name__)

# Shorter common prefixes are not worth sharing or caching.
MIN_CACHED_PREFIX = 32
# Buffer columns reserved for decoding when rows join; more are added by doubling.
DECODE_RESERVE = 256


@dataclass(eq=False)
class _Sequence:
    """A request in flight."""

    request: GenerationRequest
    future: Optional[asyncio.Future] = None
    prompt: list[int] = field(default_factory=list)  # tokenized on the compute thread, with the model's other work
    error: Optional[Exception] = None  # why it was refused
    started: float = field(default_factory=time.perf_counter)
    rows: list["_Row"] = field(default_factory=list)

    def cancelled(self) -> bool:
        return self.future is not None and self.future.cancelled()

    def done(self) -> bool:
        return all(row.finish_reason is not None for row in self.rows)

    def completion(self) -> Completion:
        return Completion(samples=[Sample(r.text, r.finish_reason or "length", len(r.tokens)) for r in self.rows],
                          prompt_tokens=len(self.prompt), seconds=time.perf_counter() - self.started)


@dataclass(eq=False)
class _Row:
    sequence: _Sequence
    generator: torch.Generator
    tokens: list[int] = field(default_factory=list)
    text: str = ""
    finish_reason: Optional[str] = None


@dataclass(eq=False)
class _Running:
    kv: BatchKV
    prefix: tuple[int, ...]  # the tokens `kv` shares across rows
    rows: list[_Row]
    logits: torch.Tensor  # each row's next-token logits


class HFEngine:
    def __init__(self, model: str, *, device: Optional[str] = None, dtype: Optional[str] = None,
                 max_batch_rows: int = 32, prefix_cache_tokens: int = 32_768):
        self.model = model
        path = resolve_model(model)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.dtype = getattr(torch, dtype) if dtype else default_dtype(self.device)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        batch_kv.register()
        self._model = AutoModelForCausalLM.from_pretrained(
            path, dtype=self.dtype, attn_implementation=batch_kv.ATTENTION).to(self.device).eval()
        config = self._model.config
        self._kv_shape = (1, config.num_key_value_heads, 0,
                          getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads)
        self._layers = config.num_hidden_layers
        self.context_length = getattr(config, "max_position_embeddings", None) or 1 << 31
        self.max_batch_rows = max_batch_rows
        eos = self._model.generation_config.eos_token_id
        self._eos = set(eos if isinstance(eos, list) else [eos]) | {self.tokenizer.eos_token_id}
        self._eos.discard(None)
        self._pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else min(self._eos)
        self._queue: Optional[asyncio.Queue] = None
        self._worker: Optional[asyncio.Task] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._cache = PrefixCache(prefix_cache_tokens, min_match=MIN_CACHED_PREFIX)
        self.batches = 0  # batches started (a batch runs until its last row finishes), for tests and stats
        self.prefilled_tokens = 0  # prompt tokens actually computed (the rest came from the prefix cache)

    async def generate(self, request: GenerationRequest) -> Completion:
        loop = asyncio.get_running_loop()
        if self._worker is None or self._loop is not loop:
            # The scheduler lives on the caller's event loop (a new one for every asyncio.run).
            self._loop = loop
            self._queue = asyncio.Queue()
            self._worker = asyncio.create_task(self._serve(self._queue))
        sequence = _Sequence(request, loop.create_future())
        await self._queue.put(sequence)
        return await sequence.future

    def generate_batch(self, requests: list[GenerationRequest]) -> list[Completion]:
        """Generate for several requests at once (blocking; not while `generate` calls are in flight)."""
        sequences = [_Sequence(r) for r in requests]
        running = self._admit(None, sequences)
        for sequence in sequences:
            if sequence.error:
                raise sequence.error
        while running.rows:
            self._step(running)
        return [s.completion() for s in sequences]

    async def _serve(self, queue: asyncio.Queue) -> None:
        running: Optional[_Running] = None
        joining: list[_Sequence] = []
        try:
            while True:
                joining = [] if running else [await queue.get()]
                rows = sum(s.request.params.n for s in joining) + (len(running.rows) if running else 0)
                while not queue.empty() and rows + queue._queue[0].request.params.n <= self.max_batch_rows:
                    joining.append(queue.get_nowait())
                    rows += joining[-1].request.params.n
                joining = [s for s in joining if not s.cancelled()]
                try:
                    if joining:
                        running = await run_compute(self._admit, running, joining)
                        _fail([s for s in joining if s.error], None)
                    if running:
                        for sequence in await run_compute(self._step, running):
                            if not sequence.future.done():
                                sequence.future.set_result(sequence.completion())
                except Exception as e:  # the batch is lost: every caller in it learns why
                    _fail(joining + _sequences(running), e)
                    running = None
                if running and not running.rows:
                    running = None
        finally:  # closed: nobody waits forever for a request this loop dropped
            queued = [queue.get_nowait() for _ in range(queue.qsize())]
            _fail(joining + _sequences(running) + queued, RuntimeError("the hf engine was closed"))

    @torch.inference_mode()
    def _admit(self, running: Optional[_Running], sequences: list[_Sequence]) -> Optional[_Running]:
        """Prefill `sequences` and add their rows to the running batch (or start one).
        A sequence that cannot run gets its `error` and is left out."""
        for sequence in sequences:
            text = render_prompt(self.tokenizer, sequence.request.messages, sequence.request.continue_final_message)
            sequence.prompt = self.tokenizer(text, add_special_tokens=False).input_ids
            if len(sequence.prompt) >= self.context_length:
                sequence.error = ContextLengthError(f"the prompt has {len(sequence.prompt)} tokens; {self.model} "
                                            f"reads at most {self.context_length}")
        sequences = [s for s in sequences if s.error is None]
        if not sequences:
            return running
        if running is None:
            prefix = _common_prefix([s.prompt for s in sequences])
            running = _Running(BatchKV(self._prefix_kv(prefix), rows=0, capacity=0), prefix, [],
                               torch.empty(0, device=self.device))
            self.batches += 1
        else:
            shared = len(_common_prefix([list(running.prefix)] + [s.prompt for s in sequences], limit=len(running.prefix)))
            running.kv.shorten_prefix(shared)
            running.prefix = running.prefix[:shared]
        joining, logits = self._prefill(running, sequences)
        expand = [i for i, s in enumerate(sequences) for _ in range(s.request.params.n)]
        joining.select(torch.tensor(expand, device=self.device))
        running.kv.merge(joining)
        running.logits = torch.cat([running.logits.view(-1, logits.shape[-1]), logits[expand]])
        for sequence in sequences:
            params = sequence.request.params
            for k in range(params.n):
                generator = torch.Generator(device="cpu")
                generator.manual_seed(params.seed * 1_000_003 + k if params.seed is not None else random.getrandbits(62))
                sequence.rows.append(_Row(sequence, generator))
            running.rows.extend(sequence.rows)
        return running

    def _prefill(self, running: _Running, sequences: list[_Sequence]) -> tuple[BatchKV, torch.Tensor]:
        """A batch of one row per sequence holding its prompt past the shared prefix: what the
        prefix cache has, then the rest, computed now. Returns it with each row's logits."""
        shared = len(running.prefix)
        cached = [self._cache.longest(s.prompt, len(s.prompt) - 1) for s in sequences]
        starts = [max(shared, len(c.tokens) if c else 0) for c in cached]
        spans = [self._span(c, shared, start) for c, start in zip(cached, starts)]
        rest = [s.prompt[start:] for s, start in zip(sequences, starts)]
        width = max(len(r) for r in rest)
        kv = BatchKV((running.kv.prefix_keys, running.kv.prefix_values), rows=len(sequences),
                     capacity=max(k[0].shape[2] for k, _ in spans) + width + DECODE_RESERVE)
        kv.fill(spans)
        tokens = torch.tensor([[self._pad] * (width - len(r)) + r for r in rest], device=self.device)
        valid = torch.tensor([[False] * (width - len(r)) + [True] * len(r) for r in rest], device=self.device)
        logits = kv.forward(self._model, tokens, valid)
        self.prefilled_tokens += sum(len(r) for r in rest)
        if self._cache.max_tokens:
            for row, (sequence, parent) in enumerate(zip(sequences, cached)):
                # The new block holds what its parent does not: part of the shared prefix, maybe, then the row's own.
                begin = len(parent.tokens) if parent else 0
                own_keys, own_values = kv.row_span(row, len(sequence.prompt) - max(begin, shared))
                if begin < shared:
                    own_keys = [torch.cat([p[:, :, begin:], k], 2) for p, k in zip(kv.prefix_keys, own_keys)]
                    own_values = [torch.cat([p[:, :, begin:], v], 2) for p, v in zip(kv.prefix_values, own_values)]
                self._cache.add(KVBlock(tuple(sequence.prompt), parent, own_keys, own_values))
        return kv, logits

    def _prefix_kv(self, prefix: tuple[int, ...]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The KV of `prefix`, per layer (1, kv_heads, len(prefix), head_dim), from the cache and what it lacks."""
        if not prefix:
            return self._span(None, 0, 0)
        cached = self._cache.longest(prefix, len(prefix))
        done = len(cached.tokens) if cached else 0
        if done == len(prefix):
            return self._span(cached, 0, done)
        kv = BatchKV(self._span(cached, 0, done), rows=1, capacity=len(prefix) - done)
        rest = torch.tensor([prefix[done:]], device=self.device)
        kv.forward(self._model, rest, torch.ones_like(rest, dtype=torch.bool))
        self.prefilled_tokens += len(prefix) - done
        block = KVBlock(prefix, cached, *kv.row_span(0, len(prefix) - done))
        self._cache.add(block)
        return self._span(block, 0, len(prefix))

    def _span(self, block: Optional[KVBlock], begin: int, end: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        if block is None or begin >= end:
            empty = torch.empty(self._kv_shape, dtype=self.dtype, device=self.device)
            return [empty] * self._layers, [empty] * self._layers
        spans = [block.span(layer, begin, end) for layer in range(self._layers)]
        return [k for k, _ in spans], [v for _, v in spans]

    @torch.inference_mode()
    def _step(self, running: _Running) -> list[_Sequence]:
        """Sample one token for every row and compute the next logits; returns the sequences it finished."""
        keep, tokens, finished = [], [], []
        for j, row in enumerate(running.rows):
            if row.sequence.cancelled():
                continue
            token = self._sample(running.logits[j], row)
            self._advance(row, token)
            if row.finish_reason is None:
                keep.append(j)
                tokens.append(token)
            elif row.sequence.done():
                finished.append(row.sequence)
        if len(keep) < len(running.rows):
            running.kv.select(torch.tensor(keep, dtype=torch.long, device=self.device))
            running.rows = [running.rows[j] for j in keep]
        if keep:
            step = torch.tensor(tokens, device=self.device)[:, None]
            running.logits = running.kv.forward(self._model, step, torch.ones_like(step, dtype=torch.bool))
        return finished

    @staticmethod
    def _sample(logits: torch.Tensor, row: _Row) -> int:
        params = row.sequence.request.params
        if params.temperature == 0:
            return int(logits.argmax())
        probs = torch.softmax(logits / params.temperature, dim=-1)
        if params.top_p < 1.0:
            sorted_probs, order = probs.sort(descending=True)
            # keep the smallest prefix whose mass reaches top_p (always the top token)
            drop = sorted_probs.cumsum(-1) - sorted_probs >= params.top_p
            sorted_probs[drop] = 0.0
            probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
        return int(torch.multinomial(probs.cpu(), 1, generator=row.generator))

    def _advance(self, row: _Row, token: int) -> None:
        params = row.sequence.request.params
        if token in self._eos:
            row.finish_reason = "eos"
            return
        row.tokens.append(token)
        previous = len(row.text)
        row.text = self.tokenizer.decode(row.tokens, skip_special_tokens=True)
        longest = max((len(s) for s in params.stop), default=0)
        cut = cut_at_stop(row.text, params.stop, max(0, previous - longest))
        if cut is not None:
            row.text = row.text[:cut]
            row.finish_reason = "stop"
        elif len(row.tokens) >= params.max_new_tokens or len(row.sequence.prompt) + len(row.tokens) >= self.context_length:
            row.finish_reason = "length"

    async def close(self) -> None:
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.cancel()
            if self._loop is asyncio.get_running_loop():
                await asyncio.gather(worker, return_exceptions=True)


def _sequences(running: Optional[_Running]) -> list[_Sequence]:
    return [row.sequence for row in running.rows] if running else []


def _fail(sequences: list[_Sequence], error: Optional[BaseException]) -> None:
    """Fail each sequence with `error`, or with its own."""
    for sequence in sequences:
        if not sequence.future.done():
            sequence.future.set_exception(error or sequence.error)


def _common_prefix(prompts: list[list[int]], limit: Optional[int] = None) -> tuple[int, ...]:
    """The prompts' longest common prefix that leaves each at least one token to prefill
    (its last token's logits start decoding), or () when too short to be worth sharing."""
    shared = min(len(p) for p in prompts) - 1 if limit is None else min([limit] + [len(p) - 1 for p in prompts[1:]])
    first = prompts[0]
    for p in prompts[1:]:
        shared = next((i for i in range(shared) if p[i] != first[i]), shared)
    return tuple(first[:shared]) if shared >= MIN_CACHED_PREFIX else ()
