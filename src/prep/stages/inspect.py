"""`prep inspect`: show one shard row as the model sees it, trained tokens in colour and document
boundaries marked (axolotl's `--debug`, but for the exact bytes on disk)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.rule import Rule
from rich.text import Text

from prep.core.findings import PrepError
from prep.render.tokenizer import load_tokenizer
from prep.shards.layout import read_manifest
from prep.shards.reader import read_row

TRAINED = "bold green"
UNTRAINED = "grey50"


def tokenizer_for(manifest: dict[str, Any], given: str | None) -> Any:
    """The tokenizer named on the command line, else the one the manifest records by path."""
    info = manifest.get("tokenizer") or {}
    path = given or info.get("path") or info.get("name")
    if not path or not Path(path).exists():
        raise PrepError(f"cannot find the shards' tokenizer ({path or 'not recorded'}); pass --tokenizer DIR")
    return load_tokenizer(path).hf


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
