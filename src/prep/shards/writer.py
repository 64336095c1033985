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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from prep import __version__
from prep.core.columns import MEDIA_COLUMN, MEDIA_META, schema
from prep.core.findings import Batch, PrepError, Tally
from prep.files.atomic import AllOrNothing, Staged, replaced, resume_folder, swap_in, write_json
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

PARTS_DIR = ".parts"  # in the folder being made: the Ray workers' parts, until the driver adopts them


class _Rows:
    """What a whole output's writer and a Ray worker's part writer share: the batches' tally and rejects, the
    token totals, and the rows cut into shard files."""

    files: ShardFiles
    tally: Tally
    tokens: int
    loss_tokens: int
    rejects: RowWriter | None

    def account(self, batch: Batch[Any]) -> None:
        """Count a batch's input rows (written, rejected, altered) and keep its rejects."""
        self.tally.count(batch)
        if self.rejects:
            self.rejects.write([r.to_dict() for r in batch.rejects] + [a.to_dict(written=True) for a in batch.altered])

    def add(self, table: pa.Table) -> None:
        """Append shard rows; a shard ends after the row that reaches `shard_rows` or the size bound."""
        self.tokens += int(table["num_tokens"].to_numpy().sum())
        if "num_loss_tokens" in table.column_names:
            self.loss_tokens += int(table["num_loss_tokens"].to_numpy().sum())
        self.files.add(table)


class ShardWriter(_Rows, AllOrNothing):
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
        self.resume_key = resume_key
        self.rejects: RowWriter | None = None
        self._held = contextlib.ExitStack()
        self._held.enter_context(locked(self.outdir))
        self._folder: Staged | None = None  # the work folder, put in the output's place by close()
        self.files = ShardFiles(self.work, self.schema, self.shard_rows, self.shard_bytes)
        try:
            self._folder = Staged(self.outdir, at=self.work)
            self._check_target()
            self.files.reusable = self._load_journal() if resume_key else {}
            if not self.files.reusable and self.work.exists():
                shutil.rmtree(self.work)  # an interrupted run's, which nothing here can reuse
            (self.work / DATA_DIR).mkdir(parents=True, exist_ok=True)
            if resume_key:
                self.files.on_shard = self._journal
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

    def add(self, table: pa.Table) -> None:
        """Append shard rows (with media: their files and roots taken into the manifest's first)."""
        super().add(self._media(table) if self.media else table)

    def parts(self) -> PartSpec:
        """Where and how Ray workers write their parts of this output (`PartWriter`; `adopt` takes them in)."""
        if self.media:  # media roots and files are numbered across the whole output, in the order first seen
            raise PrepError("shards with media are written by the driver")
        folder = self.work / PARTS_DIR
        folder.mkdir(exist_ok=True)
        return PartSpec(os.path.abspath(folder), self.schema, self.shard_rows, self.shard_bytes, self.rejects is not None)

    def adopt(self, part: WrittenPart) -> None:
        """Take the part a Ray worker wrote as the next rows (parts come in input order): its shards renamed into
        `data/` as the next shards, its tally and tokens added, its rejects copied after the ones before. Adopted
        shards are not journaled: they are cut a part each, so a resumed run (on either engine) writes them again."""
        self.files.finish()
        for entry in part.shards:
            name = shard_name(len(self.shards))
            swap_in(self.work / PARTS_DIR / entry["path"], self.work / name)
            self.shards.append({**entry, "path": name})
        self.tally.follow(part.tally)
        self.tokens += part.tokens
        self.loss_tokens += part.loss_tokens
        if part.rejects is not None:
            if self.rejects:
                self.rejects.append(part.rejects, part.rejected_rows)
            os.unlink(part.rejects)

    @property
    def shards(self) -> list[dict[str, Any]]:
        return self.files.shards

    @property
    def reused(self) -> int:
        return self.files.reused

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

    def _journal(self) -> None:
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
            self.files.finish()
            shutil.rmtree(self.work / PARTS_DIR, ignore_errors=True)  # a killed worker's part, written again since
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
            self.files.abort()
            if self.rejects:
                self.rejects.abort()
            if self._folder and not (keep_journal and self.resume_key and (self.work / JOURNAL).exists()):
                self._folder.abort()
        finally:
            self._held.close()


class ShardFiles:
    """Rows cut into shard files in `folder`, the one way shard bytes are made (ShardWriter's whole output, a Ray
    worker's part: design §13). A shard ends after the row that reaches `shard_rows` or `shard_bytes` (estimated
    from the token counts), and its row groups hold ROW_GROUP_ROWS rows, so the bytes depend only on the rows, never
    on how they were batched. Shard `k` is written as `name(k)`; each finished one is listed in `shards` (path,
    sha256, rows, tokens, bytes) and `on_shard` called. A `reusable` shard (an interrupted run's, by name, its
    bytes verified) is checked against the rows it should hold and kept instead of written again."""

    def __init__(self, folder: Path, schema: pa.Schema, shard_rows: int, shard_bytes: int,
                 name: Callable[[int], str] = shard_name) -> None:
        self.folder, self.schema, self.name = folder, schema, name
        self.shard_rows, self.shard_bytes = shard_rows, shard_bytes
        self.shards: list[dict[str, Any]] = []
        self.reusable: dict[str, dict[str, Any]] = {}
        self.reused = 0
        self.on_shard: Callable[[], None] | None = None
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self._writer: pq.ParquetWriter | None = None
        self._shard: Staged | None = None  # the shard being written
        self._rows = self._bytes = self._tokens = 0

    def add(self, table: pa.Table) -> None:
        """Append rows, ending shards and row groups where their bounds fall."""
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
                self.finish()

    def _flush_group(self, rows: int) -> None:
        pending = pa.concat_tables(self._pending)
        group, rest = pending.slice(0, rows), pending.slice(rows)
        self._pending, self._pending_rows = ([rest] if rest.num_rows else []), rest.num_rows
        if self.name(len(self.shards)) in self.reusable:
            return  # this shard is already on disk from an interrupted run with the same inputs and options
        if self._writer is None:
            self._shard = Staged(self.folder / self.name(len(self.shards)))
            self._writer = pq.ParquetWriter(self._shard.path, self.schema, compression="zstd")
        self._writer.write_table(group.combine_chunks())

    def finish(self) -> None:
        """End the shard being written (if it holds rows): the next rows start a new one."""
        if not self._rows:
            return
        if self._pending_rows:
            self._flush_group(self._pending_rows)
        name = self.name(len(self.shards))
        entry = {"path": name, "sha256": "", "rows": self._rows, "tokens": self._tokens, "bytes": 0}
        if name in self.reusable:
            old = self.reusable[name]
            if (old["rows"], old["tokens"]) != (self._rows, self._tokens):
                raise PrepError(f"{self.folder}: {name} from the interrupted run does not match this run; "
                                f"delete {self.folder} and run again")
            entry = old
            self.reused += 1
        elif self._writer is not None and self._shard is not None:
            writer, self._writer = self._writer, None
            self._shard.close(writer.close)
            final = self.folder / name
            entry.update(sha256=sha256_file(final), bytes=final.stat().st_size)
        self.shards.append(entry)
        self._rows = self._bytes = self._tokens = 0
        if self.on_shard is not None:
            self.on_shard()

    def abort(self) -> None:
        """Drop the shard being written (the finished ones are the caller's to remove)."""
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._writer.close()
            self._writer = None
        if self._shard is not None:
            self._shard.abort()


@dataclass(frozen=True)
class PartSpec:
    """Where a Ray worker writes its parts (the folder being made's `.parts/`, an absolute path), the output's
    schema and shard bounds, and whether rejects are kept: what ShardWriter.parts hands the workers."""

    folder: str
    schema: pa.Schema
    shard_rows: int
    shard_bytes: int
    rejects: bool


@dataclass
class WrittenPart:
    """What a Ray worker hands back for a part it wrote: its shard files (as the manifest lists them, named in
    `.parts/`), tally, token totals and rejects file (None: no rejects), for ShardWriter.adopt."""

    shards: list[dict[str, Any]]
    tally: Tally
    tokens: int
    loss_tokens: int
    rejects: str | None
    rejected_rows: int


class PartWriter(_Rows, AllOrNothing):
    """A Ray worker's writer of one part (design §13): its rows cut into shards as ShardWriter cuts them (a new
    shard at the part's start), written as `.parts/PART-K.parquet` in the output's folder being made, its rejects as
    `.parts/PART.rejects.jsonl`. Nothing is visible until the driver adopts the part and commits the whole folder;
    a part run again (its worker died) writes the same names over the earlier attempt's."""

    def __init__(self, spec: PartSpec, index: int) -> None:
        self.index, self.folder = index, Path(spec.folder)
        self.files = ShardFiles(self.folder, spec.schema, spec.shard_rows, spec.shard_bytes, self._name)
        self.tally = Tally()
        self.tokens = self.loss_tokens = 0
        self.rejects = RowWriter(str(self.folder / f"{index:06d}.rejects.jsonl"), "jsonl") if spec.rejects else None
        self.written: WrittenPart | None = None

    def _name(self, shard: int) -> str:
        return f"{self.index:06d}-{shard:04d}.parquet"

    def close(self) -> WrittenPart:
        """Finish the part's last shard and its rejects: what the driver adopts."""
        try:
            self.files.finish()
            kept = self.rejects is not None and self.rejects.rows > 0
            if self.rejects is not None:
                self.rejects.close()
        except BaseException:
            self.abort()
            raise
        self.written = WrittenPart(self.files.shards, self.tally, self.tokens, self.loss_tokens,
                                   self.rejects.path if self.rejects is not None and kept else None,
                                   self.rejects.rows if self.rejects is not None else 0)
        if self.rejects is not None and not kept:
            os.unlink(self.rejects.path)
        return self.written

    def abort(self) -> None:
        """Remove the part's files."""
        self.files.abort()
        for entry in self.files.shards:
            (self.folder / entry["path"]).unlink(missing_ok=True)
        if self.rejects is not None:
            self.rejects.abort()
