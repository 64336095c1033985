"""Token statistics and token-level checks (`prep validate --tokenizer`), through the same code
`prep tokenize` uses (prep.render.encoder.Encoder with a prep.render template), so what validate
counts is what would be trained: tokens and trained tokens per row (min, max, mean, median, p10,
p90, as the OpenAI cookbook prints them), rows over --max-len, rows with no trained token after
masking, and text that contains one of the tokenizer's special-token strings (the tokenizer would
read it as a control token, not as text).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow.compute as pc

from prep.checks.dataset_stats import Distribution
from prep.checks.locate import LISTS, Loc
from prep.checks.schemas import show
from prep.core.columns import KIND_OF_RECORD
from prep.core.findings import Batch, Finding, PrepError, Source, finding, normalized
from prep.core.options import DEFAULT_DATE
from prep.core.records import Record, kind_of
from prep.render.encoder import Encoder, Settings, build_encoder
from prep.render.templates import chat_template, parse_kwargs
from prep.render.tokenizer import Tokenizer, load_tokenizer


@dataclass
class Counted:
    """A row after the encoder: its token counts, or the findings that reject it."""

    tokens: int = 0
    trained: int = 0
    errors: list[Finding] = field(default_factory=list)


@dataclass
class TokenCounts:
    """What TokenCheck counts over the rows it checks."""

    tokens: Distribution
    trained: Distribution
    over: int
    total: int
    capped: int


class TokenCheck:
    """One tokenizer (and template) for a whole run; an encoder per record kind, made when first needed."""

    def __init__(self, tokenizer: str | Tokenizer, template: str | None = None, max_len: int | None = None,
                 train_on: str = "auto", template_kwargs: Iterable[str] = (), date: str = DEFAULT_DATE) -> None:
        if max_len is not None and max_len < 2:
            raise PrepError("--max-len must be at least 2")
        kwargs = parse_kwargs(template_kwargs, template)
        self.tok = tokenizer if isinstance(tokenizer, Tokenizer) else load_tokenizer(tokenizer)
        self.template = chat_template(self.tok, template, kwargs, date)
        self.max_len, self.train_on = max_len, train_on
        self.encoders: dict[str, Encoder] = {}
        specials = sorted(set(self.tok.added_tokens(special_only=True)) |
                          ({self.template.eot} if self.template.eot else set()), key=len, reverse=True)
        self.specials = re.compile("|".join(map(re.escape, specials))) if specials else None
        self.heads = {s[:2] for s in specials}
        self.tokens, self.trained = Distribution(), Distribution()
        self.over = self.total = self.capped = 0

    def _encoder(self, kind: str) -> Encoder:
        if kind not in self.encoders:
            # No max_len here: every row is counted whole, and rows over the limit are reported, not cut.
            self.encoders[kind] = build_encoder(self.tok, self.template, Settings(kind, self.train_on))
        return self.encoders[kind]

    def count(self, records: list[Record], sources: list[Source]) -> list[Counted]:
        """Token counts for each record (in order), through the encoder of its kind."""
        out = [Counted() for _ in records]
        by_kind: dict[str, list[int]] = {}
        for i, record in enumerate(records):
            by_kind.setdefault(KIND_OF_RECORD[kind_of(record)], []).append(i)
        for kind, indices in by_kind.items():
            batch: Batch[Record] = Batch()
            for i in indices:
                batch.add(records[i], sources[i])
            done, table = self._encoder(kind)(batch)
            where = {s: i for i, s in zip(indices, (sources[i] for i in indices), strict=True)}
            for reject in done.rejects:
                out[where[reject.source]].errors = [normalized(f) for f in reject.findings]
            for i, (tokens, trained) in zip((where[s] for s in done.sources), _counts(kind, table), strict=True):
                out[i].tokens, out[i].trained = tokens, trained
        return out

    def check(self, record: Record, counted: Counted, locs: Mapping[str, list[Loc]]) -> list[Finding]:
        """Findings for a row the encoder took, and its counts into the statistics."""
        found = []
        self.tokens.add(counted.tokens)
        self.trained.add(counted.trained)
        self.total += counted.tokens
        if self.max_len:
            self.capped += min(counted.tokens, self.max_len)
            if counted.tokens > self.max_len:
                self.over += 1
                found.append(finding("too_long", f"{counted.tokens} tokens > --max-len {self.max_len}"))
        if self.specials is not None:
            found += self._special_text(record, locs)
        return found

    def _special_text(self, record: Record, locs: Mapping[str, list[Loc]]) -> list[Finding]:
        texts = [("text", 0, record["text"])] if isinstance(record.get("text"), str) else [
            (key, i, m["content"]) for key in LISTS for i, m in enumerate(record.get(key, ()))]
        out = []
        for key, i, text in texts:
            if any(h in text for h in self.heads) and (m := self.specials.search(text)):  # type: ignore[union-attr]
                path = "$.text" if key == "text" else locs[key][i][0] + locs[key][i][2]
                out.append(finding("special_token_text", f"the text contains {show(m.group())}, a special token "
                                   f"of {self.tok.name}", path))
        return out

    def take(self) -> TokenCounts:
        """The counts so far, starting again from none (a Ray worker hands them over after each batch)."""
        counts = TokenCounts(self.tokens, self.trained, self.over, self.total, self.capped)
        self.tokens, self.trained = Distribution(), Distribution()
        self.over = self.total = self.capped = 0
        return counts

    def merge(self, counts: TokenCounts) -> None:
        """Add a worker's counts to these."""
        self.tokens.merge(counts.tokens)
        self.trained.merge(counts.trained)
        self.over += counts.over
        self.total += counts.total
        self.capped += counts.capped

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {"tokenizer": self.tok.name, "template": self.template.name,
                               "tokens_per_row": self.tokens.summary(),
                               "trained_tokens_per_row": self.trained.summary(), "tokens_total": self.total}
        if self.max_len:
            out.update(max_len=self.max_len, rows_over_max_len=self.over, billing_tokens=self.capped)
        return out


def _counts(kind: str, table: Any) -> list[tuple[int, int]]:
    """(tokens of the row as trained, trained tokens) per table row."""
    if kind in ("sft", "pretrain"):
        return list(zip(table["num_tokens"].to_pylist(), table["num_loss_tokens"].to_pylist(), strict=True))
    prompt = pc.list_value_length(table["prompt_input_ids"]).to_pylist()
    answer = pc.list_value_length(table["chosen_input_ids" if kind == "dpo" else "completion_input_ids"]).to_pylist()
    return [(p + a, a) for p, a in zip(prompt, answer, strict=True)]
