"""`prep run` recipes: one YAML file that names the inputs and every stage's options, as
LLaMA-Factory and axolotl users describe a run.

A recipe is read with `yaml.safe_load` (no Python tags) and checked against schemas/recipe.json;
the YAML node tree (`yaml.compose`) maps every error back to its line, so a mistake reads
`recipe.yaml:12: train.lora_rank: unknown key (did you mean lora_r?)` and exits 2 (PrepError).
Paths in a recipe are relative to the recipe file's folder; paths given with `--set` to the
current folder, as any command-line path is.
"""

from __future__ import annotations

import datetime
import difflib
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator, ValidationError

from prep.checks import schemas
from prep.core.extras import require_train_extra
from prep.core.findings import PrepError
from prep.core.options import METHOD_KINDS, RECIPE_NODES, RECIPE_SECTIONS, TABLES
from prep.files.read import read_config
from prep.formats import llamafactory
from prep.render.tokenizer import tokenizer_folder

STAGES = ("convert", "mix", "dedup", "decontaminate", "split", "validate", "tokenize", "pack", "train")
# A model or tokenizer that is no local folder but looks like this is a hub id, passed on as it is.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_MIX_SPEC = re.compile(r"^(?P<path>.+):(?P<spec>x\d+(\.\d+)?|x\.\d+|\d+|\d*\.\d+)$")  # as prep mix reads SRC
_FLOAT = re.compile(r"^[+-]?\d+(\.\d*)?[eE][+-]?\d+$")
_STR_TAG, _MERGE_TAG = "tag:yaml.org,2002:str", "tag:yaml.org,2002:merge"
_TINY_MODEL_SCRIPT = Path(__file__).resolve().parents[3] / "samples" / "make_tiny_model.py"

JsonPath = tuple[str | int, ...]


@dataclass
class Recipe:
    """A checked recipe: `data` has every path made absolute; `stages` are the ones it runs, in order."""

    path: Path
    name: str
    output: Path
    data: dict[str, Any]
    overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def stages(self) -> list[str]:
        return [s for s in STAGES if s in self.data]

    def section(self, name: str) -> dict[str, Any]:
        return dict(self.data.get(name) or {})


def parse_set(text: str) -> tuple[JsonPath, Any]:
    """`--set train.max_steps=5` -> (("train", "max_steps"), 5); the value is read as YAML, and 2e-4 as a number."""
    key, sep, value = text.partition("=")
    parts = tuple(key.strip().split("."))
    if not sep or not all(parts):
        raise PrepError(f"--set {text!r}: give KEY=VALUE with a dotted key, e.g. --set train.max_steps=5")
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError as e:
        raise PrepError(f"--set {text!r}: the value is not valid YAML ({_yaml_problem(e)}); quote it") from None
    # YAML 1.1 reads 2e-4 (no dot) as text; typed after --set it means the number ('1e5', quoted, stays text)
    return parts, float(parsed) if isinstance(parsed, str) and _FLOAT.match(parsed) and value.strip() == parsed \
        else parsed


def load_recipe(path: str | Path, sets: Sequence[str] = ()) -> Recipe:
    """Read, override (`--set`), check and resolve a recipe; any problem is a PrepError naming the line."""
    path = Path(path)
    if not path.exists():
        raise PrepError(f"{path}: no such recipe file")
    text = read_config(path, "recipe")
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        _check_size(root, path)  # before anything walks the tree: aliases can make it exponentially large
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise PrepError(f"{path}:{mark.line + 1 if mark else 1}: not valid YAML: {_yaml_problem(e)}") from None
    if data is None:
        raise PrepError(f"{path}: the recipe is empty; see recipes/quickstart.yaml for one that works")
    lines = _Lines(path, root)
    if not isinstance(data, dict):
        raise PrepError(f"{lines.at(())}: a recipe is a mapping of keys (inputs, convert, tokenize, ...)")
    lines.check_keys(root)
    overrides: dict[str, Any] = {}
    for item in sets:
        keys, value = parse_set(item)
        _assign(data, keys, value, item)
        overrides[".".join(keys)] = value
        lines.set_by_option[keys] = item
    tokenize = data.get("tokenize")
    if isinstance(tokenize, dict) and isinstance(tokenize.get("date"), datetime.date):
        tokenize["date"] = tokenize["date"].isoformat()  # YAML reads `date: 2026-01-01` as a date, prep takes text
    _check_schema(data, lines)
    data = _resolve(data, path.parent.resolve(), lines)
    _check_files(data, lines)
    name = data.get("name") or path.stem
    output = Path(data["output"]) if "output" in data else Path.cwd() / "runs" / name
    return Recipe(path, name, output, data, overrides)


def _check_size(root: yaml.Node | None, path: Path) -> None:
    """Refuse a recipe whose aliases expand to more than RECIPE_NODES values (a "billion laughs": a few lines of
    anchors that expand to billions), counted with each node's size computed once."""
    sizes: dict[int, int] = {}

    def size(node: yaml.Node) -> int:
        if id(node) in sizes:
            return sizes[id(node)]
        sizes[id(node)] = 1  # a recursive alias counts once here; safe_load refuses it
        children = [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else \
            node.value if isinstance(node, yaml.SequenceNode) else []
        sizes[id(node)] = total = 1 + sum(size(child) for child in children)
        return total

    if root is not None and (total := size(root)) > RECIPE_NODES:
        raise PrepError(f"{path}:{root.start_mark.line + 1}: the recipe's aliases (*name) expand to {total:,} values, "
                        f"more than the {RECIPE_NODES:,} a recipe may hold; write the values out or use fewer aliases")


class _Lines:
    """Where a JSON path of the recipe is written: a line of the file, or the --set that gave it."""

    def __init__(self, path: Path, root: yaml.Node) -> None:
        self.path, self.root = path, root
        self.set_by_option: dict[JsonPath, str] = {}

    def option(self, at: JsonPath) -> str | None:
        for n in range(len(at), 0, -1):
            if at[:n] in self.set_by_option:
                return self.set_by_option[at[:n]]
        return None

    def at(self, at: JsonPath, key: bool = False) -> str:
        """`file:line` of the value at `at` (of its key with `key`), or `--set K=V` when an option set it."""
        if (given := self.option(at)) is not None:
            return f"--set {given}"
        node, line = self.root, self.root.start_mark.line
        for step in at:
            child = _child(node, step)
            if child is None:
                break
            key_node, node = child
            line = (key_node if key and step == at[-1] else node).start_mark.line
        return f"{self.path}:{line + 1}"

    def check_keys(self, node: yaml.Node, at: JsonPath = ()) -> None:
        """Every key is text (YAML 1.1 reads `on:`, `yes:` or `1:` as a bool or number) and given once
        (safe_load keeps the last of two equal keys silently; a recipe with both is a mistake)."""
        if isinstance(node, yaml.MappingNode):
            seen: set[str] = set()
            for k, v in node.value:
                if k.tag not in (_STR_TAG, _MERGE_TAG):
                    shown = k.value if isinstance(k, yaml.ScalarNode) else "?"
                    read = k.tag.rsplit(":", 1)[-1]
                    raise PrepError(f"{self.path}:{k.start_mark.line + 1}: {_dotted((*at, shown))}: YAML 1.1 reads "
                                    f"this key as {read}, not text; quote it (\"{shown}\":) or fix its name")
                if k.value in seen:
                    raise PrepError(f"{self.path}:{k.start_mark.line + 1}: {_dotted((*at, k.value))}: "
                                    "given twice; keep one")
                seen.add(k.value)
                self.check_keys(v, (*at, k.value))
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                self.check_keys(v, (*at, i))


def _child(node: yaml.Node, step: str | int) -> tuple[yaml.Node, yaml.Node] | None:
    if isinstance(node, yaml.MappingNode):
        return next(((k, v) for k, v in node.value if k.value == step), None)
    if isinstance(node, yaml.SequenceNode) and isinstance(step, int) and step < len(node.value):
        return node.value[step], node.value[step]
    return None


def _yaml_problem(e: yaml.YAMLError) -> str:
    return " ".join(str(getattr(e, "problem", None) or e).split())


def _dotted(at: Iterable[str | int]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in at).lstrip(".") or "(top)"


def _assign(data: dict[str, Any], keys: JsonPath, value: Any, given: str) -> None:
    node = data
    for i, k in enumerate(keys[:-1]):
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise PrepError(f"--set {given}: {_dotted(keys[: i + 1])} is not a section")
    node[keys[-1]] = value


def _check_schema(data: dict[str, Any], lines: _Lines) -> None:
    schema = schemas.load("recipe")
    found = [(_explain(e, lines), -len(e.absolute_path)) for e in Draft202012Validator(schema).iter_errors(data)]
    if found:  # in file order; on one line the most specific first
        found.sort(key=lambda f: (_line_number(f[0]), f[1]))
        raise PrepError("\n".join(dict.fromkeys(text for text, _ in found)))  # a value can fail two keywords


def _line_number(message: str) -> int:
    where = message.split(": ", 1)[0]
    return int(where.rsplit(":", 1)[1]) if not where.startswith("--set") else 0


def _explain(e: ValidationError, lines: _Lines) -> str:
    """One line per schema error, in words a recipe author can act on."""
    at: JsonPath = tuple(e.absolute_path)
    where = _dotted(at)
    if len(at) in (2, 3) and at[0] in RECIPE_SECTIONS and (problem := _table_problem(at[:2], e.instance)):
        return f"{lines.at(at[:2])}: {_dotted(at[:2])} {problem}{_exponent_hint(e.instance, 'number')}"
    if e.validator == "additionalProperties":
        known = sorted(e.schema.get("properties", {}))
        out = []
        for extra in sorted(set(e.instance) - set(known)):
            close = difflib.get_close_matches(extra, known, n=1)
            hint = f"did you mean {close[0]}?" if close else f"known keys: {', '.join(known)}"
            out.append(f"{lines.at((*at, extra), key=True)}: {_dotted((*at, extra))}: unknown key ({hint})")
        return "\n".join(out)
    if e.validator == "required":
        missing = e.message.split("'")[1]
        return f"{lines.at(at)}: {where}: missing key {missing!r}"
    if e.validator == "anyOf" and at == ():
        return f"{lines.at(at)}: give at least one stage: convert, mix, dedup, decontaminate, split, validate or tokenize"
    if e.validator == "anyOf" and at == ("inputs",):
        return f"{lines.at(at)}: inputs: give files: [...], or dataset_info: FILE with datasets: [NAME, ...]"
    if e.validator == "dependentRequired":
        key, needs = next((k, v) for k, v in e.validator_value.items() if k in e.instance
                          and any(n not in e.instance for n in v))
        return f"{lines.at((*at, key), key=True)}: {_dotted((*at, key))} needs {', '.join(needs)} too"
    if e.validator == "enum":
        return f"{lines.at(at)}: {where}: {e.instance!r} is not one of {', '.join(map(str, e.validator_value))}"
    if e.validator == "type":
        return f"{lines.at(at)}: {where}: {e.instance!r} is not of type {e.validator_value}" \
            f"{_exponent_hint(e.instance, e.validator_value)}"
    return f"{lines.at(at)}: {where}: {e.message}"


def _table_problem(at: JsonPath, value: Any) -> str | None:
    """A stage option's value refused in the options table's words, the same as on the command line."""
    option = next((o for o in TABLES[str(at[0])] if o.recipe and o.name == at[1]), None)
    return option.problem(value) if option else None


def _exponent_hint(value: Any, wanted: Any) -> str:
    if isinstance(value, str) and wanted == "number" and _FLOAT.match(value):
        return " (YAML reads a number with an exponent but no dot as text: write it as 2.0e-4 or 0.0002)"
    return ""


def path_keys(data: dict[str, Any]) -> Iterable[JsonPath]:
    """Every value of the recipe that is a path."""
    if "output" in data:
        yield ("output",)
    inputs = data.get("inputs", {})
    yield from (("inputs", "files", i) for i in range(len(inputs.get("files", []))))
    yield from (("decontaminate", "against", i) for i in range(len(data.get("decontaminate", {}).get("against", []))))
    if "dataset_info" in inputs:
        yield ("inputs", "dataset_info")
    if "media_root" in inputs:
        yield ("inputs", "media_root")
    if isinstance(data.get("convert"), dict) and "media_dir" in data["convert"]:
        yield ("convert", "media_dir")
    if "tokenize" in data:
        yield ("tokenize", "tokenizer")
        if str(data["tokenize"].get("template", "")).endswith(".jinja"):
            yield ("tokenize", "template")
    if "train" in data:
        yield ("train", "model")
        if "ref_model" in data["train"]:
            yield ("train", "ref_model")


def _resolve(data: dict[str, Any], folder: Path, lines: _Lines) -> dict[str, Any]:
    """Paths made absolute: against the recipe's folder, or the current one for --set values. A model or
    tokenizer that is no local folder but reads like owner/name stays a hub id."""
    for at in path_keys(data):
        node = data
        for step in at[:-1]:
            node = node[step]
        if "\0" in node[at[-1]]:
            raise PrepError(f"{lines.at(at)}: {'.'.join(map(str, at))} holds a NUL byte, which no path can")
        value, spec = split_spec(node[at[-1]]) if at[:2] == ("inputs", "files") else (node[at[-1]], "")
        local = Path(os.path.normpath((Path.cwd() if lines.option(at) else folder) / os.path.expanduser(value)))
        # samples/tokenzer is a misspelt folder under samples/, not a hub id: owner/ must not be a local folder
        hub = at[-1] in ("tokenizer", "model", "ref_model") and not local.exists() and not local.parent.is_dir() \
            and _HUB_ID.match(value) and not value.startswith(".")
        node[at[-1]] = value if hub else str(local) + (f":{spec}" if spec else "")
    return data


def split_spec(entry: str) -> tuple[str, str]:
    """An input file as a recipe names it: `a.jsonl:20` -> ("a.jsonl", "20") (see prep mix)."""
    m = _MIX_SPEC.match(entry)
    return (m["path"], m["spec"]) if m and not os.path.exists(entry) else (entry, "")


def _check_files(data: dict[str, Any], lines: _Lines) -> None:
    """Every named file and folder is there before anything runs (`--dry-run` too), the message naming the line
    and the key; a missing model says how to make the tiny one."""
    for at in path_keys(data):
        if at != ("output",) and (problem := _path_problem(data, at)):
            raise PrepError(f"{lines.at(at)}: {_dotted(at)}: {problem}")
    inputs = data["inputs"]
    if "dataset_info" in inputs:
        for i, name in enumerate(inputs["datasets"]):
            try:
                llamafactory.load_entry(inputs["dataset_info"], name)
            except PrepError as e:
                raise PrepError(f"{lines.at(('inputs', 'datasets', i))}: inputs.datasets[{i}]: {e}") from None
    if "mix" in data and ("convert" in data or "dataset_info" in inputs):
        raise PrepError(f"{lines.at(('mix',), key=True)}: mix takes the files of inputs.files, each with its count "
                        "or share; convert dataset_info entries to files first (prep convert) and list them there")
    if data.get("mix", {}).get("by") == "tokens" and "tokenize" not in data:
        raise PrepError(f"{lines.at(('mix', 'by'))}: mix.by tokens counts tokens with the tokenize section's "
                        "tokenizer and template: add a tokenize section")
    if "validate" in data and "convert" not in data and "dataset_info" in inputs:
        raise PrepError(f"{lines.at(('validate',), key=True)}: validate checks files, and dataset_info entries "
                        "become files in the convert stage: add `convert: {to: openai}` (or another format)")
    if data.get("validate", {}).get("tokens") and "tokenize" not in data:
        raise PrepError(f"{lines.at(('validate', 'tokens'))}: validate.tokens counts tokens with the tokenize "
                        "section's tokenizer: add a tokenize section")
    kind = data.get("tokenize", {}).get("kind")
    if "pack" in data and kind in ("dpo", "kto", "prompt"):
        what = "prompts for an online trainer" if kind == "prompt" else "trained as pairs"
        raise PrepError(f"{lines.at(('pack',), key=True)}: pack: {kind} shards are {what} and are not packed; "
                        "remove the pack (and train) sections")
    if "train" in data and kind == "prompt":
        raise PrepError(f"{lines.at(('train',), key=True)}: train: prompt shards feed an online trainer (TRL's "
                        "GRPOTrainer, RLOOTrainer), which prep train is not; remove the train section")
    method = data.get("train", {}).get("method")
    if method and kind and kind not in METHOD_KINDS[method]:
        raise PrepError(f"{lines.at(('train', 'method'))}: train.method {method} trains on "
                        f"{' or '.join(METHOD_KINDS[method])} shards, and tokenize.kind is {kind}")
    if "train" in data:  # before anything runs, not after tokenizing; only looked for: importing torch takes seconds
        try:
            require_train_extra(load=False)
        except PrepError as e:
            raise PrepError(f"{lines.at(('train',), key=True)}: train: {e}") from None


def _path_problem(data: dict[str, Any], at: JsonPath) -> str | None:
    """What is wrong with the path at `at` (resolved by _resolve), in one phrase; None when it is usable."""
    node: Any = data
    for step in at:
        node = node[step]
    if at[:2] == ("inputs", "files"):
        path, spec = split_spec(node)
        if spec and "mix" not in data:
            return f"{node}: a count or share (:N, :xK, :RATIO) needs a mix section"
        return None if os.path.isfile(path) else \
            f"{path}: is a folder; name the files in it" if os.path.isdir(path) else f"{path}: no such file"
    if at[-1] == "tokenizer":
        try:
            tokenizer_folder(node)
        except PrepError as e:
            return str(e)
        return None
    if at[-1] in ("model", "ref_model"):
        if not os.path.isabs(node):
            return None  # a hub id: the train stage loads it from the local cache
        if not os.path.isdir(node):
            return f"{node}: no such model folder; {_make_model_hint(node)}"
        return None if os.path.isfile(os.path.join(node, "config.json")) else \
            f"{node}: holds no config.json; give the folder of a transformers model"
    if at == ("convert", "media_dir"):
        return None  # made by the run
    if at == ("inputs", "media_root"):
        return None if os.path.isdir(node) else f"{node}: no such folder"
    if at == ("inputs", "dataset_info") and os.path.isdir(node):
        node = os.path.join(node, "dataset_info.json")  # as LLaMA-Factory's dataset_dir
    return None if os.path.isfile(node) else f"{node}: no such file"


def _make_model_hint(model: str) -> str:
    """How to get the model: the tiny stand-in the recipes use is made by a script in samples/."""
    if "tiny" not in Path(model).name or not _TINY_MODEL_SCRIPT.is_file():
        return "give a local model folder, or a hub id (owner/name) where the hub is reachable"
    arch = " --arch qwen2" if "qwen" in Path(model).name else ""
    return (f"make the tiny stand-in model with `python {relative(_TINY_MODEL_SCRIPT)} {relative(Path(model))}"
            f"{arch}`")


def relative(path: Path) -> str:
    """`path` as the user would type it from the current folder (absolute when that is shorter to read)."""
    rel = os.path.relpath(path)
    return path.as_posix() if rel.startswith(".." + os.sep + "..") else Path(rel).as_posix()
