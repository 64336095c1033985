"""Writing token shards (design §5): `data/shard-NNNNN.parquet` (zstd) plus `manifest.json`.

Everything is written into a hidden folder beside the output (`.NAME.tmp-resume`, files.atomic.resume_folder):
each shard under a temporary name renamed when complete, the manifest (counts, token totals, every shard's
sha256) last; then that folder takes the output's place in one atomic exchange (both through
files.atomic.Staged). A folder with a manifest is a finished dataset, and a run that is killed or fails leaves
the earlier output as it was. The output is locked (files.locks.locked) while it is written: a second run into
it is refused. Row groups have a fixed size, so the bytes depend only on the rows, never on how the stages
batched them: same inputs + options, same shards.

Shards of rows with media (design §2a) reference their media, never hold pixels: each table's `media` column
indexes roots its schema metadata names (`prep.media`), which the writer maps onto the manifest's
`media_roots` ("." the shard folder, then the absolute folders seen); a data-URL medium is written into
`media/<sha256>.<ext>` of the folder being made (each file staged and renamed like the shards), and the manifest's
`media` lists every distinct file once.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from prep import __version__
from prep.core.columns import MEDIA_COLUMN, MEDIA_META, schema
from prep.core.findings import Batch, PrepError, Tally
from prep.files.atomic import AllOrNothing, Staged, replaced, resume_folder, write_json
from prep.files.hashing import sha256_file
from prep.files.locks import locked
from prep.files.media import data as media_bytes
from prep.files.write import RowWriter
from prep.shards.layout import (
    DATA_DIR,
    JOURNAL,
    KINDS,
    MANIFEST,
    ROW_GROUP_ROWS,
    SCHEMA_VERSION,
    SCHEMAS,
    is_shard_folder,
    shard_name,
)


class ShardWriter(AllOrNothing):
    """Writes rows of one kind into size-bounded shards and, on success, the manifest.

    `meta` is what the producing stage knows (tokenizer fingerprint, template, train_on, max_len,
    overflow, packing, inputs, options); the writer adds counts, token totals and the shard list.
    With a `resume_key` (a digest of everything that decides the output), each finished shard is
    recorded in a journal, and a re-run with the same key reuses the shards whose bytes still verify.
    """

    def __init__(self, outdir: str | Path, kind: str, meta: dict[str, Any], *, rejects: str | None = None,
                 shard_rows: int = 100_000, shard_mb: float = 256.0, resume_key: str | None = None,
                 carried: tuple[str, ...] = (), media: bool = False) -> None:
        if kind not in SCHEMAS:
            raise PrepError(f"unknown shard kind {kind!r}; one of {', '.join(KINDS)}")
        if shard_rows < 1 or shard_mb <= 0:
            raise PrepError("shard size must be positive")
        self.outdir, self.kind, self.meta = Path(outdir), kind, meta
        self.work = resume_folder(self.outdir)  # a stable name: a re-run resumes it
        self.schema = schema(kind, carried, media)
        self.media = media
        self.media_roots: list[str] = ["."]  # the manifest's: the shard folder, then absolute folders
        self.media_files: dict[str, dict[str, Any]] = {}  # by sha256, in the order first seen
        self.media_items = 0
        if carried:
            meta["carried"] = list(carried)  # verify builds the same schema from it (the caller may add to meta)
        self.shard_rows, self.shard_bytes = shard_rows, int(shard_mb * 1024 * 1024)
        self.tally = Tally()
        self.tokens = self.loss_tokens = 0
        self.shards: list[dict[str, Any]] = []
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self._writer: pq.ParquetWriter | None = None
        self._shard: Staged | None = None  # the shard being written
        self._rows = self._bytes = self._tokens = 0
        self.resume_key = resume_key
        self.reused = 0
        self.rejects: RowWriter | None = None
        self._held = contextlib.ExitStack()
        self._held.enter_context(locked(self.outdir))
        self._reusable: dict[str, dict[str, Any]] = {}
        self._folder: Staged | None = None  # the work folder, put in the output's place by close()
        try:
            self._folder = Staged(self.outdir, at=self.work)
            self._check_target()
            self._reusable = self._load_journal() if resume_key else {}
            if not self._reusable and self.work.exists():
                shutil.rmtree(self.work)  # an interrupted run's, which nothing here can reuse
            (self.work / DATA_DIR).mkdir(parents=True, exist_ok=True)
            if rejects:
                self.rejects = RowWriter(self._inside_work(rejects), "jsonl")
        except BaseException:  # a bad target, or Ctrl-C/SIGTERM as it starts: leave nothing behind
            self.abort()
            raise

    def _check_target(self) -> None:
        """The output is a new or empty folder or one prep wrote (which the new one replaces whole)."""
        if self.outdir.exists() and not self.outdir.is_dir():
            raise PrepError(f"{self.outdir}: is a file; give a folder for the shards")
        if self.outdir.is_dir() and any(self.outdir.iterdir()) and not is_shard_folder(self.outdir):
            raise PrepError(f"{self.outdir}: is a folder prep did not write (no {MANIFEST}); the shards replace the "
                            "whole folder, so give a new or empty one")

    def _inside_work(self, path: str) -> str:
        """A rejects file inside the output folder is written inside the folder being made, so it stays there."""
        real, out = Path(os.path.realpath(path)), Path(os.path.realpath(self.outdir))
        return str(self.work / real.relative_to(out)) if real.is_relative_to(out) else path

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
        if self.media:
            table = self._media(table)
        self.tokens += int(table["num_tokens"].to_numpy().sum())
        if "num_loss_tokens" in table.column_names:
            self.loss_tokens += int(table["num_loss_tokens"].to_numpy().sum())
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

    def _media(self, table: pa.Table) -> pa.Table:
        """The table's media roots mapped onto the manifest's, its data-URL media written into the folder, its files
        listed; the metadata that named them dropped."""
        meta = json.loads((table.schema.metadata or {}).get(MEDIA_META, b"{}"))
        table = table.replace_schema_metadata(None)
        if not meta.get("items"):
            return table
        index = []
        for root in meta["roots"]:
            if root not in self.media_roots:
                self.media_roots.append(root)
            index.append(self.media_roots.index(root))
        for f in meta["files"]:
            url = f.pop("url", None)
            target = self.work / f["path"]
            if url is not None and not target.is_file():  # the rows name it there, whatever else has its sha256
                target.parent.mkdir(parents=True, exist_ok=True)
                with replaced(target) as tmp:
                    tmp.write_bytes(media_bytes({"type": f["type"], "url": url, "at": "$.media"}))
            self.media_files.setdefault(f["sha256"], {**f, "root": index[f["root"]]})
        self.media_items += meta["items"]
        rows = [[{**e, "root": index[e["root"]]} for e in entries] for entries in table[MEDIA_COLUMN].to_pylist()]
        at = table.schema.get_field_index(MEDIA_COLUMN)
        return table.set_column(at, table.schema.field(at), pa.array(rows, type=table.schema.field(at).type))

    def _flush_group(self, rows: int) -> None:
        pending = pa.concat_tables(self._pending)
        group, rest = pending.slice(0, rows), pending.slice(rows)
        self._pending, self._pending_rows = ([rest] if rest.num_rows else []), rest.num_rows
        if shard_name(len(self.shards)) in self._reusable:
            return  # this shard is already on disk from an interrupted run with the same inputs and options
        if self._writer is None:
            self._shard = Staged(self.work / shard_name(len(self.shards)))
            self._writer = pq.ParquetWriter(self._shard.path, self.schema, compression="zstd")
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
                                f"delete {self.work} and run again")
            entry = old
            self.reused += 1
        elif self._writer is not None and self._shard is not None:
            writer, self._writer = self._writer, None
            self._shard.close(writer.close)
            final = self.work / name
            entry.update(sha256=sha256_file(final), bytes=final.stat().st_size)
        self.shards.append(entry)
        self._rows = self._bytes = self._tokens = 0
        if self.resume_key:
            write_json(self.work / JOURNAL, {"resume_key": self.resume_key, "shards": self.shards})

    def _load_journal(self) -> dict[str, dict[str, Any]]:
        """Shards of an interrupted run with the same key whose bytes still match their recorded sha256."""
        try:
            journal = json.loads((self.work / JOURNAL).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        if journal.get("resume_key") != self.resume_key:
            return {}
        ok = {}
        for entry in journal.get("shards", []):
            path = self.work / entry["path"]
            if path.is_file() and sha256_file(path) == entry["sha256"]:
                ok[entry["path"]] = entry
            else:
                break  # shards are written in order: after a bad one, nothing is trusted
        return ok

    def close(self) -> dict[str, Any]:
        """Finish the last shard, drop stale shards of an interrupted run, write the manifest last and put the
        finished folder in the output's place; on any failure (a full disk) nothing half-written is left."""
        try:
            self._close_shard()
            keep = {s["path"] for s in self.shards}
            for old in (self.work / DATA_DIR).glob("shard-*.parquet*"):
                if f"{DATA_DIR}/{old.name}" not in keep:
                    old.unlink()
            if self.rejects:
                self.rejects.close()
            manifest = self.manifest()
            write_json(self.work / MANIFEST, manifest)
            (self.work / JOURNAL).unlink(missing_ok=True)
            self._folder.close()
        except BaseException:
            self.abort(keep_journal=False)
            raise
        self._held.close()
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
            **({"media_roots": self.media_roots, "media": {"items": self.media_items,
                                                          "files": list(self.media_files.values())}}
               if self.media else {}),
        }

    def abort(self, keep_journal: bool = True) -> None:
        """Remove what was being written; with a resume key the finished shards stay (beside the output, with their
        journal) for a re-run to reuse. The earlier output, if any, is left as it was."""
        try:
            if self._writer is not None:
                with contextlib.suppress(Exception):
                    self._writer.close()
                self._writer = None
            if self._shard is not None:
                self._shard.abort()
            if self.rejects:
                self.rejects.abort()
            if self._folder and not (keep_journal and self.resume_key and (self.work / JOURNAL).exists()):
                self._folder.abort()
        finally:
            self._held.close()
