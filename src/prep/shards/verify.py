"""`prep verify`: prove a shard folder is what its manifest says, byte for byte and row for row.

Checks every shard's size and sha256, the Arrow schema of its kind, and the row invariants the
trainer relies on: ids and labels of equal length, `sum(seq_lengths) == num_tokens`, one id per
document piece, every label either -100 or the token at the same position (labels are not
shifted), token ids inside the tokenizer's vocabulary, rows no longer than max_len, and the
manifest's counts and token totals. Whole columns are checked at once with numpy.

A folder whose rows hold media (design §2a) is checked further: each row's media against its ids (each run
inside the row, in order, apart, made of its type's media tokens and labelled -100, and no media token outside a
run), and every file the manifest lists or a row names: there under its root, with the manifest's size and sha256
(each distinct file hashed once).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from prep.core.codes import REBUILD
from prep.core.columns import MEDIA_COLUMN
from prep.core.columns import schema as shard_schema
from prep.core.findings import Finding, PrepError, Source, finding
from prep.core.media import MEDIA_TYPES
from prep.core.options import checked
from prep.core.result import Meter, ProgressFn, Result
from prep.files.hashing import sha256_file
from prep.shards.layout import DATA_DIR, MANIFEST, SCHEMAS, read_manifest
from prep.shards.media import has_media, media_tokens, resolve, roots
from prep.shards.serving import check_serving

MAX_PER_CODE = 20


@dataclass
class Verification(Result):
    """What `verify` found: findings (at most MAX_PER_CODE kept per code, all counted) and totals; the
    tally counts the rows checked."""

    folder: str = ""
    findings: list[Finding] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    rows: int = 0
    tokens: int = 0

    serving: dict[str, Any] | None = None  # with --serving: the model folder and the rows compared

    def add_finding(self, code: str, message: str, file: str = MANIFEST, line: int = 0, path: str = "$",
                    severity: str = "error", hint: str | None = REBUILD) -> None:
        """`hint` None: the code's own from the table (the serving checks' say what to do with the model)."""
        self.counts[code] += 1
        if self.counts[code] <= MAX_PER_CODE:
            self.findings.append(finding(code, message, path,
                                         hint=hint, severity=severity).at(Source(file, line, 0)))

    @property
    def errors(self) -> int:
        return sum(n for code, n in self.counts.items() if code not in _WARNINGS)

    @property
    def ok(self) -> bool:
        return self.errors == 0

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    def summary(self) -> str:
        verdict = "OK" if self.ok else f"FAILED ({self.errors} errors)"
        served = f"; served by {self.serving['model']}: {self.serving['rows']} renders compared" + (
            f" ({self.serving['cut']} rows cut at tokenize left out)" if self.serving["cut"] else "") \
            if self.serving else ""
        return f"{self.folder}: {verdict}: {self.rows} rows, {self.tokens} tokens checked{served}"

    def details(self) -> dict[str, Any]:
        return {"folder": self.folder, "ok": self.ok, "rows": self.rows, "tokens": self.tokens,
                "counts": dict(self.counts), "findings": [f.to_dict() for f in self.findings],
                "serving": self.serving}


_WARNINGS = {"unlisted_file"}


@checked("verify")
def verify(shards: str | Path, progress: ProgressFn | None = None, serving: str | None = None,
           sample: int = 100) -> Verification:
    """Check the shard folder `shards` against its manifest; every problem becomes a finding. With `serving` (a
    model folder prep train wrote), then render `sample` of its rows from that folder alone and compare the ids
    (`shards.serving`)."""
    folder = Path(shards)
    if not folder.is_dir():
        raise PrepError(f"{folder}: no such folder")
    result = Verification(folder=str(folder))
    try:
        manifest = read_manifest(folder)
    except PrepError as e:
        result.add_finding("bad_manifest", str(e))
        return result
    kind = manifest.get("kind")
    if kind not in SCHEMAS:
        result.add_finding("bad_manifest", f"unknown kind {kind!r}", path="$.kind")
        return result
    listed = {s["path"] for s in manifest.get("shards", [])}
    for extra in sorted((folder / DATA_DIR).glob("*")):
        if f"{DATA_DIR}/{extra.name}" not in listed:
            result.add_finding("unlisted_file", f"{extra.name} is not in the manifest", f"{DATA_DIR}/{extra.name}",
                       severity="warning")
    totals: Counter[str] = Counter()
    media = _Media(manifest) if has_media(manifest) else None
    meter = Meter(progress)
    meter.start()
    for shard in manifest.get("shards", []):
        rows, tokens = totals["rows"], totals["tokens"]
        _check_shard(folder, shard, manifest, result, totals, media)
        meter.add(totals["rows"] - rows, totals["tokens"] - tokens)
    if totals["unreadable"] == 0:  # totals over shards that could not be read would only repeat their finding
        _check_totals(manifest, totals, result)
        if media:
            media.check_files(folder, manifest, result)
    result.rows, result.tokens = totals["rows"], totals["tokens"]
    result.tally.read = result.tally.written = result.rows
    if serving and result.ok:  # rows that do not verify cannot be traced back to their inputs
        served = check_serving(folder, serving, sample)
        result.serving = served.to_dict()
        for p in served.problems:
            result.add_finding(p.code, p.message, p.file, p.line, p.path, hint=None)
    return result


def require_verified(folder: str | Path, role: str = "training") -> None:
    """Refuse, with the first findings, shards that fail verification: whatever trains on them must not guess."""
    result = verify(folder)
    if not result.ok:
        first = "; ".join(str(f) for f in result.findings[:3])
        raise PrepError(f"{folder}: the {role} shards fail verification ({result.errors} errors: {first}); "
                        "rebuild them, see `prep verify`")


def _check_shard(folder: Path, shard: dict[str, Any], manifest: dict[str, Any], result: Verification,
                 totals: Counter[str], media: _Media | None) -> None:
    name = shard["path"]
    path = folder / name
    if not path.is_file():
        result.add_finding("missing_shard", "listed in the manifest but not on disk", name)
        totals["unreadable"] += 1
        return
    if path.stat().st_size != shard["bytes"]:
        result.add_finding("size_mismatch", f"{path.stat().st_size} bytes, the manifest says {shard['bytes']}", name)
    if sha256_file(path) != shard["sha256"]:
        result.add_finding("checksum_mismatch", "sha256 differs from the manifest: the file was changed or corrupted", name)
        totals["unreadable"] += 1
        return  # its content cannot be trusted enough to check further
    pfile = pq.ParquetFile(path)
    schema = shard_schema(manifest["kind"], tuple(manifest.get("carried", ())), media is not None)
    if not pfile.schema_arrow.equals(schema):
        result.add_finding("wrong_schema", f"columns {pfile.schema_arrow} differ from the {manifest['kind']} schema", name)
        totals["unreadable"] += 1
        return
    rows = tokens = 0
    for g in range(pfile.num_row_groups):
        table = pfile.read_row_group(g)
        check = _check_tokens if manifest["kind"] in ("sft", "pretrain") else _check_pairs
        check(table, manifest, result, name, rows)
        if media:
            media.check_rows(table, result, name, rows)
        rows += table.num_rows
        tokens += int(np.sum(table["num_tokens"].to_numpy()))
        if "num_loss_tokens" in table.column_names:
            totals["loss"] += int(np.sum(table["num_loss_tokens"].to_numpy()))
        if "ids" in table.column_names:
            totals["ids"] += int(np.sum(table["ids"].combine_chunks().value_lengths().to_numpy()))
    if (rows, tokens) != (shard["rows"], shard["tokens"]):
        result.add_finding("count_mismatch", f"{rows} rows / {tokens} tokens, the manifest says {shard['rows']} / "
                   f"{shard['tokens']}", name)
    totals["rows"] += rows
    totals["tokens"] += tokens


def _flat(table: pa.Table, column: str) -> tuple[np.ndarray, np.ndarray]:
    """A list column as (values, per-row lengths)."""
    arr = table[column].combine_chunks()
    return arr.flatten().to_numpy(zero_copy_only=False), arr.value_lengths().to_numpy(zero_copy_only=False)


def _row_sums(values: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    sums = np.concatenate(([0], np.cumsum(values, dtype=np.int64)))
    ends = np.cumsum(lengths)
    return sums[ends] - sums[ends - lengths]


def _report_rows(result: Verification, bad: np.ndarray, code: str, message: str, shard: str, first_row: int,
                 column: str) -> None:
    rows = np.flatnonzero(bad)
    for i in rows[:MAX_PER_CODE].tolist():
        result.add_finding(code, message, shard, first_row + i + 1, f"$.{column}")
    if len(rows) > MAX_PER_CODE:
        result.counts[code] += len(rows) - MAX_PER_CODE  # counted, not listed


def _check_vocab(values: np.ndarray, lengths: np.ndarray, vocab: int | None, result: Verification, shard: str,
                 first_row: int, column: str) -> None:
    if vocab is None or not len(values):
        return
    bad_pos = (values < 0) | (values >= vocab)
    if bad_pos.any():
        row_of = np.repeat(np.arange(len(lengths)), lengths)
        bad_rows = np.zeros(len(lengths), bool)
        bad_rows[row_of[bad_pos]] = True
        _report_rows(result, bad_rows, "id_out_of_vocab", f"token id outside the vocabulary (size {vocab})",
                     shard, first_row, column)


def _vocab(manifest: dict[str, Any]) -> int | None:
    tok = manifest.get("tokenizer") or {}
    return tok.get("vocab_size") or tok.get("vocab")


def _check_tokens(table: pa.Table, manifest: dict[str, Any], result: Verification, shard: str, first_row: int) -> None:
    ids, n_ids = _flat(table, "input_ids")
    labels, n_labels = _flat(table, "labels")
    seq, n_seq = _flat(table, "seq_lengths")
    _, n_doc_ids = _flat(table, "ids")
    num_tokens = table["num_tokens"].to_numpy()
    _report_rows(result, n_ids != n_labels, "length_mismatch", "input_ids and labels differ in length", shard,
                 first_row, "labels")
    _report_rows(result, n_ids != num_tokens, "length_mismatch", "num_tokens differs from the number of input_ids",
                 shard, first_row, "num_tokens")
    _report_rows(result, _row_sums(seq, n_seq) != num_tokens, "bad_seq_lengths",
                 "seq_lengths do not sum to num_tokens: document boundaries are wrong", shard, first_row, "seq_lengths")
    _report_rows(result, n_seq == 0, "bad_seq_lengths", "no seq_lengths", shard, first_row, "seq_lengths")
    if len(seq) and (seq <= 0).any():
        _report_rows(result, _row_sums(seq <= 0, n_seq) > 0, "bad_seq_lengths", "a document of length 0 or less",
                     shard, first_row, "seq_lengths")
    _report_rows(result, n_doc_ids != n_seq, "bad_ids", "one id per document piece expected", shard, first_row, "ids")
    max_len = manifest.get("max_len")
    if max_len:
        _report_rows(result, num_tokens > max_len, "too_long", f"row longer than max_len {max_len}", shard, first_row,
                     "input_ids")
    if np.array_equal(n_ids, n_labels):
        trained = labels != -100
        _report_rows(result, _row_sums(trained, n_labels) != table["num_loss_tokens"].to_numpy(), "count_mismatch",
                     "num_loss_tokens differs from the labels that are not -100", shard, first_row, "num_loss_tokens")
        wrong = trained & (labels != ids)
        if wrong.any():
            _report_rows(result, _row_sums(wrong, n_labels) > 0, "label_not_token",
                         "a label is neither -100 nor the token at its position (labels must not be shifted)", shard,
                         first_row, "labels")
    _check_vocab(ids, n_ids, _vocab(manifest), result, shard, first_row, "input_ids")


def _check_pairs(table: pa.Table, manifest: dict[str, Any], result: Verification, shard: str, first_row: int) -> None:
    """Preference/feedback rows: `num_tokens` is the sum of all sides (what `prep tokenize` writes), and the
    prompt with its longest answer fits max_len (each side is trained as prompt + answer)."""
    columns = [c for c in table.column_names if c.endswith("_input_ids")]
    total = np.zeros(table.num_rows, np.int64)
    longest = np.zeros(table.num_rows, np.int64)
    for column in columns:
        values, lengths = _flat(table, column)
        total += lengths
        _check_vocab(values, lengths, _vocab(manifest), result, shard, first_row, column)
        if column != "prompt_input_ids":
            longest = np.maximum(longest, lengths)
            _report_rows(result, lengths == 0, "empty_side", f"{column} is empty", shard, first_row, column)
    _report_rows(result, total != table["num_tokens"].to_numpy(), "length_mismatch",
                 f"num_tokens differs from the sum of {', '.join(columns)}", shard, first_row, "num_tokens")
    if max_len := manifest.get("max_len"):
        prompt = table["prompt_input_ids"].combine_chunks().value_lengths().to_numpy(zero_copy_only=False)
        _report_rows(result, prompt + longest > max_len, "too_long",
                     f"prompt and its longest answer are longer than max_len {max_len}", shard, first_row,
                     "prompt_input_ids")


def _check_totals(manifest: dict[str, Any], totals: Counter[str], result: Verification) -> None:
    counts = manifest.get("counts", {})
    rejected = sum(counts.get("rejected", {}).values())
    if counts.get("read") != counts.get("written", 0) + rejected:
        result.add_finding("count_mismatch", f"read {counts.get('read')} != written {counts.get('written')} + rejected "
                   f"{rejected}: rows were lost", path="$.counts")
    if counts.get("rows") != totals["rows"]:
        result.add_finding("count_mismatch", f"the shards hold {totals['rows']} rows, the manifest says {counts.get('rows')}",
                   path="$.counts.rows")
    packing = (manifest.get("packing") or {}).get("strategy", "none")
    documents = totals["ids"] if packing != "wrap" else None
    if documents is not None and "ids" in SCHEMAS[manifest["kind"]].names and documents != counts.get("written"):
        result.add_finding("count_mismatch", f"the shards hold {documents} documents, the manifest says "
                   f"{counts.get('written')} were written", path="$.counts.written")
    tokens = manifest.get("tokens", {})
    if tokens.get("total") != totals["tokens"]:
        result.add_finding("count_mismatch", f"the shards hold {totals['tokens']} tokens, the manifest says "
                   f"{tokens.get('total')}", path="$.tokens.total")
    if "loss" in tokens and "num_loss_tokens" in SCHEMAS[manifest["kind"]].names and tokens["loss"] != totals["loss"]:
        result.add_finding("count_mismatch", f"the shards hold {totals['loss']} trained tokens, the manifest says "
                   f"{tokens['loss']}", path="$.tokens.loss")


class _Media:
    """The media checks of a folder whose rows hold media: the rows as they are read, then the files."""

    def __init__(self, manifest: dict[str, Any]) -> None:
        self.tokens = media_tokens(manifest)  # None: learned from the first run of each type
        self.learned: dict[str, int] = {}
        self.roots = len(manifest.get("media_roots") or ["."])
        self.items = 0
        self.first: dict[tuple[str, int, str], tuple[str, int, str]] = {}  # file -> (shard, row, field) naming it

    def kind_ids(self, kind: str) -> set[int]:
        if self.tokens is not None:
            return self.tokens.get(kind, set())
        return {self.learned[kind]} if kind in self.learned else set()

    def all_ids(self) -> np.ndarray:
        ids = set().union(*self.tokens.values()) if self.tokens is not None else set(self.learned.values())
        return np.array(sorted(ids), np.int64)

    def check_rows(self, table: pa.Table, result: Verification, shard: str, first_row: int) -> None:
        column = "input_ids" if "input_ids" in table.column_names else "prompt_input_ids"
        ids, n_ids = _flat(table, column)
        labels = _flat(table, "labels")[0] if "labels" in table.column_names else None
        starts = np.concatenate(([0], np.cumsum(n_ids)))
        rows = table[MEDIA_COLUMN].to_pylist()
        if self.tokens is None:  # learn each type's token from its first run that is one token repeated
            for k, media in enumerate(rows):
                for m in media or ():
                    run = ids[starts[k] + m["start"]:starts[k] + m["start"] + m["length"]] if _inside(m, n_ids[k]) \
                        else ids[:0]
                    if len(run) and m["type"] not in self.learned and (run == run[0]).all():
                        self.learned[m["type"]] = int(run[0])
        special = np.isin(ids, self.all_ids())
        for k, media in enumerate(rows):
            row_ids = ids[starts[k]:starts[k + 1]]
            covered = np.zeros(len(row_ids), bool)
            end = 0
            for j, m in enumerate(media or ()):
                self.items += 1
                where = f"$.{MEDIA_COLUMN}[{j}]"
                problem, field_ = self._problem(m, n_ids[k], end)
                if problem:
                    result.add_finding("bad_media_run", problem, shard, first_row + k + 1, f"{where}.{field_}")
                    continue
                self.first.setdefault((m["sha256"], m["root"], m["path"]), (shard, first_row + k + 1, f"{where}.path"))
                a, b = m["start"], m["start"] + m["length"]
                end = b
                covered[a:b] = True
                wanted = self.kind_ids(m["type"])
                if not np.isin(row_ids[a:b], list(wanted)).all():
                    result.add_finding("bad_media_run", f"tokens {a}..{b} are not all {m['type']} tokens "
                                       f"({', '.join(map(str, sorted(wanted))) or 'none known'})", shard,
                                       first_row + k + 1, f"{where}.start")
                if labels is not None and (labels[starts[k] + a:starts[k] + b] != -100).any():
                    result.add_finding("bad_media_run", f"a token of {m['type']} {j + 1} is trained: media tokens "
                                       "never carry loss (labels must be -100)", shard, first_row + k + 1, "$.labels")
            stray = np.flatnonzero(special[starts[k]:starts[k + 1]] & ~covered)
            if len(stray):
                result.add_finding("bad_media_run", f"{len(stray)} media token(s) outside the row's media runs (first "
                                   f"at token {int(stray[0])}): the model would look for a medium that is not there",
                                   shard, first_row + k + 1, f"$.{column}")

    def _problem(self, m: dict[str, Any], n: int, end: int) -> tuple[str | None, str]:
        """What is wrong with one entry of a row's media alone (None: nothing), and the field it is in."""
        if m.get("type") not in MEDIA_TYPES:
            return f"type {m.get('type')!r} is not one of {', '.join(MEDIA_TYPES)}", "type"
        if not isinstance(m.get("root"), int) or not 0 <= m["root"] < self.roots:
            return f"root {m.get('root')!r} is not an index into the manifest's {self.roots} media_roots", "root"
        if not m.get("path"):
            return "no path", "path"
        if not isinstance(m.get("sha256"), str) or len(m["sha256"]) != 64:
            return "sha256 is not 64 hex digits", "sha256"
        if not m.get("length") or m["length"] < 1:
            return f"length {m.get('length')!r}: a medium takes at least one token", "length"
        if not _inside(m, n):
            return f"tokens {m.get('start')}..{(m.get('start') or 0) + m['length']} are not inside the row's {n}", "start"
        if m["start"] < end:
            return f"starts at token {m['start']}, before the previous medium ends ({end}): media are in order and " \
                   "apart", "start"
        return None, ""

    def check_files(self, folder: Path, manifest: dict[str, Any], result: Verification) -> None:
        """Every file the manifest lists or a row names: there, with the size and sha256 the manifest lists for its
        content (a file is listed once by its sha256, whichever path names it), each read once."""
        media = manifest.get("media") or {}
        if self.items != media.get("items"):
            result.add_finding("count_mismatch", f"the rows hold {self.items} media, the manifest says "
                               f"{media.get('items')}", path="$.media.items")
        listed = {f.get("sha256"): f for f in media.get("files") or ()}
        named = {(f.get("sha256"), f.get("root"), f.get("path")): (MANIFEST, 0, f"$.media.files[{k}]")
                 for k, f in enumerate(media.get("files") or ())}
        found = roots(folder, manifest)
        hashed: dict[Path, str] = {}
        for (sha, root, path), (shard, row, where) in {**named, **self.first}.items():
            entry = listed.get(sha)
            if entry is None:
                result.add_finding("media_file_missing", f"{path}: its sha256 {str(sha)[:12]}… is not in the manifest's "
                                   "media files", shard, row, where)
                continue
            file = resolve(found, {"root": root, "path": path})
            if file is None or not file.is_file():
                result.add_finding("media_file_missing", f"{path} is not under its root "
                                   f"{found[root] if file is not None else root}", shard, row, where)
                continue
            size = file.stat().st_size
            if size != entry.get("bytes"):
                result.add_finding("media_file_changed", f"{file}: {size} bytes, the manifest says {entry.get('bytes')}",
                                   shard, row, where)
                continue
            if file not in hashed:
                hashed[file] = sha256_file(file)
            if hashed[file] != sha:
                result.add_finding("media_file_changed", f"{file}: sha256 {hashed[file][:12]}…, the manifest says "
                                   f"{str(sha)[:12]}…: the file was changed or replaced", shard, row, where)


def _inside(m: dict[str, Any], n: int) -> bool:
    start, length = m.get("start"), m.get("length")
    return isinstance(start, int) and isinstance(length, int) and start >= 0 and start + length <= n
