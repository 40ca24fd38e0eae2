"""The transformers engine: CPU (tests, laptops) or a single GPU.

Requests are queued; a worker takes everything pending (up to
`max_batch_rows` samples) as one batch, so requests that arrive while a batch
runs join the next one. Each request's prompt is prefilled once and its
KV cache copied to its `n` samples. A prefix cache keeps the KV of recent
prompt prefixes: the system prompt and worked examples every agent request
starts with, and each episode's previous prompt, which its next one extends.
A batch prefills only what follows the longest cached common prefix (padding
sits between that prefix and each row's rest). Decoding is our own loop rather than
`model.generate`, because each row needs its own temperature, top-p, stop
strings and random generator: a seeded request then gives the same samples
whatever else shares its batch. Finished rows leave the batch at once.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import random
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional

import torch

from ray_distill.compute import run_compute
from ray_distill.engines.protocol import Completion, GenerationRequest, Sample, cut_at_stop, render_prompt
from ray_distill.models import resolve_model

if TYPE_CHECKING:
    from transformers import DynamicCache

log = logging.getLogger(__name__)

# Shorter common prefixes are not worth a cache entry.
MIN_CACHED_PREFIX = 32


@dataclass
class _Row:
    request: int  # index into the batch's requests
    params: "object"
    generator: torch.Generator
    tokens: list[int] = field(default_factory=list)
    text: str = ""
    finish_reason: Optional[str] = None


class HFEngine:
    def __init__(self, model: str, *, device: Optional[str] = None, dtype: Optional[str] = None,
                 max_batch_rows: int = 32, prefix_cache_tokens: int = 16_384):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.model = model
        path = resolve_model(model)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        torch_dtype = getattr(torch, dtype) if dtype else (torch.bfloat16 if self.device.type == "cuda" else torch.float32)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.tokenizer.padding_side = "left"
        self._model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype).to(self.device).eval()
        self.max_batch_rows = max_batch_rows
        eos = self._model.generation_config.eos_token_id
        self._eos = set(eos if isinstance(eos, list) else [eos]) | {self.tokenizer.eos_token_id}
        self._eos.discard(None)
        self._pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else min(self._eos)
        self._queue: Optional[asyncio.Queue] = None
        self._worker: Optional[asyncio.Task] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self.batches = 0  # batches run, for tests and stats
        self.prefix_cache_tokens = prefix_cache_tokens
        self._prefixes: "OrderedDict[tuple[int, ...], DynamicCache]" = OrderedDict()
        self.prefilled_tokens = 0  # prompt tokens actually computed (the rest came from the prefix cache)

    async def generate(self, request: GenerationRequest) -> Completion:
        loop = asyncio.get_running_loop()
        if self._worker is None or self._loop is not loop:
            # The batching worker lives on the caller's event loop (a new one
            # for every asyncio.run).
            self._loop = loop
            self._queue = asyncio.Queue()
            self._worker = asyncio.create_task(self._serve())
        future = asyncio.get_running_loop().create_future()
        await self._queue.put((request, future))
        return await future

    async def _serve(self) -> None:
        while True:
            batch = [await self._queue.get()]
            rows = batch[0][0].params.n
            while not self._queue.empty() and rows + self._queue._queue[0][0].params.n <= self.max_batch_rows:
                item = self._queue.get_nowait()
                rows += item[0].params.n
                batch.append(item)
            batch = [(r, f) for r, f in batch if not f.cancelled()]
            if not batch:
                continue
            try:
                results = await run_compute(self.generate_batch, [r for r, _ in batch])
            except Exception as e:  # the whole batch failed: every caller learns why
                for _, future in batch:
                    if not future.done():
                        future.set_exception(e)
                continue
            for (_, future), result in zip(batch, results):
                if not future.done():
                    future.set_result(result)

    @torch.inference_mode()
    def generate_batch(self, requests: list[GenerationRequest]) -> list[Completion]:
        """Generate for several requests at once (blocking)."""
        start = time.perf_counter()
        self.batches += 1
        prompts = [self.tokenizer(render_prompt(self.tokenizer, r.messages, r.continue_final_message),
                                  add_special_tokens=False).input_ids for r in requests]
        shared, cache = self._shared_prefix(prompts)
        suffixes = [p[shared:] for p in prompts]
        width = max(len(p) for p in suffixes)
        ids = torch.tensor([[self._pad] * (width - len(p)) + p for p in suffixes], device=self.device)
        mask = torch.tensor([[1] * shared + [0] * (width - len(p)) + [1] * len(p) for p in suffixes], device=self.device)
        self.prefilled_tokens += sum(len(p) for p in suffixes)
        out = self._model(input_ids=ids, attention_mask=mask,
                          position_ids=(mask.cumsum(-1) - 1).clamp(min=0)[:, shared:],
                          past_key_values=cache, use_cache=True)
        rows: list[_Row] = []
        for i, request in enumerate(requests):
            params = request.params
            for k in range(params.n):
                generator = torch.Generator(device="cpu")
                generator.manual_seed(params.seed * 1_000_003 + k if params.seed is not None else random.getrandbits(62))
                rows.append(_Row(request=i, params=params, generator=generator))
        expand = torch.tensor([row.request for row in rows], device=self.device)
        cache.batch_select_indices(expand)
        logits = out.logits[:, -1, :].float().index_select(0, expand)
        mask = mask.index_select(0, expand)
        positions = mask.sum(-1, keepdim=True) - 1
        active = list(range(len(rows)))
        max_steps = max(r.params.max_new_tokens for r in rows)
        for _ in range(max_steps):
            next_tokens = [self._sample(logits[j], rows[a]) for j, a in enumerate(active)]
            keep = []
            for j, (a, token) in enumerate(zip(active, next_tokens)):
                row = rows[a]
                self._advance(row, token)
                if row.finish_reason is None:
                    keep.append(j)
            if not keep:
                break
            if len(keep) < len(active):
                index = torch.tensor(keep, device=self.device)
                cache.batch_select_indices(index)
                mask = mask.index_select(0, index)
                positions = positions.index_select(0, index)
                next_tokens = [next_tokens[j] for j in keep]
                active = [active[j] for j in keep]
            mask = torch.cat([mask, mask.new_ones((len(active), 1))], dim=1)
            positions = positions + 1
            out = self._model(input_ids=torch.tensor(next_tokens, device=self.device)[:, None], attention_mask=mask,
                              position_ids=positions, past_key_values=cache, use_cache=True)
            logits = out.logits[:, -1, :].float()
        seconds = time.perf_counter() - start
        return [
            Completion(
                samples=[Sample(r.text, r.finish_reason or "length", len(r.tokens)) for r in rows if r.request == i],
                prompt_tokens=len(prompts[i]),
                seconds=seconds,
            )
            for i in range(len(requests))
        ]

    def _shared_prefix(self, prompts: list[list[int]]) -> "tuple[int, DynamicCache]":
        """(length, KV cache expanded to the batch) of the prompts' longest common
        prefix, computed from the longest cached prefix of it."""
        from transformers import DynamicCache

        shared = min(len(p) for p in prompts) - 1  # every row keeps a token to prefill
        first = prompts[0]
        for p in prompts[1:]:
            shared = next((i for i in range(shared) if p[i] != first[i]), shared)
        if shared < MIN_CACHED_PREFIX:
            return 0, DynamicCache()
        best = max((k for k in self._prefixes if len(k) <= shared and tuple(first[: len(k)]) == k), key=len, default=())
        cache = copy.deepcopy(self._prefixes[best]) if best else DynamicCache()
        if best:
            self._prefixes.move_to_end(best)
        if len(best) < shared:
            rest = torch.tensor([first[len(best):shared]], device=self.device)
            positions = torch.arange(len(best), shared, device=self.device)[None]
            self._model(input_ids=rest, position_ids=positions, past_key_values=cache, use_cache=True)
            self.prefilled_tokens += shared - len(best)
            self._remember(tuple(first[:shared]), cache)
        if len(prompts) > 1:
            cache.batch_repeat_interleave(len(prompts))
        return shared, cache

    def _remember(self, prefix: tuple[int, ...], cache) -> None:
        if len(prefix) > self.prefix_cache_tokens:
            return
        self._prefixes[prefix] = copy.deepcopy(cache)
        while sum(len(k) for k in self._prefixes) > self.prefix_cache_tokens:
            self._prefixes.popitem(last=False)

    @staticmethod
    def _sample(logits: torch.Tensor, row: _Row) -> int:
        params = row.params
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
        params = row.params
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
        elif len(row.tokens) >= params.max_new_tokens:
            row.finish_reason = "length"

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            self._worker = None
