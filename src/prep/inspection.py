"""`prep inspect`: show one shard row as the model sees it, trained tokens in colour and document
boundaries marked (axolotl's `--debug`, but for the exact bytes on disk)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from rich.console import Console
from rich.rule import Rule
from rich.text import Text

from prep.findings import PrepError
from prep.shards import read_manifest

TRAINED = "bold green"
UNTRAINED = "grey50"


def read_row(folder: str | Path, index: int) -> dict[str, Any]:
    """Row `index` (0-based, counted across shards in manifest order) of a shard folder."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    total = manifest["counts"]["rows"]
    if not 0 <= index < total:
        raise PrepError(f"{folder}: row {index} does not exist; rows are 0 to {total - 1}")
    for shard in manifest["shards"]:
        if index < shard["rows"]:
            return pq.read_table(folder / shard["path"]).slice(index, 1).to_pylist()[0]
        index -= shard["rows"]
    raise PrepError(f"{folder}: the manifest lists fewer rows than it counts; run `prep verify`")


def tokenizer_for(manifest: dict[str, Any], given: str | None) -> Any:
    """The tokenizer named on the command line, else the one the manifest records by path."""
    from transformers import AutoTokenizer

    info = manifest.get("tokenizer") or {}
    path = given or info.get("path") or info.get("name")
    if not path or not Path(path).exists():
        raise PrepError(f"cannot find the shards' tokenizer ({path or 'not recorded'}); pass --tokenizer DIR")
    return AutoTokenizer.from_pretrained(path)


def render_tokens(tokenizer: Any, ids: list[int], labels: list[int] | None, show_ids: bool) -> Text:
    """Runs of trained / untrained tokens, decoded together so the text reads as written."""
    text = Text()
    start = 0
    while start < len(ids):
        trained = labels is not None and labels[start] != -100
        end = start + 1
        while end < len(ids) and (labels is not None and labels[end] != -100) == trained:
            end += 1
        style = TRAINED if trained else UNTRAINED
        if show_ids:
            for i in range(start, end):
                text.append(f"{tokenizer.decode([ids[i]])!r}:{ids[i]} ", style=style)
        else:
            text.append(tokenizer.decode(ids[start:end]), style=style)
        start = end
    return text


def inspect_row(folder: str | Path, index: int = 0, *, tokenizer: str | None = None, show_ids: bool = False,
                console: Console | None = None) -> dict[str, Any]:
    """Print row `index` of `folder` and return it."""
    console = console or Console()
    manifest = read_manifest(folder)
    tok = tokenizer_for(manifest, tokenizer)
    row = read_row(folder, index)
    kind = manifest["kind"]
    console.print(f"[bold]{folder}[/] row {index} of {manifest['counts']['rows']} ({kind}, {row['num_tokens']} tokens"
                  + (f", {row['num_loss_tokens']} trained" if "num_loss_tokens" in row else "") + ")   legend: "
                  f"[{TRAINED}]trained[/] [{UNTRAINED}]not trained[/]")
    if kind in ("sft", "pretrain"):
        start = 0
        for k, (n, doc_id) in enumerate(zip(row["seq_lengths"], row["ids"], strict=True), 1):
            console.print(Rule(f"document {k}/{len(row['seq_lengths'])}: {doc_id} ({n} tokens)", align="left"))
            end = start + n
            console.print(render_tokens(tok, row["input_ids"][start:end], row["labels"][start:end], show_ids))
            start = end
    else:
        console.print(Rule(f"{', '.join(row['ids'])}", align="left"))
        for column in [c for c in row if c.endswith("_input_ids")]:
            trained = None if column == "prompt_input_ids" else [0] * len(row[column])
            console.print(Rule(column.removesuffix("_input_ids"), align="left", style="dim"))
            console.print(render_tokens(tok, row[column], trained, show_ids))
        if "label" in row:
            console.print(f"label: {row['label']}")
    return row
