"""What each page asks of prep, as prep verbs (`prep.verbs.call`) on values named as in the options tables, with
every path the page sent taken through `Root` first. Each function returns plain JSON for the page."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import yaml

from prep.core.findings import PrepError, Tally
from prep.core.options import RECIPE_SECTIONS, TABLES, Option
from prep.files.atomic import new_temp, write_text_atomic
from prep.files.read import read_rows
from prep.formats.inputs import Inputs, read_inputs
from prep.recipes.recipe import STAGES, Recipe, load_recipe, path_keys, split_spec
from prep.recipes.runner import plan
from prep.ui.root import WORK, Root
from prep.verbs import call

MAX_FINDINGS = 500  # findings the Data page lists (the counts by code stay exact)


# ---------------------------------------------------------------- Data


def data(root: Root, file: str, format: str = "auto") -> dict[str, Any]:
    """`prep validate FILE --from FORMAT`: the format read, the rows, the findings by code and the first
    MAX_FINDINGS of them; and the field accounting of the records every verb reads (rows read = written +
    rejected, the fields not carried counted by name)."""
    path = str(root.path(file))
    report = call("validate", {"files": [path], "format": format, "max_findings": MAX_FINDINGS}).to_dict()
    tally = Tally()
    for batch in read_inputs(Inputs([path], format)):
        tally.count(batch)
    return {"file": file, "files": report["files"], "summary": report["summary"], "findings": report["findings"],
            "fields": tally.to_dict() | {"dropped_fields": dict(tally.dropped.most_common())}}


def row(root: Root, file: str, number: int | None = None, line: int | None = None,
        format: str = "auto") -> dict[str, Any]:
    """Row `number` (1-based, as `<file>:<row>` ids count), or the row starting on `line` (where a finding points),
    as read from the file and as prep's record (or why it is rejected, with its findings)."""
    path = str(root.path(file))

    def wanted(source: Any) -> bool:
        return source.row == number if number is not None else source.line == line

    found = next(((value, source) for batch in read_rows(path) for value, source in _rows(batch) if wanted(source)),
                 None)
    if found is None:
        raise PrepError(f"{file}: no row {number}" if number is not None else f"{file}: no row starts on line {line}")
    raw, source = found
    record: Any = None
    findings: list[dict[str, Any]] = []
    for batch in read_inputs(Inputs([path], format)):
        record = next((item for item, s in zip(batch.items, batch.sources, strict=True) if s.row == source.row),
                      record)
        findings += [f.to_dict() for r in batch.rejects if r.source.row == source.row for f in r.findings]
        if record is not None or findings:
            break
    return {"file": file, "row": source.row, "line": source.line, "raw": raw, "record": record, "findings": findings}



def _rows(batch: Any) -> list[tuple[Any, Any]]:
    return list(zip(batch.items, batch.sources, strict=True)) + [(r.row, r.source) for r in batch.rejects]


# ---------------------------------------------------------------- Template


def template(root: Root, values: dict[str, Any]) -> dict[str, Any]:
    """`prep tokenize` of the file with the chosen tokenizer, template and train-on policy into a preview shard
    folder under ROOT/.prep-ui, and its row `row` decoded as `prep inspect` shows it (trained runs, documents,
    media); the counts are the manifest's."""
    file, fmt, index = values.pop("file"), values.pop("format", "auto"), int(values.pop("row", 0))
    tokenize = {k: v for k, v in values.items() if v not in (None, "", [])}
    tokenize["tokenizer"] = str(root.path(tokenize.get("tokenizer", "")))
    if str(tokenize.get("template", "")).endswith(".jinja"):
        tokenize["template"] = str(root.path(tokenize["template"]))
    work = root.folder / WORK / "preview"
    shutil.rmtree(work, ignore_errors=True)
    result = call("tokenize", {**tokenize, "files": [str(root.path(file))], "format": fmt, "output": str(work / "shards"),
                               "rejects": str(work / "rejects.jsonl")})
    from prep.stages.report import sample  # noqa: PLC0415 - start-up time: pyarrow's reader only for a preview

    manifest = json.loads((work / "shards" / "manifest.json").read_text(encoding="utf-8"))
    shown = sample(work / "shards", index) if manifest["counts"]["rows"] else None
    rejects = [json.loads(line) for line in (work / "rejects.jsonl").read_text(encoding="utf-8").splitlines()[:20]] \
        if (work / "rejects.jsonl").exists() else []
    return {"summary": result.summary(), "kind": manifest["kind"], "rows": manifest["counts"]["rows"],
            "tokens": manifest["tokens"], "template": manifest.get("template"), "sample": shown, "rejects": rejects}


# ---------------------------------------------------------------- Recipe


def form() -> list[tuple[str, list[Option]]]:
    """The recipe's sections and, for each, the options a recipe may set: the options table's own."""
    return [(s, [o for o in TABLES[s] if o.recipe]) for s in RECIPE_SECTIONS]


def build(root: Root, where: str, given: dict[str, Any]) -> dict[str, Any]:
    """The recipe a filled form makes: each value typed by its option (a value that does not parse is passed on as
    typed, so the recipe check refuses it in the CLI's words), paths made relative to the recipe file's folder
    (the page gives them relative to ROOT). Only the values filled in are written: a stage's key is made of them."""
    folder = root.path(where).parent
    recipe: dict[str, Any] = {k: given[k] for k in ("name", "output") if given.get(k)}
    for section, options in form():
        values = given.get("sections", {}).get(section)
        if values is None:
            continue
        table = {o.name: o for o in options}
        recipe[section] = {name: _typed(table[name], value) for name, value in values.items()
                           if name in table and value not in ("", None, [])}
    for at in path_keys(recipe):
        node = recipe
        for step in at[:-1]:
            node = node[step]
        value, spec = split_spec(node[at[-1]]) if at[:2] == ("inputs", "files") else (node[at[-1]], "")
        local = root.path(value)
        node[at[-1]] = Path(os.path.relpath(local, folder)).as_posix() + (f":{spec}" if spec else "")
    return recipe


def _typed(option: Option, value: Any) -> Any:
    if option.multiple:
        items = value if isinstance(value, list) else str(value).splitlines()
        return [_typed(Option(option.name, option.type), v.strip()) for v in items if str(v).strip()]
    if not isinstance(value, str):
        return value
    text = value.strip()
    try:
        if option.type is bool:
            return {"true": True, "false": False}[text.lower()]
        if option.type in (int, float):
            return option.type(text)
    except (KeyError, ValueError):
        return text
    return text


def dump(recipe: dict[str, Any]) -> str:
    return yaml.safe_dump(recipe, sort_keys=False, allow_unicode=True, default_flow_style=False)


def save(root: Root, where: str, given: dict[str, Any], write: bool = True) -> dict[str, Any]:
    """Check the form's recipe as `prep run --dry-run` does (the same messages, naming the line) and, when it is
    good, write it to `where`; the plan lists each stage, its key and whether it would run."""
    target = root.path(where)
    if target.suffix not in (".yaml", ".yml"):
        raise PrepError(f"{where}: a recipe is a .yaml file")
    text = dump(build(root, where, given))
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = new_temp(target)  # checked beside the target, so its relative paths mean what they will mean there
    try:
        scratch.write_text(text, encoding="utf-8")
        try:
            recipe = checked(root, load_recipe(scratch))
        except PrepError as e:
            return {"yaml": text, "error": str(e).replace(str(scratch), where).replace(scratch.name, target.name)}
    finally:
        scratch.unlink(missing_ok=True)
    if write:
        write_text_atomic(target, text)
    return {"yaml": text, "error": None, "saved": where if write else None,
            "plan": [{"stage": s.name, "would": s.status, "key": s.key} for s in plan(recipe)]}


def checked(root: Root, recipe: Recipe) -> Recipe:
    """`recipe` when every path it names (inputs, tokenizer, model, output, ...) is under ROOT; else Refused."""
    root.inside(recipe.output, "output")
    for at in path_keys(recipe.data):
        node: Any = recipe.data
        for step in at:
            node = node[step]
        value = split_spec(node)[0] if at[:2] == ("inputs", "files") else node
        root.inside(value, ".".join(map(str, at)))
    return recipe


def load(root: Root, where: str) -> dict[str, Any]:
    """A recipe file under ROOT as the form's values (paths relative to ROOT), and its text."""
    recipe = checked(root, load_recipe(root.path(where)))
    keys = set(path_keys(recipe.data))
    sections: dict[str, dict[str, Any]] = {}
    for name in ("inputs", *STAGES):
        if name not in recipe.data:
            continue
        values = {}
        for key, value in recipe.section(name).items():
            if key == "files":
                value = [root.rel(split_spec(v)[0]) + (f":{split_spec(v)[1]}" if split_spec(v)[1] else "")
                         for v in value]
            elif (name, key) in keys:
                value = root.rel(value)
            values[key] = value
        sections[name] = values
    return {"name": recipe.data.get("name", ""), "output": root.rel(recipe.output), "sections": sections,
            "yaml": root.path(where).read_text(encoding="utf-8")}


# ---------------------------------------------------------------- Runs


def runs(root: Root) -> list[dict[str, Any]]:
    """Every run folder under ROOT (one holding run.json), newest first: its status and each stage's figures."""
    found = []
    for folder in root.listing()["runs"]:
        full = root.path(folder)
        try:
            done = json.loads((full / "run.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        status = "failed" if done.get("failed") else "stopped" if done.get("stopped") else \
            "rejected rows" if done.get("rejected") else "done"
        report = full / "report.html"
        found.append({"folder": folder, "name": done.get("name"), "status": status, "seconds": done.get("seconds"),
                      "why": done.get("failed") or done.get("stopped"), "rejected": done.get("rejected"),
                      "report": f"{folder}/report.html" if report.exists() else None,
                      "time": (full / "run.json").stat().st_mtime,
                      "stages": [{"stage": s["name"], "status": s["status"], **_figures(s.get("summary", {}))}
                                 for s in done.get("stages", [])]})
    return sorted(found, key=lambda r: -r["time"])


_FIGURES = ("line", "read", "written", "accepted", "rejected", "errors", "warnings", "rows", "efficiency", "steps",
            "first_loss", "last_loss", "tokens_per_s", "method")


def _figures(summary: dict[str, Any]) -> dict[str, Any]:
    figures = {k: summary[k] for k in _FIGURES if summary.get(k) is not None}
    if isinstance(summary.get("tokens"), dict):
        figures["tokens"] = summary["tokens"].get("total")
    return figures
