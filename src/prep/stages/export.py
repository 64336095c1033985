"""`prep export SHARDS --to hf-dataset|axolotl|together|jsonl -o OUT`: the shards as other tools take them.

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
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from prep.core.findings import Batch, PrepError, RowError, Source, Tally, per_row, row_error
from prep.core.options import checked
from prep.core.result import Meter, ProgressFn, Result, outputs
from prep.files.atomic import replaced
from prep.files.write import RowWriter
from prep.render.tokenizer import Tokenizer, shard_decoder
from prep.shards.layout import read_manifest
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
    elif to == "jsonl" and out.suffix != ".jsonl":
        raise PrepError(f"-o {output}: --to jsonl writes a .jsonl file; name it *.jsonl")
    elif to == "hf-dataset" and out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise PrepError(f"-o {output}: already there; give a new folder for the dataset")
    meter = Meter(progress)
    meter.start()
    # the carried input columns (--keep-columns) go with the rows of pairs and prompts (a packed row has none)
    carried = [] if kind in ("sft", "pretrain") else list(manifest.get("carried") or [])
    if to == "jsonl":
        tally = _jsonl(Path(shards), kind, out, shard_decoder(manifest, tokenizer), meter, carried)
        columns = ["id", "text", "spans"] if kind in ("sft", "pretrain") else ["id", "prompt", *PAIRS[kind][1:]]
        columns = [c.removesuffix("_input_ids") for c in columns] + carried
    else:
        columns = list(TOKENS if kind in ("sft", "pretrain") else PAIRS[kind]) + carried
        tables = (t.select(columns) for t in _documents(Path(shards), kind, meter))
        rows = _hf_dataset(tables, out) if to == "hf-dataset" else _parquet(tables, out)
        tally = Tally(rows, rows)
    return ExportResult(tally=tally, outputs=outputs(output=output), columns=columns)


def _documents(folder: Path, kind: str, meter: Meter) -> Iterator[pa.Table]:
    """The shards one document per row, with each document's `id`: packed rows split at `seq_lengths`."""
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
        else:
            docs = table.drop_columns(["num_tokens", "ids"]).append_column("id", pc.list_flatten(table["ids"]))
        meter.add(docs.num_rows, int(pc.sum(table["num_tokens"]).as_py() or 0))
        yield docs


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


def _jsonl(folder: Path, kind: str, out: Path, decoder: Tokenizer, meter: Meter, carried: list[str]) -> Tally:
    """Decoded rows through `per_row`, so a row that cannot be written exactly is a counted reject."""
    tally = Tally()
    encode = per_row(lambda row, _: {**_text_row(decoder, kind, row), **{c: row[c] for c in carried}},
                     keep=lambda row: {"id": row["id"]})
    with RowWriter(str(out)) as writer:
        n = 0
        for table in _documents(folder, kind, meter):
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
        return {"id": row["id"], "text": "".join(t for t, _ in pieces), "spans": spans}
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
