"""Text for the redundancy study: GPT-2 tokenizers, the shipped corpus and random windows."""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from cram.core.errors import ConfigError, DataError

#: Public-domain Shakespeare shipped with the package (see ``corpus/SOURCES.txt``).
CORPUS_DIR = Path(__file__).resolve().parent / "corpus"


class ByteTokenizer:
    """Byte-level tokenizer: token id = UTF-8 byte value (vocabulary 256, no merges, no specials).

    GPT-2's BPE vocabulary cannot be downloaded here, so the small models trained in this module
    read raw bytes. The shipped corpus is pure ASCII, so one token is one character.
    """

    name = "bytes"
    vocab_size = 256

    def encode(self, text: str) -> np.ndarray:
        """Token ids (n,) int64 of ``text``'s UTF-8 bytes."""
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64)

    def decode(self, ids: Iterable[int]) -> str:
        """Text of byte ids (invalid UTF-8 replaced)."""
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable unicode characters."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
            *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


class GPT2BPETokenizer:
    r"""GPT-2's byte-level BPE, read from a local ``vocab.json`` + ``merges.txt`` (encode only).

    The pre-tokenising pattern is GPT-2's, with ``\p{L}`` written ``[^\W\d_]`` and ``\p{N}``
    written ``\d`` because the standard ``re`` module lacks unicode classes; on ASCII and most
    Latin text the split is the same.
    """

    name = "gpt2-bpe"
    _PAT = re.compile(
        r"""'s|'t|'re|'ve|'m|'ll|'d| ?[^\W\d_]+| ?\d+| ?[^\s\w]+|\s+(?!\S)|\s+|_+""", re.UNICODE
    )

    def __init__(self, vocab_path: str | os.PathLike, merges_path: str | os.PathLike):
        try:
            self.encoder: dict[str, int] = json.loads(Path(vocab_path).read_text("utf-8"))
            lines = Path(merges_path).read_text("utf-8").splitlines()
        except (OSError, json.JSONDecodeError) as err:
            raise DataError(f"cannot read GPT-2 tokenizer files: {err}") from None
        merges = [tuple(ln.split()) for ln in lines if ln and not ln.startswith("#version")]
        bad = [i for i, m in enumerate(merges) if len(m) != 2]
        if bad:
            raise DataError(f"{merges_path}: line {bad[0] + 1} is not a 'left right' merge")
        self.ranks = {m: i for i, m in enumerate(merges)}
        self.byte_map = _bytes_to_unicode()
        self.vocab_size = len(self.encoder)
        self._cache: dict[str, list[int]] = {}

    def _bpe(self, word: str) -> list[str]:
        parts = list(word)
        while len(parts) > 1:
            pairs = [(self.ranks.get((parts[i], parts[i + 1]), math.inf), i)
                     for i in range(len(parts) - 1)]
            rank, i0 = min(pairs)  # the lowest-ranked (earliest learned) merge, leftmost first
            if rank == math.inf:
                break
            left, right = parts[i0], parts[i0 + 1]
            merged, i = [], 0
            while i < len(parts):
                if i < len(parts) - 1 and parts[i] == left and parts[i + 1] == right:
                    merged.append(left + right)
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        return parts

    def encode(self, text: str) -> np.ndarray:
        """Token ids (n,) int64 of ``text``."""
        ids: list[int] = []
        for piece in self._PAT.findall(text):
            if piece not in self._cache:
                word = "".join(self.byte_map[b] for b in piece.encode("utf-8"))
                try:
                    self._cache[piece] = [self.encoder[t] for t in self._bpe(word)]
                except KeyError as err:
                    raise DataError(f"vocab.json has no entry for BPE token {err}") from None
            ids.extend(self._cache[piece])
        return np.asarray(ids, dtype=np.int64)




def corpus_files(corpus_dir: str | os.PathLike | None = None) -> list[Path]:
    """The corpus ``.txt`` files of ``corpus_dir`` (default: the shipped corpus), sorted."""
    d = Path(corpus_dir) if corpus_dir is not None else CORPUS_DIR
    files = sorted(p for p in d.glob("*.txt") if p.name != "SOURCES.txt")
    if not files:
        raise DataError(f"{d}: no corpus .txt files")
    return files


def load_corpus_text(corpus_dir=None, val_fraction: float = 0.1) -> tuple[str, str]:
    """Return ``(train_text, val_text)``: the last ``val_fraction`` of each work is held out."""
    if not 0.0 < val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be in (0, 1), got {val_fraction}")
    train, val = [], []
    for f in corpus_files(corpus_dir):
        try:
            text = f.read_text(encoding="utf-8")
        except UnicodeDecodeError as err:
            raise DataError(f"{f}: not UTF-8 text ({err})") from None
        cut = int(len(text) * (1 - val_fraction))
        train.append(text[:cut])
        val.append(text[cut:])
    return "\n\n".join(train), "\n\n".join(val)


def sample_windows(ids: np.ndarray, n: int, length: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` windows of ``length`` token ids at random offsets: (n, length) int64."""
    if len(ids) <= length:
        raise DataError(f"text has {len(ids)} tokens, fewer than one window of {length + 1}")
    starts = rng.integers(0, len(ids) - length, size=n)
    return np.stack([ids[s:s + length] for s in starts]).astype(np.int64)
