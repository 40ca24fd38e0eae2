"""Student SFT, the pure parts: loss masks from roles, truncation, packing, data order, schedule."""

from __future__ import annotations


import pytest

from ray_distill.agent import prompts
from ray_distill.training.data_order import DataPosition, global_batches, micro_batches, shuffled, steps_per_epoch
from ray_distill.training.examples import (ChatTemplateError, ConversationTokenizer, SFTExample, fit_length,
                                           stop_token_ids, student_messages)
from ray_distill.training.packing import IGNORE_INDEX, collate, one_per_sequence, pack

# Qwen2.5-Instruct's template without its tool-calling branches (the agent passes no tools): the
# shape the mask must handle, with no generation markers and a "\n" after each <|im_end|>.
QWEN25_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if (message.role == 'user') or (message.role == 'system' and not loop.first) or "
    "(message.role == 'assistant' and not message.tool_calls) %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

# Drops the content of earlier assistant turns (as reasoning templates do with <think>): the text a
# turn was generated from is then not a prefix of the whole conversation.
REWRITING_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if message.role == 'assistant' and not loop.last %}{{- '<|im_start|>assistant\\n<|im_end|>\\n' }}"
    "{%- else %}{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

ACTIONS = ["Thought: search first.\nCode:\n```py\nprint(web_search('Venhall'))\n```<end_code>",
           "Thought: the answer is in doc 1.\nCode:\n```py\nfinal_answer('Ostrava')\n```<end_code>"]
OBSERVATIONS = ["Observation:\nExecution logs:\nDoc 1 (Title: Venhall) score=0.71\nVenhall lies near Ostrava.",
                "Observation:\nExecution logs:\nOstrava"]


def trajectory() -> list[dict]:
    """A stored teacher trajectory: teacher system prompt, task, then assistant and tool turns."""
    messages = [{"role": "system", "content": prompts.TEACHER_SYSTEM_PROMPT},
                {"role": "user", "content": prompts.task_message("Which city is Venhall near?")}]
    for action, observation in zip(ACTIONS, OBSERVATIONS):
        messages += [{"role": "assistant", "content": action}, {"role": "tool", "content": observation}]
    return messages


@pytest.fixture(scope="module")
def smol_tokenizer():
    from transformers import AutoTokenizer

    from ray_distill.models import resolve_model

    return AutoTokenizer.from_pretrained(resolve_model("smollm2-135m-instruct"))


def tokenizer_with(tokenizer, template: str):
    import copy

    clone = copy.deepcopy(tokenizer)
    clone.chat_template = template
    return clone


def trained_spans(tokenizer, example: SFTExample) -> list[str]:
    """The trained tokens decoded, one string per contiguous run."""
    spans, current = [], []
    for token, trained in zip(example.input_ids, example.trained):
        if trained:
            current.append(token)
        elif current:
            spans.append(tokenizer.decode(current))
            current = []
    if current:
        spans.append(tokenizer.decode(current))
    return spans


@pytest.mark.parametrize("template", ["smollm2", "qwen2.5"])
def test_trained_tokens_are_exactly_the_assistant_turns_and_their_end_markers(smol_tokenizer, template):
    tokenizer = smol_tokenizer if template == "smollm2" else tokenizer_with(smol_tokenizer, QWEN25_TEMPLATE)
    tokenize = ConversationTokenizer(tokenizer, stop_token_ids(tokenizer))
    messages = student_messages(trajectory())
    example = tokenize("d/1/0", messages)

    assert trained_spans(tokenizer, example) == [action + "<|im_end|>" for action in ACTIONS]
    untrained = tokenizer.decode([t for t, trained in zip(example.input_ids, example.trained) if not trained])
    assert prompts.STUDENT_SYSTEM_PROMPT in untrained and OBSERVATIONS[0] in untrained
    # The tokens are the conversation as the chat template renders it, nothing more or less.
    assert tokenizer.decode(example.input_ids) == tokenizer.apply_chat_template(messages, tokenize=False)
    # Each assistant turn follows exactly the prompt the model gets at inference for that turn.
    second = tokenizer.apply_chat_template(messages[:4], tokenize=False, add_generation_prompt=True)
    first_trained_of_second_turn = [i for i, t in enumerate(example.trained) if t and not example.trained[i - 1]][1]
    assert tokenizer.decode(example.input_ids[:first_trained_of_second_turn]) == second


def test_a_cot_baseline_record_trains_only_its_response(smol_tokenizer):
    from ray_distill.training.sft_data import conversation

    row = {"system_prompt": prompts.COT_SYSTEM_PROMPT, "question": "What is 17 * 23?",
           "response": "17 * 23 = 391.\n\n<answer>\\boxed{391}</answer>"}
    example = ConversationTokenizer(smol_tokenizer, stop_token_ids(smol_tokenizer))("d/1/0", conversation(row, "cot"))
    assert trained_spans(smol_tokenizer, example) == [row["response"] + "<|im_end|>"]


def test_a_template_that_rewrites_earlier_turns_is_refused(smol_tokenizer):
    tokenizer = tokenizer_with(smol_tokenizer, REWRITING_TEMPLATE)
    with pytest.raises(ChatTemplateError, match="prefix"):
        ConversationTokenizer(tokenizer, stop_token_ids(tokenizer))("d/1/0", student_messages(trajectory()))


def test_student_messages_use_the_student_prompt_and_drop_the_closing_observation():
    messages = student_messages(trajectory())
    assert messages[0] == {"role": "system", "content": prompts.STUDENT_SYSTEM_PROMPT}
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user", "assistant"]
    assert messages[3]["content"] == OBSERVATIONS[0]  # observations reach the model as user turns
    with pytest.raises(ValueError, match="assistant"):
        student_messages(trajectory()[:2])


def example(key: str, length: int, trained_from: int = 1) -> SFTExample:
    return SFTExample(key, list(range(10, 10 + length)), [i >= trained_from for i in range(length)])


def test_truncation_cuts_or_drops_and_never_keeps_an_example_without_targets():
    long = example("a", 12, trained_from=4)
    assert fit_length(long, 20, "drop") is long
    cut = fit_length(long, 8, "truncate")
    assert cut.truncated and len(cut) == 8 and cut.trained == long.trained[:8]
    assert fit_length(long, 8, "drop") is None
    assert fit_length(example("b", 12, trained_from=10), 8, "truncate") is None


def test_packing_keeps_examples_whole_with_their_own_positions_and_no_cross_example_targets():
    examples = [example(f"e{i}", n) for i, n in enumerate([7, 3, 5, 2, 6, 4, 1])]
    sequences = pack(examples, 8)
    assert sorted(k for s in sequences for k in s.keys) == sorted(e.key for e in examples)
    assert all(len(s.input_ids) <= 8 for s in sequences)
    assert len(sequences) == 4  # 28 tokens in bins of 8: the fewest possible
    by_key = {e.key: e for e in examples}
    for s in sequences:
        offset = 0
        for key in s.keys:
            n = len(by_key[key])
            assert s.input_ids[offset:offset + n] == by_key[key].input_ids
            assert s.position_ids[offset:offset + n] == list(range(n))
            # The first token of an example is never a target: nothing before it in its block predicts it.
            assert s.labels[offset] == IGNORE_INDEX
            assert s.labels[offset + 1:offset + n] == by_key[key].input_ids[1:n]
            offset += n
    assert pack(examples, 8) == sequences  # deterministic
    assert [s.keys for s in one_per_sequence(examples)] == [[e.key] for e in examples]
    with pytest.raises(ValueError, match="exceed"):
        pack(examples, 6)


def test_a_packed_example_sees_only_itself(tiny_model):
    """Logits of an example packed behind another equal its logits alone: attention stops at the boundary."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    first, second = example("a", 9), SFTExample("b", [5, 99, 7, 300, 2, 41], [False] + [True] * 5)
    packed = collate([pack([first, second], 32)[0].to_row()], pad_id=0)
    alone = collate([one_per_sequence([second])[0].to_row()], pad_id=0)
    with torch.no_grad():
        packed_logits = model(input_ids=packed["input_ids"], position_ids=packed["position_ids"],
                              use_cache=False).logits[0, 9:15]
        alone_logits = model(input_ids=alone["input_ids"], position_ids=alone["position_ids"], use_cache=False).logits[0]
    torch.testing.assert_close(packed_logits, alone_logits, rtol=1e-4, atol=1e-4)
    # So the packed loss is the sum of the examples' losses, target for target (every attention path and
    # loss kernel: tests/test_training_compute.py).
    from ray_distill.training.student import Compute, loss_sum, prepare

    prepare(model, Compute("sdpa", "full", checkpointing=False))
    with torch.no_grad():
        packed_loss, packed_targets = loss_sum(model, packed)
        parts = [loss_sum(model, collate([s.to_row()], pad_id=0)) for s in one_per_sequence([first, second])]
    assert packed_targets == sum(n for _, n in parts) == 13
    assert float(packed_loss) == pytest.approx(sum(float(loss) for loss, _ in parts), rel=1e-4)


def test_collate_pads_with_untrained_tokens_in_their_own_block():
    rows = [s.to_row() for s in one_per_sequence([example("a", 3), example("b", 5)])]
    batch = collate(rows, pad_id=0)
    assert batch["input_ids"].tolist()[0] == [10, 11, 12, 0, 0]
    assert batch["labels"].tolist()[0] == [IGNORE_INDEX, 11, 12, IGNORE_INDEX, IGNORE_INDEX]
    assert batch["position_ids"].tolist()[0] == [0, 1, 2, 0, 1]


def test_the_epoch_order_is_a_seeded_permutation_that_differs_by_epoch():
    items = list(range(50))
    first = list(shuffled(items, seed=3, epoch=0, buffer=100))
    assert sorted(first) == items and first != items
    assert list(shuffled(items, seed=3, epoch=0, buffer=100)) == first
    assert list(shuffled(items, seed=3, epoch=1, buffer=100)) != first
    windowed = list(shuffled(iter(items), seed=3, epoch=0, buffer=8))
    assert sorted(windowed) == items and windowed != items


def test_micro_batches_split_a_global_batch_over_ranks_and_pad_a_short_one():
    batch = list(range(8))
    shares = [micro_batches(batch, rank, 2, 2, 2) for rank in range(2)]
    assert shares == [[[0, 2], [4, 6]], [[1, 3], [5, 7]]]
    assert micro_batches([0, 1, 2], 1, 2, 2, 2) == [[1], []]  # the short last batch of an epoch
    with pytest.raises(ValueError):
        micro_batches(list(range(10)), 0, 2, 2, 2)


def test_a_position_resumes_at_the_next_batch_including_across_an_epoch_boundary():
    items, size, epochs = list(range(10)), 4, 3
    per_epoch = steps_per_epoch(len(items), size)
    assert per_epoch == 3

    def run(position: DataPosition, stop_after: int | None = None):
        seen = []
        for epoch in range(position.epoch, epochs):
            for index, batch in enumerate(global_batches(shuffled(items, 0, epoch, 100), size)):
                if epoch == position.epoch and index < position.step:
                    continue
                if stop_after is not None and len(seen) == stop_after:
                    return seen, position
                seen.append(batch)
                position = position.advanced(per_epoch)
        return seen, position

    whole, end = run(DataPosition())
    assert end == DataPosition(epochs, 0) and len(whole) == per_epoch * epochs
    for k in (1, per_epoch, per_epoch + 2):  # mid-epoch, exactly at the boundary, and after it
        head, position = run(DataPosition(), stop_after=k)
        tail, _ = run(position)
        assert head + tail == whole, k
    assert run(DataPosition(), stop_after=per_epoch)[1] == DataPosition(1, 0)


def test_schedule_warms_up_then_decays_to_zero():
    from ray_distill.training.optim import schedule

    cosine = schedule(100, 0.1, "cosine")
    assert cosine.warmup == 10
    assert 0 < cosine(0) < cosine(5) < cosine(9) <= 1.0
    assert cosine(10) == 1.0 and cosine(100) == pytest.approx(0.0)
    assert schedule(100, 0.0, "linear")(50) == pytest.approx(0.5)
    assert schedule(100, 0.0, "constant")(99) == 1.0


def test_deepspeed_config_accumulates_to_the_global_batch():
    from ray_distill.config.schema import TrainConfig
    from ray_distill.training.optim import deepspeed_config

    config = deepspeed_config(TrainConfig(global_batch_size=16, micro_batch_size=2, zero_stage=3), workers=2,
                              bf16=False)
    assert config["gradient_accumulation_steps"] == 4 and config["zero_optimization"] == {"stage": 3}
    assert config["optimizer"]["params"]["torch_adam"] is True
    offload = deepspeed_config(TrainConfig(zero_stage=3, offload_optimizer=True, offload_params=True), workers=1,
                               bf16=True)
    assert offload["optimizer"]["params"]["torch_adam"] is False and offload["bf16"] == {"enabled": True}
    assert set(offload["zero_optimization"]) == {"stage", "offload_optimizer", "offload_param"}


def test_train_config_problems_name_the_key():
    from ray_distill.config import load_config
    from ray_distill.errors import ConfigError

    with pytest.raises(ConfigError) as error:
        load_config(None, ["train.global_batch_size=6", "train.workers=4", "train.export=adapter", "train.lora=false",
                           "train.zero_stage=4", "train.offload_params=true"])
    text = str(error.value)
    for key in ("train.global_batch_size", "train.export", "train.zero_stage", "train.offload_params"):
        assert key in text
