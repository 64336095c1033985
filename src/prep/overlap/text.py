"""The text two rows are compared on: which fields (every turn, or the user's or the assistant's
turns only), how it is normalised (Unicode NFKC, case, whitespace), and its tokens.

A row's text is its turns in order, each tagged with its role (so a turn boundary is part of the
text); tool calls count as their function name and JSON arguments. Text rows are their text,
whichever fields are asked for. Tokens are runs of letters and digits, except in scripts written
without spaces (Chinese, Japanese kana, Thai, Lao, Khmer, Myanmar), where every character is a
token, so word n-grams there are character n-grams.

    >>> compared({"messages": [{"role": "user", "content": "Ｈｅｌｌｏ,  World"},
    ...                         {"role": "assistant", "content": "你好"}]}, Compare())
    '\\x1euser\\x1fhello, world\\x1eassistant\\x1f你好'
    >>> tokens(_)
    ['user', 'hello', 'world', 'assistant', '你', '好']
"""

from __future__ import annotations

import functools
import json
import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import chain, compress
from operator import not_
from typing import Any

from prep.core.records import Record

_SIDES = ("messages", "prompt", "chosen", "rejected", "completion")
_TURN, _ROLE = "\x1e", "\x1f"  # record and unit separators: never typed, so they cannot collide with text
# Han (with extensions and compatibility forms), kana (with halfwidth), Thai, Lao, Myanmar, Khmer
_NO_SPACES = "\u3040-\u30ff\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f\u0e00-\u0eff" \
             "\u1000-\u109f\u1780-\u17ff\U00020000-\U0003134f"
_TOKEN = re.compile(f"[{_NO_SPACES}]|[^\\W{_NO_SPACES}]+")
_CHARACTER = re.compile(f"[{_NO_SPACES}]")


@dataclass(frozen=True)
class Compare:
    """What rows are compared on: `fields` (core.options.COMPARED: all, user, assistant) and the normalisation."""

    fields: str = "all"
    nfkc: bool = True
    ignore_case: bool = True
    ignore_space: bool = True


def compared(record: Record, compare: Compare) -> str:
    """The record's text as compared: the chosen turns, role-tagged, each normalised."""
    text = record.get("text")
    if isinstance(text, str):
        return normalize(text, compare)
    return tagged([[(m["role"], _turn_text(m)) for side in _SIDES if side in record for m in record[side]]],
                  compare)[0]


def tagged(chats: Iterable[Iterable[tuple[str, str]]], compare: Compare) -> list[str]:
    """Each chat's turns (role, text) as compared: the chosen ones, role-tagged, each normalised (`compared` of
    their record). A batch at a time: the normaliser is looked up once."""
    fields, norm = compare.fields, normalizer(compare)
    return ["".join([f"{_TURN}{role}{_ROLE}{norm(text)}" for role, text in turns if fields == "all" or role == fields])
            for turns in chats]


class _Tags(dict[str, str]):
    """Each role's tag, made once."""

    def __missing__(self, role: str) -> str:
        self[role] = tag = f"{_TURN}{role}{_ROLE}"
        return tag


_TAGS = _Tags()
_ASCII_SPACE = "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f"  # what str.split() splits ASCII text at, besides the space


def tagged_turns(roles: Sequence[str], texts: Sequence[str], sizes: Sequence[int], compare: Compare) -> list[str]:
    """`tagged` of chats given flat (every turn's role and text in order, and each chat's number of turns): the same
    strings. The turns' ASCII texts are normalised together, in a few C passes over one string joined at NULs
    (a million short chats: a third less time than `tagged`); the others one by one, as `tagged` does."""
    fields = compare.fields
    chosen = texts if fields == "all" else [t if r == fields else "" for r, t in zip(roles, texts, strict=True)]
    normed = _normed(chosen, compare)
    if normed is None:  # a NUL in a text
        turns = iter(list(zip(roles, texts, strict=True)))
        return tagged([[next(turns) for _ in range(n)] for n in sizes], compare)
    tags = list(map(_TAGS.__getitem__, roles)) if fields == "all" else [_TAGS[r] if r == fields else "" for r in roles]
    k = 0
    for n in sizes:  # each chat's first tag after a NUL, which no normalised text holds: the chats cut apart below
        tags[k] = "\x00" + tags[k]
        k += n
    return "".join(chain.from_iterable(zip(tags, normed, strict=True))).split("\x00")[1:]


def _normed(texts: Sequence[str], compare: Compare) -> list[str] | None:
    """Each text normalised (`normalizer(compare)`), None when one holds a NUL. The ASCII texts in one string:
    ASCII is NFKC already, casefold is lower case there, and the whitespace str.split() finds is ASCII's."""
    ascii_texts = list(map(str.strip, texts)) if compare.ignore_space else list(texts)  # what str.split() drops
    joined = "\x00".join(ascii_texts)
    odd: list[int] = []
    if not joined.isascii():  # those texts one by one, blank in the joined string
        odd = list(compress(range(len(texts)), map(not_, map(str.isascii, texts))))
        for i in odd:
            ascii_texts[i] = ""
        joined = "\x00".join(ascii_texts)
    if joined.count("\x00") != len(texts) - 1 or any("\x00" in texts[i] for i in odd):
        return None
    joined = joined.translate(_table(compare.ignore_case, compare.ignore_space))
    if compare.ignore_space:
        while "  " in joined:
            joined = joined.replace("  ", " ")
    out = joined.split("\x00")
    norm = normalizer(compare)
    for i in odd:
        out[i] = norm(texts[i])
    return out


@functools.cache
def _table(fold: bool, space: bool) -> dict[int, int]:
    """ASCII text's case folding and whitespace (each a space, runs made one after) as one str.translate table."""
    return {**({c: c + 32 for c in range(ord("A"), ord("Z") + 1)} if fold else {}),
            **({ord(c): ord(" ") for c in _ASCII_SPACE} if space else {})}


def _turn_text(message: dict[str, Any]) -> str:
    calls = message.get("tool_calls")
    if not calls:
        return message["content"]
    return message["content"] + "".join(
        f"\n{c['function']['name']}({json.dumps(c['function'].get('arguments'), sort_keys=True, ensure_ascii=False)})"
        for c in calls)


def normalize(text: str, compare: Compare) -> str:
    """NFKC (full-width letters, ligatures and compatibility forms become their plain forms), case folded,
    whitespace runs made one space and trimmed, as `compare` asks."""
    return normalizer(compare)(text)


@functools.cache
def normalizer(compare: Compare) -> Callable[[str], str]:
    """`normalize` with `compare`'s choices made once: the function a long run calls per turn."""
    nfkc, fold, space = compare.nfkc, compare.ignore_case, compare.ignore_space

    def norm(text: str) -> str:
        if nfkc and not text.isascii():  # ASCII is NFKC already
            text = unicodedata.normalize("NFKC", text)
        if fold:
            text = text.casefold()
        return " ".join(text.split()) if space else text

    return norm


def turns(text: str) -> list[str]:
    """A compared text's turns without their role tags (a text row is one turn)."""
    return [turn.partition(_ROLE)[2] for turn in text.split(_TURN)[1:]] if text.startswith(_TURN) else [text]


def tokens(text: str) -> list[str]:
    """Word tokens (one per character in scripts written without spaces); punctuation is left out."""
    return _TOKEN.findall(text)


def joined(words: list[str]) -> str:
    """Tokens back as text to show: words with spaces, characters of scripts without spaces side by side."""
    out = words[:1]
    for before, word in zip(words, words[1:], strict=False):
        out.append(word if _CHARACTER.fullmatch(before) and _CHARACTER.fullmatch(word) else " " + word)
    return "".join(out)
