"""`prep mix`: one training set from many sources, with exactly the asked number of rows (or tokens,
within one row) from each.

    SRC          every row once
    SRC:N        exactly N rows (N tokens with --by tokens)
    SRC:xK       K times the source (x2: every row twice; x0.5: half of it)
    SRC:RATIO    this share of the output (a number with a dot, up to 1.0)

Shares are of the whole output: with sources of fixed size F beside them, the output holds F / (1 - sum
of shares) rows; with shares alone (adding up to 1) it is as large as the sources allow without
repeating a row. A source asked for more than it has is taken in whole passes first, then a sample
without replacement for the rest (prep.core.sampling); every source's count, passes and sha256 go
into the summary and the output's manifest (a shard folder's manifest.json, or OUT's stem +
`.manifest.json` beside a records file). The sources are interleaved evenly in the output, each in
its own order, so any prefix of it holds them in the asked proportions. Same seed, same bytes.

LLaMA-Factory repeats a dataset's name for 2:1 and samples `interleave_probs` by probability, so its
counts are not the asked ones (#2039, #2853); axolotl asks for weighted mixing (#1508, #3108).
"""

from __future__ import annotations

import contextlib
import heapq
import json
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from prep.core.columns import KIND_OF_RECORD, MEDIA_COLUMN, MEDIA_META
from prep.core.columns import schema as shard_schema
from prep.core.findings import Batch, PrepError, Reject, Source, Tally, finding
from prep.core.heap import streaming
from prep.core.options import DEFAULT_DATE, checked
from prep.core.records import Record, kind_of
from prep.core.result import Meter, ProgressFn, Result, outputs
from prep.core.sampling import row_counts, token_counts
from prep.files.atomic import write_json
from prep.files.hashing import sha256_file
from prep.files.paths import stem
from prep.files.write import RowWriter
from prep.formats.inputs import Inputs, read_inputs, refuse_read_once
from prep.render.encoder import Encoder, Settings, build_encoder
from prep.render.templates import chat_template, parse_kwargs
from prep.render.tokenizer import load_tokenizer
from prep.shards.layout import MANIFEST, read_manifest
from prep.shards.media import has_media
from prep.shards.reader import iter_tables
from prep.shards.writer import ShardWriter
from prep.stages.record_writer import RecordsOut, Removes, open_rejects

_SPEC = re.compile(r"^(?P<path>.+):(?P<spec>x\d+(\.\d+)?|x\.\d+|\d+|\d*\.\d+)$")
_CHUNK = 4096


@dataclass
class MixSource:
    """One source: its path, what was asked of it, and (once planned) its plan."""

    path: str
    spec: str = ""
    size: int = 0  # rows, or tokens with --by tokens
    rows: int = 0  # rows that can be taken
    unreadable: int = 0
    tokens: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    target: int = 0
    counts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    refused: dict[int, Reject] = field(default_factory=dict)  # row number -> why the encoder refused it

    @property
    def passes_read(self) -> int:
        """Passes over the source: the whole ones and, when a sample is taken, one more."""
        return max(int(self.counts.max()), 1) if len(self.counts) else 1

    def summary(self, by: str) -> dict[str, Any]:
        written = int(self.counts.sum())
        passes = int(self.counts.min()) if len(self.counts) else 0
        out = {"source": self.path, "sha256": _sha256(self.path), "asked": self.spec or "all", "by": by,
               "available": self.size, "target": self.target, "passes": passes,
               "sampled": int(np.count_nonzero(self.counts > passes)), "rows_written": written,
               "distinct_rows": int(np.count_nonzero(self.counts)), "unreadable": self.unreadable}
        if len(self.tokens):
            out["tokens_written"] = int(self.counts @ self.tokens)
        return out


def _sha256(path: str) -> str:
    folder = Path(path)
    return sha256_file(folder / MANIFEST if folder.is_dir() else folder)


def parse_source(text: str) -> MixSource:
    """`a.jsonl:20` -> MixSource("a.jsonl", "20"); a path that exists as written keeps its colons."""
    m = _SPEC.match(text)
    if m is None or Path(text).exists():
        return MixSource(text)
    return MixSource(m["path"], m["spec"])


def plan(sources: list[MixSource], seed: int, by: str) -> None:
    """Each source's target and copies per row (see the module docstring)."""
    fixed, shares = 0, 0.0
    for s in sources:
        if "." in s.spec and not s.spec.startswith("x"):
            share = float(s.spec)
            if not 0 < share <= 1:
                raise PrepError(f"{s.path}:{s.spec}: a share of the output is above 0 and at most 1.0")
            shares += share
        else:
            s.target = s.size if not s.spec else round(float(s.spec[1:]) * s.size) if s.spec.startswith("x") \
                else int(s.spec)
            fixed += s.target
    if shares:
        ratio = [s for s in sources if "." in s.spec and not s.spec.startswith("x")]
        if fixed and shares >= 1:
            raise PrepError(f"the shares add up to {shares:g}, leaving nothing for the sources given as counts")
        if not fixed and abs(shares - 1) > 1e-9:
            raise PrepError(f"the shares add up to {shares:g}; with no source given as a count they must add up "
                            "to 1.0")
        total = fixed / (1 - shares) if fixed else min(s.size / float(s.spec) for s in ratio)
        for s in ratio:
            s.target = int(float(s.spec) * total + 0.5) if fixed else int(float(s.spec) * total)
    for number, s in enumerate(sources):
        if s.target and not s.size:
            raise PrepError(f"{s.path}: asked for {s.target} {by} but it has none to take")
        s.counts = token_counts(s.tokens, s.target, (seed, number)) if by == "tokens" else \
            row_counts(s.rows, s.target, (seed, number))


@dataclass
class MixResult(Removes, Result):
    """The tally counts the rows of every pass over a source: each is written (a copy) or, in a last pass that
    takes a sample, not_sampled; so read = written + rejected holds with copies (b.jsonl x2: read 20, written
    20; a 10-row file asked for 25: three passes, read 30, written 25, 5 not_sampled)."""

    purpose = ("not_sampled",)

    manifest: dict[str, Any] = field(default_factory=dict)

    def details(self) -> dict[str, Any]:
        return {"manifest": self.manifest}

    def breakdown(self) -> list[str]:
        """Each source: asked, written, and how (whole passes, then a sample)."""
        lines = []
        for s in self.manifest.get("mix", self.manifest)["sources"]:  # shard folders keep it under "mix"
            how = [f"{s['passes']} whole pass{'' if s['passes'] == 1 else 'es'}"] if s["passes"] else []
            how += [f"{s['sampled']} sampled"] if s["sampled"] else []
            tokens = f", {s['tokens_written']:,} tokens" if "tokens_written" in s else ""
            lines.append(f"{s['source']}: asked {s['asked']}, wrote {s['rows_written']} rows "
                         f"({' + '.join(how) or 'none'}){tokens}")
        return lines



@checked("mix")
@streaming()
def mix(inputs: Inputs | Sequence[str], output: str, *, by: str = "rows", seed: int = 42, tokenizer: str | None = None,
        template: str | None = None, rejects: str | None = None, progress: ProgressFn | None = None,
        template_kwargs: Iterable[str] = (), date: str = DEFAULT_DATE) -> MixResult:
    """Mix the sources `inputs.files` (`PATH[:N|:xK|:RATIO]`: record files, or shard folders) into `output`;
    `inputs` also says how record files are read (format, reader settings). A list of sources reads them as
    detected. `--by tokens` on records counts with `tokenizer` and `template`, its arguments `template_kwargs` and
    day `date`, as prep tokenize does."""
    if not isinstance(inputs, Inputs):
        inputs = Inputs(list(inputs))
    if inputs.datasets:
        raise PrepError("mix takes files and shard folders; convert --dataset entries first")
    sources = list(inputs.files)
    if not sources:
        raise PrepError("nothing to mix: give SRC[:N|:xK|:RATIO] files or shard folders")
    parsed = [parse_source(s) for s in sources]
    for s in parsed:
        if not Path(s.path).exists():
            raise PrepError(f"{s.path}: no such file or folder")
    refuse_read_once([s.path for s in parsed], "mix reads its record files twice, counting then taking the rows")
    shards = [Path(s.path).is_dir() for s in parsed]
    if any(shards) and not all(shards):
        raise PrepError("mix either record files or shard folders, not both (tokenize the records first)")
    meter = Meter(progress)
    meter.start()
    if all(shards):
        return _mix_shards(parsed, output, by, seed, rejects, meter)
    encoders = _encoders(tokenizer, template, parse_kwargs(template_kwargs, template), date) if by == "tokens" else None
    return _mix_records(parsed, output, by, seed, encoders, rejects, inputs, meter)


def _manifest(sources: list[MixSource], by: str, seed: int, tally: Tally) -> dict[str, Any]:
    return {"by": by, "seed": seed, "counts": tally.to_dict(), "sources": [s.summary(by) for s in sources]}


def _schedule(sources: list[MixSource]) -> Iterator[int]:
    """Which source each output row comes from: source i's k-th row at time (k + 0.5) / its rows, so the
    sources stay interleaved in proportion (ties: the source given first)."""
    totals = [int(s.counts.sum()) for s in sources]
    heap = [(0.5 / n, i, 0) for i, n in enumerate(totals) if n]
    heapq.heapify(heap)
    while heap:
        _, i, k = heapq.heappop(heap)
        yield i
        if k + 1 < totals[i]:
            heapq.heappush(heap, ((k + 1.5) / totals[i], i, k + 1))


# ---------------------------------------------------------------- records


def _mix_records(sources: list[MixSource], output: str, by: str, seed: int,
                 encoders: Callable[[str], Encoder] | None, rejects: str | None, inputs: Inputs,
                 meter: Meter) -> MixResult:
    for s in sources:
        _count(s, replace(inputs, files=[s.path]), encoders)
    plan(sources, seed, by)
    tally = Tally()
    out_tally = Tally()  # rows out, copies included (the tally above is the one that counts)
    with contextlib.ExitStack() as stack:
        bad = open_rejects(stack, rejects, output)
        out = RecordsOut(stack, output, "trl", out_tally, bad)
        streams = [_record_stream(s, replace(inputs, files=[s.path]), tally) for s in sources]
        batch: Batch[Record] = Batch()
        for i in _schedule(sources):
            for kind, value, source in streams[i]:
                if kind == "row":
                    batch.add(value, source)
                    break
                batch.rejects.append(value)
            if len(batch.items) >= 1024:
                out.write(batch)
                meter.add(len(batch.items) + len(batch.rejects))
                batch = Batch()
        for stream in streams:  # the rows after each source's last taken row
            for _kind, value, _ in stream:
                batch.rejects.append(value)
        out.write(batch)
        meter.add(len(batch.items) + len(batch.rejects))
    result = MixResult(tally=tally, outputs=outputs(output=output, rejects=rejects))
    result.manifest = _manifest(sources, by, seed, tally)
    if output != "-":
        result.outputs["manifest"] = str(Path(output).with_name(stem(output) + ".manifest.json"))
        write_json(result.outputs["manifest"], result.manifest)
    return result


def _encoders(tokenizer: str | None, template: str | None, kwargs: dict[str, Any], date: str
              ) -> Callable[[str], Encoder]:
    """prep tokenize's encoder for a kind of record (sft, dpo, ...), with the given tokenizer and template."""
    if tokenizer is None:
        raise PrepError("--by tokens on record files counts the tokens prep tokenize would make: give "
                        "--tokenizer (and --template), or mix tokenized shard folders")
    tok = load_tokenizer(tokenizer)
    chosen = chat_template(tok, template, kwargs, date)
    return lambda kind: build_encoder(tok, chosen, Settings(kind, "auto", None, "drop"))


def _count(source: MixSource, inputs: Inputs, make_encoder: Callable[[str], Encoder] | None) -> None:
    """Pass one over a record file: its rows (and their tokens, counted by the encoder prep tokenize uses for
    the file's kind of record, or why it refuses them)."""
    tokens: list[int] = []
    encoder = None
    for batch in read_inputs(inputs):
        source.unreadable += len(batch.rejects)
        if make_encoder is None:
            source.rows += len(batch.items)
            continue
        if encoder is None and batch.items:
            encoder = make_encoder(KIND_OF_RECORD[kind_of(batch.items[0])])
        if encoder is None:
            continue
        done, table = encoder.encode(encoder.prepare(Batch(batch.items, batch.sources)))
        source.refused.update((r.source.row, r) for r in done.rejects)
        source.rows += len(done.items)
        tokens += table["num_tokens"].to_pylist()
    source.tokens = np.array(tokens, np.int64)
    source.size = int(source.tokens.sum()) if make_encoder is not None else source.rows


def _record_stream(s: MixSource, inputs: Inputs, tally: Tally) -> Iterator[tuple[str, Any, Source | None]]:
    """A source's rows in the output's order: each pass over the file in turn, a row in every pass its count
    reaches; in the last pass the rows a sample left out are not_sampled rejects. Unreadable and refused rows
    come out once, in the first pass. Everything is counted in `tally`."""
    last = s.passes_read - 1
    for number in range(s.passes_read):
        index = 0
        for batch in read_inputs(inputs):
            if number == 0:
                for r in batch.rejects:
                    tally.read += 1
                    tally.rejected[r.reason] += 1
                    yield "reject", r, None
            for record, source in zip(batch.items, batch.sources, strict=True):
                if source.row in s.refused:
                    if number == 0:
                        tally.read += 1
                        tally.rejected[s.refused[source.row].reason] += 1
                        yield "reject", s.refused[source.row], None
                    continue
                count = int(s.counts[index])
                index += 1
                tally.read += 1
                if count > number:
                    tally.written += 1
                    yield "row", record, source
                elif number == last:
                    tally.rejected["not_sampled"] += 1
                    yield "reject", _not_sampled(record, source, s), None


def _not_sampled(row: Any, source: Source, s: MixSource) -> Reject:
    why = finding("not_sampled", f"the sample of {s.target} from {s.path} left this row out of pass "
                  f"{s.passes_read}")
    return Reject(source, [why.at(source)], row)


# ---------------------------------------------------------------- shards


def _mix_shards(sources: list[MixSource], output: str, by: str, seed: int, rejects: str | None,
                meter: Meter) -> MixResult:
    manifests = [read_manifest(s.path) for s in sources]
    first = manifests[0]
    for s, m in zip(sources[1:], manifests[1:], strict=True):
        for key in ("kind", "tokenizer", "template", "train_on", "max_len", "packing"):
            mine = m.get(key)
            theirs = first.get(key)
            if key == "tokenizer":
                mine, theirs = (mine or {}).get("vocab_sha256"), (theirs or {}).get("vocab_sha256")
            if key == "packing":
                mine, theirs = (mine or {}).get("strategy"), (theirs or {}).get("strategy")
            if mine != theirs:
                raise PrepError(f"{s.path}: its {key} differs from {sources[0].path}'s; mix shards made the same way")
    for s in sources:
        s.tokens = np.concatenate([t["num_tokens"].to_numpy().astype(np.int64)
                                   for t in iter_tables(s.path, ["num_tokens"])] or [np.zeros(0, np.int64)])
        s.rows = len(s.tokens)
        s.size = int(s.tokens.sum()) if by == "tokens" else s.rows
    plan(sources, seed, by)
    meta = {k: v for k, v in first.items() if k in ("tokenizer", "template", "train_on", "max_len", "overflow",
                                                     "packing")}
    tally = Tally()
    for s in sources:
        tally.read += len(s.counts) * s.passes_read
        tally.written += int(s.counts.sum())
        if left := len(s.counts) * s.passes_read - int(s.counts.sum()):
            tally.rejected["not_sampled"] += left
    meta["mix"] = _manifest(sources, by, seed, tally)
    media = _Media(sources, manifests) if any(has_media(m) for m in manifests) else None
    with ShardWriter(output, first["kind"], meta, rejects=rejects, media=media is not None) as writer:
        streams = [_table_stream(s, media and media.rows(k, first["kind"])) for k, s in enumerate(sources)]
        order = np.fromiter(_schedule(sources), np.int64)
        for start in range(0, len(order), _CHUNK):
            chunk = order[start:start + _CHUNK]
            parts, places = [], np.empty(len(chunk), np.int64)
            for i in np.unique(chunk).tolist():
                where = np.flatnonzero(chunk == i)
                places[where] = sum(len(p) for p in parts) + np.arange(len(where))
                parts.append(_take(streams[i], len(where)))
            table = pa.concat_tables(parts).take(pa.array(places))
            writer.add(media.naming(table) if media else table)
            meter.add(table.num_rows)
        if writer.rejects:
            for s in sources:
                _keep_not_sampled(s, writer.rejects)
        writer.tally = tally
    return MixResult(tally=tally, outputs=outputs(output=output, rejects=rejects), manifest=read_manifest(output))


@dataclass
class _Tables:
    """A shard source's selected rows, pass after pass, as Arrow tables; `pending` is taken from first."""

    tables: Iterator[pa.Table]
    pending: list[pa.Table] = field(default_factory=list)


def _table_stream(s: MixSource, media: Callable[[pa.Table], pa.Table] | None = None) -> _Tables:
    def passes() -> Iterator[pa.Table]:
        for number in range(int(s.counts.max()) if len(s.counts) else 0):
            offset = 0
            for table in iter_tables(s.path):
                keep = np.flatnonzero(s.counts[offset:offset + table.num_rows] > number)
                offset += table.num_rows
                if len(keep):
                    yield media(table.take(pa.array(keep))) if media else table.take(pa.array(keep))

    return _Tables(passes())


class _Media:
    """Mixing shards with media (design §2a): each source's roots (its own folder for its "."), one list for all,
    and every source's files; each source's rows re-indexed into that list, rows without media given none."""

    def __init__(self, sources: list[MixSource], manifests: list[dict[str, Any]]) -> None:
        self.roots: list[str] = []
        self.index: list[list[int]] = []
        self.files: list[dict[str, Any]] = []
        for s, m in zip(sources, manifests, strict=True):
            mine = [str(Path(s.path).resolve()), *[str(r) for r in (m.get("media_roots") or ["."])[1:]]]
            mine = mine if (m.get("media") or {}).get("items") else []  # a folder without media adds no root
            for root in mine:
                if root not in self.roots:
                    self.roots.append(root)
            self.index.append([self.roots.index(r) for r in mine])
            self.files += [{**f, "root": self.index[-1][f["root"]]} for f in (m.get("media") or {}).get("files") or ()]

    def rows(self, k: int, kind: str) -> Callable[[pa.Table], pa.Table]:
        """Source k's rows with their media's roots in the common list."""
        index, type_ = self.index[k], shard_schema(kind, (), True).field(MEDIA_COLUMN).type

        def reindex(table: pa.Table) -> pa.Table:
            media = table[MEDIA_COLUMN].to_pylist() if MEDIA_COLUMN in table.column_names else [[]] * table.num_rows
            column = pa.array([[{**m, "root": index[m["root"]]} for m in row or ()] for row in media], type_)
            if MEDIA_COLUMN in table.column_names:
                return table.set_column(table.schema.get_field_index(MEDIA_COLUMN), MEDIA_COLUMN, column)
            return table.append_column(pa.field(MEDIA_COLUMN, type_), column)

        return reindex

    def naming(self, table: pa.Table) -> pa.Table:
        """The rows with the metadata that names their roots and files for the shard writer."""
        items = sum(len(row) for row in table[MEDIA_COLUMN].to_pylist())
        return table.replace_schema_metadata({MEDIA_META: json.dumps({"roots": self.roots, "files": self.files,
                                                                       "items": items})})


def _take(stream: _Tables, n: int) -> pa.Table:
    have = sum(t.num_rows for t in stream.pending)
    while have < n:
        table = next(stream.tables)
        stream.pending.append(table)
        have += table.num_rows
    whole = pa.concat_tables(stream.pending)
    stream.pending = [whole.slice(n)] if whole.num_rows > n else []
    return whole.slice(0, n)


def _keep_not_sampled(s: MixSource, rejects: RowWriter) -> None:
    """The shard rows the last pass's sample left out, by their ids, in the rejects file."""
    left = np.flatnonzero(s.counts < s.passes_read)
    if len(left):
        ids = [i for t in iter_tables(s.path, ["ids"]) for i in t["ids"].to_pylist()]
        rejects.write(_not_sampled({"ids": ids[k]}, Source(s.path, k + 1, k + 1), s).to_dict() for k in left.tolist())
