"""`tiny-random`: a tiny randomly initialised Llama with a locally trained tokenizer.

For tests that need the real code paths (tokenise, chat template, generate,
train, export) at the speed of a model with ~0.3M parameters. Built
deterministically: the tokenizer is a byte-level BPE trained on a fixed
text (world passages plus CodeAct-style snippets) and the weights come from
a fixed torch seed, so every machine builds the same model.
"""

from __future__ import annotations

from pathlib import Path

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
VOCAB_SIZE = 1024
SEED = 0

# ChatML, as used by Qwen2.5 and SmolLM2.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_CODE_SNIPPETS = [
    "Thought: I will search for the answer.\nCode:\n```py\nresult = web_search(query=\"capital\")\nprint(result)\n```<end_code>",
    "Thought: Now I can compute it.\nCode:\n```py\nx = 17 * 23\nfinal_answer(x)\n```<end_code>",
    "Observation:\nExecution logs:\n391\nLast output from code snippet:\nNone",
    "import math\nfor i in range(10):\n    print(math.sqrt(i), i ** 2, [j for j in range(i)])",
]


# The imports in the functions below are local: ray_distill.config and `ray-distill models` import this module,
# and the fast commands load neither torch, tokenizers, transformers nor the world generator (tqdm).
def _training_text() -> list[str]:
    from ray_distill.data.world import World, iter_passages

    passages = [p["contents"] for p in iter_passages(World(seed=SEED, num_passages=300))]
    return passages + _CODE_SNIPPETS * 20


def build(out: Path) -> None:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_training_text(), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=CHAT_TEMPLATE,
    )

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,  # head_dim 64: a size every vLLM attention backend supports
        num_key_value_heads=1,
        max_position_embeddings=8192,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(SEED)
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
