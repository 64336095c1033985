"""`prep template`: render records with a chat template into text rows any trainer can use."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prep.core.findings import Batch, PrepError, per_row, row_error
from prep.core.options import DEFAULT_DATE, checked
from prep.core.records import Record, kind_of
from prep.core.result import Meter, ProgressFn, Result, outputs
from prep.files.write import RowWriter
from prep.formats.inputs import Inputs, read_inputs
from prep.render.spans import Specials, nothing_to_train, resolve_train_on
from prep.render.templates import AnyTemplate, chat_template, document, parse_kwargs, render_pair, text_only
from prep.render.tokenizer import load_tokenizer


def rows_stage(batches: Iterable[Batch[Record]], template: AnyTemplate | None, train_on: str,
               specials: Specials, reasoning: bool = True) -> Iterator[Batch[dict[str, Any]]]:
    """Stage for `prep template`: records -> text rows any trainer can use. Conversations become
    {"id", "text", "spans"} (spans: [start, end) characters that carry loss under `train_on`), plain
    text {"id", "text", "spans"} with BOS/EOS as trained, preference rows TRL's {"id", "prompt",
    "chosen", "rejected"} and feedback rows {"id", "prompt", "completion", "label"}."""
    return map(per_row(lambda record, _: {"id": record["id"], **_text_row(record, template, train_on, specials,
                                                                          reasoning)}), batches)


def _text_row(record: Record, template: AnyTemplate | None, train_on: str, specials: Specials,
              reasoning: bool) -> dict[str, Any]:
    text_only(record)
    kind = kind_of(record)
    if kind == "text":
        text = document(record["text"], specials)
        return {"text": text, "spans": [[0, len(text)]]}
    if template is None:
        raise PrepError("conversations need a template: give --template or a --tokenizer with a chat template")
    tools, kwargs = record.get("tools"), record.get("chat_template_kwargs")
    if kind == "chat":
        rendered = template.render(record["messages"], tools, kwargs)
        spans = rendered.spans(resolve_train_on(train_on, kind), reasoning)
        if not spans:
            raise nothing_to_train(resolve_train_on(train_on, kind))
        return {"text": rendered.text, "spans": [list(s) for s in spans]}
    sides = ("chosen", "rejected") if kind == "preference" else ("completion",)
    row: dict[str, Any] = {}
    for side in sides:
        start, text = render_pair(template, record["prompt"], record[side], tools, f"$.{side}", kwargs)
        if row.setdefault("prompt", text[:start]) != text[:start]:
            raise row_error("prompt_mismatch", "the prompt renders differently before the chosen and the rejected "
                            "answer", "$.prompt", hint="use a template that renders the prompt the same way")
        row[side] = text[start:]
    if kind == "feedback":
        row["label"] = record["label"]
    return row


@dataclass
class TemplateResult(Result):
    formats: dict[str, str] = field(default_factory=dict)
    template: str = ""  # the template used, as shown to the user

    def details(self) -> dict[str, Any]:
        return {"formats": self.formats, "template": self.template}

    def summary(self) -> str:
        return f"{self.tally.summary()} (template {self.template})"


@checked("template")
def template(inputs: Inputs, template: str | None = None, tokenizer: str | None = None, output: str | None = "-", *,
             train_on: str = "auto", rejects: str | None = None, on_row: Callable[[dict[str, Any]], None] | None = None,
             progress: ProgressFn | None = None, train_on_reasoning: str = "yes", template_kwargs: Iterable[str] = (),
             date: str = DEFAULT_DATE) -> TemplateResult:
    """`prep template`: render `inputs` with `template` (default: the tokenizer's own; or a .jinja file) and write
    the text rows (see `rows_stage`) to `output` (None: write nothing); `on_row` sees every row. The template
    arguments and `date` are prep tokenize's."""
    if template is None and tokenizer is None:
        raise PrepError("give --template NAME or --tokenizer DIR (whose chat template is then used)")
    kwargs = parse_kwargs(template_kwargs, template)
    tok = load_tokenizer(tokenizer) if tokenizer else None
    specials = tok.specials if tok else Specials()
    chosen = chat_template(tok, template, kwargs, date)
    result = TemplateResult(outputs=outputs(output=output, rejects=rejects), notes=tok.notes if tok else [],
                            template=getattr(chosen, "label", chosen.name))
    meter = Meter(progress)
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(RowWriter(output)) if output else None
        bad = stack.enter_context(RowWriter(rejects, "jsonl")) if rejects else None
        for batch in rows_stage(read_inputs(inputs, result.formats), chosen, train_on, specials,
                                train_on_reasoning == "yes"):
            if out:
                out.write(batch.items)
            if bad:
                bad.write(r.to_dict() for r in batch.rejects)
            if on_row:
                for row in batch.items:
                    on_row(row)
            result.tally.count(batch)
            meter.add(len(batch.items) + len(batch.rejects))
    return result
