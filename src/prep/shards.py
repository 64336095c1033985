"""Token shards on disk (DESIGN §5): `data/shard-NNNNN.parquet` (zstd) plus `manifest.json`.

Each shard is written under a temporary name and renamed when complete; the manifest (counts,
token totals, every shard's sha256) is written last and atomically, so a folder with a manifest
is a finished dataset and one without is not. Row groups have a fixed size, so the bytes depend
only on the rows, never on how the stages batched them: same inputs + options, same shards.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from prep import __version__
from prep.files import RowWriter, sha256_file, write_text_atomic
from prep.findings import Batch, PrepError, Tally

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
JOURNAL = ".journal.json"
DATA_DIR = "data"
ROW_GROUP_ROWS = 4096
_IDS = pa.list_(pa.int32())
_COMMON = [("num_tokens", pa.int32()), ("ids", pa.list_(pa.string()))]
_TOKENS = pa.schema([("input_ids", _IDS), ("labels", _IDS), ("seq_lengths", _IDS), ("num_tokens", pa.int32()),
                     ("num_loss_tokens", pa.int32()), ("ids", pa.list_(pa.string()))])
SCHEMAS: dict[str, pa.Schema] = {
    "sft": _TOKENS,
    "pretrain": _TOKENS,
    "dpo": pa.schema([("prompt_input_ids", _IDS), ("chosen_input_ids", _IDS), ("rejected_input_ids", _IDS), *_COMMON]),
    "kto": pa.schema([("prompt_input_ids", _IDS), ("completion_input_ids", _IDS), ("label", pa.bool_()), *_COMMON]),
}
KINDS = tuple(SCHEMAS)


def position_ids(seq_lengths: list[int]) -> list[int]:
    """Position ids for a packed row: they restart at 0 for every document, which is what keeps
    documents from attending to each other (transformers derives the block mask from them)."""
    return [p for n in seq_lengths for p in range(n)]


def shard_name(index: int) -> str:
    return f"{DATA_DIR}/shard-{index:05d}.parquet"


class ShardWriter:
    """Writes rows of one kind into size-bounded shards and, on success, the manifest.

    `meta` is what the producing stage knows (tokenizer fingerprint, template, train_on, max_len,
    overflow, packing, inputs, options); the writer adds counts, token totals and the shard list.
    With a `resume_key` (a digest of everything that decides the output), each finished shard is
    recorded in a journal, and a re-run with the same key reuses the shards whose bytes still verify.
    """

    def __init__(self, outdir: str | Path, kind: str, meta: dict[str, Any], *, rejects: str | None = None,
                 shard_rows: int = 100_000, shard_mb: float = 256.0, resume_key: str | None = None) -> None:
        if kind not in SCHEMAS:
            raise PrepError(f"unknown shard kind {kind!r}; one of {', '.join(KINDS)}")
        if shard_rows < 1 or shard_mb <= 0:
            raise PrepError("shard size must be positive")
        self.outdir, self.kind, self.meta = Path(outdir), kind, meta
        self.schema = SCHEMAS[kind]
        self.shard_rows, self.shard_bytes = shard_rows, int(shard_mb * 1024 * 1024)
        self.tally = Tally()
        self.tokens = self.loss_tokens = 0
        self.shards: list[dict[str, Any]] = []
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self._writer: pq.ParquetWriter | None = None
        self._rows = self._bytes = self._tokens = 0
        (self.outdir / DATA_DIR).mkdir(parents=True, exist_ok=True)
        (self.outdir / MANIFEST).unlink(missing_ok=True)  # the folder is unfinished until we say otherwise
        self.resume_key = resume_key
        self._reusable = self._load_journal() if resume_key else {}
        self.reused = 0
        self.rejects = RowWriter(rejects, "jsonl") if rejects else None

    def write(self, batch: Batch[dict[str, Any]]) -> None:
        """Take a batch at the end of the pipeline: rows go to shards, rejects and alterations are kept."""
        self.account(batch)
        if batch.items:
            self.add(pa.Table.from_pylist(batch.items, schema=self.schema))

    def account(self, batch: Batch[Any]) -> None:
        """Count a batch's input rows (written, rejected, altered) and keep its rejects."""
        self.tally.count(batch)
        if self.rejects:
            self.rejects.write([r.to_dict() for r in batch.rejects] + [a.to_dict(written=True) for a in batch.altered])

    def add(self, table: pa.Table) -> None:
        """Append shard rows; a shard ends after the row that reaches `shard_rows` or the size bound."""
        self.tokens += pc.sum(table["num_tokens"]).as_py() or 0
        if "num_loss_tokens" in table.column_names:
            self.loss_tokens += pc.sum(table["num_loss_tokens"]).as_py() or 0
        while table.num_rows:
            tokens = table["num_tokens"].to_numpy().astype(np.int64)
            cum = np.cumsum(8 * tokens + 64) + self._bytes  # ids and labels as int32 plus overhead: an estimate
            by_size = int(np.searchsorted(cum, self.shard_bytes, side="left")) + 1
            k = min(self.shard_rows - self._rows, by_size, table.num_rows)
            part, table = table.slice(0, k), table.slice(k)
            self._rows += k
            self._bytes = int(cum[k - 1])
            self._tokens += int(tokens[:k].sum())
            self._pending.append(part)
            self._pending_rows += k
            while self._pending_rows >= ROW_GROUP_ROWS:
                self._flush_group(ROW_GROUP_ROWS)
            if self._rows >= self.shard_rows or self._bytes >= self.shard_bytes:
                self._close_shard()

    def _flush_group(self, rows: int) -> None:
        pending = pa.concat_tables(self._pending)
        group, rest = pending.slice(0, rows), pending.slice(rows)
        self._pending, self._pending_rows = ([rest] if rest.num_rows else []), rest.num_rows
        if shard_name(len(self.shards)) in self._reusable:
            return  # this shard is already on disk from an interrupted run with the same inputs and options
        if self._writer is None:
            self._tmp = self.outdir / f"{shard_name(len(self.shards))}.tmp"
            self._writer = pq.ParquetWriter(self._tmp, self.schema, compression="zstd")
        self._writer.write_table(group.combine_chunks())

    def _close_shard(self) -> None:
        if not self._rows:
            return
        if self._pending_rows:
            self._flush_group(self._pending_rows)
        name = shard_name(len(self.shards))
        entry = {"path": name, "sha256": "", "rows": self._rows, "tokens": self._tokens, "bytes": 0}
        if name in self._reusable:
            old = self._reusable[name]
            if (old["rows"], old["tokens"]) != (self._rows, self._tokens):
                raise PrepError(f"{self.outdir}: {name} from the interrupted run does not match this run; "
                                "delete the folder and run again")
            entry = old
            self.reused += 1
        elif self._writer is not None:
            self._writer.close()
            self._writer = None
            final = self.outdir / name
            os.replace(self._tmp, final)
            entry.update(sha256=sha256_file(final), bytes=final.stat().st_size)
        self.shards.append(entry)
        self._rows = self._bytes = self._tokens = 0
        if self.resume_key:
            write_json(self.outdir / JOURNAL, {"resume_key": self.resume_key, "shards": self.shards})

    def _load_journal(self) -> dict[str, dict[str, Any]]:
        """Shards of an interrupted run with the same key whose bytes still match their recorded sha256."""
        try:
            journal = json.loads((self.outdir / JOURNAL).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        if journal.get("resume_key") != self.resume_key:
            return {}
        ok = {}
        for entry in journal.get("shards", []):
            path = self.outdir / entry["path"]
            if path.is_file() and sha256_file(path) == entry["sha256"]:
                ok[entry["path"]] = entry
            else:
                break  # shards are written in order: after a bad one, nothing is trusted
        return ok

    def close(self) -> dict[str, Any]:
        """Finish the last shard, drop stale shards of an earlier run, write the manifest last."""
        self._close_shard()
        keep = {s["path"] for s in self.shards}
        for old in (self.outdir / DATA_DIR).glob("shard-*.parquet*"):
            if f"{DATA_DIR}/{old.name}" not in keep:
                old.unlink()
        if self.rejects:
            self.rejects.close()
        manifest = self.manifest()
        write_json(self.outdir / MANIFEST, manifest)
        (self.outdir / JOURNAL).unlink(missing_ok=True)
        return manifest

    def manifest(self) -> dict[str, Any]:
        packing = dict(self.meta.get("packing") or {"strategy": "none"})
        rows = sum(s["rows"] for s in self.shards)
        max_len = self.meta.get("max_len")
        if packing.get("strategy", "none") != "none" and max_len and rows:
            packing["efficiency"] = round(self.tokens / (rows * max_len), 6)
        return {
            "schema_version": SCHEMA_VERSION,
            "prep_version": __version__,
            "kind": self.kind,
            **{k: v for k, v in self.meta.items() if k != "packing"},
            "packing": packing,
            "columns": {f.name: str(f.type) for f in self.schema},
            "counts": {**self.tally.to_dict(), "rows": rows},
            "tokens": {"total": self.tokens, "loss": self.loss_tokens},
            "shards": self.shards,
        }

    def abort(self) -> None:
        """Remove the shard being written; finished shards stay for a re-run to reuse, no manifest is written."""
        if self._writer is not None:
            self._writer.close()
            self._tmp.unlink(missing_ok=True)
            self._writer = None
        if self.rejects:
            self.rejects.abort()

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_json(path: Path, value: Any) -> None:
    """JSON written atomically (see files.write_text_atomic): manifests, journals, reports, stamps."""
    write_text_atomic(path, json.dumps(value, indent=2, ensure_ascii=False) + "\n")


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """The manifest of a finished shard folder, or a PrepError saying why there is none."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise PrepError(f"{folder}: no {MANIFEST}; not a finished shard folder (was the run interrupted?)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise PrepError(f"{path}: not valid JSON: {e}") from None
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise PrepError(f"{path}: schema version {manifest.get('schema_version')!r}, this prep reads {SCHEMA_VERSION}")
    return manifest


def iter_tables(folder: str | Path, columns: list[str] | None = None) -> Iterator[pa.Table]:
    """The shards of a finished folder, in manifest order, one row group at a time."""
    folder = Path(folder)
    for shard in read_manifest(folder)["shards"]:
        pfile = pq.ParquetFile(folder / shard["path"])
        for i in range(pfile.num_row_groups):
            yield pfile.read_row_group(i, columns=columns)


# TRL's DPOTrainer/KTOTrainer (1.x) name the tokenized columns differently from DESIGN §5.
TRL_COLUMNS: dict[str, dict[str, str]] = {
    "dpo": {"prompt_input_ids": "prompt_ids", "chosen_input_ids": "chosen_ids", "rejected_input_ids": "rejected_ids"},
    "kto": {"prompt_input_ids": "prompt_ids", "completion_input_ids": "completion_ids"},
}


def load_for_trl(folder: str | Path, tokenizer: Any = None) -> Any:
    """dpo or kto shards as a `datasets.Dataset` with the column names TRL's collators read
    (prompt_ids + chosen_ids/rejected_ids, or prompt_ids + completion_ids + label), in manifest order.

    The ids are the shards' own: each answer already ends with the template's end-of-turn token and
    the prompt carries the BOS if the template has one. Train with `pretokenized(DPOTrainer)` or
    `pretokenized(KTOTrainer)`: TRL's own trainers always tokenize text again. With `tokenizer` (a
    transformers tokenizer), shards made with another tokenizer are refused: their ids would mean other text.
    """
    manifest = read_manifest(folder)
    kind = manifest.get("kind")
    if kind not in TRL_COLUMNS:
        raise PrepError(f"{folder}: {kind} shards; load_for_trl reads dpo and kto shards (sft and pretrain "
                        "shards train with prep train, or load with datasets.load_dataset('parquet', ...))")
    if tokenizer is not None:
        from prep.tokenize import describe_tokenizer, fingerprint, same_tokenizer

        theirs, mine = manifest.get("tokenizer") or {}, fingerprint(tokenizer)
        if not same_tokenizer(theirs, mine):
            raise PrepError(f"{folder}: the shards were tokenized with {describe_tokenizer(theirs)}, not with "
                            f"{describe_tokenizer(mine)}; re-tokenize with the model's tokenizer")
    if not manifest["shards"]:
        raise PrepError(f"{folder}: the shards hold no rows (counts: {manifest.get('counts')})")
    from prep.train import require_train_extra
    from prep.verify import require_verified

    require_verified(folder)

    require_train_extra()
    import datasets

    files = [str(Path(folder) / s["path"]) for s in manifest["shards"]]
    return datasets.load_dataset("parquet", data_files=files, split="train").rename_columns(TRL_COLUMNS[kind])


def pretokenized(trainer_cls: type) -> type:
    """A subclass of TRL's `DPOTrainer` or `KTOTrainer` that trains on `load_for_trl` ids as they are.

    TRL (checked on 1.16) re-tokenizes every dataset it is given: it needs prompt/chosen/rejected text,
    appends the EOS to plain-text answers and lets the tokenizer add a BOS, so already-tokenized rows fail
    (KeyError 'chosen'), and rendered text fed back in would get a second end-of-turn token (chatml) or
    BOS (llama3). This subclass leaves a `datasets.Dataset` that already has TRL's id columns as it is, so
    its collator concatenates exactly prompt_ids + chosen_ids (rejected_ids, completion_ids); other datasets
    go through TRL unchanged. For KTO it adds TRL's KL completions (each row's prompt with the previous
    row's completion, within a batch of per_device_train_batch_size), as TRL does after tokenizing. Rows
    longer than `args.max_length` are refused, not cut: TRL's collator would cut the answer and its
    end-of-turn token off.
    """

    class Pretokenized(trainer_cls):  # type: ignore[misc, valid-type]
        def _prepare_dataset(self, dataset: Any, processing_class: Any, args: Any, dataset_name: str) -> Any:
            import datasets

            names = set(dataset.column_names or [])
            answers = [c for c in ("chosen_ids", "rejected_ids", "completion_ids") if c in names]
            if not isinstance(dataset, datasets.Dataset) or "prompt_ids" not in names or not answers:
                return super()._prepare_dataset(dataset, processing_class, args, dataset_name)
            if getattr(self, "calculate_KL", False):
                dataset = dataset.map(_kl_completions, batched=True, batch_size=args.per_device_train_batch_size)
                answers.append("KL_completion_ids")
            if args.max_length is not None:
                table = dataset.with_format("arrow")
                prompt = pc.list_value_length(table["prompt_ids"]).to_numpy()
                longest = max(int((prompt + pc.list_value_length(table[c]).to_numpy()).max()) for c in answers)
                if longest > args.max_length:
                    raise PrepError(f"the {dataset_name} dataset has rows of up to {longest} tokens but "
                                    f"max_length={args.max_length}; TRL would cut their answers: set max_length="
                                    f"{longest} or None (tokenize with --max-len to bound the rows)")
            return dataset

    Pretokenized.__name__ = Pretokenized.__qualname__ = f"Pretokenized{trainer_cls.__name__}"
    return Pretokenized


def _kl_completions(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
    """TRL's mismatched pairs for KTO's KL estimate: completions rotated by one within the batch."""
    return {**batch, "KL_completion_ids": batch["completion_ids"][-1:] + batch["completion_ids"][:-1]}
