"""`prep run RECIPE.yaml`: the whole chain convert -> validate -> tokenize -> pack -> train from one recipe.

Each stage writes into its own folder under the run's output folder (`convert/`, `validate/`,
`tokenize/`, `pack/`, `train/`) and, last, a stamp (`prep-stage.json`) holding the stage's key:
sha256 of the stage's inputs (the input files' sha256, or the upstream stage's key), its options
and the prep version. A stage whose folder holds a stamp with the same key is skipped and says
so; a changed input or option changes that stage's key and so every key downstream of it.
Tokenizer and model folders count as inputs: files up to 64 MB by their sha256, larger files
(model weights) by name, size and modification time, so a re-run does not re-read gigabytes.

Validation errors stop the run before tokenizing unless the recipe says `validate: {allow_errors:
true}`; then the rows with errors are left out (kept in validate/rejects.jsonl) and the rest go on:
tokenize reads the same files and skips those rows, so every row keeps its id (`<file name>:<row>`).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from prep import __version__
from prep.core.findings import PrepError
from prep.core.options import DEFAULT_DATE, SETTINGS
from prep.core.result import Progress, Result
from prep.files.atomic import write_json, write_text_atomic
from prep.files.errors import os_error_message
from prep.files.guard import reserve
from prep.files.hashing import sha256_file
from prep.files.locks import locked
from prep.formats import llamafactory
from prep.formats.inputs import Inputs
from prep.recipes.recipe import Recipe, relative, split_spec
from prep.shards.layout import MANIFEST
from prep.shards.reader import folder_problem
from prep.stages import validate_report as show
from prep.stages.convert import convert
from prep.stages.decontaminate import decontaminate
from prep.stages.dedup import dedup
from prep.stages.mix import mix
from prep.stages.pack import DEFAULT_WINDOW, pack
from prep.stages.report import report
from prep.stages.split import split
from prep.stages.stats import token_statistics
from prep.stages.tokenize import tokenize
from prep.stages.validate import validate
from prep.trainer.train import REPORT, TrainOptions, can_resume, train

STAMP = "prep-stage.json"
reserve(STAMP)  # no other output may be written over it (files.guard)
_HASH_WHOLE = 64 << 20  # files up to this size are hashed whole; larger ones by size and mtime


@dataclass
class Stage:
    """One stage of a run: its folder, its key, and what happened (`run`/`skip` planned; `ran`/`skipped`,
    `stopped` by validation errors, `failed` when it could not run)."""

    name: str
    folder: Path
    key: str
    status: str
    summary: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunResult(Result):
    """A run: each stage's status and summary; the tally counts the rows the first stage read and, by
    stage, the rows each stage rejected. `to_dict()` is run.json."""

    recipe: Recipe
    stages: list[Stage]
    stopped: str | None = None  # why the run stopped before its last stage (validation errors)
    failed: str | None = None  # why a stage could not run (a PrepError: a model that is not there, ...)
    seconds: float = 0.0

    @property
    def rejected(self) -> int:
        """Rows any stage left out (each stage's count of its own rejects)."""
        return sum(s.summary.get("rejected", 0) for s in self.stages)

    @property
    def exit_code(self) -> int:
        """0: every stage finished and no row was left out; 1: stopped, or rows rejected (kept in rejects files);
        2: a stage could not run."""
        return 2 if self.failed else 1 if self.stopped or self.rejected else 0

    def to_dict(self) -> dict[str, Any]:
        return {"recipe": str(self.recipe.path), "name": self.recipe.name, "output": str(self.recipe.output),
                "overrides": self.recipe.overrides, "stopped": self.stopped, "failed": self.failed,
                "rejected": self.rejected, "seconds": round(self.seconds, 3),
                "stages": [asdict(s) | {"folder": str(s.folder)} for s in self.stages]}


class View:
    """What a run reports as it goes; this one stays silent (for the Python API), RichView draws it."""

    def start(self, stage: Stage) -> None:
        """The stage begins."""

    def progress(self, stage: Stage, progress: Progress) -> None:
        """Work done inside the stage."""

    def finish(self, stage: Stage) -> None:
        """The stage ran or was skipped; `stage.summary["line"]` says what it did."""


# ---------------------------------------------------------------- keys


def folder_digest(path: str) -> dict[str, Any]:
    """What a tokenizer or model folder contributes to a key (a hub id: its name)."""
    folder = Path(path)
    if not folder.is_dir():
        return {"hub": path}
    files = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts):
            st = p.stat()
            files[p.relative_to(folder).as_posix()] = sha256_file(p) if st.st_size <= _HASH_WHOLE else \
                f"size {st.st_size} mtime {st.st_mtime_ns}"
    return {"files": files}


def _source_digest(recipe: Recipe) -> dict[str, Any]:
    """The recipe's inputs: the sha256 of each file (registry files included) and how they are read."""
    inputs = recipe.section("inputs")
    files = [split_spec(f) for f in inputs.get("files", [])]
    digest: dict[str, Any] = {"files": [sha256_file(f) for f, _ in files], "counts": [spec for _, spec in files]}
    if "dataset_info" in inputs:
        digest["dataset_info"] = {
            name: [sha256_file(f) for f in llamafactory.load_entry(inputs["dataset_info"], name).files]
            for name in inputs["datasets"]}
        registry = Path(inputs["dataset_info"])
        digest["registry"] = sha256_file(registry / "dataset_info.json" if registry.is_dir() else registry)
    digest["options"] = {k: v for k, v in inputs.items() if k not in ("files", "dataset_info")}
    return digest


_WHERE = ("engine", "ray_address", "ray_workers", "workers")  # where a stage runs, not what it makes


def _engine(recipe: Recipe, opts: dict[str, Any]) -> dict[str, Any]:
    """Where a data stage runs: its section's engine, else the recipe's top-level `engine:`, else local."""
    return {"engine": opts.get("engine", recipe.data.get("engine", "local")), "ray_address": opts.get("ray_address"),
            "ray_workers": opts.get("ray_workers", 0)}


def _key(stage: str, options: dict[str, Any], upstream: Any) -> str:
    text = json.dumps({"prep": __version__, "stage": stage, "options": options, "upstream": upstream},
                      sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def _read_stamp(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / STAMP).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def plan(recipe: Recipe) -> list[Stage]:
    """The stages the recipe asks for, with their keys and whether their output is already there."""
    stages: list[Stage] = []
    upstream: Any = _source_digest(recipe)
    for name in recipe.stages:
        options = {k: v for k, v in recipe.section(name).items() if k not in _WHERE}  # same output on any engine
        if name == "tokenize":
            options["tokenizer"] = folder_digest(options["tokenizer"])
            day = options.get("date", DEFAULT_DATE)  # the day templates write is part of what the shards hold
            options["date"] = datetime.date.today().isoformat() if day == "today" else day
            if str(options.get("template", "")).endswith(".jinja"):
                options["template"] = {"file": options["template"], "sha256": sha256_file(options["template"])}
        elif name == "train":
            options["model"] = folder_digest(options["model"])
        elif name == "decontaminate":
            options["against"] = [sha256_file(f) for f in options["against"]]
        elif name == "mix" and options.get("by") == "tokens":
            tok = recipe.section("tokenize")
            options.update(tokenizer=folder_digest(tok["tokenizer"]), template=tok.get("template"))
        elif name == "validate" and "tokenize" in recipe.data:
            tok = recipe.section("tokenize")
            options["kind"] = tok.get("kind")  # validate checks rows of that kind
        key = _key(name, options, upstream)
        folder = recipe.output / name
        stamp = _read_stamp(folder)
        done = stamp is not None and stamp.get("key") == key and _complete(folder, stamp)
        stages.append(Stage(name, folder, key, "skip" if done else "run", stamp["summary"] if done else {}))
        upstream = key
    return stages


def _complete(folder: Path, stamp: dict[str, Any]) -> bool:
    """The stage's output is still there (the stamp alone could outlive a deleted file), and its shards are still
    the ones their manifest lists (size and sha256): a later stage never reads a changed shard of a skipped one."""
    outputs = stamp.get("outputs", [])
    return bool(outputs) and all((folder / p).exists() for p in outputs) and not any(
        folder_problem((folder / p).parent) for p in outputs
        if stamp.get("stage") in ("tokenize", "pack") and Path(p).name == MANIFEST)


# ---------------------------------------------------------------- stages


@dataclass
class _Flow:
    """What the next stage reads: records (files and how to read them), then shards."""

    inputs: Inputs
    shards: Path | None = None
    validated: Stage | None = None  # the validate stage, whose token statistics come from tokenize's output
    validation: Path | None = None  # split's validation records; tokenize makes eval shards of them
    eval_shards: Path | None = None


def _recipe_inputs(recipe: Recipe) -> Inputs:
    i = recipe.section("inputs")
    return Inputs([split_spec(f)[0] for f in i.get("files", [])], i.get("format", "auto"), {k: i[k] for k in SETTINGS if k in i},
                  i.get("input_type"), i.get("txt_split", "file"), i.get("dataset_info"), i.get("datasets", []),
                  i.get("seed", 42), keep_columns=i.get("keep_columns", ()), strict_fields=i.get("strict_fields", False),
                  split_think=i.get("split_think", False))


def _convert(recipe: Recipe, stage: Stage, flow: _Flow, view: View) -> dict[str, Any]:
    to = recipe.section("convert")["to"]
    out, rejects = stage.folder / "data.jsonl", stage.folder / "rejects.jsonl"
    result = convert(flow.inputs, to, str(out), rejects=str(rejects), progress=lambda p: view.progress(stage, p),
                     **_engine(recipe, recipe.section("convert")))
    t = result.tally
    return {"outputs": ["data.jsonl"], "format": to, "read": t.read, "written": t.written,
            "rejected": t.rejected_total, "rejected_by_reason": dict(t.rejected), "formats": result.formats,
            "files": {f: tally.to_dict() for f, tally in result.files.items()},
            "dropped_fields": dict(sorted(t.dropped.items())),
            "rejects": "rejects.jsonl" if t.rejected_total else None,
            "line": f"{t.summary()} ({', '.join(sorted(set(result.formats.values())))} -> {to})"}


def _kept(result: Any, line: str = "") -> dict[str, Any]:
    """The summary of a stage that keeps some rows (mix, dedup, decontaminate): `rejected` counts the rows
    left out for a problem (they make the run's exit code 1), `removed` those its purpose leaves out."""
    t = result.tally
    removed = sum(n for code, n in t.rejected.items() if code in result.purpose)
    return {"outputs": ["data.jsonl"], "read": t.read, "written": t.written, "rejected": t.rejected_total - removed,
            "removed": removed, "rejected_by_reason": dict(t.rejected), "rejects": "rejects.jsonl" if t.rejected_total
            else None, "line": t.summary() + line}


def _mix(recipe: Recipe, stage: Stage, flow: _Flow, view: View) -> dict[str, Any]:
    opts, tok = recipe.section("mix"), recipe.section("tokenize")
    stage.folder.mkdir(parents=True, exist_ok=True)
    tokens = {"tokenizer": tok["tokenizer"], "template": tok.get("template")} if opts.get("by") == "tokens" else {}
    result = mix(recipe.section("inputs")["files"], str(stage.folder / "data.jsonl"), by=opts.get("by", "rows"),
                 seed=opts.get("seed", 42), rejects=str(stage.folder / "rejects.jsonl"), inputs=flow.inputs,
                 progress=lambda p: view.progress(stage, p), **tokens)
    return _kept(result) | {"outputs": ["data.jsonl", "data.manifest.json"], "manifest": "data.manifest.json"}


def _dedup(recipe: Recipe, stage: Stage, flow: _Flow, view: View) -> dict[str, Any]:
    stage.folder.mkdir(parents=True, exist_ok=True)
    result = dedup(flow.inputs, str(stage.folder / "data.jsonl"), rejects=str(stage.folder / "rejects.jsonl"),
                   progress=lambda p: view.progress(stage, p),
                   **{**recipe.section("dedup"), **_engine(recipe, recipe.section("dedup"))})
    return _kept(result)


def _decontaminate(recipe: Recipe, stage: Stage, flow: _Flow, view: View) -> dict[str, Any]:
    stage.folder.mkdir(parents=True, exist_ok=True)
    result = decontaminate(flow.inputs, str(stage.folder / "data.jsonl"), rejects=str(stage.folder / "rejects.jsonl"),
                           progress=lambda p: view.progress(stage, p), **recipe.section("decontaminate"))
    hits = ", ".join(f"{Path(b['file']).name}: {b['hits']}" for b in result.benchmarks)
    return _kept(result, f" (hits {hits})")


def _split(recipe: Recipe, stage: Stage, flow: _Flow, view: View) -> dict[str, Any]:
    result = split(flow.inputs, str(stage.folder), rejects=str(stage.folder / "rejects.jsonl"),
                   progress=lambda p: view.progress(stage, p), **recipe.section("split"))
    rows, t = result.manifest["rows"], result.tally
    return {"outputs": ["train.jsonl", "validation.jsonl", "manifest.json"], "read": t.read, "written": t.written,
            "rejected": t.rejected_total, "train": rows["train"], "validation": rows["validation"],
            "rejects": "rejects.jsonl" if t.rejected_total else None,
            "line": f"{t.summary()}; train {rows['train']}, validation {rows['validation']}"}


def _validate(recipe: Recipe, stage: Stage, flow: _Flow, view: View) -> dict[str, Any]:
    """validate; with `tokens`, the token statistics are added when tokenize has run (see _token_statistics), so
    every row is tokenized once."""
    opts, tok = recipe.section("validate"), recipe.section("tokenize")
    rejects = stage.folder / "rejects.jsonl"
    result = validate(flow.inputs, validation=[str(flow.validation)] if flow.validation else [], kind=tok.get("kind"),
                      strict=opts.get("strict", False), rejects=str(rejects),
                      min_rows=opts.get("min_rows", 1), max_chars=opts.get("max_chars", 32_000),
                      progress=lambda p: view.progress(stage, p), **_engine(recipe, opts))
    stage.folder.mkdir(parents=True, exist_ok=True)
    show.write_json(result, str(stage.folder / "report.json"))
    summary = {"outputs": ["report.json"], "read": result.rows_read, "accepted": result.rows_accepted,
               "rejected": result.rows_rejected, "errors": result.findings.errors,
               "warnings": result.findings.warnings, "report": "report.json",
               "rejects": "rejects.jsonl" if result.rows_rejected else None,
               "line": f"read {result.rows_read}, accepted {result.rows_accepted}, rejected {result.rows_rejected}; "
                       f"{result.findings.errors} errors, {result.findings.warnings} warnings"}
    if result.exit_code and not opts.get("allow_errors"):
        show.show(result, sys.stderr)
        raise _Stopped(f"validation found {result.findings.errors} errors and {result.findings.warnings} warnings "
                       f"(report: {relative(stage.folder / 'report.json')}, rejected rows: {relative(rejects)}); fix the "
                       "rows, or let the run go on without them: validate: {allow_errors: true}", summary)
    if result.rows_rejected:
        summary["outputs"].append("rejects.jsonl")  # the rows tokenize leaves out
    return summary


def _token_statistics(recipe: Recipe, tokenized: Stage, validated: Stage) -> None:
    """With `validate: {tokens: true}`: validate's token statistics from tokenize's shards, into validate's report,
    summary and stamp (when either stage ran), so every row is tokenized once. Rows the template cannot render
    (or that train nothing) stop the run here, as validate's errors stop it, unless validate allows errors; rows
    over max_len are counted, as validate's warnings are."""
    if "ran" in (tokenized.status, validated.status):
        extra = token_statistics(tokenized.folder)
        report_path = validated.folder / "report.json"
        report = json.loads(report_path.read_text(encoding="utf-8"))
        report["stats"].update(extra)
        write_text_atomic(report_path, show.encode(report))
        validated.summary["line"] = validated.summary["line"].split("; tokens per row")[0] + _token_line(extra)
        _write_stamp(validated)
    refused = {code: n for code, n in tokenized.summary.get("rejected_by_reason", {}).items() if code != "too_long"}
    if refused and not recipe.section("validate").get("allow_errors"):
        rows = ", ".join(f"{code}: {n}" for code, n in sorted(refused.items()))
        raise _Stopped(f"tokenize could not render or train {sum(refused.values())} rows ({rows}; rejected rows: "
                       f"{relative(tokenized.folder / 'rejects.jsonl')}); fix the rows, or let the run go on without "
                       "them: validate: {allow_errors: true}", tokenized.summary)


def _token_line(extra: dict[str, Any]) -> str:
    rows = extra["tokens_per_row"]
    over = f", {extra['rows_over_max_len']} over max_len {extra['max_len']}" if extra.get("max_len") else ""
    return f"; tokens per row {rows['min']}-{rows['max']} (mean {rows['mean']:.0f}){over}"


class _Stopped(Exception):
    def __init__(self, why: str, summary: dict[str, Any]) -> None:
        super().__init__(why)
        self.summary = summary


def _tokenize(recipe: Recipe, stage: Stage, flow: _Flow, view: View) -> dict[str, Any]:
    opts = recipe.section("tokenize")
    given = {k: v for k, v in opts.items() if k != "tokenizer"}  # the table's options, checked by tokenize itself
    result = tokenize(flow.inputs, opts["tokenizer"], str(stage.folder), **{**given, **_engine(recipe, opts)},
                      rejects=str(stage.folder / "rejects.jsonl"), progress=lambda p: view.progress(stage, p))
    m, t = result.manifest, result.tally
    trained = f", {m['tokens']['loss']:,} trained" if m["kind"] in ("sft", "pretrain") else ""
    outputs = ["manifest.json"]
    if flow.validation:  # split's validation rows, tokenized the same way: train.eval
        tokenize(Inputs([str(flow.validation)], "trl", keep_columns=flow.inputs.keep_columns), opts["tokenizer"],
                 str(stage.folder / "validation"), **{k: v for k, v in given.items() if k != "workers"},
                 rejects=str(stage.folder / "validation" / "rejects.jsonl"))
        outputs.append("validation/manifest.json")
    return {"outputs": outputs, "kind": m["kind"], "read": t.read, "written": t.written,
            "rejected": t.rejected_total, "rejected_by_reason": dict(t.rejected), "tokens": m["tokens"],
            "rejects": "rejects.jsonl" if t.rejected_total else None,
            "line": f"{t.summary()}; {m['tokens']['total']:,} tokens{trained} ({m['kind']}, template "
                    f"{(m['template'] or {}).get('name', 'none')})"}


def _pack(recipe: Recipe, stage: Stage, flow: _Flow, view: View) -> dict[str, Any]:
    opts = recipe.section("pack")
    assert flow.shards is not None
    m = pack(flow.shards, stage.folder, opts["max_len"], strategy=opts.get("strategy", "bfd"),
             seed=opts.get("seed", 0), window=opts.get("window", DEFAULT_WINDOW),
             rejects=str(stage.folder / "rejects.jsonl"), progress=lambda p: view.progress(stage, p),
             **_engine(recipe, opts)).manifest
    c, packing = m["counts"], m["packing"]
    rejected = sum(c["rejected"].values())
    return {"outputs": ["manifest.json"], "read": c["read"], "written": c["written"], "rows": c["rows"],
            "rejected": rejected, "efficiency": packing.get("efficiency"),
            "rejects": "rejects.jsonl" if rejected else None,
            "line": f"{c['written']} documents into {c['rows']} row{'' if c['rows'] == 1 else 's'} of <= {opts['max_len']} tokens "
                    f"({packing['strategy']}, efficiency {packing.get('efficiency', 0):.2%}), rejected {rejected}"}


def _train(recipe: Recipe, stage: Stage, flow: _Flow, view: View) -> dict[str, Any]:
    assert flow.shards is not None
    options = TrainOptions(output=str(stage.folder), **recipe.section("train"))
    if flow.eval_shards is not None:
        options.eval = str(flow.eval_shards)
    if can_resume(str(flow.shards), options):  # an interrupted run of this very stage: go on from its checkpoint
        options.resume = True
    elif stage.folder.exists():  # an interrupted run of other shards or options: start again
        shutil.rmtree(stage.folder)

    report = train(str(flow.shards), options, lambda p: view.progress(stage, p)).report
    saved = os.path.relpath(report["output"], stage.folder)
    loss = f", loss {report['first_loss']:.4f} -> {report['last_loss']:.4f}" if report["first_loss"] is not None else ""
    objective = "" if report["objective"] == "sft" else f" {report['objective']}"
    return {"outputs": [saved, REPORT], "method": report["method"], "objective": report["objective"],
            "steps": report["steps"],
            "adapter": saved, "report": REPORT, "merged": report.get("merged") and
            os.path.relpath(report["merged"], stage.folder), "first_loss": report["first_loss"],
            "last_loss": report["last_loss"], "tokens_per_s": report["tokens_per_s"],
            "line": f"{report['method']}{objective}: {report['steps']} steps in {report['runtime_s']:.1f} s{loss}, "
                    f"{report['tokens_per_s']} tokens/s"}


_RUNNERS: dict[str, Callable[[Recipe, Stage, _Flow, View], dict[str, Any]]] = {
    "convert": _convert, "mix": _mix, "dedup": _dedup, "decontaminate": _decontaminate, "split": _split,
    "validate": _validate, "tokenize": _tokenize, "pack": _pack, "train": _train}


def _advance(stage: Stage, flow: _Flow) -> None:
    """What the stage after `stage` reads."""
    s, f = stage.summary, stage.folder
    keep = {"keep_columns": flow.inputs.keep_columns, "strict_fields": flow.inputs.strict_fields}  # carried columns
    if stage.name == "convert":
        flow.inputs = Inputs([str(f / "data.jsonl")], s["format"], **keep)
    elif stage.name in ("mix", "dedup", "decontaminate"):
        flow.inputs = Inputs([str(f / "data.jsonl")], "trl", **keep)
    elif stage.name == "split":
        flow.inputs, flow.validation = Inputs([str(f / "train.jsonl")], "trl", **keep), f / "validation.jsonl"
    elif stage.name == "validate":
        flow.validated = stage
        if s.get("rejects"):
            flow.inputs = replace(flow.inputs, skip=_rejected_rows(f / s["rejects"]))
    elif stage.name in ("tokenize", "pack"):
        flow.shards = f
        if stage.name == "tokenize" and flow.validation:
            flow.eval_shards = f / "validation"


def _rejected_rows(rejects: Path) -> dict[str, list[int]]:
    """The row numbers validate rejected, by file: tokenize reads the files as they are and leaves these out."""
    rows: dict[str, list[int]] = {}
    with open(rejects, encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            rows.setdefault(r["file"], []).append(r["row_number"])
    return {file: sorted(set(numbers)) for file, numbers in rows.items()}


def run(recipe: Recipe, *, dry_run: bool = False, view: View | None = None,
        stages: list[Stage] | None = None) -> RunResult:
    """Run (or with `dry_run` only plan) the recipe's stages; finished stages with a matching key are skipped.

    `stages`: the plan, when the caller made it already (to draw it) for this recipe."""
    view = view or View()
    started = time.perf_counter()
    result = RunResult(recipe, stages if stages is not None else plan(recipe), outputs={"run": str(recipe.output)})
    if dry_run:
        return result
    with locked(recipe.output):
        try:
            _run_stages(recipe, result, view)
        except BaseException as e:  # interrupted (Ctrl-C, SIGTERM) or a bug: run.json still says how far it got
            stage = next((s for s in result.stages if s.status == "run"), None)
            why = "interrupted" if isinstance(e, KeyboardInterrupt) else f"{type(e).__name__}: {e}"
            if stage is not None:
                stage.status, stage.summary = "failed", {"line": why}
            result.failed = why
            _finish(result, started)
            write_run_json(result)
            raise
    _finish(result, started)
    return result


def _finish(result: RunResult, started: float) -> None:
    result.seconds = time.perf_counter() - started
    _count_rows(result)


def _run_stages(recipe: Recipe, result: RunResult, view: View) -> None:
    flow = _Flow(_recipe_inputs(recipe))
    for stage in result.stages:
        view.start(stage)
        if stage.status == "skip":
            stage.status = "skipped"
        else:
            # a finished older version stays until the stage's writers replace it, so a killed run keeps it;
            # without its stamp it is not taken for this run's output
            (stage.folder / STAMP).unlink(missing_ok=True)
            try:
                stage.summary = _RUNNERS[stage.name](recipe, stage, flow, view)
            except _Stopped as stop:
                stage.status, stage.summary, result.stopped = "stopped", stop.summary, str(stop)
                view.finish(stage)
                break
            except (PrepError, OSError) as e:  # the stages before keep their output and stamps; this one runs again
                why = os_error_message(e) if isinstance(e, OSError) else str(e)
                stage.status, stage.summary, result.failed = "failed", {"line": why}, why
                view.finish(stage)
                break
            stage.status = "ran"
            _write_stamp(stage)
        _advance(stage, flow)
        if stage.name == "tokenize" and flow.validated is not None and recipe.section("validate").get("tokens"):
            try:
                _token_statistics(recipe, stage, flow.validated)
            except _Stopped as stop:
                stage.status, result.stopped = "stopped", str(stop)
                view.finish(stage)
                break
        view.finish(stage)


def _count_rows(result: RunResult) -> None:
    """The run's tally: rows the first stage read, rows each stage rejected (by stage), and the rows left."""
    reached = [s for s in result.stages if s.status in ("ran", "skipped", "stopped") and "read" in s.summary]
    if reached:
        result.tally.read = reached[0].summary["read"]
    result.tally.rejected.update({s.name: s.summary["rejected"] for s in reached if s.summary.get("rejected")})
    result.tally.written = result.tally.read - result.tally.rejected_total


def _write_stamp(stage: Stage) -> None:
    """Written last and renamed into place: a stage interrupted before it has no stamp and runs again."""
    stamp = {"stage": stage.name, "key": stage.key, "prep_version": __version__, "outputs": stage.summary["outputs"],
             "summary": stage.summary}
    stage.folder.mkdir(parents=True, exist_ok=True)
    write_json(stage.folder / STAMP, stamp)


def write_run_json(result: RunResult) -> Path:
    """run.json in the run folder, replaced whole (a reader never sees half of it)."""
    path = result.recipe.output / "run.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, result.to_dict())
    return path


def write_report(result: RunResult) -> tuple[Path | None, str | None]:
    """report.html in the run folder, from what the run wrote (run.json first), and what it leaves out; a page
    that cannot be built is said, never a failed run: the run's own outputs are all there."""
    try:
        done = report(result.recipe.output)
    except PrepError as e:
        return None, f"no report.html: {e}"
    return Path(done.outputs["report"]), "; ".join(done.notes) or None


# ---------------------------------------------------------------- terminal


class RichView(View):
    """One live progress view on stderr: a line per stage, filled in as the stages run or are skipped."""

    def __init__(self, stages: list[Stage], console: Any) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn  # noqa: PLC0415 - start-up time: rich only for the terminal view
        from rich.table import Column  # noqa: PLC0415 - start-up time: rich only for the terminal view

        self.bar = Progress(TextColumn("{task.fields[mark]}", table_column=Column(width=1)),
                            TextColumn("[bold]{task.description}", table_column=Column(width=8, no_wrap=True)),
                            BarColumn(bar_width=10), TimeElapsedColumn(),
                            TextColumn("{task.fields[info]}", table_column=Column(ratio=1)), console=console,
                            expand=True, transient=True)
        self.tasks = {s.name: self.bar.add_task(s.name, total=None, start=False, mark=" ",
                                                info="skip (done earlier)" if s.status == "skip" else "waiting")
                      for s in stages}

    def __enter__(self) -> RichView:
        self.bar.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self.bar.stop()

    def start(self, stage: Stage) -> None:
        self.bar.start_task(self.tasks[stage.name])
        if stage.status == "run":
            self.bar.update(self.tasks[stage.name], mark="…", info="running")

    def progress(self, stage: Stage, progress: Progress) -> None:
        self.bar.update(self.tasks[stage.name], info=progress.line(), completed=progress.step or 0,
                        total=progress.steps)

    def finish(self, stage: Stage) -> None:
        from rich.markup import escape  # noqa: PLC0415 - start-up time: rich only for the terminal view

        mark = {"ran": "[green]✓", "skipped": "[cyan]=", "stopped": "[red]✗", "failed": "[red]✗"}[stage.status]
        word = {"ran": "", "skipped": "skipped, unchanged: ", "stopped": "stopped: ", "failed": "failed: "}[
            stage.status]
        self.bar.update(self.tasks[stage.name], mark=mark, info=word + escape(stage.summary.get("line", "")),
                        completed=1, total=1)
        self.bar.stop_task(self.tasks[stage.name])


def print_plan(result: RunResult, console: Any) -> None:
    """`--dry-run`: the stages, their keys and which would run."""
    from rich.table import Table  # noqa: PLC0415 - start-up time: rich only for the terminal view

    table = Table(title=f"prep run {result.recipe.path} (dry run: nothing is run)", title_justify="left")
    for col in ("stage", "would", "key", "folder"):
        table.add_column(col)
    for s in result.stages:
        would = "skip" if s.status == "skip" else "[bold]run"
        table.add_row(s.name, would, s.key[:16], relative(s.folder))
    console.print(table)


def print_summary(result: RunResult, console: Any, run_json: Path, page: tuple[Path | None, str | None] = (None, None)
                  ) -> None:
    """Where everything went: each stage's folder, its rejects, and the files a user opens next."""
    from rich.markup import escape  # noqa: PLC0415 - start-up time: rich only for the terminal view
    from rich.table import Table  # noqa: PLC0415 - start-up time: rich only for the terminal view

    table = Table(title=f"prep run {result.recipe.name}: {result.seconds:.1f} s", title_justify="left")
    table.add_column("stage")
    table.add_column("status")
    table.add_column("result and where it went", overflow="fold")
    for s in result.stages:
        if s.status in ("run", "skip"):
            continue  # not reached: the run stopped before
        where = "" if s.status == "failed" else f"\n[dim]-> {relative(s.folder)}[/]"
        if s.summary.get("rejects"):
            where += f"\n[dim]rejected rows -> {relative(s.folder / s.summary['rejects'])}[/]"
        line = "could not run (below)" if s.status == "failed" else escape(s.summary.get("line", ""))
        table.add_row(s.name, s.status, line + where)
    console.print(table)
    last = next((s for s in reversed(result.stages) if s.status in ("ran", "skipped")), None)
    if last is not None and last.name == "train":
        console.print(f"adapter:         {relative(last.folder / last.summary['adapter'])}\n"
                      f"training report: {relative(last.folder / last.summary['report'])}\n"
                      f"loss curve:      {relative(last.folder / 'loss_curve.png')}")
    elif last is not None and last.name in ("tokenize", "pack"):
        console.print(f"shards:          {relative(last.folder)}")
    console.print(f"run record:      {relative(run_json)}")
    if page[0] is not None:
        console.print(f"report:          {relative(page[0])}")
    if page[1]:
        console.print(f"[yellow]report note:[/] {escape(page[1])}")
    if result.stopped:
        console.print(f"[red]stopped:[/] {escape(result.stopped)}")
    if result.failed:
        console.print(f"[red]failed:[/] {escape(result.failed)}")
