"""The engine protocol, run against each backend (the same assertions for all)."""

from __future__ import annotations

import asyncio

import pytest

from ray_distill.engines import ContextLengthError, GenerationRequest, SamplingParams
from ray_distill.engines.protocol import render_prompt

CHAT = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Name a colour."}]


@pytest.fixture(scope="module", params=["hf", pytest.param("vllm", marks=[pytest.mark.slow, pytest.mark.vllm])])
def engine(request, tiny_model):
    if request.param == "hf":
        from ray_distill.engines.hf import HFEngine

        # float32: the assertions below compare outputs across batch shapes, which bfloat16 rounding can change.
        yield HFEngine(str(tiny_model), dtype="float32")
        return
    # vLLM starts worker processes, so it runs where it runs in production: in a replica actor.
    from ray_distill.distributed.engines import EngineRouter
    from ray_distill.engines.spec import EngineSpec

    request.getfixturevalue("local_ray")
    router = EngineRouter.launch(EngineSpec("vllm", str(tiny_model), {"max_model_len": 2048}))
    yield router
    asyncio.run(router.close())


def generate(engine, *requests):
    async def go():
        return await asyncio.gather(*(engine.generate(r) for r in requests))

    return asyncio.run(go())


def req(**params) -> GenerationRequest:
    return GenerationRequest(CHAT, SamplingParams(**params))


def test_greedy_is_deterministic_and_respects_max_tokens(engine):
    a, b = generate(engine, req(max_new_tokens=12), req(max_new_tokens=12))
    assert a.texts == b.texts
    sample = a.samples[0]
    assert sample.tokens <= 12
    assert sample.finish_reason == "eos" or (sample.finish_reason == "length" and sample.tokens == 12)
    assert a.prompt_tokens > 0


def test_n_samples_share_a_prompt_and_seeds_make_them_reproducible(engine):
    seeded = req(n=4, temperature=1.0, max_new_tokens=16, seed=11)
    (first,) = generate(engine, seeded)
    assert len(first.samples) == 4 and len(set(first.texts)) > 1
    # the same seed gives the same samples, alone or batched with other requests
    batched = generate(engine, req(n=2, temperature=1.0, max_new_tokens=8, seed=5), seeded,
                       req(max_new_tokens=20), req(n=3, temperature=0.7, max_new_tokens=16))
    assert batched[1].texts == first.texts
    (other,) = generate(engine, req(n=4, temperature=1.0, max_new_tokens=16, seed=12))
    assert other.texts != first.texts


def test_stop_strings_cut_the_text_before_them(engine):
    (full,) = generate(engine, req(temperature=1.0, max_new_tokens=40, seed=3))
    text = full.texts[0]
    assert len(text) > 12, text
    stop = text[8:11]
    (cut,) = generate(engine, req(temperature=1.0, max_new_tokens=40, seed=3, stop=("never-there", stop)))
    assert cut.texts[0] == text[: text.index(stop)]
    assert cut.samples[0].finish_reason == "stop"


def test_top_p_near_zero_is_greedy(engine):
    greedy, nucleus = generate(engine, req(max_new_tokens=16), req(temperature=1.0, top_p=1e-6, max_new_tokens=16, seed=9))
    assert nucleus.texts == greedy.texts


def test_concurrent_requests_are_batched(engine):
    if not hasattr(engine, "batches"):
        pytest.skip("vLLM batches continuously inside its engine")
    before = engine.batches
    results = generate(engine, *[req(max_new_tokens=6, temperature=0.8, seed=i) for i in range(6)])
    assert len(results) == 6 and all(len(r.samples) == 1 for r in results)
    assert engine.batches - before < 6


def test_continue_final_message_renders_an_open_assistant_turn(engine, tiny_model):
    from transformers import AutoTokenizer

    prefix = "Thought: a colour is"
    messages = CHAT + [{"role": "assistant", "content": prefix}]
    prompt = render_prompt(AutoTokenizer.from_pretrained(tiny_model), messages, continue_final_message=True)
    assert prompt.endswith(prefix)
    (completion,) = generate(engine, GenerationRequest(messages, SamplingParams(max_new_tokens=4),
                                                       continue_final_message=True))
    assert completion.samples[0].tokens <= 4


def test_bad_requests_are_rejected():
    with pytest.raises(ValueError, match="n must be >= 1"):
        SamplingParams(n=0)
    with pytest.raises(ValueError, match="top_p"):
        SamplingParams(top_p=0)
    with pytest.raises(ValueError, match="temperature"):
        SamplingParams(temperature=-1)
    with pytest.raises(ValueError, match="assistant message last"):
        GenerationRequest(CHAT, continue_final_message=True)
    with pytest.raises(ValueError, match="at least one message"):
        GenerationRequest([])


def test_hf_prefix_cache_reuses_shared_prompts_without_changing_outputs(tiny_model):
    from ray_distill.agent.prompts import TEACHER_SYSTEM_PROMPT
    from ray_distill.engines.hf import HFEngine

    def requests(tasks):
        return [GenerationRequest([{"role": "system", "content": TEACHER_SYSTEM_PROMPT},
                                   {"role": "user", "content": t}], SamplingParams(max_new_tokens=10, **kw))
                for t in tasks for kw in ({}, {"temperature": 1.0, "seed": 4})]

    cold = HFEngine(str(tiny_model), dtype="float32", prefix_cache_tokens=0)
    warm = HFEngine(str(tiny_model), dtype="float32")
    first = requests(["Task: add 2 and 3", "Task: name a city", "Task: who wrote it?"])
    expected = [c.texts for c in cold.generate_batch(first)]
    assert [c.texts for c in warm.generate_batch(first)] == expected
    computed = warm.prefilled_tokens
    assert [c.texts for c in warm.generate_batch(first)] == expected
    assert warm.prefilled_tokens - computed < computed / 5  # the shared system prompt came from the cache

    # an episode's next prompt extends its previous one: only the new turns are computed
    (single,) = requests(["Task: add 2 and 3"])[:1]
    longer = GenerationRequest(list(single.messages) + [{"role": "assistant", "content": "Thought: easy."},
                                                        {"role": "user", "content": "Observation: 5"}], single.params)
    warm.generate_batch([single])
    before = warm.prefilled_tokens
    assert warm.generate_batch([longer])[0].texts == cold.generate_batch([longer])[0].texts
    assert warm.prefilled_tokens - before < 40


def test_hf_greedy_matches_transformers_generate(tiny_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ray_distill.agent.prompts import TEACHER_SYSTEM_PROMPT
    from ray_distill.engines.hf import HFEngine

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    reference = AutoModelForCausalLM.from_pretrained(tiny_model, dtype="float32", attn_implementation="sdpa").eval()
    chats = [CHAT, [{"role": "system", "content": TEACHER_SYSTEM_PROMPT}, {"role": "user", "content": "Task: add 2 and 3"}],
             [{"role": "system", "content": TEACHER_SYSTEM_PROMPT}, {"role": "user", "content": "Task: who wrote it?"}]]
    engine = HFEngine(str(tiny_model), dtype="float32")
    got = engine.generate_batch([GenerationRequest(chat, SamplingParams(max_new_tokens=24)) for chat in chats])
    for chat, completion in zip(chats, got):
        ids = tokenizer(render_prompt(tokenizer, chat, False), add_special_tokens=False, return_tensors="pt").input_ids
        out = reference.generate(ids, max_new_tokens=24, do_sample=False, pad_token_id=engine._pad)
        assert completion.texts[0] == tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


def test_hf_requests_join_a_running_batch_without_changing_outputs(tiny_model):
    """Rows join between decode steps: with a shorter shared prefix, with cached history, with none in common."""
    from ray_distill.agent.prompts import TEACHER_SYSTEM_PROMPT
    from ray_distill.engines.hf import HFEngine

    system = {"role": "system", "content": TEACHER_SYSTEM_PROMPT}
    first = GenerationRequest([system, {"role": "user", "content": "Task: name a city"}], SamplingParams(max_new_tokens=48))
    later = [
        GenerationRequest([system, {"role": "user", "content": "Task: add 2 and 3"}],
                          SamplingParams(n=3, temperature=1.0, seed=4, max_new_tokens=20)),
        GenerationRequest(list(first.messages) + [{"role": "assistant", "content": "Thought: Paris."},
                                                  {"role": "user", "content": "Observation: ok"}],
                          SamplingParams(max_new_tokens=20)),
        GenerationRequest(CHAT, SamplingParams(max_new_tokens=20)),
    ]
    engine = HFEngine(str(tiny_model), dtype="float32")
    alone = [engine.generate_batch([r])[0].texts for r in [first] + later]

    async def staggered():
        running = asyncio.create_task(engine.generate(first))
        while engine.prefilled_tokens == before:  # wait until the first request is decoding
            await asyncio.sleep(0.001)
        joined = await asyncio.gather(*(engine.generate(r) for r in later))
        return [await running] + joined

    before, batches = engine.prefilled_tokens, engine.batches
    together = asyncio.run(staggered())
    assert engine.batches == batches + 1  # every later request joined the first one's batch
    assert [c.texts for c in together] == alone


def test_hf_a_prompt_too_long_fails_alone_and_closing_fails_what_waits(tiny_model):
    from ray_distill.engines.hf import HFEngine

    engine = HFEngine(str(tiny_model), dtype="float32")
    engine.context_length = 64
    too_long = GenerationRequest([{"role": "user", "content": "word " * 100}], SamplingParams(max_new_tokens=4))

    async def mixed():
        return await asyncio.gather(engine.generate(too_long), engine.generate(req(max_new_tokens=100)),
                                    return_exceptions=True)

    error, fine = asyncio.run(mixed())
    assert isinstance(error, ContextLengthError) and "reads at most 64" in str(error)
    # the context bounds generation too
    assert fine.samples[0].finish_reason in ("eos", "length") and fine.prompt_tokens + fine.samples[0].tokens <= 64

    engine.context_length = 8192

    async def closed_midway():
        before = engine.prefilled_tokens
        pending = asyncio.create_task(engine.generate(req(max_new_tokens=4000)))
        while engine.prefilled_tokens == before:  # decoding has started
            await asyncio.sleep(0.001)
        await engine.close()
        with pytest.raises(RuntimeError, match="closed"):
            await pending

    asyncio.run(closed_midway())
