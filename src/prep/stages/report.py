"""`prep report TARGET`: one self-contained HTML page of what happened to the data and the training.

TARGET is a `prep run` folder (run.json), a shard folder (manifest.json), a train folder
(training_report.json) or a validate report (report.json, or the folder holding it). The figures
come from those files as they are, never recomputed from something else: row accounting per stage
and per source, findings and rejects by code with their file:line, token lengths per source before
and after `max_len` (the tokenize manifest's `sources`), the shards' trained share, packing
efficiency and row fill, a decoded row per source (with the shards' own tokenizer), and
every numeric training curve with the run's speed and peak memory. This module gathers them into
one dict (`ReportResult.page`); prep.stages.report_html draws the page.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prep import __version__
from prep.checks.dataset_stats import LengthCounts
from prep.core.findings import PrepError, Tally
from prep.core.options import checked
from prep.core.result import Result, outputs
from prep.files.atomic import write_text_atomic
from prep.files.guard import check_outputs
from prep.files.media import thumbnail
from prep.render.tokenizer import Tokenizer, shard_decoder
from prep.shards.layout import MANIFEST, read_manifest
from prep.shards.media import describe, numbered, resolve, roots, segments, temporal_patch
from prep.shards.reader import iter_tables, read_row
from prep.stages.inspect import decoded_runs, trained_runs
from prep.stages.report_html import page
from prep.stages.stats import shard_stats

RUN, VALIDATE_REPORT, TRAIN_REPORT = "run.json", "report.json", "training_report.json"
PAGE = "report.html"
EXAMPLES = 5  # locations shown per finding code
SAMPLE_TOKENS = 1500  # tokens decoded per sample row; the rest of a long row is only counted
CHART_POINTS = 2_000  # points drawn per series of a training curve
_REJECT_LINES = 10_000  # lines of a rejects file read for examples (the counts come from the manifests)


@dataclass
class ReportResult(Result):
    """The page written (`outputs["report"]`), what it shows (`page`) and its size; `notes` say what the
    page leaves out and why (a tokenizer that has moved, a stage folder that is gone)."""

    page: dict[str, Any] = field(default_factory=dict)
    bytes: int = 0
    notes: list[str] = field(default_factory=list)

    def details(self) -> dict[str, Any]:
        return {"page": self.page, "bytes": self.bytes, "notes": self.notes}

    def summary(self) -> str:
        return f"{self.outputs['report']} ({self.bytes / 1024:,.0f} KB)"


@dataclass
class _Found:
    """The files TARGET leads to."""

    what: str
    root: Path
    run: dict[str, Any] | None = None
    validate: dict[str, Any] | None = None
    validate_path: Path | None = None
    shards: list[tuple[str, Path, dict[str, Any]]] = field(default_factory=list)  # (stage, folder, manifest)
    train: dict[str, Any] | None = None
    train_folder: Path | None = None


@checked("report")
def report(target: str | Path, output: str | None = None, *, tokenizer: str | None = None) -> ReportResult:
    """Write the page for `target` to `output` (default: report.html in the target folder, or beside a
    report file) and return what it shows."""
    found = _find(Path(target))
    out = Path(output) if output else found.root / PAGE
    check_outputs(_reads(found), {"-o": out})  # what TARGET leads to (a packed folder's source, a run's stages)
    notes: list[str] = []
    data = gather(found, out.parent, tokenizer, notes)
    html = page(data)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out, html)
    left_out = Counter({s["stage"]: sum(s["rejected"].values()) for s in data["stages"] if s["rejected"]})
    tally = Tally(data["rows"]["read"], data["rows"]["written"], left_out)  # as prep run counts: rejects by stage
    return ReportResult(tally=tally, outputs=outputs(report=out), page=data, bytes=len(html.encode()), notes=notes)


# ---------------------------------------------------------------- finding the files


def _find(target: Path) -> _Found:
    if target.is_file():
        data = _json(target)
        if "findings" in data and "summary" in data:
            return _Found("validate report", target.parent, validate=data, validate_path=target)
        if "loss_curve" in data and "steps" in data:
            return _with_train(_Found("train folder", target.parent), target.parent)
        if "stages" in data and "recipe" in data:
            return _run(target.parent, data)
        raise PrepError(f"{target}: not a run.json, a validate report or a training report")
    if not target.is_dir():
        raise PrepError(f"{target}: no such file or folder")
    if (target / RUN).is_file():
        return _run(target, _json(target / RUN))
    if (target / MANIFEST).is_file():
        return _with_shards(_Found("shard folder", target), target)
    if (target / TRAIN_REPORT).is_file():
        return _with_train(_Found("train folder", target), target)
    if (target / VALIDATE_REPORT).is_file():
        return _find(target / VALIDATE_REPORT)
    raise PrepError(f"{target}: nothing to report on; give a prep run folder ({RUN}), a shard folder ({MANIFEST}), a "
                    f"train folder ({TRAIN_REPORT}) or a validate report")


def _reads(found: _Found) -> list[Path]:
    """Every file the page is made from (a shard folder's manifest and shards: the page itself may go beside them)."""
    reads = [p for _, folder, m in found.shards for p in (folder / MANIFEST, *(folder / s["path"] for s in m["shards"]))]
    reads += [p for p in (found.validate_path, found.train_folder and found.train_folder / TRAIN_REPORT) if p]
    if found.run is not None:
        reads.append(found.root / RUN)
        reads += [p for stage in found.run.get("stages", []) if (p := found.root / stage["name"] / "rejects.jsonl").is_file()]
    return reads


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise PrepError(f"{path}: cannot read it as JSON: {e}") from None
    if not isinstance(data, dict):
        raise PrepError(f"{path}: not a prep report (a JSON object)")
    return data


def _run(root: Path, run: dict[str, Any]) -> _Found:
    found = _Found("run", root, run=run)
    for stage in run.get("stages", []):
        folder = root / stage["name"]  # the run folder may have moved since run.json was written
        if stage["status"] not in ("ran", "skipped", "stopped"):
            continue
        if stage["name"] == "validate" and (folder / VALIDATE_REPORT).is_file():
            found.validate, found.validate_path = _json(folder / VALIDATE_REPORT), folder / VALIDATE_REPORT
        elif stage["name"] in ("tokenize", "pack") and (folder / MANIFEST).is_file():
            found.shards.append((stage["name"], folder, read_manifest(folder)))
        elif stage["name"] == "train" and (folder / TRAIN_REPORT).is_file():
            found.train, found.train_folder = _json(folder / TRAIN_REPORT), folder
    return found


def _with_shards(found: _Found, folder: Path) -> _Found:
    """A shard folder, and the unpacked folder it was packed from while that is still there unchanged."""
    manifest = read_manifest(folder)
    source = manifest.get("source") or {}
    upstream = Path(source.get("path", ""))
    if source and (upstream / MANIFEST).is_file():
        from prep.files.hashing import sha256_file  # noqa: PLC0415 - start-up time: only packed folders use it

        if sha256_file(upstream / MANIFEST) == source.get("manifest_sha256"):
            found.shards.append(("tokenize", upstream, read_manifest(upstream)))
    found.shards.append(("pack" if source else "tokenize", folder, manifest))
    return found


def _with_train(found: _Found, folder: Path) -> _Found:
    found.train, found.train_folder = _json(folder / TRAIN_REPORT), folder
    shards = Path(found.train.get("shards", ""))
    if (shards / MANIFEST).is_file():
        _with_shards(found, shards)
    return found


# ---------------------------------------------------------------- the figures


def gather(found: _Found, page_dir: Path, tokenizer: str | None, notes: list[str]) -> dict[str, Any]:
    """Everything the page shows, as plain data (each number as it stands in run.json, report.json, the
    manifests or training_report.json)."""
    manifests = {stage: (folder, m) for stage, folder, m in found.shards}
    unpacked = manifests.get("tokenize")
    final = found.shards[-1] if found.shards else None
    data: dict[str, Any] = {
        "title": _title(found), "target": str(found.root), "what": found.what, "prep_version": __version__,
        "stages": _stages(found, page_dir),
        "findings": _findings(found, page_dir),
        "lengths": _lengths(unpacked, final[2] if final else None, page_dir) if unpacked else [],
        "shards": [_shards(stage, folder, m) for stage, folder, m in found.shards],
        "samples": _samples(found, tokenizer, notes, page_dir) if final else [],
        "origin": _origin(found),
        "training": _training(found, notes) if found.train is not None else None,
    }
    first = data["stages"][0] if data["stages"] else {"read": 0}
    last_rows = next((s["written"] for s in reversed(data["stages"]) if s.get("written") is not None), 0)
    data["rows"] = {"read": first.get("read") or 0, "written": last_rows}
    data["stopped"] = (found.run or {}).get("stopped") or (found.run or {}).get("failed")
    if found.validate is None and found.what == "run" and any(s["stage"] == "validate" for s in data["stages"]):
        notes.append("the validate stage's report.json is gone; its findings are not shown")
    return data


def _title(found: _Found) -> str:
    if found.run is not None:
        return f"prep run {found.run.get('name') or Path(found.run.get('recipe', '')).stem}"
    return f"prep {found.what} {found.root.name}"


def _link(path: str | Path | None, page_dir: Path) -> str | None:
    """A file as the page links to it: relative to the page, so the folder can move with it."""
    if not path:
        return None
    return Path(os.path.relpath(Path(path).absolute(), page_dir.absolute())).as_posix()


def _label(path: str, page_dir: Path) -> str:
    """A source as the page names it: relative to the page when it is in the page's folder (a run's
    convert/data.jsonl), else as recorded."""
    relative = _link(path, page_dir) or path
    return path if relative.startswith("..") else relative


def _origin(found: _Found) -> dict[str, str]:
    """In a run that converts first: the files its later stages' one source was made of, with their formats."""
    convert = next((s for s in (found.run or {}).get("stages", []) if s["name"] == "convert"), None)
    return dict((convert or {}).get("summary", {}).get("formats") or {})


def _source_rows(rows: list[dict[str, Any]], page_dir: Path) -> list[dict[str, Any]]:
    return [{"path": r["path"], "link": _link(r["path"], page_dir), "read": r["read"], "written": r["written"],
             "rejected": dict(r.get("rejected") or {}), "altered": dict(r.get("altered") or {})} for r in rows]


def _stages(found: _Found, page_dir: Path) -> list[dict[str, Any]]:
    """Row accounting, stage by stage (read, written, rejected and altered by reason) and source by source."""
    out: list[dict[str, Any]] = []
    run_stages = {s["name"]: s for s in (found.run or {}).get("stages", [])}
    manifests = {stage: (folder, m) for stage, folder, m in found.shards}

    def row(name: str, read: int | None, written: int | None, rejected: dict[str, int], **more: Any) -> None:
        stage = run_stages.get(name, {})
        folder = found.root / name if found.run is not None else None
        rejects = (stage.get("summary") or {}).get("rejects")
        out.append({"stage": name, "status": stage.get("status", "done"), "read": read, "written": written,
                    "rejected": dict(rejected), "altered": more.pop("altered", {}),
                    "dropped": more.pop("dropped", {}),
                    "line": (stage.get("summary") or {}).get("line", ""),
                    "rejects": _link(folder / rejects, page_dir) if folder and rejects else None,
                    "sources": more.pop("sources", []), **more})

    for name, stage in run_stages.items():
        s = stage.get("summary") or {}
        if name == "convert" and "read" in s:
            files = [{"path": f, **t} for f, t in (s.get("files") or {}).items()]
            row(name, s["read"], s["written"], s.get("rejected_by_reason", {}), sources=_source_rows(files, page_dir),
                dropped=dict(s.get("dropped_fields") or {}))
        elif name in ("tokenize", "pack") or name == "validate" and found.validate is not None:
            continue  # from their own files, below
        elif name != "train" and stage["status"] in ("ran", "skipped", "stopped", "failed"):
            row(name, s.get("read"), s.get("written", s.get("accepted")), s.get("rejected_by_reason", {}))
    if found.validate is not None:
        v, files = found.validate, found.validate["files"]
        rejected: dict[str, int] = defaultdict(int)
        for f in files:
            for reason, n in f.get("rejected_by_reason", {}).items():
                rejected[reason] += n
        sources = [{"path": f["path"], "read": f["rows_read"], "written": f["rows_accepted"],
                    "rejected": f.get("rejected_by_reason", {})} for f in files]
        row("validate", v["summary"]["rows_read"], v["summary"]["rows_accepted"], rejected,
            sources=_source_rows(sources, page_dir), errors=v["summary"]["errors"], warnings=v["summary"]["warnings"])
    for name in ("tokenize", "pack"):
        if name in manifests:
            folder, m = manifests[name]
            c = m["counts"]
            row(name, c["read"], c["written"], c["rejected"], altered=dict(c.get("altered", {})), rows=c["rows"],
                sources=_source_rows(m.get("sources", []), page_dir), dropped=dict(c.get("dropped_fields", {})))
            if found.run is None and (folder / "rejects.jsonl").is_file():
                out[-1]["rejects"] = _link(folder / "rejects.jsonl", page_dir)
    if found.train is not None:
        t = found.train
        row("train", None, None, {}, line=(run_stages.get("train", {}).get("summary") or {}).get("line") or
            f"{t['method']}: {t['steps']} steps in {t['runtime_s']:.1f} s")
    return out


def _findings(found: _Found, page_dir: Path) -> list[dict[str, Any]]:
    """Findings by stage and code: exact counts, the first message and hint, and where the first ones are."""
    out: list[dict[str, Any]] = []
    if found.validate is not None:
        stored: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for f in found.validate.get("findings", []):
            stored[f["code"]].append(f)
        by_code = found.validate["summary"].get("findings_by_code", {})
        for code, info in sorted(by_code.items(), key=lambda kv: (kv[1]["severity"] != "error", -kv[1]["count"])):
            examples = stored.get(code, [])
            out.append(_finding("validate", code, info["severity"], info["count"], examples, page_dir))
    folders = {stage: folder for stage, folder, _ in found.shards}
    if found.run is not None:
        folders = {s["name"]: found.root / s["name"] for s in found.run["stages"] if s["name"] in ("convert", "tokenize",
                                                                                                "pack")}
    for stage, folder in folders.items():
        counts = _stage_counts(found, stage)
        if not counts:
            continue
        kept = (folder / "rejects.jsonl").is_file()
        examples = _rejects(folder / "rejects.jsonl") if kept else {}
        for kind in ("rejected", "altered"):
            for code, n in sorted(counts.get(kind, {}).items(), key=lambda kv: -kv[1]):
                out.append(_finding(stage, code, kind, n, examples.get((kind, code), []), page_dir))
                if not kept:
                    out[-1]["message"] = f"rows {kind}; run {stage} with --rejects FILE to keep them with their reasons"
    return out


def _stage_counts(found: _Found, stage: str) -> dict[str, Any] | None:
    for name, _, m in found.shards:
        if name == stage:
            return m["counts"]
    s = next((s.get("summary") or {} for s in (found.run or {}).get("stages", []) if s["name"] == stage), {})
    return {"rejected": s["rejected_by_reason"]} if "rejected_by_reason" in s else None


def _rejects(path: Path) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """The first rejected and altered rows of each reason in a rejects file, as findings with their place."""
    found: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    with open(path, encoding="utf-8", errors="replace") as f:
        for k, line in enumerate(f):
            if k >= _REJECT_LINES:
                break
            try:
                r = json.loads(line)
                reason = r["reasons"][0]
            except (ValueError, KeyError, IndexError, TypeError):
                continue
            key = ("altered" if r.get("written") else "rejected", reason["code"])
            if len(found[key]) < EXAMPLES:
                found[key].append({**reason, "file": r.get("file", ""), "line": r.get("line", 0)})
    return found


def _finding(stage: str, code: str, severity: str, count: int, examples: list[dict[str, Any]],
             page_dir: Path) -> dict[str, Any]:
    first = examples[0] if examples else {}
    return {"stage": stage, "code": code, "severity": severity, "count": count,
            "message": first.get("message", ""), "hint": first.get("hint", ""), "path": first.get("path", ""),
            "examples": [{"file": e.get("file", ""), "line": e.get("line", 0), "link": _link(e.get("file"), page_dir)}
                         for e in examples[:EXAMPLES]]}


def _lengths(unpacked: tuple[Path, dict[str, Any]], final: dict[str, Any] | None,
             page_dir: Path) -> list[dict[str, Any]]:
    """Token lengths per source before and after `max_len`, as the tokenize manifest counted them (a folder
    written before prep recorded sources: its rows' lengths, as one source)."""
    folder, manifest = unpacked
    max_len = manifest.get("max_len") or (final or {}).get("max_len")
    sources = manifest.get("sources")
    if sources is None:
        after = LengthCounts()
        for table in iter_tables(folder, ["num_tokens"]):
            after.add(table["num_tokens"].to_numpy())
        sources = [{"path": "all rows", "lengths": {"after": after.to_dict()}}]
    out = []
    for s in sources:
        lengths = {k: LengthCounts.from_dict(v) for k, v in s["lengths"].items()}
        # rows over max_len, exactly: those the overflow policy dropped (too_long) or cut (altered)
        over = (s.get("rejected") or {}).get("too_long", 0) + sum((s.get("altered") or {}).values()) \
            if max_len and "read" in s else None
        out.append({"path": s["path"], "label": _label(s["path"], page_dir), "max_len": max_len,
                    "policy": manifest.get("overflow"), "before": lengths.get("before"), "after": lengths["after"],
                    "over": over})

    return out


def _shards(stage: str, folder: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    stats = shard_stats(folder)
    return {"stage": stage, "folder": str(folder), "kind": manifest["kind"], "rows": manifest["counts"]["rows"],
            "documents": stats["documents"], "tokens": manifest["tokens"]["total"],
            "loss_tokens": manifest["tokens"].get("loss"), "trained_share": stats["trained_share"],
            "packing": manifest.get("packing") or {}, "max_len": manifest.get("max_len"),
            "template": (manifest.get("template") or {}).get("name"), "train_on": manifest.get("train_on"),
            "tokenizer": (manifest.get("tokenizer") or {}).get("name"), "row_fill": stats["row_fill"],
            "row_tokens": stats["row_tokens"], "document_tokens": stats["document_tokens"]}


# ---------------------------------------------------------------- decoded rows


def _samples(found: _Found, tokenizer: str | None, notes: list[str], page_dir: Path) -> list[dict[str, Any]]:
    """One row per source, decoded as the model sees it: the final shards' row (packed or not) that holds
    the source's first document, each document of it marked, trained tokens apart from the rest."""
    _, folder, manifest = found.shards[-1]
    try:
        decoder = shard_decoder(manifest, tokenizer)
    except PrepError as e:
        if tokenizer:
            raise
        notes.append(f"no decoded rows: {e}")
        return []
    unpacked = next(((f, m) for stage, f, m in found.shards if stage == "tokenize"), None)
    wanted: list[tuple[str, str | None]] = []  # (source, id of its first document)
    for s in (unpacked[1].get("sources") or []) if unpacked else []:
        if s.get("first_row") is not None:
            wanted.append((_label(s["path"], page_dir), read_row(unpacked[0], s["first_row"])["ids"][0]))
    if not wanted and manifest["counts"]["rows"]:
        wanted = [("row 0", None)]
    rows = _rows_holding(folder, [doc for _, doc in wanted])
    media = _Media(roots(folder, manifest), temporal_patch(manifest))
    return [_decoded(decoder, source, rows[doc], doc, manifest["kind"], media) for source, doc in wanted
            if doc in rows]


def sample(folder: str | Path, index: int, tokenizer: str | None = None) -> dict[str, Any]:
    """Row `index` of the shard folder decoded as the page shows a sample (each document a part of runs of trained
    and untrained text, media labelled in place): what `prep inspect` prints, as data (prep ui's Template page)."""
    manifest = read_manifest(folder)
    rows = manifest["counts"]["rows"]
    if not 0 <= index < rows:
        raise PrepError(f"{folder}: no row {index}; it has {rows} rows (0 to {rows - 1})")
    media = _Media(roots(Path(folder), manifest), temporal_patch(manifest))
    return _decoded(shard_decoder(manifest, tokenizer), str(folder), (index, read_row(folder, index)), None,
                    manifest["kind"], media)


@dataclass
class _Media:
    """What showing a row's media needs: the folder's media roots and the processor's temporal patch."""

    roots: list[Path]
    temporal: int | None

    def pieces(self, decoder: Tokenizer, ids: list[int], labels: list[int] | None, media: list[dict[str, Any]] | None,
               offset: int) -> list[Any]:
        """`_runs` of the text between the media of `ids` (the row's tokens from `offset` on) and, in each
        medium's place, its label and thumbnail."""
        mine = [m for m in media or () if offset <= m["start"] < offset + len(ids)]
        numbers = numbered(mine)
        out: list[Any] = []
        for start, end, k in segments(len(ids), mine, offset):
            if k is None:
                part = ids[start:end]
                out += _runs(decoder, part, labels[start:end]) if labels is not None else [(decoder.decode(part), False)]
            else:
                m = mine[k]
                out.append({"media": describe(m, numbers[k], self.temporal), "type": m["type"],
                            "thumb": thumbnail(resolve(self.roots, m), m["type"])})
        return out


def _rows_holding(folder: Path, ids: list[str | None]) -> dict[str | None, tuple[int, dict[str, Any]]]:
    """For each document id, the first row of `folder` that holds it, and that row's index (None: row 0)."""
    out: dict[str | None, tuple[int, dict[str, Any]]] = {}
    if None in ids:
        out[None] = (0, read_row(folder, 0))
    todo = {i for i in ids if i is not None}
    index = 0
    for table in iter_tables(folder, ["ids"]):
        if not todo:
            break
        for k, doc_ids in enumerate(table["ids"].to_pylist()):
            for doc in todo.intersection(doc_ids):
                out[doc] = (index + k, read_row(folder, index + k))
            todo.difference_update(doc_ids)
        index += table.num_rows
    return out


def _decoded(decoder: Tokenizer, source: str, found: tuple[int, dict[str, Any]], doc: str | None,
             kind: str, media: _Media) -> dict[str, Any]:
    index, row = found
    sample: dict[str, Any] = {"source": source, "row": index, "document": doc, "tokens": row["num_tokens"],
                              "parts": []}
    budget = SAMPLE_TOKENS
    if kind in ("sft", "pretrain"):
        start = 0
        for n, doc_id in zip(row["seq_lengths"], row["ids"], strict=True):
            ids, labels = row["input_ids"][start:start + n], row["labels"][start:start + n]
            shown = min(n, max(budget, 0))
            sample["parts"].append({"title": doc_id, "tokens": n, "trained": sum(x != -100 for x in labels),
                                    "mark": doc_id == doc,
                                    "runs": media.pieces(decoder, ids[:shown], labels[:shown], row.get("media"), start),
                                    "hidden": n - shown})
            budget -= shown
            start += n
    else:
        for column in [c for c in row if c.endswith("_input_ids")]:
            ids = row[column][:max(budget, 0)]
            trained = column != "prompt_input_ids"
            sample["parts"].append({"title": column.removesuffix("_input_ids"), "tokens": len(row[column]),
                                    "trained": len(row[column]) if trained else 0, "mark": False,
                                    "side": column.removesuffix("_input_ids"), "hidden": len(row[column]) - len(ids),
                                    "runs": (media.pieces(decoder, ids, None, row.get("media"), 0)
                                             if column == "prompt_input_ids" and row.get("media") else
                                             [(decoder.decode(ids), trained)] if ids else [])})
            budget -= len(ids)
        if "label" in row:
            sample["label"] = row["label"]
    return sample


def _runs(decoder: Tokenizer, ids: list[int], labels: list[int]) -> list[tuple[str, bool]]:
    """The text as the model reads it, cut where training starts and stops (each run alone where a cut
    splits a character)."""
    pieces = decoded_runs(decoder, ids, labels)
    if pieces is None:
        pieces = [(decoder.decode(ids[a:b]), trained) for a, b, trained in trained_runs(labels, len(ids))]
    return pieces


# ---------------------------------------------------------------- training


_NOT_SERIES = {"step", "epoch", "tokens_seen"}


def _training(found: _Found, notes: list[str]) -> dict[str, Any]:
    """The training report's figures and every numeric series of its curve, grouped into charts: losses,
    the learning rate, and one chart per family of the rest (rewards/..., logps/...), whatever the trainer
    logged. A NaN or infinite value (a diverged run) is left off its chart, and the notes say how many."""
    t = found.train or {}
    curve = t.get("loss_curve")
    if curve is None and found.train_folder and (found.train_folder / "loss_curve.csv").is_file():
        curve = _read_curve(found.train_folder / "loss_curve.csv")
    series: dict[str, list[tuple[float, float]]] = defaultdict(list)
    off: Counter[str] = Counter()
    for point in curve or []:
        for key, value in point.items():
            if key not in _NOT_SERIES and isinstance(value, (int, float)) and not isinstance(value, bool):
                if math.isfinite(value) and math.isfinite(point["step"]):
                    series[key].append((point["step"], float(value)))
                else:
                    off[key] += 1
    notes.extend(f"{n} step(s) with a NaN or infinite {key} are left off the chart (the run diverged there)"
                 for key, n in off.items())
    for key, points in series.items():
        if len(points) > CHART_POINTS:  # a 200k-step curve once made a 22 MB page
            notes.append(f"{key}: {len(points):,} points drawn as {CHART_POINTS:,} (every "
                         f"{math.ceil(len(points) / CHART_POINTS)}th, and the last)")
            series[key] = _thinned(points)
    charts: dict[str, dict[str, list[tuple[float, float]]]] = defaultdict(dict)
    for key, points in series.items():
        charts[_chart_of(key)][key] = points
    order = sorted(charts, key=lambda c: (c != "loss", c != "learning rate", c))
    return {"method": t.get("method"), "model": t.get("model"), "steps": t.get("steps"), "epochs": t.get("epochs"),
            "runtime_s": t.get("runtime_s"), "tokens": t.get("tokens"), "trained_tokens": t.get("trained_tokens"),
            "tokens_per_s": t.get("tokens_per_s"), "first_loss": t.get("first_loss"), "last_loss": t.get("last_loss"),
            "eval_loss": t.get("eval_loss"), "peak_memory": t.get("peak_memory") or {}, "batching": t.get("batching"),
            "charts": [{"title": c, "series": charts[c]} for c in order]}


def _thinned(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """At most CHART_POINTS of a series, evenly spaced, its last point kept."""
    step = math.ceil(len(points) / CHART_POINTS)
    kept = points[::step]
    return kept if kept[-1] == points[-1] else [*kept[:CHART_POINTS - 1], points[-1]]


def _chart_of(key: str) -> str:
    """The chart a series goes on: losses together, evaluation beside training (eval_rewards/chosen with
    rewards/chosen), a family of keys with one prefix (rewards/...) together, anything else alone."""
    name = key.removeprefix("eval_")
    if name == "loss" or name.endswith("_loss"):
        return "loss"
    if name in ("learning_rate", "lr"):
        return "learning rate"
    if "/" not in name or name.endswith(("accuracies", "accuracy")):
        return name  # a share in [0, 1] is not drawn on the axis of the rewards beside it
    return name.split("/")[0]


def _read_curve(path: Path) -> list[dict[str, Any]]:
    with open(path, newline="", encoding="utf-8") as f:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]

