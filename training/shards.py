"""Token shards: what `refinery tokenize` writes and the training loop memory-maps.

A shard is a 64-byte header then the tokens, each document followed by EOS:

| bytes | field |
|---|---|
| 0-7 | magic `WRTOKENS` |
| 8-11 | version (1), little-endian uint32 |
| 12-15 | bytes per token: 2 (uint16, vocabularies up to 65,536) or 4 (uint32) |
| 16-23 | token count, uint64 |
| 24-31 | document count, uint64 |
| 32-63 | sha256 of the tokenizer model |

Beside each `NAME.bin` an index `NAME.idx.parquet` maps token ranges back to documents: `start`, `length`
(EOS excluded), `id`, `warc_file`, `warc_record_id`, `warc_offset`, `copy` (mixing's repeats are written out
here, copy 0, 1, ...).
"""
from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MAGIC, VERSION, HEADER_BYTES = b"WRTOKENS", 1, 64
_HEADER = struct.Struct("<8sIIQQ32s")


class ShardError(ValueError):
    pass


@dataclass(frozen=True)
class ShardHeader:
    dtype_bytes: int
    tokens: int
    documents: int
    tokenizer_sha256: str

    def pack(self) -> bytes:
        return _HEADER.pack(MAGIC, VERSION, self.dtype_bytes, self.tokens, self.documents,
                            bytes.fromhex(self.tokenizer_sha256))

    @property
    def dtype(self):
        return np.dtype("<u2") if self.dtype_bytes == 2 else np.dtype("<u4")


def dtype_for(vocab_size: int) -> int:
    return 2 if vocab_size <= 1 << 16 else 4


def shard_bytes(documents: list[list[int]], eos_id: int, vocab_size: int, tokenizer_sha256: str) -> bytes:
    """Header + tokens of `documents` (each followed by EOS)."""
    width = dtype_for(vocab_size)
    dtype = np.dtype("<u2") if width == 2 else np.dtype("<u4")
    body = np.fromiter((t for ids in documents for t in (*ids, eos_id)), dtype=dtype)
    header = ShardHeader(width, len(body), len(documents), tokenizer_sha256)
    return header.pack() + body.tobytes()


def read_header(path: str | Path) -> ShardHeader:
    """The header of a shard, checked against the file's size; ShardError says what is wrong."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as fh:
        raw = fh.read(HEADER_BYTES)
    if len(raw) < HEADER_BYTES:
        raise ShardError(f"{path}: {len(raw)} bytes, shorter than the {HEADER_BYTES}-byte header")
    magic, version, width, tokens, documents, sha = _HEADER.unpack(raw)
    if magic != MAGIC:
        raise ShardError(f"{path}: not a token shard (magic {magic!r})")
    if version != VERSION:
        raise ShardError(f"{path}: version {version}, this code reads {VERSION}")
    if width not in (2, 4):
        raise ShardError(f"{path}: {width} bytes per token, expected 2 or 4")
    if size != HEADER_BYTES + tokens * width:
        raise ShardError(f"{path}: {size} bytes, the header promises {HEADER_BYTES + tokens * width} "
                         f"({tokens:,} tokens): truncated or padded")
    return ShardHeader(width, tokens, documents, sha.hex())


def scan_shard(path: str | Path) -> tuple[str, int]:
    """(sha256 of the whole file, the largest token id in it), in one pass over the file."""
    header = read_header(path)
    digest, largest = hashlib.sha256(), -1
    with open(path, "rb") as fh:
        head = fh.read(HEADER_BYTES)
        digest.update(head)
        block_bytes = (1 << 22) - (1 << 22) % header.dtype_bytes
        for block in iter(lambda: fh.read(block_bytes), b""):
            digest.update(block)
            tokens = np.frombuffer(block, dtype=header.dtype)
            if len(tokens):
                largest = max(largest, int(tokens.max()))
    return digest.hexdigest(), largest


def open_tokens(path: str | Path) -> tuple[ShardHeader, np.ndarray]:
    """(header, tokens as a read-only memory map)."""
    header = read_header(path)
    tokens = np.memmap(path, dtype=header.dtype, mode="r", offset=HEADER_BYTES, shape=(header.tokens,))
    return header, tokens
