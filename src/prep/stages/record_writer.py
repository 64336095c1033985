"""Writing records out for the verbs that keep some rows and drop others (mix, dedup, split,
decontaminate): the rows in one format, every dropped row in the rejects file with its reasons."""

from __future__ import annotations

import contextlib
from typing import Any

from prep.core.findings import Batch, Reject, Tally
from prep.core.records import Record
from prep.files.guard import check_outputs
from prep.files.media_out import MediaOut
from prep.files.write import RowWriter
from prep.formats import from_records, make_options
from prep.formats.chat_lines import ChatLines


class RecordsOut:
    """Records written to `path` in format `to`, counted in `tally`; a record the format cannot express is
    a reject (`not_expressible`), never written wrong. `rejects` is shared by every output of a verb."""

    def __init__(self, stack: contextlib.ExitStack, path: str, to: str, tally: Tally,
                 rejects: RowWriter | None) -> None:
        self.to, self.options, self.tally, self.rejects = to, make_options(to), tally, rejects
        self.media = MediaOut.beside(path)  # media files beside the output, as convert writes them by default
        self.out = stack.enter_context(RowWriter(path))

    def write(self, batch: Batch[Record]) -> None:
        rows: Batch[Any] = next(from_records(iter([batch]), self.to, self.options, media=self.media))
        self.out.write(rows.items)
        keep_rejects(rows, self.rejects)
        self.tally.count(rows)

    @property
    def encodes(self) -> bool:
        """Whether plain chat rows may come as lines already encoded (`write_chats`): JSONL of openai or trl rows,
        which write a plain chat record as {"id", "messages"}."""
        return self.to in ("openai", "trl") and self.out.container == "jsonl"

    def write_chats(self, rows: ChatLines, gone: list[int], rejects: list[Reject], ids: list[str] | None) -> None:
        """A batch of plain chat rows (formats.chat_lines; `ids`: ChatLines.ids) less the rows at `gone` (ascending),
        which are `rejects`: when `encodes`, written as lines made straight from the typed rows."""
        if not self.encodes:
            left = set(gone)
            batch: Batch[Record] = Batch(rejects=rejects)
            for k in range(len(rows)):
                if k not in left:
                    batch.add(rows.record(k), rows.source(k))
            self.write(batch)
            return
        kept = len(rows) - len(gone)
        self.out.write_lines(rows.written(ids, gone), kept)
        done: Batch[Any] = Batch(rejects=rejects)
        keep_rejects(done, self.rejects)
        self.tally.count(done)
        self.tally.read += kept
        self.tally.written += kept


class Removes:
    """For a verb whose purpose is to leave rows out (mix, dedup, decontaminate): those rows (`purpose`
    reasons) do not make the exit code 1; rows rejected for a problem (unreadable, ...) still do."""

    purpose: tuple[str, ...] = ()

    @property
    def exit_code(self) -> int:
        rejected = self.tally.rejected  # type: ignore[attr-defined]  # mixed into a Result
        return 1 if any(n for code, n in rejected.items() if code not in self.purpose) else 0


def keep_rejects(batch: Batch[Any], rejects: RowWriter | None) -> None:
    """A batch's rejects into the rejects file (if any), in file order, and after them the rows that went on
    altered (`"written": true`: a repeated key's row as written, the values the output lacks in it)."""
    if rejects and (batch.rejects or batch.altered):
        batch.rejects.sort(key=lambda r: (r.source.file, r.source.row))
        rejects.write([r.to_dict() for r in batch.rejects] + [a.to_dict(written=True) for a in batch.altered])


def open_rejects(stack: contextlib.ExitStack, rejects: str | None, *outputs: str, at: str | None = None
                 ) -> RowWriter | None:
    """The rejects file, refused when it is one of the outputs; written `at` another path when it lies inside an
    output folder that is written elsewhere first and swapped in whole (split)."""
    if not rejects:
        return None
    check_outputs((), {**{"-o" if len(outputs) == 1 else f"the output {o}": o for o in outputs}, "--rejects": rejects})
    return stack.enter_context(RowWriter(at or rejects, "jsonl"))
