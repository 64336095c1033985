"""`prep stats`: what is in a shard folder (or in raw input files), with length histograms drawn in
the terminal: counts, token lengths, packing efficiency and the share of tokens that are trained."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow.compute as pc

from prep.checks.dataset_stats import Distribution
from prep.core.findings import PrepError, Tally
from prep.core.options import checked
from prep.core.records import kind_of
from prep.core.result import Meter, ProgressFn, Result
from prep.formats.inputs import Inputs, read_inputs
from prep.shards.layout import MANIFEST, read_manifest
from prep.shards.reader import iter_tables

if TYPE_CHECKING:  # rich only where a table is drawn: tokenize imports LengthCounts from here (start-up time)
    from rich.console import Console

BINS = 12


def summary(values: np.ndarray) -> dict[str, float]:
    """min, p10, median, mean, p90, max of a distribution (the OpenAI cookbook's figures)."""
    if not len(values):
        return {}
    p10, median, p90 = np.percentile(values, [10, 50, 90])
    return {"min": int(values.min()), "p10": float(p10), "median": float(median), "mean": float(values.mean()),
            "p90": float(p90), "max": int(values.max())}


def histogram(values: np.ndarray, bins: int = BINS) -> list[tuple[int, int, int]]:
    """(low, high, count) buckets of integer lengths, equal width from min to max."""
    if not len(values):
        return []
    lo, hi = int(values.min()), int(values.max())
    edges = np.unique(np.linspace(lo, hi + 1, min(bins, hi - lo + 1) + 1).astype(int))
    counts, _ = np.histogram(values, edges)
    return [(int(a), int(b) - 1, int(c)) for a, b, c in zip(edges[:-1], edges[1:], counts, strict=True)]


def shard_stats(folder: str | Path, meter: Meter | None = None) -> dict[str, Any]:
    manifest = read_manifest(folder)
    kind = manifest["kind"]
    if kind in ("sft", "pretrain"):
        columns = ["num_tokens", "num_loss_tokens", "seq_lengths"]
    else:
        columns = ["num_tokens"]
    rows, docs, loss = [], [], 0
    meter = meter or Meter(None)
    for table in iter_tables(folder, columns):
        rows.append(table["num_tokens"].to_numpy())
        meter.add(table.num_rows, int(pc.sum(table["num_tokens"]).as_py() or 0))
        if "seq_lengths" in columns:
            docs.append(pc.list_flatten(table["seq_lengths"]).to_numpy())
            loss += int(pc.sum(table["num_loss_tokens"]).as_py() or 0)
    row_lengths = np.concatenate(rows) if rows else np.zeros(0, int)
    doc_lengths = np.concatenate(docs) if docs else row_lengths
    tokens = int(row_lengths.sum())
    max_len = manifest.get("max_len")
    return {
        "folder": str(folder), "kind": kind, "counts": manifest["counts"], "rows": len(row_lengths),
        "documents": len(doc_lengths), "tokens": tokens,
        "loss_tokens": loss if kind in ("sft", "pretrain") else None,
        "trained_share": round(loss / tokens, 6) if tokens and kind in ("sft", "pretrain") else None,
        "packing": manifest.get("packing"), "max_len": max_len,
        "row_tokens": summary(row_lengths), "row_histogram": histogram(row_lengths),
        "document_tokens": summary(doc_lengths), "document_histogram": histogram(doc_lengths),
        "row_fill": row_fill(row_lengths, max_len) if max_len and kind in ("sft", "pretrain") else None,
    }


def row_fill(lengths: np.ndarray, max_len: int, bins: int = 10) -> list[tuple[int, int, int]]:
    """How full the rows are: (low %, high %, rows) in `bins` equal steps of max_len; a full row counts in the last."""
    steps = np.minimum((lengths * bins) // max_len, bins - 1)
    counts = np.bincount(steps.astype(np.int64), minlength=bins)
    return [(100 * k // bins, 100 * (k + 1) // bins, int(c)) for k, c in enumerate(counts)]


def input_stats(inputs: Inputs, meter: Meter | None = None) -> dict[str, Any]:
    """Records by kind, messages and characters per record, of raw input files (no tokenizer needed)."""
    tally = Tally()
    kinds: dict[str, int] = {}
    messages, chars = [], []
    meter = meter or Meter(None)
    for batch in read_inputs(inputs):
        tally.count(batch)
        meter.add(len(batch.items) + len(batch.rejects))
        for record in batch.items:
            kind = kind_of(record)
            kinds[kind] = kinds.get(kind, 0) + 1
            turns = [m for key in ("messages", "prompt", "chosen", "rejected", "completion")
                     for m in record.get(key, [])]
            messages.append(len(turns))
            chars.append(len(record.get("text", "")) + sum(len(m["content"]) for m in turns))
    chars_arr = np.array(chars, dtype=np.int64)
    return {"counts": tally.to_dict(), "kinds": kinds, "messages": summary(np.array(messages)),
            "characters": summary(chars_arr), "character_histogram": histogram(chars_arr)}


@dataclass
class StatsResult(Result):
    stats: dict[str, Any] = field(default_factory=dict)  # what `prep stats --json` prints

    def details(self) -> dict[str, Any]:
        return {"stats": self.stats}


def token_statistics(folder: str | Path) -> dict[str, Any]:
    """validate's token statistics (tokens and trained tokens per row, rows over max_len, tokens billed with each
    row capped at max_len) read from tokenize shards: `prep run` reports these instead of tokenizing every row a
    second time. A preference or feedback row counts its prompt and its chosen (or judged) answer."""
    manifest = read_manifest(folder)
    tokens, trained = Distribution(), Distribution()
    for table in iter_tables(folder):
        if manifest["kind"] in ("sft", "pretrain"):
            whole, loss = table["num_tokens"].to_numpy(), table["num_loss_tokens"].to_numpy()
        else:
            answer = "chosen_input_ids" if manifest["kind"] == "dpo" else "completion_input_ids"
            loss = pc.list_value_length(table[answer]).to_numpy()
            whole = pc.list_value_length(table["prompt_input_ids"]).to_numpy() + loss
        tokens.values.extend(whole.tolist())
        trained.values.extend(loss.tolist())
    counts, max_len = manifest["counts"], manifest.get("max_len")
    total = sum(tokens.values)
    out: dict[str, Any] = {"tokenizer": manifest["tokenizer"]["name"], "template": (manifest["template"] or {}).get(
        "name"), "tokens_per_row": tokens.summary(), "trained_tokens_per_row": trained.summary(), "tokens_total": total}
    if max_len:
        too_long = counts["rejected"].get("too_long", 0)
        cut = sum(n for code, n in counts["altered"].items() if code in ("truncated", "turns_dropped"))
        out.update(max_len=max_len, rows_over_max_len=too_long + cut, billing_tokens=total + too_long * max_len)
    return out


@checked("stats")
def stats(targets: Inputs | str | Path | Sequence[str | Path], format: str = "auto",
          progress: ProgressFn | None = None) -> StatsResult:
    """Statistics of a shard folder (one path), or of the records in input files (paths read as `format`, or
    `Inputs`). The tally is the folder's or the files' own: rows its maker rejected make the exit code 1."""
    paths = [targets] if isinstance(targets, (str, Path)) else targets
    meter = Meter(progress)
    if isinstance(paths, Inputs):
        found = input_stats(paths, meter)
    elif len(paths) == 1 and Path(paths[0]).is_dir():
        if not (Path(paths[0]) / MANIFEST).exists():
            raise PrepError(f"{paths[0]}: no {MANIFEST}; give a finished shard folder, or input files")
        found = shard_stats(paths[0], meter)
    else:
        found = input_stats(Inputs([str(p) for p in paths], format), meter)
    counts = found["counts"]
    tally = Tally(counts["read"], counts["written"], Counter(counts["rejected"]), Counter(counts.get("altered", {})))
    return StatsResult(tally=tally, stats=found)


def draw_histogram(console: Console, title: str, buckets: list[tuple[int, int, int]], width: int = 40) -> None:
    if not buckets:
        return
    top = max(c for _, _, c in buckets) or 1
    from rich.table import Table  # noqa: PLC0415 - start-up time

    table = Table(title=title, show_header=False, box=None, padding=(0, 1))
    for lo, hi, count in buckets:
        bar = "█" * round(width * count / top) or ("▏" if count else "")
        table.add_row(f"{lo}–{hi}", f"[cyan]{bar}[/]", str(count))
    console.print(table)


def print_stats(result: dict[str, Any], console: Console) -> None:
    counts = result["counts"]
    rejected = sum(counts.get("rejected", {}).values())
    console.print(f"read {counts['read']}, written {counts['written']}, rejected {rejected}"
                  + (f" ({', '.join(f'{k}: {v}' for k, v in counts['rejected'].items())})" if rejected else ""))
    if "kind" in result:
        console.print(f"{result['kind']} shards: {result['rows']} rows, {result['documents']} documents, "
                      f"{result['tokens']} tokens")
        if result["trained_share"] is not None:
            console.print(f"trained tokens: {result['trained_share']:.1%}")
        packing = result.get("packing") or {}
        if packing.get("strategy", "none") != "none":
            console.print(f"packing: {packing['strategy']} into rows of {result['max_len']}, efficiency "
                          f"{packing.get('efficiency', 0):.2%}")
        for name in ("row", "document"):
            s = result[f"{name}_tokens"]
            if s:
                console.print(f"tokens per {name}: min {s['min']}, p10 {s['p10']:.0f}, median {s['median']:.0f}, "
                              f"mean {s['mean']:.1f}, p90 {s['p90']:.0f}, max {s['max']}")
        draw_histogram(console, "tokens per row", result["row_histogram"])
        if result["packing"] and result["packing"].get("strategy", "none") != "none":
            draw_histogram(console, "tokens per document", result["document_histogram"])
    else:
        console.print("records: " + ", ".join(f"{k} {v}" for k, v in sorted(result["kinds"].items())))
        for name in ("messages", "characters"):
            s = result[name]
            if s:
                console.print(f"{name} per record: min {s['min']}, median {s['median']:.0f}, mean {s['mean']:.1f}, "
                              f"max {s['max']}")
        draw_histogram(console, "characters per record", result["character_histogram"])
