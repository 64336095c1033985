"""`prep export SHARDS --to hf-dataset|axolotl|together|jsonl|trl-grpo -o OUT`: the shards as other tools take them.

Packed rows are unpacked first, one row per document (split at `seq_lengths`): the tools below read
a row as one sequence, so a packed row handed over as it is would let its documents attend to each
other. The labels are the shards' own, unchanged (-100 where there is no loss; in a packed row the
first label of every document is already -100).

- `axolotl`, `together`: Parquet with exactly `input_ids`, `attention_mask` (all ones) and `labels`:
  axolotl's pre-tokenized dataset (no `type:` in its config) and Together's tokenized file format
  (`together files check` accepts it). Supervised and pretraining shards only.
- `hf-dataset`: a `datasets.save_to_disk` folder (`datasets.load_from_disk` reads it): those three
  columns, or for preference and feedback shards TRL's tokenized columns (`prompt_input_ids`,
  `chosen_input_ids`, `rejected_input_ids`; `prompt_input_ids`, `completion_input_ids`, `label`).
  Needs the `datasets` package (in the train extra).
- `jsonl`: the decoded text and its trained character spans, the rows `prep template -o` writes
  (`{"id", "text", "spans"}`; pairs as `{"id", "prompt", "chosen", "rejected"}` or `{"id", "prompt",
  "completion", "label"}`). A row whose text cannot be cut exactly where training starts (a byte-level
  token holding half a character there) is refused as `not_expressible`, never written approximately.

- `trl-grpo` (prompt shards): JSONL of `{"id", "prompt": [messages], <carried columns>}`, what TRL's GRPOTrainer
  reads: the messages the prompt ids were rendered from (tokenize keeps them in `prompt_record`), which
  GRPOTrainer renders with the tokenizer's chat template, and the carried columns its reward functions receive
  by name. The shards' template and template arguments are not in the rows: a note says what to pass TRL
  (`chat_template_kwargs`, or the built-in template the ids were made with). TRL 1.16 renders every prompt
  with the trainer's tools and template arguments, not a row's: a row with its own is `not_expressible`.

Rows with media (design §2a) carry them where the target can: `jsonl` and `hf-dataset` add a `media` column (per
document, in order: type, the file's absolute path, sha256, width, height, grid, and the run's `start`/`length` in
the document's tokens; jsonl adds `text_span`, the run's characters in `text`), and hf-dataset an `images` column
of the image files' paths, which TRL's vision-language collator loads. axolotl's and Together's tokenized Parquet
has no place for an image: a document with media is refused as `not_expressible`, the rest written.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from prep.core.columns import MEDIA_COLUMN
from prep.core.findings import Batch, PrepError, RowError, Source, Tally, finding, per_row, row_error
from prep.core.options import checked
from prep.core.result import Meter, ProgressFn, Result, outputs
from prep.files.atomic import replaced
from prep.files.write import RowWriter
from prep.render.tokenizer import Tokenizer, shard_decoder
from prep.shards.layout import read_manifest
from prep.shards.media import has_media, resolve, roots
from prep.shards.reader import iter_tables
from prep.stages.inspect import decoded_runs

TOKENS = ("input_ids", "attention_mask", "labels")  # axolotl's and Together's pre-tokenized columns
PAIRS = {"dpo": ("prompt_input_ids", "chosen_input_ids", "rejected_input_ids"),
         "kto": ("prompt_input_ids", "completion_input_ids", "label"), "prompt": ("prompt_input_ids",)}


@dataclass
class ExportResult(Result):
    """Rows in (documents of the shards), rows written, and the columns written."""

    columns: list[str] = field(default_factory=list)

    def details(self) -> dict[str, Any]:
        return {"columns": self.columns}

    def summary(self) -> str:
        return f"{self.tally.summary()} ({', '.join(self.columns)})"


@checked("export")
def export(shards: str | Path, to: str, output: str, *, tokenizer: str | None = None,
           progress: ProgressFn | None = None) -> ExportResult:
    """Write the documents of the shard folder `shards` to `output` in the layout `to` names."""
    manifest = read_manifest(shards)
    kind, out = manifest["kind"], Path(output)
    if to in ("axolotl", "together"):
        if kind not in ("sft", "pretrain"):
            raise PrepError(f"{shards}: {kind} shards are pairs; {to}'s pre-tokenized input holds single sequences "
                            "(input_ids, attention_mask, labels); export them --to hf-dataset or --to jsonl")
        if out.suffix != ".parquet":
            raise PrepError(f"-o {output}: {to} reads pre-tokenized data from a .parquet file; name it *.parquet")
    elif to == "trl-grpo" and kind != "prompt":
        raise PrepError(f"{shards}: {kind} shards; --to trl-grpo writes the prompts of prompt shards (tokenize with "
                        "--kind prompt)")
    elif to == "trl-grpo" and "prompt_record" not in _column_names(Path(shards), manifest):
        raise PrepError(f"{shards}: the prompt shards hold no prompt_record (made by an earlier prep); tokenize "
                        "them again")
    if to in ("jsonl", "trl-grpo") and out.suffix != ".jsonl":
        raise PrepError(f"-o {output}: --to {to} writes a .jsonl file; name it *.jsonl")
    elif to == "hf-dataset" and out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise PrepError(f"-o {output}: already there; give a new folder for the dataset")
    meter = Meter(progress)
    meter.start()
    # the carried input columns (--keep-columns) go with the rows of pairs and prompts (a packed row has none)
    carried = [] if kind in ("sft", "pretrain") else list(manifest.get("carried") or [])
    media = [MEDIA_COLUMN] if has_media(manifest) else []
    docs = _documents(Path(shards), kind, meter, manifest)
    if to == "trl-grpo":
        tally = _rows(docs, Path(shards), out, lambda row: _grpo_row(row, carried))
        columns = ["id", "prompt", *carried]
        return ExportResult(tally=tally, outputs=outputs(output=output), columns=columns,
                            notes=_template_notes(manifest))
    if to == "jsonl":
        decoder, kept = shard_decoder(manifest, tokenizer), carried + media
        tally = _rows(docs, Path(shards), out, lambda row: {**_text_row(decoder, kind, row), **{c: row[c] for c in kept}})
        columns = ["id", "text", "spans"] if kind in ("sft", "pretrain") else ["id", "prompt", *PAIRS[kind][1:]]
        columns = [c.removesuffix("_input_ids") for c in columns] + carried + media
    elif to == "hf-dataset":
        columns = list(TOKENS if kind in ("sft", "pretrain") else PAIRS[kind]) + carried + media
        columns += ["images"] if media else []
        rows = _hf_dataset((_with_images(t).select(columns) if media else t.select(columns) for t in docs), out)
        tally = Tally(rows, rows)
    else:
        columns, tally = list(TOKENS), Tally()
        rows = _parquet((t.select(columns) for t in _without_media(docs, Path(shards), tally, to)), out)
    return ExportResult(tally=tally, outputs=outputs(output=output), columns=columns)


def _documents(folder: Path, kind: str, meter: Meter, manifest: dict[str, Any]) -> Iterator[pa.Table]:
    """The shards one document per row, with each document's `id`: packed rows split at `seq_lengths`; media
    with their files' paths, each `start` counted from its document's first token."""
    found = roots(folder, manifest)
    for table in iter_tables(folder):
        if kind in ("sft", "pretrain"):
            lengths = pc.list_flatten(table["seq_lengths"]).to_numpy().astype(np.int32)
            offsets = pa.array(np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]).astype(np.int32))
            ids = pc.list_flatten(table["input_ids"]).combine_chunks()
            labels = pc.list_flatten(table["labels"]).combine_chunks()
            ones = pa.array(np.ones(len(ids), dtype=np.int8))
            docs = pa.table({"input_ids": pa.ListArray.from_arrays(offsets, ids),
                             "attention_mask": pa.ListArray.from_arrays(offsets, ones),
                             "labels": pa.ListArray.from_arrays(offsets, labels),
                             "id": pc.list_flatten(table["ids"])})
            if MEDIA_COLUMN in table.column_names:
                docs = docs.append_column(MEDIA_COLUMN, _split_media(table, lengths, found))
        else:
            docs = table.drop_columns(["num_tokens", "ids"]).append_column("id", pc.list_flatten(table["ids"]))
            if MEDIA_COLUMN in table.column_names:
                media = [[_reference(m, found, 0) for m in row or ()] for row in table[MEDIA_COLUMN].to_pylist()]
                docs = docs.set_column(docs.schema.get_field_index(MEDIA_COLUMN), MEDIA_COLUMN, pa.array(media))
        meter.add(docs.num_rows, int(pc.sum(table["num_tokens"]).as_py() or 0))
        yield docs


def _column_names(folder: Path, manifest: dict[str, Any]) -> list[str]:
    return pq.read_schema(folder / manifest["shards"][0]["path"]).names if manifest["shards"] else []


def _grpo_row(row: dict[str, Any], carried: list[str]) -> dict[str, Any]:
    """A prompt as TRL's conversational row: the messages and the carried columns; a row with its own tools or
    template arguments is refused (TRL renders every prompt with the trainer's)."""
    record = json.loads(row["prompt_record"])
    own = [k for k in ("tools", "chat_template_kwargs") if k in record]
    if own:
        raise row_error("not_expressible", f"{row['id']}: the row has its own {' and '.join(own)}, and TRL's "
                        "GRPOTrainer renders every prompt with the trainer's (GRPOTrainer(tools=...), "
                        "GRPOConfig(chat_template_kwargs=...))", f"$.{own[0]}",
                        hint="export --to jsonl (the rendered prompt) or hf-dataset (its ids)")
    return {"id": row["id"], "prompt": record["messages"], **{c: row[c] for c in carried}}


def _template_notes(manifest: dict[str, Any]) -> list[str]:
    """What TRL must be told to render the prompts as the shards did: their template arguments, or the built-in
    template (TRL renders with the tokenizer's own chat template)."""
    template = manifest.get("template") or {}
    notes = []
    if template.get("name") not in (None, "tokenizer"):
        notes.append(f"the shards' prompts were rendered with prep's built-in template {template['name']}; TRL renders "
                     "`prompt` with the tokenizer's chat template: give the model's tokenizer that template (prep "
                     f"template --list) or tokenize with --template tokenizer")
    if template.get("kwargs"):
        notes.append(f"the shards used template arguments {json.dumps(template['kwargs'])}: pass them to TRL as "
                     "GRPOConfig(chat_template_kwargs=...)")
    return notes


def _reference(m: dict[str, Any], found: list[Path], offset: int) -> dict[str, Any]:
    """A medium as an export writes it: its file's absolute path in place of root and path, `start` counted from
    `offset` (its document's first token)."""
    file = resolve(found, m)
    return {"type": m["type"], "path": str(file.resolve()) if file else m["path"], "sha256": m["sha256"],
            "width": m["width"], "height": m["height"], "grid": m["grid"], "start": m["start"] - offset,
            "length": m["length"]}


def _split_media(table: pa.Table, lengths: np.ndarray, found: list[Path]) -> pa.Array:
    """The media of packed rows, per document (`lengths`: the documents' token counts, row after row)."""
    out: list[list[dict[str, Any]]] = []
    pieces = table["seq_lengths"].combine_chunks().value_lengths().to_numpy().tolist()
    at = 0
    for media, n in zip(table[MEDIA_COLUMN].to_pylist(), pieces, strict=True):
        offset = 0
        for length in lengths[at:at + n].tolist():
            out.append([_reference(m, found, offset) for m in media or () if offset <= m["start"] < offset + length])
            offset += length
        at += n
    return pa.array(out)


def _with_images(docs: pa.Table) -> pa.Table:
    """TRL's `images` column: each document's image files, in order."""
    images = [[m["path"] for m in media or () if m["type"] == "image"] for media in docs[MEDIA_COLUMN].to_pylist()]
    return docs.append_column("images", pa.array(images, pa.list_(pa.string())))


def _without_media(docs: Iterator[pa.Table], folder: Path, tally: Tally, to: str) -> Iterator[pa.Table]:
    """The documents without media; each with media counted as a `not_expressible` reject (the target's tokenized
    Parquet has no place for an image)."""
    n = 0
    for table in docs:
        batch: Batch[None] = Batch()
        keep = np.ones(table.num_rows, bool)
        if MEDIA_COLUMN in table.column_names:
            keep = table[MEDIA_COLUMN].combine_chunks().value_lengths().to_numpy(zero_copy_only=False) == 0
        for k, (doc, kept) in enumerate(zip(table["id"].to_pylist(), keep.tolist(), strict=True)):
            if kept:
                batch.add(None, Source(str(folder), 0, n + k + 1))
            else:
                batch.reject(Source(str(folder), 0, n + k + 1), [finding(
                    "not_expressible", f"{doc}: {to}'s tokenized Parquet (input_ids, attention_mask, labels) has no "
                    "place for its images, video or audio", f"$.{MEDIA_COLUMN}",
                    hint="export --to hf-dataset (media and images columns, for TRL) or --to jsonl")], {"id": doc})
        n += table.num_rows
        tally.count(batch)
        yield table if keep.all() else table.filter(pa.array(keep))


def _parquet(tables: Iterator[pa.Table], out: Path) -> int:
    rows = 0
    with replaced(out) as tmp:
        writer = None
        for table in tables:
            writer = writer or pq.ParquetWriter(tmp, table.schema, compression="zstd")
            writer.write_table(table)
            rows += table.num_rows
        if writer is None:
            raise PrepError(f"{out}: the shards hold no rows to export")
        writer.close()
    return rows


def _hf_dataset(tables: Iterator[pa.Table], out: Path) -> int:
    """A `datasets.save_to_disk` folder: the documents go to an Arrow file first (streamed, flat memory), which
    datasets maps and saves in its own layout."""
    try:
        import datasets  # noqa: PLC0415 - optional: the train extra's datasets, only for --to hf-dataset
    except ImportError:
        raise PrepError("--to hf-dataset needs the datasets package: pip install datasets (or 'prep[train]')") from None
    rows = 0
    with replaced(out, folder=True) as tmp:
        arrow = tmp / "documents.arrow"
        writer = None
        with pa.OSFile(str(arrow), "wb") as sink:
            for table in tables:
                writer = writer or pa.ipc.new_stream(sink, table.schema)
                writer.write_table(table)
                rows += table.num_rows
            if writer is None:
                raise PrepError(f"{out}: the shards hold no rows to export")
            writer.close()
        saved = tmp / "dataset"
        datasets.Dataset.from_file(str(arrow)).save_to_disk(str(saved))
        for part in saved.iterdir():
            part.rename(tmp / part.name)
        saved.rmdir()
        arrow.unlink()
    return rows


def _rows(docs: Iterator[pa.Table], folder: Path, out: Path, make: Callable[[dict[str, Any]], dict[str, Any]]
          ) -> Tally:
    """JSONL of `make(row)` for each document, through `per_row`, so a row that cannot be written exactly is a
    counted reject."""
    tally = Tally()
    encode = per_row(lambda row, _: make(row), keep=lambda row: {"id": row["id"]})
    with RowWriter(str(out)) as writer:
        n = 0
        for table in docs:
            batch: Batch[dict[str, Any]] = Batch()
            for k, row in enumerate(table.to_pylist()):
                batch.add(row, Source(str(folder), 0, n + k + 1))
            n += table.num_rows
            done = encode(batch)
            writer.write(done.items)
            tally.count(done)
    return tally


def _text_row(decoder: Tokenizer, kind: str, row: dict[str, Any]) -> dict[str, Any]:
    if kind in ("sft", "pretrain"):
        pieces = decoded_runs(decoder, row["input_ids"], row["labels"])
        if pieces is None:
            raise _split(row["id"])
        spans, at = [], 0
        for text, trained in pieces:
            if trained:
                spans.append([at, at + len(text)])
            at += len(text)
        text = "".join(t for t, _ in pieces)
        for m in row.get(MEDIA_COLUMN) or ():  # where each medium's run is in the text
            m["text_span"] = [len(decoder.decode(row["input_ids"][:m["start"]])),
                              len(decoder.decode(row["input_ids"][:m["start"] + m["length"]]))]
        return {"id": row["id"], "text": text, "spans": spans}
    prompt = decoder.decode(row["prompt_input_ids"])
    out: dict[str, Any] = {"id": row["id"], "prompt": prompt}
    for column in PAIRS[kind][1:]:
        if column == "label":
            out["label"] = row["label"]
            continue
        whole = decoder.decode(row["prompt_input_ids"] + row[column])
        if not whole.startswith(prompt):
            raise _split(row["id"])
        out[column.removesuffix("_input_ids")] = whole[len(prompt):]
    return out


def _split(doc: str) -> RowError:
    return row_error("not_expressible", f"{doc}: a token there holds part of a character on both sides of where "
                     "training starts or stops, so the text cannot be cut exactly", hint="export --to hf-dataset, "
                     "axolotl or together: token ids, nothing decoded")
