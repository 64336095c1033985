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
from prep.core.options import DEFAULT_DATE, TABLES
from prep.core.result import Progress, Result
from prep.files.atomic import write_json, write_text_atomic
from prep.files.errors import os_error_message
from prep.files.guard import check_outputs, reserve
from prep.files.hashing import sha256_file
from prep.files.locks import locked
from prep.formats import llamafactory
from prep.formats.inputs import Inputs
from prep.recipes.recipe import Recipe, relative, split_spec
from prep.shards.layout import MANIFEST
from prep.shards.reader import folder_problem
from prep.trainer import ranks
from prep.verbs import VERBS, call

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
            options.update(tokenizer=folder_digest(tok["tokenizer"]), template=tok.get("template"),
                           template_kwargs=tok.get("template_kwargs"), date=tok.get("date"))
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
    return Inputs.from_options({**i, "files": [split_spec(f)[0] for f in i.get("files", [])]})


def _call(verb: str, stage: Stage, view: View, values: dict[str, Any]) -> Any:
    """The verb as the CLI runs it (prep.verbs), its progress shown as the stage's."""
    return call(verb, values, lambda p: view.progress(stage, p))


def _line(result: Result) -> str:
    """The stage's line: the verb's summary and, under Ray, where it ran, as the verb's CLI line says."""
    return result.summary() + result.where()


def _outputs(stage: Stage, recipe: Recipe, output: str | None = "data.jsonl") -> dict[str, Any]:
    """The stage's section writing into the stage's folder (`output` a file in it, "" the folder itself, None none),
    with where it runs when its verb can run on an engine."""
    section = recipe.section(stage.name)
    stage.folder.mkdir(parents=True, exist_ok=True)
    where = _engine(recipe, section) if any(o.name == "engine" for o in TABLES[stage.name]) else {}
    written = {} if output is None else {"output": str(stage.folder / output)}
    return {**section, **where, **written, "rejects": str(stage.folder / "rejects.jsonl")}


def _convert(recipe: Recipe, stage: Stage, flow: _Flow, view: View) -> dict[str, Any]:
    result = _call("convert", stage, view, {**_outputs(stage, recipe), "inputs": flow.inputs})
    t = result.tally
    return {"outputs": ["data.jsonl"], "format": result.to, "read": t.read, "written": t.written,
            "rejected": t.rejected_total, "rejected_by_reason": dict(t.rejected), "formats": result.formats,
            "files": {f: tally.to_dict() for f, tally in result.files.items()},
            "dropped_fields": dict(sorted(t.dropped.items())),
            "rejects": "rejects.jsonl" if t.rejected_total else None, "line": _line(result)}


def _kept(result: Any) -> dict[str, Any]:
    """The summary of a stage that keeps some rows (mix, dedup, decontaminate): `rejected` counts the rows
    left out for a problem (they make the run's exit code 1), `removed` those its purpose leaves out."""
    t = result.tally
    removed = sum(n for code, n in t.rejected.items() if code in result.purpose)
    return {"outputs": ["data.jsonl"], "read": t.read, "written": t.written, "rejected": t.rejected_total - removed,
            "removed": removed, "rejected_by_reason": dict(t.rejected), "rejects": "rejects.jsonl" if t.rejected_total
            else None, "line": _line(result)}


def _mix(recipe: Recipe, stage: Stage, flow: _Flow, view: View) -> dict[str, Any]:
    values = {**_outputs(stage, recipe), "inputs": replace(flow.inputs, files=recipe.section("inputs")["files"])}
    if values.get("by") == "tokens":  # counted as tokenize will make them
        tok = recipe.section("tokenize")
        values.update({k: tok[k] for k in ("tokenizer", "template", "template_kwargs", "date") if k in tok})
    return _kept(_call("mix", stage, view, values)) | {"outputs": ["data.jsonl", "data.manifest.json"],
                                                        "manifest": "data.manifest.json"}


def _dedup(recipe: Recipe, stage: Stage, flow: _Flow, view: View) -> dict[str, Any]:
    return _kept(_call("dedup", stage, view, {**_outputs(stage, recipe), "inputs": flow.inputs}))


def _decontaminate(recipe: Recipe, stage: Stage, flow: _Flow, view: View) -> dict[str, Any]:
    return _kept(_call("decontaminate", stage, view, {**_outputs(stage, recipe), "inputs": flow.inputs}))


def _split(recipe: Recipe, stage: Stage, flow: _Flow, view: View) -> dict[str, Any]:
    result = _call("split", stage, view, {**_outputs(stage, recipe, ""), "inputs": flow.inputs})
    rows, t = result.manifest["rows"], result.tally
    return {"outputs": ["train.jsonl", "validation.jsonl", "manifest.json"], "read": t.read, "written": t.written,
            "rejected": t.rejected_total, "train": rows["train"], "validation": rows["validation"],
            "rejects": "rejects.jsonl" if t.rejected_total else None, "line": _line(result)}


def _validate(recipe: Recipe, stage: Stage, flow: _Flow, view: View) -> dict[str, Any]:
    """validate; with `tokens`, the token statistics are added when tokenize has run (see _token_statistics), so
    every row is tokenized once."""
    from prep.stages import validate_report as show  # noqa: PLC0415 - start-up time: a run that validates

    values = {**_outputs(stage, recipe, None), "inputs": flow.inputs, "kind": recipe.section("tokenize").get(
        "kind"), "validation": [str(flow.validation)] if flow.validation else []}
    result = _call("validate", stage, view, values)
    rejects = stage.folder / "rejects.jsonl"
    show.write_json(result, str(stage.folder / "report.json"))
    summary = {"outputs": ["report.json"], "read": result.rows_read, "accepted": result.rows_accepted,
               "rejected": result.rows_rejected, "errors": result.findings.errors,
               "warnings": result.findings.warnings, "report": "report.json",
               "rejects": "rejects.jsonl" if result.rows_rejected else None, "line": _line(result)}
    if result.exit_code and not values.get("allow_errors"):
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
    from prep.stages import validate_report as show  # noqa: PLC0415 - start-up time: a run that validates
    from prep.stages.stats import token_statistics  # noqa: PLC0415 - start-up time

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
    values = {**_outputs(stage, recipe, ""), "inputs": flow.inputs}
    result = _call("tokenize", stage, view, values)
    m, t = result.manifest, result.tally
    outputs = ["manifest.json"]
    if flow.validation:  # split's validation rows, tokenized the same way: train.eval
        call("tokenize", {**recipe.section("tokenize"), "output": str(stage.folder / "validation"),
                          "rejects": str(stage.folder / "validation" / "rejects.jsonl"),
                          "inputs": Inputs([str(flow.validation)], "trl", keep_columns=flow.inputs.keep_columns)})
        outputs.append("validation/manifest.json")
    return {"outputs": outputs, "kind": m["kind"], "read": t.read, "written": t.written,
            "rejected": t.rejected_total, "rejected_by_reason": dict(t.rejected), "tokens": m["tokens"],
            "rejects": "rejects.jsonl" if t.rejected_total else None, "line": _line(result)}


def _pack(recipe: Recipe, stage: Stage, flow: _Flow, view: View) -> dict[str, Any]:
    assert flow.shards is not None
    result = _call("pack", stage, view, {**_outputs(stage, recipe, ""), "shards": str(flow.shards)})
    c, packing = result.manifest["counts"], result.manifest["packing"]
    rejected = sum(c["rejected"].values())
    return {"outputs": ["manifest.json"], "read": c["read"], "written": c["written"], "rows": c["rows"],
            "rejected": rejected, "efficiency": packing.get("efficiency"),
            "rejects": "rejects.jsonl" if rejected else None, "line": _line(result)}


def _train(recipe: Recipe, stage: Stage, flow: _Flow, view: View) -> dict[str, Any]:
    # the train extra's module is loaded only when a stage trains (a re-run or --dry-run must not pay for it)
    from prep.trainer.checkpoints import can_resume  # noqa: PLC0415 - start-up time
    from prep.trainer.options import TrainOptions  # noqa: PLC0415 - start-up time
    from prep.trainer.train import REPORT  # noqa: PLC0415 - start-up time

    assert flow.shards is not None
    values = {**recipe.section("train"), "output": str(stage.folder), "shards": str(flow.shards)}
    if flow.eval_shards is not None:
        values["eval"] = str(flow.eval_shards)
    kwargs = VERBS["train"].arguments(values)
    if can_resume(kwargs.pop("shards"), TrainOptions(**kwargs)):  # an interrupted run of this very stage: go on
        values["resume"] = True
    elif stage.folder.exists():  # an interrupted run of other shards or options: start again
        shutil.rmtree(stage.folder)

    report = _call("train", stage, view, values).report
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
    # every stage writes inside the run's folder (data, rejects, reports): an input there would be written over
    check_outputs(_recipe_inputs(recipe).files, {"output:": recipe.output})
    if dry_run:
        return result
    if ranks.world_size() > 1:  # every process would run every data stage into the same folders
        raise PrepError(f"run under torchrun or accelerate launch ({ranks.world_size()} processes): each would run every "
                        "stage into the same folders; run the recipe as it is, "
                        "then train its shards with `torchrun ... -m prep train`")
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
        done = call("report", {"target": str(result.recipe.output)})
    except PrepError as e:
        return None, f"no report.html: {e}"
    return Path(done.outputs["report"]), "; ".join(done.notes) or None
