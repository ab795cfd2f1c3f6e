"""A byte-level tokenizer that needs nothing but transformers to load (``tokenizer.json``, fast backend).

Token id ``b`` is the byte ``b`` (0..255), the layout of byte-level models such as the tiny RWKV-4 checkpoints;
an end-of-text token follows at id 256 when ``eos=True``. Bytes are shown through the GPT-2 byte-to-unicode map so
that every byte is a printable vocabulary entry.
"""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

EOS_TOKEN = "<|endoftext|>"


def _bytes_to_unicode() -> dict[int, str]:
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    mapping = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


def byte_level_tokenizer(eos: bool = True) -> PreTrainedTokenizerFast:
    """Tokenizer with ids 0..255 for bytes, plus ``<|endoftext|>`` = 256 (also the pad token) when ``eos``."""
    vocab = {char: byte for byte, char in _bytes_to_unicode().items()}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    if not eos:
        return PreTrainedTokenizerFast(tokenizer_object=tok)
    tok.add_special_tokens([EOS_TOKEN])
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS_TOKEN, pad_token=EOS_TOKEN)
