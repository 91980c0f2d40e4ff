"""Mutations of bytes and of prototxt-like text, driven by a `random.Random`."""
from __future__ import annotations

import random
import re

from torchcaffe.wire import encode_varint

#: integers at the edges of the formats' ranges (int32, int64, uint64, INT_MAX products)
INTERESTING_INTS = (0, 1, 2, 3, -1, -2, 7, 255, 256, 65535, 65536, 2**31 - 1, 2**31, -2**31,
                    2**32, 2**32 + 1, 2**40, 2**62, 2**63 - 1, -2**63, 10**12)
INTERESTING_FLOATS = ("nan", "-nan", "inf", "-inf", "1e38", "-1e38", "3.5e38", "-0.0", "1e-45")


def mutate_bytes(data: bytes, rng: random.Random, rounds: int | None = None) -> bytes:
    """1 to 4 random byte-level edits: bit flips, special bytes, varints,
    truncation, deletion, duplication, random insertions."""
    buf = bytearray(data)
    for _ in range(rounds or rng.randint(1, 4)):
        if not buf:
            buf += rng.randbytes(rng.randint(1, 16))
            continue
        pos = rng.randrange(len(buf))
        op = rng.randrange(8)
        if op == 0:
            buf[pos] ^= 1 << rng.randrange(8)
        elif op == 1:
            buf[pos] = rng.choice((0x00, 0x01, 0x7F, 0x80, 0xFF, 0x08, 0x0A, 0x12, 0x1A))
        elif op == 2:  # a varint of an interesting value where one may stand
            value = rng.choice(INTERESTING_INTS)
            end = pos + 1
            while end < len(buf) and buf[end - 1] & 0x80:
                end += 1
            buf[pos:end] = encode_varint(value)
        elif op == 3:
            del buf[rng.randrange(len(buf)):]
        elif op == 4:
            del buf[pos:pos + rng.randint(1, 64)]
        elif op == 5:
            span = bytes(buf[pos:pos + rng.randint(1, 256)])
            at = rng.randrange(len(buf) + 1)
            buf[at:at] = span * rng.randint(1, 4)
        elif op == 6:
            buf[pos:pos] = rng.randbytes(rng.randint(1, 32))
        else:  # a length prefix made huge or small
            buf[pos:pos + 1] = encode_varint(rng.choice((0, 1, 127, 128, 2**31, 2**35)))
    return bytes(buf)


_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|-?\d+(?:\.\d*)?(?:e[-+]?\d+)?|[A-Za-z_][A-Za-z0-9_]*|\S')


def _number_text(rng: random.Random) -> str:
    if rng.random() < 0.75:
        return str(rng.choice(INTERESTING_INTS))
    return rng.choice(INTERESTING_FLOATS)


def mutate_text(text: str, rng: random.Random, snippets: list[str], strings: list[str],
                rounds: int | None = None) -> str:
    """1 to 3 token- or line-level edits: numbers to edge values, strings
    swapped or blown up, lines dropped, duplicated or inserted from
    `snippets`, truncation, a stray byte."""
    for _ in range(rounds or rng.randint(1, 3)):
        tokens = [m for m in _TOKEN.finditer(text)]
        op = rng.randrange(8)
        if op <= 2 and tokens:  # a number becomes an edge value
            numbers = [m for m in tokens if m.group()[0] in "-0123456789"]
            if numbers:
                m = rng.choice(numbers)
                text = text[:m.start()] + _number_text(rng) + text[m.end():]
                continue
        if op == 3 and tokens:  # a quoted string replaced
            quoted = [m for m in tokens if m.group().startswith('"')]
            if quoted:
                m = rng.choice(quoted)
                new = rng.choice(strings)
                if rng.random() < 0.05:
                    new = "x" * rng.choice((10**4, 10**6))
                text = text[:m.start()] + f'"{new}"' + text[m.end():]
                continue
        lines = text.splitlines()
        if op == 4 and lines:
            del lines[rng.randrange(len(lines))]
        elif op == 5 and lines:
            i = rng.randrange(len(lines))
            lines.insert(rng.randrange(len(lines) + 1), lines[i])
        elif op == 6:
            lines.insert(rng.randrange(len(lines) + 1), rng.choice(snippets))
        elif op == 7 and text:
            cut = rng.randrange(len(text))
            text = text[:cut] if rng.random() < 0.5 else text[:cut] + chr(rng.randrange(1, 0x2FF)) + text[cut:]
            continue
        text = "\n".join(lines)
    return text
