"""LLaMA-Factory `dataset_info.json` registries: an entry names local files and how to read them
(`file_name`, `formatting`, `ranking`, `columns`, `tags`, `num_samples`). This module turns an
entry into (files, format, reader settings: its columns, tags, and the registry's folder as the root of media
paths, LLaMA-Factory's `dataset_dir` and default `media_dir`) and implements `num_samples` the way LLaMA-Factory
does (a seeded random subset, or every row plus random repeats when it asks for more)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prep.core.findings import Batch, PrepError
from prep.files.paths import split_suffix
from prep.files.pieces import BATCH_ROWS
from prep.files.read import read_config

_HUB_KEYS = ("hf_hub_url", "ms_hub_url", "om_hub_url", "script_url")
_ALPACA_COLUMNS = ("prompt", "query", "response", "history", "system", "tools", "chosen", "rejected", "kto_tag",
                   "images", "videos", "audios")
_SHAREGPT_COLUMNS = ("messages", "system", "tools", "chosen", "rejected", "kto_tag", "images", "videos", "audios")
_TAGS = ("role_tag", "content_tag", "user_tag", "assistant_tag", "observation_tag", "function_tag", "system_tag")


@dataclass
class Entry:
    """One registry entry, resolved: the files to read, the prep format and its reader settings."""

    name: str
    files: list[str]
    format: str
    settings: dict[str, Any] = field(default_factory=dict)
    num_samples: int | None = None


def load_entry(registry: str, name: str) -> Entry:
    path = Path(registry)
    if path.is_dir():
        path = path / "dataset_info.json"
    try:
        info = json.loads(read_config(path, "registry"))
    except OSError as e:
        raise PrepError(f"{path}: cannot read the registry: {e.strerror or e}") from None
    except ValueError as e:
        raise PrepError(f"{path}: not valid JSON: {e}") from None
    if not isinstance(info, dict):
        raise PrepError(f"{path}: a dataset_info.json must be an object of named entries")
    if name not in info:
        close = [k for k in info if name.lower() in k.lower() or k.lower() in name.lower()][:5]
        raise PrepError(f"{path}: no dataset named {name!r}" + (f"; did you mean {', '.join(close)}?" if close else ""))
    attrs = info[name]
    if not isinstance(attrs, dict):
        raise PrepError(f"{path}: entry {name!r} must be an object")
    if "file_name" not in attrs:
        where = next((f"{k}: {attrs[k]}" for k in _HUB_KEYS if k in attrs), "no file_name")
        raise PrepError(f"{path}: dataset {name!r} is not a local file ({where}); prep works offline: download it "
                        "next to the registry and give the entry a \"file_name\"")
    files = _files(path.parent, attrs["file_name"], name, path)
    formatting = attrs.get("formatting", "alpaca")
    if formatting not in ("alpaca", "sharegpt", "openai", "lf_parts"):
        raise PrepError(f"{path}: dataset {name!r} has formatting {formatting!r}; prep reads alpaca, sharegpt, openai "
                        "and lf_parts (LLaMA-Factory v1's messages of typed parts)")
    root = {"media_root": str(path.parent.resolve())}  # LLaMA-Factory's media_dir defaults to its dataset_dir
    if formatting == "lf_parts":  # one layout, no columns to map
        return Entry(name, files, "lf_parts", root, num_samples=_num_samples(attrs, path, name))
    fmt, settings = _reader(attrs, formatting, path, name)
    return Entry(name, files, fmt, {**settings, **root}, num_samples=_num_samples(attrs, path, name))


def _files(root: Path, file_name: Any, name: str, registry: Path) -> list[str]:
    if not isinstance(file_name, str) or not file_name or "\0" in file_name:
        raise PrepError(f"{registry}: dataset {name!r} has a file_name that is not a path" +
                        (" (it holds a NUL byte)" if isinstance(file_name, str) and "\0" in file_name else ""))
    base = root.resolve()
    target = (root / file_name).resolve()
    if not target.is_relative_to(base):
        raise PrepError(f"{registry}: dataset {name!r} names {file_name!r}, outside the registry's folder {base}; "
                        "refusing to read it (move the file under that folder)")
    if target.is_dir():
        files = sorted(str(p) for p in target.iterdir() if p.is_file() and split_suffix(str(p))[0])
        if not files:
            raise PrepError(f"{registry}: dataset {name!r}: folder {file_name} holds no readable data files")
        return files
    if not target.is_file():
        raise PrepError(f"{registry}: dataset {name!r}: file {file_name} not found in {base}")
    return [str(target)]


def _reader(attrs: dict[str, Any], formatting: str, registry: Path, name: str) -> tuple[str, dict[str, Any]]:
    """prep format name and reader settings; as in LLaMA-Factory, with `columns` every unmapped column is unused."""
    columns = attrs.get("columns")
    if columns is not None and not isinstance(columns, dict):
        raise PrepError(f"{registry}: dataset {name!r}: columns must be an object")
    if formatting == "alpaca":
        wanted, defaults = _ALPACA_COLUMNS, {"prompt": "instruction", "query": "input", "response": "output"}
    else:
        wanted, defaults = _SHAREGPT_COLUMNS, {"messages": "conversations" if formatting == "sharegpt" else "messages"}
    given = defaults if columns is None else columns
    settings: dict[str, Any] = {k: given.get(k) for k in wanted}
    if attrs.get("ranking"):
        settings["chosen"] = settings["chosen"] or "chosen"
        settings["rejected"] = settings["rejected"] or "rejected"
    else:
        settings["chosen"] = settings["rejected"] = None
    if formatting == "alpaca":
        return "alpaca", settings
    tags = attrs.get("tags") or {}
    if formatting == "openai":
        tags = {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant",
                "observation_tag": "tool", "function_tag": "function", "system_tag": "system", **tags}
    settings.update({k: tags[k] for k in _TAGS if tags.get(k)})
    settings["lenient"] = False
    return "sharegpt", settings


def _num_samples(attrs: dict[str, Any], registry: Path, name: str) -> int | None:
    n = attrs.get("num_samples")
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
        raise PrepError(f"{registry}: dataset {name!r}: num_samples must be a positive integer")
    return n


def sample_plan(total: int, n: int, seed: int) -> Counter[int]:
    """How often each row ordinal is kept: n rows exactly, whole passes first, then a sample without
    replacement (prep.core.sampling, as prep mix plans its sources)."""
    from prep.core.sampling import row_counts  # noqa: PLC0415 - start-up time: numpy only for a num_samples entry

    return Counter({i: c for i, c in enumerate(row_counts(total, n, (seed,)).tolist()) if c})


def sample(batches: Iterable[Batch[Any]], plan: Counter[int], batch_rows: int = BATCH_ROWS) -> Iterator[Batch[Any]]:
    """Stage: keep (or repeat) rows by their position in the entry's files, rejects included, in batches of at most
    `batch_rows`: `num_samples` of 10^12 streams in flat memory (and stops at Ctrl-C or SIGTERM between batches)."""
    position = 0
    out: Batch[Any] = Batch()
    for batch in batches:
        entries = sorted([(s.row, False, i) for i, s in enumerate(batch.sources)] +
                         [(rej.source.row, True, i) for i, rej in enumerate(batch.rejects)])
        for _, is_reject, i in entries:
            for _ in range(plan.get(position, 0)):
                if is_reject:
                    out.rejects.append(batch.rejects[i])
                else:
                    out.add(batch.items[i], batch.sources[i])
                if len(out.items) + len(out.rejects) >= batch_rows:
                    yield out
                    out = Batch()
            position += 1
    if out.items or out.rejects:
        yield out
