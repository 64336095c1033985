"""`prep inspect`: show one shard row as the model sees it, trained tokens in colour and document
boundaries marked (axolotl's `--debug`, but for the exact bytes on disk). A medium's run of pad tokens is
shown as one label, `<image 1: 640×480 → 391 tokens>`, with the text around it as it is."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.rule import Rule
from rich.text import Text

from prep.core.findings import Tally
from prep.core.options import checked
from prep.core.result import Result
from prep.render.tokenizer import shard_decoder
from prep.shards.layout import read_manifest
from prep.shards.media import describe, numbered, segments, temporal_patch
from prep.shards.reader import read_row

TRAINED = "bold green"
UNTRAINED = "grey50"
MEDIA = "bold magenta"


def trained_runs(labels: list[int] | None, n: int) -> list[tuple[int, int, bool]]:
    """The `n` tokens of a row as runs (start, end, trained) of tokens trained or not alike (labels None:
    nothing trained), so that each run decodes as one piece of text."""
    runs: list[tuple[int, int, bool]] = []
    start = 0
    while start < n:
        trained = labels is not None and labels[start] != -100
        end = start + 1
        while end < n and (labels is not None and labels[end] != -100) == trained:
            end += 1
        runs.append((start, end, trained))
        start = end
    return runs


def decoded_runs(tokenizer: Any, ids: list[int], labels: list[int] | None) -> list[tuple[str, bool]] | None:
    """The decoded row cut where training starts and stops: (text, trained) pieces that join to exactly
    `tokenizer.decode(ids)`. Each cut is where the decoded prefix ends (a piece decoded alone can lose a
    leading space, as SentencePiece decoders do); None when a cut falls inside a character (a byte-level
    token can hold part of one)."""
    text = tokenizer.decode(ids)
    pieces, at = [], 0
    for _, end, trained in trained_runs(labels, len(ids)):
        upto = len(text)
        if end < len(ids):
            prefix = tokenizer.decode(ids[:end])
            if not text.startswith(prefix):
                return None
            upto = len(prefix)
        pieces.append((text[at:upto], trained))
        at = upto
    return pieces


def render_tokens(tokenizer: Any, ids: list[int], labels: list[int] | None, show_ids: bool) -> Text:
    """Runs of trained / untrained tokens, decoded together so the text reads as written."""
    text = Text()
    runs = trained_runs(labels, len(ids))
    pieces = None if show_ids else decoded_runs(tokenizer, ids, labels)
    for k, (start, end, trained) in enumerate(runs):
        style = TRAINED if trained else UNTRAINED
        if pieces is not None:
            text.append(pieces[k][0], style=style)
        elif show_ids:
            for i in range(start, end):
                text.append(f"{tokenizer.decode([ids[i]])!r}:{ids[i]} ", style=style)
        else:
            text.append(tokenizer.decode(ids[start:end]), style=style)
    return text


def render_row(tokenizer: Any, ids: list[int], labels: list[int] | None, show_ids: bool,
               media: list[dict[str, Any]] | None = None, offset: int = 0, temporal: int | None = None) -> Text:
    """`render_tokens` around the media of the row: each medium's run (`ids` are the row's tokens from `offset` on)
    as its label, numbered within the document."""
    media = [m for m in media or () if offset <= m["start"] < offset + len(ids)]
    if not media:
        return render_tokens(tokenizer, ids, labels, show_ids)
    text = Text()
    numbers = numbered(media)
    for start, end, k in segments(len(ids), media, offset):
        if k is None:
            text.append_text(render_tokens(tokenizer, ids[start:end], labels[start:end] if labels else labels,
                                           show_ids))
        else:
            text.append(describe(media[k], numbers[k], temporal), style=MEDIA)
    return text


@dataclass
class InspectResult(Result):
    row: dict[str, Any] = field(default_factory=dict)  # the shard row as stored

    def details(self) -> dict[str, Any]:
        return {"row": self.row}


@checked("inspect")
def inspect(shards: str | Path, row: int = 0, *, tokenizer: str | None = None, show_ids: bool = False,
            console: Console | None = None) -> InspectResult:
    """Print row `row` (0-based) of the shard folder `shards`, decoded, and return it."""
    console = console or Console()
    manifest = read_manifest(shards)
    tok = shard_decoder(manifest, tokenizer)
    data = read_row(shards, row)
    kind = manifest["kind"]
    console.print(f"[bold]{shards}[/] row {row} of {manifest['counts']['rows']} ({kind}, {data['num_tokens']} tokens"
                  + (f", {data['num_loss_tokens']} trained" if "num_loss_tokens" in data else "") + ")   legend: "
                  f"[{TRAINED}]trained[/] [{UNTRAINED}]not trained[/]"
                  + (f" [{MEDIA}]<image 1: … → N tokens>[/] a medium in place of its tokens" if data.get("media") else ""))
    temporal = temporal_patch(manifest)
    if kind in ("sft", "pretrain"):
        start = 0
        for k, (n, doc_id) in enumerate(zip(data["seq_lengths"], data["ids"], strict=True), 1):
            console.print(Rule(f"document {k}/{len(data['seq_lengths'])}: {doc_id} ({n} tokens)", align="left"))
            end = start + n
            console.print(render_row(tok, data["input_ids"][start:end], data["labels"][start:end], show_ids,
                                     data.get("media"), start, temporal))
            start = end
    else:
        console.print(Rule(f"{', '.join(data['ids'])}", align="left"))
        for column in [c for c in data if c.endswith("_input_ids")]:
            trained = None if column == "prompt_input_ids" else [0] * len(data[column])
            console.print(Rule(column.removesuffix("_input_ids"), align="left", style="dim"))
            media = data.get("media") if column == "prompt_input_ids" else None  # media are in the prompt
            console.print(render_row(tok, data[column], trained, show_ids, media, 0, temporal))
        if "label" in data:
            console.print(f"label: {data['label']}")
    return InspectResult(tally=Tally(1, 1), row=data, notes=tok.notes)
