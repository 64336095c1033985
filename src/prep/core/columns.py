"""The shard layout as vocabulary (design §5): the shard kinds, their columns, and which record kinds
each kind takes. Names and types are plain text here; `schema(kind)` builds the Arrow schema the
encoder, the shard writer and verify share."""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow as pa

SHARD_KINDS = ("sft", "pretrain", "dpo", "kto", "prompt")
KIND_OF_RECORD = {"chat": "sft", "text": "pretrain", "preference": "dpo", "feedback": "kto"}
# `prompt` (GRPO, RLOO, reinforcement fine-tuning): the conversation up to the answer the model is to write.
ACCEPTS = {"sft": ("chat", "text"), "pretrain": ("text",), "dpo": ("preference",), "kto": ("feedback",),
           "prompt": ("chat", "preference", "feedback")}

_IDS = "list<int32>"
_TOKENS = (("input_ids", _IDS), ("labels", _IDS), ("seq_lengths", _IDS), ("num_tokens", "int32"),
           ("num_loss_tokens", "int32"), ("ids", "list<string>"))
_COMMON = (("num_tokens", "int32"), ("ids", "list<string>"))
COLUMNS: dict[str, tuple[tuple[str, str], ...]] = {
    "sft": _TOKENS,
    "pretrain": _TOKENS,
    "dpo": (("prompt_input_ids", _IDS), ("chosen_input_ids", _IDS), ("rejected_input_ids", _IDS), *_COMMON),
    "kto": (("prompt_input_ids", _IDS), ("completion_input_ids", _IDS), ("label", "bool"), *_COMMON),
    "prompt": (("prompt_input_ids", _IDS), ("prompt_record", "string"), *_COMMON),
}


# Shards of rows with media (design §2a) carry one more column, `media`: per row, its media in order. `start` and
# `length` are the medium's expanded token run in input_ids (for dpo/kto/prompt: in prompt_input_ids); `grid` is the
# processor's (t, h, w) where it has one (else empty); `root` indexes the manifest's `media_roots`.
MEDIA_COLUMN = "media"
# Every column a shard of some kind holds: an input column carried with `--keep-columns` must be named otherwise.
SHARD_COLUMNS = tuple(dict.fromkeys([*(name for columns in COLUMNS.values() for name, _ in columns), MEDIA_COLUMN]))
# A table's schema metadata on its way to the shard writer: the roots its media `root` indexes, the files it names.
MEDIA_META = b"prep.media"
MEDIA_FIELDS = (("type", "string"), ("sha256", "string"), ("root", "int32"), ("path", "string"), ("start", "int32"),
                ("length", "int32"), ("grid", "list<int32>"), ("width", "int32"), ("height", "int32"))


@cache
def schema(kind: str, carried: tuple[str, ...] = (), media: bool = False) -> pa.Schema:
    """The Arrow schema of a shard kind, with its `media` column when its rows hold media, then the carried input
    columns (`--keep-columns`): text (a value that is not text is stored as its JSON), null where a row has none."""
    import pyarrow as pa  # noqa: PLC0415 - start-up time: verbs that never touch shards do not load Arrow

    types = {"list<int32>": pa.list_(pa.int32()), "int32": pa.int32(), "bool": pa.bool_(),
             "list<string>": pa.list_(pa.string()), "string": pa.string()}
    own = [(name, types[kind_]) for name, kind_ in COLUMNS[kind]]
    if media:
        own.append((MEDIA_COLUMN, pa.list_(pa.struct([(name, types[t]) for name, t in MEDIA_FIELDS]))))
    return pa.schema(own + [(name, pa.string()) for name in carried if name not in dict(own)])
