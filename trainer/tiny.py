"""Build a tiny Hugging Face causal LM fully offline (`python -m trainer build-tiny`).

Qwen2 architecture, random init, a byte-level BPE tokenizer trained with `tokenizers` on
the given texts (or a built-in corpus), and a Qwen-like chat template (<|im_start|> /
<|im_end|>). EOS is the end-of-turn token <|im_end|>, as in Qwen instruct models, so a
sampled answer ends where the teacher's does. Tests, the demo and benchmarks use it since
no model can be downloaded here.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, cast

from trainer.errors import BadInput

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

END_OF_TEXT, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"

CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

_WORDS = (
    "the a an one two three cat dog bird fish tree river sun moon star water fire stone "
    "red green blue small large quick slow happy sad runs jumps sings sleeps eats reads "
    "writes thinks sees knows makes takes gives finds tells asks works calls tries leaves "
    "feels becomes shows hears plays moves lives believes brings happens stands loses pays "
    "what why how when where who please explain answer question number list story poem "
    "hello thanks yes no maybe because and or but if then so very not is are was were be "
    "0 1 2 3 4 5 6 7 8 9 + - = ? ! . , :"
).split()


def builtin_corpus(n_lines: int = 2000, seed: int = 0) -> list[str]:
    """Deterministic pseudo-English lines, enough for a few hundred BPE merges."""
    rng = random.Random(seed)
    return [" ".join(rng.choices(_WORDS, k=rng.randint(4, 16))) for _ in range(n_lines)]


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE (GPT-2/Qwen style) with the chat special tokens; any text encodes."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[END_OF_TEXT, IM_START, IM_END],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=IM_END,
        pad_token=END_OF_TEXT,
        chat_template=CHAT_TEMPLATE,
        model_max_length=32768,
    )


def build_tiny(
    out: str | Path,
    texts: str | Path | None = None,
    layers: int = 2,
    hidden: int = 64,
    heads: int = 4,
    vocab: int = 512,
    seed: int = 0,
) -> Path:
    """Write a tiny Qwen2 model + tokenizer to `out`; return the directory."""
    if hidden % heads:
        raise BadInput(f"--hidden {hidden} must be a multiple of --heads {heads}")
    if vocab < 260:
        raise BadInput(f"--vocab {vocab} must be at least 260 (256 bytes + special tokens)")
    corpus = _read_texts(texts) if texts else builtin_corpus(seed=seed)
    import torch  # after the input checks: a bad --texts fails without loading torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    tokenizer = train_tokenizer(corpus, vocab)
    eos_id = tokenizer.convert_tokens_to_ids(IM_END)
    kv_heads = heads // 2 if heads % 2 == 0 else heads  # grouped-query attention, like Qwen2
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 4,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=8192,
        tie_word_embeddings=True,
        bos_token_id=cast(int, tokenizer.convert_tokens_to_ids(END_OF_TEXT)),  # one token: an int
        eos_token_id=eos_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(
        eos_token_id=eos_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=config.bos_token_id
    )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def _read_texts(path: str | Path) -> list[str]:
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise BadInput(f"cannot read --texts file {path}: {e}") from e
    lines = [line for line in lines if line.strip()]
    if not lines:
        raise BadInput(f"--texts file {path} has no non-empty line to train the tokenizer on")
    return lines
