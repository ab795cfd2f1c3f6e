"""The RWKV "world" tokenizer: greedy longest-match over a byte vocabulary read from BlinkDL's file format.

Each line of ``rwkv_vocab_v20230424.txt`` is ``<id> <python literal> <byte length>``, the literal a ``str`` (encoded
as UTF-8) or a ``bytes`` object, for example ``33 '!' 1`` or ``124 b'\\x80' 1``. Id 0 is the end-of-text token
``<|endoftext|>``. Encoding walks the UTF-8 bytes of the text and takes, at each position, the longest vocabulary
entry that matches there (BlinkDL's ``TRIE_TOKENIZER``). Tokens are shown as their bytes read as Latin-1, one
character per byte, so that every byte string has a distinct ``str`` form.

``import hf_recurrent`` registers the class with ``AutoTokenizer`` for the RWKV configs, so that a converted
folder holding the vocabulary file loads with ``AutoTokenizer.from_pretrained``.
"""

from __future__ import annotations

import ast
import os
import shutil
from pathlib import Path

from transformers import PreTrainedTokenizer

VOCAB_FILE = "rwkv_vocab_v20230424.txt"
EOS_TOKEN = "<|endoftext|>"


def read_world_vocab(path: str | os.PathLike) -> dict[bytes, int]:
    """``{token bytes: id}`` from a world vocabulary file; malformed lines raise ``ValueError`` with the line."""
    vocab: dict[bytes, int] = {}
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            first, rest = line.index(" "), line.rindex(" ")
            idx, literal, length = int(line[:first]), ast.literal_eval(line[first + 1 : rest]), int(line[rest + 1 :])
        except (ValueError, SyntaxError) as err:
            raise ValueError(f"{path}:{number}: not '<id> <python literal> <byte length>': {line!r} ({err})") from None
        token = literal.encode("utf-8") if isinstance(literal, str) else literal
        if not isinstance(token, bytes) or len(token) != length:
            raise ValueError(f"{path}:{number}: token {literal!r} is not {length} bytes long")
        if token in vocab or idx == 0:
            raise ValueError(f"{path}:{number}: duplicate token {token!r} or reserved id 0")
        vocab[token] = idx
    return vocab


class RwkvWorldTokenizer(PreTrainedTokenizer):
    """Greedy longest-match byte tokenizer over an RWKV world vocabulary file (see the module docstring)."""

    vocab_files_names = {"vocab_file": VOCAB_FILE}
    model_input_names = ["input_ids", "attention_mask"]

    def __init__(self, vocab_file: str, eos_token: str = EOS_TOKEN, **kwargs) -> None:
        self.vocab_file = vocab_file
        eos_token = str(eos_token)  # an AddedToken when reloaded from tokenizer_config.json
        self._encoder = {token.decode("latin-1"): idx for token, idx in read_world_vocab(vocab_file).items()}
        self._encoder[eos_token] = 0
        self._decoder = {idx: token for token, idx in self._encoder.items()}
        self._max_len = max(len(t) for t in self._encoder)
        super().__init__(eos_token=eos_token, **kwargs)

    @property
    def vocab_size(self) -> int:
        return len(self._encoder)

    def get_vocab(self) -> dict[str, int]:
        return {**self._encoder, **self.added_tokens_encoder}

    def _tokenize(self, text: str, **kwargs) -> list[str]:
        data = text.encode("utf-8").decode("latin-1")
        tokens, i = [], 0
        while i < len(data):
            for j in range(min(len(data), i + self._max_len), i, -1):
                if data[i:j] in self._encoder:
                    tokens.append(data[i:j])
                    i = j
                    break
            else:
                raise ValueError(f"byte {data[i].encode('latin-1')!r} is not in the world vocabulary")
        return tokens

    def _convert_token_to_id(self, token: str) -> int:
        return self._encoder[token]

    def _convert_id_to_token(self, index: int) -> str:
        return self._decoder[index]

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        return "".join(t for t in tokens if t != self.eos_token).encode("latin-1").decode("utf-8", errors="replace")

    def save_vocabulary(self, save_directory: str, filename_prefix: str | None = None) -> tuple[str]:
        out = Path(save_directory) / ((filename_prefix + "-" if filename_prefix else "") + VOCAB_FILE)
        if Path(self.vocab_file).resolve() != out.resolve():
            shutil.copyfile(self.vocab_file, out)
        return (str(out),)


def world_tokenizer(vocab_file: str | os.PathLike) -> RwkvWorldTokenizer:
    """The world tokenizer of ``vocab_file``."""
    return RwkvWorldTokenizer(str(vocab_file))
