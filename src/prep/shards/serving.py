"""`prep verify SHARDS --serving MODEL_DIR`: does a model folder, read as serving engines read it, give the ids the
shards trained on? (design §6)

A sample of the shards' rows is traced back to its input rows (the shards' `ids`, the manifest's inputs and reader
options), and each row is rendered and tokenized by transformers' `apply_chat_template` from MODEL_DIR alone, with
no template arguments but the row's own (the folder must carry the run's as its template's defaults), as of the day
the shards were rendered (`--date`; a template that writes today's date would otherwise differ every day). A row
whose ids differ from the shard's is a finding that says how: an extra or a missing BOS, a missing end-of-turn
token, or another template, with the first tokens that differ. `generation_config.json` must list the trained
end-of-turn token among its `eos_token_id`, or a served model does not stop where it learned to.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from prep.core.findings import PrepError
from prep.core.records import fold_reasoning
from prep.files.hashing import sha256_file
from prep.formats.inputs import Inputs, read_inputs
from prep.render.spans import developer_as_system
from prep.render.templates import prompt_messages
from prep.shards.layout import read_manifest
from prep.shards.media import has_media
from prep.shards.reader import take_rows

_PROBE = "PREP_PROBE_REASONING"
_SIDES = {"sft": (("input_ids",),), "prompt": (("prompt_input_ids",),),
          "dpo": (("prompt_input_ids", "chosen_input_ids"), ("prompt_input_ids", "rejected_input_ids")),
          "kto": (("prompt_input_ids", "completion_input_ids"),)}
_ANSWER = {"chosen_input_ids": "chosen", "rejected_input_ids": "rejected", "completion_input_ids": "completion"}


@dataclass
class Mismatch:
    """One problem found: its code, what it is, and where (shard file, 1-based row, JSON path)."""

    code: str
    message: str
    file: str = "generation_config.json"
    line: int = 0
    path: str = "$"


@dataclass
class ServingCheck:
    """What `check_serving` compared: rows rendered, rows skipped because tokenize cut them, and the problems."""

    model: str
    rows: int = 0
    cut: int = 0
    problems: list[Mismatch] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "rows": self.rows, "cut": self.cut}


def check_serving(folder: str | Path, model: str | Path, sample: int) -> ServingCheck:
    """Render `sample` rows of the shard folder `folder` (spread evenly over it) from the model folder `model`
    alone and compare their ids with the shards'; and check its generation_config.json's stop ids."""
    folder, manifest = Path(folder), read_manifest(folder)
    kind = manifest["kind"]
    if kind not in _SIDES:
        raise PrepError(f"--serving: {folder} holds {kind} shards, which no chat template renders")
    if (manifest.get("packing") or {}).get("strategy", "none") != "none":
        raise PrepError(f"--serving: {folder} is packed; give the unpacked shards tokenize wrote (their rows are "
                        "single conversations)")
    if has_media(manifest):
        raise PrepError(f"--serving: {folder} has rows with media, which prep does not re-render through a processor")
    template = manifest.get("template") or {}
    # transformers only here (prep verify without --serving never imports it: start-up time of a data verb)
    from transformers import AutoTokenizer  # noqa: PLC0415

    try:
        tok = AutoTokenizer.from_pretrained(str(model))
    except (OSError, ValueError) as e:
        raise PrepError(f"--serving {model}: cannot load its tokenizer: {str(e).splitlines()[0]}") from None
    result = ServingCheck(str(model))
    _check_stop(Path(model), tok, template.get("eot"), result)
    if not tok.chat_template:
        result.problems.append(Mismatch("serving_mismatch", f"{model} has no chat template: a server cannot render "
                                        "the conversations the shards hold", "chat_template.jinja"))
        return result
    rows = _sample_rows(folder, manifest, sample)
    records = _records(manifest, {r["id"] for r in rows}, result)
    if records is None:
        return result
    prepare = _preparation(tok)
    with _pinned_clock(template.get("date")):
        for row in rows:
            record = records.get(row["id"])
            if record is None:
                result.problems.append(Mismatch("serving_input_changed", f"row {row['id']}: not found in the inputs "
                                                "the manifest lists", row["file"], row["line"], "$.ids"))
                continue
            _compare(tok, kind, record, row, prepare, manifest, result)
    return result


def _check_stop(model: Path, tok: Any, eot: str | None, result: ServingCheck) -> None:
    """generation_config.json must list the trained end-of-turn token among its stop ids."""
    if not eot:
        return
    eot_id = tok.convert_tokens_to_ids(eot)
    path = model / "generation_config.json"
    try:
        eos = json.loads(path.read_text(encoding="utf-8")).get("eos_token_id")
    except (OSError, ValueError):
        result.problems.append(Mismatch("serving_no_stop", f"{path} is missing or unreadable: servers stop on the "
                                        f"tokenizer's EOS alone, and every trained answer ends with {eot} ({eot_id})"))
        return
    ids = eos if isinstance(eos, list) else [eos]
    if eot_id not in ids:
        result.problems.append(Mismatch("serving_no_stop", f"eos_token_id {eos} lacks {eot} ({eot_id}), which ends "
                                        "every trained answer: a served model would not stop after answering",
                                        path="$.eos_token_id"))


def _sample_rows(folder: Path, manifest: dict[str, Any], sample: int) -> list[dict[str, Any]]:
    """`sample` rows spread evenly over the folder (all of them when it has fewer), with where each is."""
    total = manifest["counts"]["rows"]
    wanted = np.unique(np.linspace(0, total - 1, min(sample, total)).astype(np.int64)) if total else []
    out, first = [], 0
    for shard in manifest["shards"]:
        here = np.array([i - first for i in wanted if first <= i < first + shard["rows"]], np.int64)
        if len(here):
            table = take_rows(folder / shard["path"], here)
            for k, row in zip(here.tolist(), table.to_pylist(), strict=True):
                out.append({**row, "id": row["ids"][0], "file": shard["path"], "line": k + 1})
        first += shard["rows"]
    return out


def _records(manifest: dict[str, Any], ids: set[str], result: ServingCheck) -> dict[str, Any] | None:
    """The input records of the rows `ids`, read as tokenize read them; None (and a problem) when an input
    changed since, as its rows may then not be the ones the shards hold."""
    options = {k: v for k, v in (manifest.get("options") or {}).items() if k != "kind"}
    for item in manifest.get("inputs") or ():
        path = item.get("path")
        if path in (None, "-") or not Path(path).is_file() or sha256_file(path) != item.get("sha256"):
            result.problems.append(Mismatch("serving_input_changed", f"input {path} is not the file the shards were "
                                            "made from (moved, changed or standard input)", "manifest.json",
                                            path="$.inputs"))
            return None
    files = [] if options.get("datasets") else [item["path"] for item in manifest.get("inputs") or ()]
    found: dict[str, Any] = {}
    for batch in read_inputs(Inputs(files=files, **options)):
        for record in batch.items:
            if record.get("id") in ids:
                found[record["id"]] = record
        if len(found) == len(ids):
            break
    return found


def _preparation(tok: Any) -> Any:
    """How prep gave the template a record's messages (design §4): reasoning folded into the answer where the
    template does not write it, a developer message in the system slot where it has no developer role; a client
    of the served model sends them the same way."""
    probe = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "A", "reasoning_content": _PROBE}]
    try:
        reads_reasoning = _PROBE in tok.apply_chat_template(probe, tokenize=False)
    except Exception:  # noqa: BLE001 - a template is user code; one that fails on reasoning does not read it
        reads_reasoning = False
    template = tok.chat_template if isinstance(tok.chat_template, str) else json.dumps(tok.chat_template)
    developer = "developer" in template

    def prepare(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        messages = [{k: v for k, v in m.items() if k != "weight"} for m in messages]
        if not developer and any(m["role"] == "developer" for m in messages):
            messages = developer_as_system(messages, "served")[0]
        return messages if reads_reasoning else fold_reasoning(messages)

    return prepare


def _compare(tok: Any, kind: str, record: dict[str, Any], row: dict[str, Any], prepare: Any,
             manifest: dict[str, Any], result: ServingCheck) -> None:
    kwargs = record.get("chat_template_kwargs") or {}
    for columns in _SIDES[kind]:
        want = [i for c in columns for i in row[c]]
        if kind == "sft":
            messages, generation = record["messages"], False
        elif kind == "prompt":
            messages, generation = prompt_messages(record), True
        else:
            messages, generation = [*record["prompt"], *record[_ANSWER[columns[1]]]], False
        try:
            got = tok.apply_chat_template(prepare(messages), tools=record.get("tools"), tokenize=True,
                                          return_dict=False, add_generation_prompt=generation, **kwargs)
        except Exception as e:  # noqa: BLE001 - the template is user code: its failure is the finding
            result.problems.append(Mismatch("serving_mismatch", f"row {row['id']}: the served template fails: {e}",
                                            row["file"], row["line"], "$." + columns[-1]))
            continue
        if manifest.get("max_len") and len(got) > manifest["max_len"] and manifest.get("overflow") != "drop":
            result.cut += 1  # tokenize cut this row to max_len: its ids are not the whole render's
            continue
        result.rows += 1
        if got != want:
            result.problems.append(Mismatch("serving_mismatch", f"row {row['id']}: {_difference(tok, want, got)}",
                                            row["file"], row["line"], "$." + columns[-1]))


def _difference(tok: Any, want: list[int], got: list[int]) -> str:
    """How the served ids differ from the trained ones, in words."""
    bos = tok.bos_token_id
    if bos is not None and got[1:] == want and got[0] == bos:
        return f"the server adds a BOS ({tok.bos_token}) before the template's: doubled BOS"
    if bos is not None and want[1:] == got and want[0] == bos:
        return f"the served template leaves out the BOS ({tok.bos_token}) the shards start with"
    if len(want) > len(got) and want[:len(got)] == got:
        return f"the served render stops early: the shards go on with {tok.decode(want[len(got):][:8])!r} " \
               "(a missing end-of-turn token)"
    at = next((i for i, (a, b) in enumerate(zip(want, got, strict=False)) if a != b), min(len(want), len(got)))
    return (f"another template: from token {at} the shards have {tok.decode(want[at:at + 8])!r}, the served "
            f"template {tok.decode(got[at:at + 8])!r}")


@contextlib.contextmanager
def _pinned_clock(date: str | None) -> Iterator[None]:
    """transformers' `strftime_now` tells the day the shards were rendered (it reads `datetime.now()`; a render
    argument cannot replace it, transformers turns callables into text)."""
    if not date or date == "today":
        yield
        return
    from transformers.utils import chat_template_utils  # noqa: PLC0415 - see check_serving

    day = datetime.strptime(date, "%Y-%m-%d")

    class Pinned(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> datetime:  # noqa: ARG003 - datetime.now's signature
            return day

    saved = chat_template_utils.datetime
    chat_template_utils.datetime = Pinned  # type: ignore[misc]
    try:
        yield
    finally:
        chat_template_utils.datetime = saved  # type: ignore[misc]
