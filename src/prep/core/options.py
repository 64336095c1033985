"""Every option of every verb, in one table: its type, default, range or choices, and help.

The CLI builds its click options from these tables, the Python API checks its arguments with
`check`, and `schemas/recipe.json` holds the same names, types, ranges and choices for the recipe
sections (a test keeps the two equal), so a value is refused with the same words wherever it comes
from: `--lora-alpha 0.5`, `lora_alpha: 0.5` in a recipe and `TrainOptions(lora_alpha=0.5)` all say
"0.5: must be an integer of at least 1" (design §8).

The choice lists here are the vocabulary the layers above share: the formats, file types,
templates, loss policies, overflow policies and packing strategies.
"""

from __future__ import annotations

import functools
import inspect
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from prep.core.columns import SHARD_KINDS
from prep.core.findings import PrepError

READABLE = ("coqa", "lf_parts", "openai", "sharegpt", "alpaca", "autotrain", "trl", "text")  # detection order
WRITABLE = ("openai", "lf_parts", "sharegpt", "alpaca", "autotrain", "trl", "text")
CONTAINERS = ("jsonl", "json", "csv", "tsv", "parquet", "txt")
TXT_SPLITS = ("file", "paragraph", "line")
TOOL_CALLS = ("hermes", "glaive", "qwen-xml", "llama-python")  # the text forms of tool calls (formats.toolcalls)
TEMPLATES = ("chatml", "llama3", "llama2", "mistral", "gemma", "zephyr", "phi3", "vicuna", "alpaca", "alpaca_ko",
             "plain", "tokenizer")
TRAIN_ON = ("auto", "assistant", "last", "all", "content")
YES_NO = ("yes", "no")
# What strftime_now returns in chat templates unless --date says otherwise: a fixed day, so the same inputs give
# the same shards on any day (design §4).
DEFAULT_DATE = "2026-01-01"
OVERFLOW = ("drop", "truncate", "turns")  # what a row longer than max_len becomes
STRATEGIES = ("bfd", "wrap")
SCHEDULERS = ("cosine", "linear", "constant", "constant_with_warmup", "cosine_with_restarts")
ATTENTION = ("sdpa", "eager", "flash_attention_2", "flash_attention_3", "flex_attention")
REPORT_TO = ("none", "tensorboard", "wandb", "mlflow")
LORA_INITS = ("default", "gaussian", "pissa", "olora", "loftq")
# What `prep train` optimises, and the shard kinds each objective reads (the default: the first that takes the kind).
METHODS = ("sft", "dpo", "kto", "orpo", "reward", "grpo")
METHOD_KINDS = {"sft": ("sft", "pretrain"), "dpo": ("dpo",), "kto": ("kto",), "orpo": ("dpo",), "reward": ("dpo",),
                "grpo": ("prompt",)}
# TRL's DPO losses that need nothing but the pairs and --beta, and its KTO losses (trl 1.16)
DPO_LOSSES = ("sigmoid", "hinge", "ipo", "robust", "bco_pair", "sppo_hard", "nca_pair", "apo_zero", "apo_down")
KTO_LOSSES = ("kto", "apo_zero_unpaired")
EXPORTS = ("hf-dataset", "axolotl", "together", "jsonl", "trl-grpo")  # what `prep export --to` writes
COMPARED = ("all", "user", "assistant")  # which turns dedup, split and decontaminate compare
MIX_BY = ("rows", "tokens")
RENDER_SECONDS = 5.0  # a chat template rendering one conversation longer than this is stopped (a runaway loop)
RENDER_CHARS = 16 << 20  # ... or writing more characters than this
RECIPE_NODES = 100_000  # values a recipe may expand to through its YAML aliases
MAX_CONFIG_BYTES = 64 << 20  # a template, registry, recipe or tokenizer file larger than this is refused (tokenizer.json: 7-33 MB)
MAX_ROW_BYTES = 64 << 20  # a line-based row longer than this is a too_large reject, not read (JSONL rows: a few KB)
AUTO_WORKERS = 8  # tokenize --workers 0 takes at most this many: each holds its own tokenizer caches and batches
# What a medium may hold before it is media_too_large: Pillow's own decompression-bomb limit (its
# Image.MAX_IMAGE_PIXELS), a gigabyte, an hour.
MAX_MEDIA_PIXELS = 178_956_970
MAX_MEDIA_BYTES = 1 << 30
MAX_MEDIA_SECONDS = 3600.0
# A shard bound: a number of KB, MB, GB or rows (`--shard-size`)
SIZE = r"\s*(?=[0-9.]*[1-9])(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*(?:rows|kb|mb|gb)\s*"
ENGINES = ("local", "ray")  # where a data stage's batches run (design §13)
# The input options that are settings of a format's reader (CoQA's system prompt, AutoTrain's columns and prefixes).
SETTINGS = ("system", "text_column", "rejected_text_column", "prompt_text_column", "human_prefix", "bot_prefix")


@dataclass(frozen=True)
class Option:
    """One option: `name` is the Python keyword and the recipe key; `flags` the CLI spelling (default
    `--name-with-dashes`); `low`/`high` bound numbers (`*_open`: the bound itself is refused); `path`
    says how the CLI takes a path ("file", "file-or-dash", "folder", "existing-folder")."""

    name: str
    type: type = str
    default: Any = None
    help: str = ""
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[str, ...] = ()
    flags: tuple[str, ...] = ()
    path: str | None = None
    multiple: bool = False
    required: bool = False
    cli: bool = True
    recipe: bool = False
    what: str = ""  # the accepted values in words, when the bounds alone do not say it well
    nullable: bool = False  # Python callers may pass None (e.g. max_findings=None: keep every finding)
    pattern: str = ""  # text options: the whole value must match this regular expression (case-insensitive)

    @property
    def flag(self) -> str:
        """The option as a user types it on the command line."""
        return next((f for f in self.flags if f.startswith("--")), "--" + self.name.replace("_", "-"))

    def accepts(self) -> str:
        """The accepted values in words: "an integer of at least 1", "a number in [0, 1)", "one of a, b"."""
        if self.what:
            return self.what
        if self.path == "folder":
            return "a folder (what goes there is several files: not -, standard output)"
        if self.choices:
            return "one of " + ", ".join(self.choices)
        if self.type is bool:
            return "true or false"
        if self.type is str:
            return "text"
        noun = "an integer" if self.type is int else "a number"
        low, high = _shown(self.low), _shown(self.high)
        if self.low is not None and self.high is not None:
            return f"{noun} in {'(' if self.low_open else '['}{low}, {high}{')' if self.high_open else ']'}"
        if self.low is not None:
            return f"{noun} {'above' if self.low_open else 'of at least'} {low}"
        if self.high is not None:
            return f"{noun} {'below' if self.high_open else 'of at most'} {high}"
        return noun

    def problem(self, value: Any) -> str | None:
        """Why `value` cannot be taken (None: it can), as "VALUE: must be ..."."""
        if self.multiple and isinstance(value, (list, tuple)):
            return next((p for p in map(self._one, value) if p), None)
        return self._one(value)

    def _one(self, value: Any) -> str | None:
        if value is None and not self.required and (self.default is None or self.nullable):
            return None
        fits = (isinstance(value, self.type) and not (self.type is int and isinstance(value, bool))
                or self.type is float and isinstance(value, int) and not isinstance(value, bool)
                or self.type is str and isinstance(value, os.PathLike))
        if fits and self.pattern:
            fits = re.fullmatch(self.pattern, str(value), re.IGNORECASE) is not None
        if fits and self.path == "folder":
            fits = str(value) != "-"  # else a folder named `-` appears where the user meant a stream
        if fits and self.choices:
            fits = value in self.choices
        if fits and self.type in (int, float):
            fits = ((self.low is None or value > self.low or not self.low_open and value == self.low)
                    and (self.high is None or value < self.high or not self.high_open and value == self.high))
        return None if fits else f"{_value(value)}: must be {self.accepts()}"

    def schema(self) -> dict[str, Any]:
        """The JSON Schema of the option's value in a recipe (names, types, ranges and choices)."""
        if self.choices:
            one: dict[str, Any] = {"enum": list(self.choices)}
        else:
            one = {"type": {int: "integer", float: "number", bool: "boolean", str: "string"}[self.type]}
        for key, bound, is_open in (("minimum", self.low, self.low_open), ("maximum", self.high, self.high_open)):
            if bound is not None:
                one["exclusive" + key.capitalize() if is_open else key] = bound
        if self.pattern:
            one["pattern"] = f"^(?i:{self.pattern})$"
        if self.path == "folder":
            one["not"] = {"const": "-"}
        return {"type": "array", "items": one} if self.multiple else one


def _shown(bound: float | None) -> str:
    return f"{bound:g}" if isinstance(bound, float) else str(bound)


def _value(value: Any) -> str:
    return value if isinstance(value, str) else "true" if value is True else "false" if value is False else \
        "null" if value is None else str(value)


# ---------------------------------------------------------------- the tables

_QUIET = Option("quiet", bool, False, "Print nothing but errors.", flags=("-q", "--quiet"))
_REJECTS = Option("rejects", help="Keep rejected rows with their reasons (JSONL).", path="file")
_TOKENIZER = Option("tokenizer", help="Tokenizer folder (tokenizer.json, tokenizer_config.json), or a hub id already "
                                      "in the local cache.")
_TEMPLATE = Option("template", help="Chat template (see `prep template --list`); default: the tokenizer's own.",
                   recipe=True, choices=TEMPLATES, what="a template name (see `prep template --list`)")
_TRAIN_ON = Option("train_on", default="auto", choices=TRAIN_ON, recipe=True,
                   help="Which spans carry loss: every assistant turn (and any message with weight 1), the last one, "
                        "all text, or message contents.")
_KIND = Option("kind", choices=SHARD_KINDS, recipe=True,
               help="Shard kind; default: from the first record (chat: sft, preference: dpo, feedback: kto, text: "
                    "pretrain).")
_MAX_LEN = Option("max_len", int, None, "Longest row in tokens.", low=2, recipe=True)
# Where the batches run; the output is the same either way (design §13).
_ENGINE = (
    Option("engine", default="local", choices=ENGINES, recipe=True,
           help="local: this machine; ray: a Ray cluster through Ray Data (pip install 'prep[ray]'). Same output."),
    Option("ray_address", recipe=True,
           help="With --engine ray: the cluster to join (e.g. ray://head:10001, or auto); default: $RAY_ADDRESS if set, "
                "else start a local Ray with this machine's cores."),
    Option("ray_workers", int, 0, "With --engine ray: Ray Data actors running the stage (0: one per CPU of the "
                                  "cluster).", low=0, recipe=True),
)

INPUTS = (
    Option("files", multiple=True, cli=False, recipe=True, help="Input files."),
    Option("format", default="auto", choices=("auto", *READABLE), flags=("--from", "--format"), recipe=True,
           help="Input format (same as FROM); detected per file by default."),
    Option("dataset_info", recipe=True, help="A LLaMA-Factory dataset_info.json (or its folder)."),
    Option("datasets", multiple=True, flags=("--dataset",), recipe=True,
           help="Entry of --dataset-info to read (repeatable)."),
    Option("input_type", choices=CONTAINERS, recipe=True, help="File type when the name does not tell."),
    Option("txt_split", default="file", choices=TXT_SPLITS, recipe=True,
           help="A .txt file is one document, or one per blank-line-separated paragraph, or per line."),
    Option("system", recipe=True, help="CoQA system prompt; {story} is replaced by the story."),
    Option("text_column", recipe=True, help="AutoTrain: dialogue/chosen column [text]."),
    Option("rejected_text_column", recipe=True, help="AutoTrain: rejected column [rejected_text]."),
    Option("prompt_text_column", recipe=True, help="AutoTrain: prompt column [prompt]."),
    Option("human_prefix", recipe=True, help="AutoTrain: user turn prefix [human:]."),
    Option("bot_prefix", recipe=True, help="AutoTrain: assistant turn prefix [bot:]."),
    Option("seed", int, 42, "Seed for sampling: dataset_info num_samples, prep mix's sample, prep split's choice.",
           recipe=True),
    Option("max_row_bytes", int, MAX_ROW_BYTES, "A row (a line of JSONL, CSV, TSV or text) longer than this many "
                                                "bytes is rejected as too_large without being read.", low=1),
    Option("keep_columns", multiple=True, recipe=True,
           help="Input columns to carry into the records and the shards, e.g. reference_answer,task_id (repeatable; "
                "other unmapped columns are counted as dropped fields)."),
    Option("strict_fields", bool, False, "Reject a row that has a field prep would drop (instead of counting it).",
           recipe=True),
    Option("split_think", bool, False, "Read an answer's leading <think>…</think> (or text up to a first </think> without "
           "an opening tag, which was in the generation prompt) as its reasoning_content.",
           recipe=True),
    Option("tool_calls", choices=("auto", *TOOL_CALLS), recipe=True,
           help="Read tool calls written in the text (hermes/qwen <tool_call>{json}, glaive <functioncall>, "
                "Qwen3-Coder's qwen-xml <function=...>, Llama 3.1's <|python_tag|>; auto: by marker, per message) as "
                "structured tool_calls, and their results as tool messages; a call that does not parse rejects its "
                "row."),
    Option("media_root", recipe=True, path="existing-folder",
           help="Folder that relative image/video/audio paths are resolved from (LLaMA-Factory's media_dir); "
                "default: the folder of the file that names them (for --dataset-info, the registry's folder)."),
)

CONVERT = (
    Option("to", required=True, choices=WRITABLE, recipe=True, help="Format to write."),
    Option("output", default="-", flags=("-o", "--output"),
           help="Output file (.jsonl .json .csv .tsv .parquet, optionally .gz/.zst); - for stdout."),
    _REJECTS,
    Option("ids", bool, True, "Write each row's id.", flags=("--ids/--no-ids",)),
    Option("write_tool_calls", choices=TOOL_CALLS, recipe=True,
           help="Write structured tool calls into the assistant's text and tool results in the same dialect's "
                "wrapping (what --tool-calls reads back)."),
    Option("media_dir", recipe=True, path="folder",
           help="Where images, videos and audio that lie outside the output's folder, or came as data URLs, are "
                "written as <sha256>.<ext> for formats that name files (default: media/ beside the output; it must "
                "be inside the output's folder)."),
    *_ENGINE,
    _QUIET,
)

# What a chat template reads besides the records: its arguments and the day (template, tokenize, mix, validate).
_TEMPLATE_ARGS = (
    Option("template_kwargs", multiple=True, recipe=True, pattern=r"\s*[a-z_][a-z0-9_]*\s*=[\s\S]*",
           what="KEY=VALUE, e.g. enable_thinking=false",
           help="Chat-template argument KEY=VALUE, the value read as YAML, e.g. enable_thinking=false (repeatable; a "
                "row's chat_template_kwargs column overrides it)."),
    Option("date", default=DEFAULT_DATE, recipe=True,
           help="The day strftime_now gives chat templates (YYYY-MM-DD, or `today`); recorded in the manifest."),
)

VALIDATE = (
    Option("validation", multiple=True, path="file",
           help="A validation file: checked too, and for near-duplicates of the training rows (repeatable). Inputs "
                "named *val*/*valid*/*dev*/*eval*/*test* given beside others count as validation files."),
    replace(_KIND, recipe=False, help="Require rows of this kind."),
    Option("strict", bool, False, "Warnings fail the run too (exit 1).", recipe=True),
    Option("report", path="file-or-dash", help="Write every finding and the summary as JSON (- for stdout)."),
    Option("rejects", help="Keep the rows with errors, with their findings (JSONL).", path="file"),
    Option("min_rows", int, 1, "Fewest usable rows a file may have.", low=0, recipe=True),
    Option("max_findings", int, 10_000, "Findings kept for the report; counts stay exact.", low=0, nullable=True),
    Option("max_chars", int, 32_000, "Warn about rows longer than this many characters.", low=1, recipe=True),
    Option("max_media_pixels", int, MAX_MEDIA_PIXELS, "An image (or a video frame) with more pixels than this is "
           "media_too_large (default: Pillow's decompression-bomb limit).", low=1, recipe=True),
    Option("max_media_bytes", int, MAX_MEDIA_BYTES, "An image, video or audio file larger than this many bytes is "
           "media_too_large.", low=1, recipe=True),
    Option("max_media_seconds", float, MAX_MEDIA_SECONDS, "A video or audio longer than this many seconds is "
           "media_too_large.", low=0, low_open=True, recipe=True),
    Option("tokenizer", help="A tokenizer folder: adds token statistics and token-level checks."),
    replace(_TEMPLATE, recipe=False, help="Chat template for --tokenizer (default: the tokenizer's own; see `prep "
                                          "template --list`)."),
    *(replace(o, recipe=False) for o in _TEMPLATE_ARGS),
    Option("max_len", int, None, "With --tokenizer: report rows longer than this.", low=2),
    Option("allow_errors", bool, False, "Go on without the rows that have errors (kept in validate/rejects.jsonl) "
                                        "instead of stopping.", cli=False, recipe=True),
    Option("tokens", bool, False, "Also render and tokenize every row with the tokenize section's tokenizer, "
                                  "template and max_len.", cli=False, recipe=True),
    *_ENGINE,
    Option("quiet", bool, False, "Print only the summary line.", flags=("-q", "--quiet")),
)

# What decides how a conversation renders besides the records: a template name or file, its arguments and day.
_TEMPLATE_OR_FILE = replace(_TEMPLATE, choices=(), what="", help="Chat template (see `prep template --list`), or a "
                                                                  ".jinja file of one; default: the tokenizer's own.")
_REASONING = Option("train_on_reasoning", default="yes", choices=YES_NO, recipe=True,
                    help="Train the reasoning (the think block before an answer), or mask it and train the answer "
                         "only. A think block the generation prompt holds (enable_thinking=false) is never trained.")

TEMPLATE = (
    replace(_TEMPLATE_OR_FILE, recipe=False, help="Template name (see --list) or a .jinja file (with --tokenizer); "
                                                  "default: the --tokenizer's own chat template."),
    Option("tokenizer", help="Tokenizer folder: its chat template, and the BOS/EOS tokens templates write."),
    _TRAIN_ON,
    _REASONING,
    *_TEMPLATE_ARGS,
    Option("output", flags=("-o", "--output"),
           help="Write {id, text, spans} rows here (.jsonl .json .parquet ...); default: stdout, unless --show."),
    Option("show", int, 0, "Print the first N rows, trained text in colour.", low=0),
    Option("rejects", help="Keep rows that cannot be rendered, with reasons.", path="file"),
    Option("list_templates", bool, False, "List the templates and exit.", flags=("--list",)),
    _QUIET,
)

TOKENIZE = (
    replace(_TOKENIZER, required=True, recipe=True),
    _TEMPLATE_OR_FILE,
    _KIND,
    _TRAIN_ON,
    _REASONING,
    *_TEMPLATE_ARGS,
    _MAX_LEN,
    Option("overflow", default="drop", choices=OVERFLOW, recipe=True,
           help="A row over --max-len: reject it, cut it (keeping the EOS trained), or drop trailing turns."),
    Option("workers", int, 0, "Processes tokenizing batches (order and output do not depend on it); 0: one per "
           f"core, at most {AUTO_WORKERS}, for a plain JSONL input of more than one batch (1,024 rows), else 1.", low=0,
           recipe=True),
    Option("output", required=True, flags=("-o", "--output"), path="folder", help="Shard folder."),
    Option("rejects", help="Keep rejected and cut rows with reasons (JSONL).", path="file"),
    *_ENGINE,
    Option("quiet", bool, False, "No progress bar or summary.", flags=("-q", "--quiet")),
)

PACK = (
    Option("output", required=True, flags=("-o", "--output"), path="folder", help="Folder for packed shards."),
    Option("max_len", int, None, "Tokens per packed row.", low=2, required=True, recipe=True),
    Option("strategy", default="bfd", choices=STRATEGIES, recipe=True,
           help="bfd: whole documents, best-fit decreasing; wrap: concatenate and cut (pretraining)."),
    Option("seed", int, 0, "Seed for the order of packed rows.", recipe=True),
    Option("window", int, 100_000, "Documents packed together (0: the whole input at once).", low=0, recipe=True),
    Option("shard_size", default="256MB", help="Shard bound: 256MB, 2GB or 50000rows.", recipe=True,
           pattern=SIZE, what="a size like 256MB, 2GB or 50000rows"),
    Option("rejects", help="Keep rows too long to pack, with reasons.", path="file"),
    *_ENGINE,
    Option("quiet", bool, False, "", flags=("-q", "--quiet")),
)

_TO = Option("to", default="trl", choices=WRITABLE, recipe=True,
             help="Format to write the records in (trl holds every kind; chat rows are `messages`, as OpenAI's).")
_COMPARE = (
    Option("fields", default="all", choices=COMPARED, recipe=True,
           help="The text compared: every turn, or only the user's or only the assistant's turns."),
    Option("nfkc", bool, True, "Unicode NFKC first (full-width forms, ligatures and the like become plain).",
           flags=("--nfkc/--no-nfkc",), recipe=True),
    Option("ignore_case", bool, True, "Compare case-folded text.", flags=("--ignore-case/--match-case",),
           recipe=True),
    Option("ignore_space", bool, True, "Compare with whitespace runs made one space.",
           flags=("--ignore-space/--match-space",), recipe=True),
)
_NEAR = Option("near", float, 0.8, "Near duplicates: estimated Jaccard similarity of word bigrams (MinHash LSH) "
                                   "at least this.", low=0, high=1, low_open=True, recipe=True,
               what="a similarity in (0, 1]")
_EXACT = Option("exact", bool, False, "Exact duplicates only (after normalisation): no near-duplicate search.",
                recipe=True)
_DUPLICATES = (_EXACT, _NEAR, *_COMPARE, _TO, _QUIET)  # what dedup and split count as a duplicate, and their output

MIX = (
    Option("output", required=True, flags=("-o", "--output"),
           help="Records file (.jsonl .json .parquet ...; - for stdout), or a folder when the sources are shards."),
    Option("by", default="rows", choices=MIX_BY, recipe=True,
           help="What N counts: rows, or tokens (shards: their num_tokens; records: as prep tokenize would count "
                "them with --tokenizer and --template)."),
    Option("seed", int, 42, "Seed for the sample taken after whole passes (the CLI's --seed).", cli=False,
           recipe=True),
    Option("tokenizer", help="--by tokens on records: the tokenizer the rows are counted with."),
    replace(_TEMPLATE, recipe=False, help="--by tokens on records: the template (default: the tokenizer's own)."),
    *(replace(o, recipe=False) for o in _TEMPLATE_ARGS),
    Option("rejects", help="Keep unreadable rows and the rows not sampled, with reasons (JSONL).", path="file"),
    _QUIET,
)

DEDUP = (
    Option("output", required=True, flags=("-o", "--output"), help="The rows kept (.jsonl .json .parquet ...)."),
    Option("rejects", help="Keep each removed row with the row it duplicates (duplicate_of) (JSONL).", path="file"),
    *_DUPLICATES,
    *_ENGINE,
)

SPLIT = (
    Option("val", float, None, "Validation rows: a share of the rows (0.05) or a number of rows (100).", low=0,
           low_open=True, required=True, recipe=True, what="a share in (0, 1) or a number of rows"),
    Option("per_source", bool, False, "Take the validation rows from each input file in proportion, not from all "
                                      "of them together.", recipe=True),
    Option("seed", int, 42, "Seed for which duplicate groups go to validation (the CLI's --seed).", cli=False,
           recipe=True),
    Option("output", required=True, flags=("-o", "--output"), path="folder",
           help="Folder for train.jsonl, validation.jsonl and manifest.json."),
    Option("rejects", help="Keep unreadable rows, with reasons (JSONL).", path="file"),
    *_DUPLICATES,
)

DECONTAMINATE = (
    Option("against", multiple=True, required=True, path="file", recipe=True,
           help="A benchmark file (.jsonl .json .parquet .csv ...; repeatable)."),
    Option("field", recipe=True, help="The benchmark rows' text fields to compare, e.g. question or question,answer "
                                      "(default: every text field of an item: question, answer, each choice...)."),
    Option("ngram", int, 13, "Tokens per n-gram (a word; a character in scripts written without spaces).", low=1,
           recipe=True),
    Option("min_item_tokens", int, 5, "A benchmark text shorter than --ngram tokens is looked for whole (all its "
                                      "tokens in a row, in one turn) when it has at least this many tokens; shorter "
                                      "ones are counted and left out.", low=1, recipe=True),
    Option("output", required=True, flags=("-o", "--output"), help="The rows kept (.jsonl .json .parquet ...)."),
    Option("rejects", help="Keep each dropped row with the benchmark file, line and n-gram (JSONL).", path="file"),
    *_COMPARE,
    _TO,
    _QUIET,
)

VERIFY = (
    Option("quiet", bool, False, "Print only the findings.", flags=("-q", "--quiet")),
    Option("serving", path="existing-folder",
           help="A model folder prep train wrote (adapter, model or merged): render --sample rows of SHARDS from it "
                "alone with transformers, as a server would, and report each row whose ids differ from the shards' "
                "and a generation_config.json that does not stop on the trained end-of-turn token."),
    Option("sample", int, 100, "Rows --serving renders, spread evenly over the shards.", low=1),
)

INSPECT = (
    Option("row", int, 0, "Row to show (0-based).", low=0),
    Option("show_ids", bool, False, "Show every token with its id.", flags=("--ids",)),
    Option("tokenizer", help="Tokenizer folder, if the one recorded in the manifest has moved."),
)

STATS = (
    Option("format", default="auto", choices=("auto", *READABLE), flags=("--from",), help="Input format, for input "
                                                                                           "files."),
    Option("as_json", bool, False, "Print the statistics as JSON.", flags=("--json",)),
)

TRAIN = (
    Option("model", required=True, recipe=True,
           help="Base model: a local folder (or a hub id where the hub is reachable)."),
    Option("output", required=True, flags=("-o", "--output"), path="folder", help="Folder for adapter and report."),
    Option("lora_r", int, 16, "LoRA rank.", low=1, recipe=True),
    Option("lora_alpha", int, 32, "LoRA scaling numerator (alpha / r).", low=1, recipe=True),
    Option("lora_dropout", float, 0.05, "Dropout on the LoRA path.", low=0, high=1, high_open=True, recipe=True,
           what="a probability in [0, 1)"),
    Option("target_modules", default="all-linear", recipe=True, help="all-linear or q_proj,v_proj,..."),
    Option("use_rslora", bool, False, "Rank-stabilised LoRA scaling (alpha / sqrt(r)).", recipe=True),
    Option("use_dora", bool, False, "Weight-decomposed LoRA.", recipe=True),
    Option("qlora", bool, False, "4-bit NF4 base with double quantization (bitsandbytes); the same as --quant 4.",
           recipe=True),
    Option("quant", int, None, low=4, high=8, what="4 or 8 (bits)", recipe=True,
           help="Load the base quantized by bitsandbytes under the LoRA adapter: 4 (NF4, double quantization: "
                "QLoRA) or 8 (LLM.int8)."),
    Option("lora_init", default="default", choices=LORA_INITS, recipe=True,
           help="The adapter's initialisation (peft's init_lora_weights): default (A random, B zero), gaussian, "
                "pissa (A and B from the weights' principal singular vectors, fast SVD of 16 iterations; the saved "
                "adapter is converted to apply to the original base), olora (QR, converted the same way), loftq "
                "(with a 4-bit base: A and B set to make up for the quantization error)."),
    Option("loraplus_lr_ratio", float, None, "LoRA+: the B matrices learn at this multiple of --lr (the paper: 16).",
           low=0, low_open=True, recipe=True),
    Option("freeze_layers", int, 0, "Freeze tuning: train every weight of the last N decoder layers, no adapter, the "
                                    "rest frozen (0: off); saved as a whole model like --full.", low=0, recipe=True),
    Option("full", bool, False, "Train every weight, no adapter (DPO/KTO: beside a frozen copy as the reference).",
           recipe=True),
    Option("train_vision", bool, False, "Vision-language models: train the vision tower too (LoRA on its linear layers; "
                                        "with --full, its weights); by default it is frozen and only the language "
                                        "model is adapted.", recipe=True),
    Option("method", choices=METHODS, recipe=True,
           help="What to optimise; default: sft for sft/pretrain shards, dpo for dpo shards, kto for kto shards, grpo "
                "(online RL: TRL's GRPOTrainer generating from the prompts, scored by --reward) for prompt shards. "
                "orpo and reward (a sequence-classification head scoring chosen above rejected) read dpo shards."),
    Option("beta", float, 0.1, "DPO/KTO: strength of the pull towards the reference; ORPO: weight of the odds-ratio "
                               "term; GRPO: the KL coefficient (0: no reference pass, TRL's default).", low=0,
           recipe=True),
    Option("reward", multiple=True, default=(), recipe=True,
           help="GRPO: a reward function (repeatable; the rewards add up): exact[:COLUMN] or math[:COLUMN] against a "
                "carried column (default answer), format[:REGEX] (default: a think block, then an answer), "
                "length[:N] (nearness to N tokens), or FILE.py:FUNCTION (TRL's reward signature; the row's carried "
                "columns come as keyword arguments)."),
    Option("num_generations", int, 4, "GRPO: completions generated per prompt, compared with one another (a multiple "
                                      "of it makes --batch-size x --grad-accum).", low=2,
           recipe=True),
    Option("max_completion_len", int, 256, "GRPO: longest completion in tokens.", low=1, recipe=True),
    Option("temperature", float, 1.0, "GRPO: sampling temperature of the completions.", low=0, low_open=True,
           recipe=True),
    Option("loss_type", choices=tuple(dict.fromkeys(DPO_LOSSES + KTO_LOSSES)), recipe=True,
           help="DPO: sigmoid (default), hinge, ipo, robust, bco_pair, sppo_hard, nca_pair, apo_zero, apo_down; "
                "KTO: kto (default) or apo_zero_unpaired."),
    Option("desirable_weight", float, 1.0, "KTO: weight of the desirable (label true) rows' loss.", low=0,
           low_open=True, recipe=True),
    Option("undesirable_weight", float, 1.0, "KTO: weight of the undesirable (label false) rows' loss.", low=0,
           low_open=True, recipe=True),
    Option("margin_column", recipe=True,
           help="reward: a number per pair, carried into the dpo shards with tokenize --keep-columns, by which the "
                "chosen answer's score must beat the rejected one's (loss -log sigmoid(r_chosen - r_rejected - margin))."),
    Option("ref_model", path="existing-folder", recipe=True,
           help="DPO/KTO: a reference model other than the base (loaded frozen beside the policy); default: the base "
                "itself, as the adapter switched off (LoRA/QLoRA) or a frozen copy (--full)."),
    Option("lr", float, 2e-4, "Peak learning rate.", low=0, low_open=True, recipe=True),
    Option("epochs", float, 1.0, "Passes over the shards (when --max-steps is not given).", low=0, recipe=True),
    Option("max_steps", int, -1, "Stop after this many steps (overrides --epochs).", low=-1, recipe=True,
           what="an integer of at least -1 (-1: train --epochs)"),
    Option("batch_size", int, 4, "Rows per device step (packed rows when packed).", low=1, recipe=True),
    Option("grad_accum", int, 1, "Steps whose gradients are summed before each update.", low=1, recipe=True),
    Option("warmup_ratio", float, 0.03, "Share of the training steps spent warming the learning rate up.", low=0,
           high=1, high_open=True, recipe=True, what="a share of the training steps in [0, 1)"),
    Option("scheduler", default="cosine", choices=SCHEDULERS, recipe=True, help="Learning-rate schedule."),
    Option("weight_decay", float, 0.0, "AdamW weight decay.", low=0, recipe=True),
    Option("seed", int, 42, "Seed for data order and the adapter's initialisation.", recipe=True),
    Option("gradient_checkpointing", bool, False, "Recompute activations in the backward pass to save memory.",
           recipe=True),
    Option("attn_implementation", choices=ATTENTION, recipe=True,
           help="Attention kernel (default: transformers' choice, sdpa). With flash_attention_2/3 on a GPU the packed "
                "rows of a step are concatenated, without padding."),
    Option("eval", path="existing-folder", help="Shards to evaluate on."),
    Option("save_steps", int, None, "Checkpoint (and evaluate) every N steps.", low=1, recipe=True),
    Option("logging_steps", int, 1, "Log the loss every N steps.", low=1, recipe=True),
    Option("resume", bool, False, "Continue from the last checkpoint in OUTPUT."),
    Option("fsdp", bool, False, "Under torchrun/accelerate launch on GPUs: shard the weights, gradients and optimizer "
           "state over the processes (PyTorch FSDP2, full shard, one unit per decoder layer)."),
    Option("deepspeed", path="file", help="Under torchrun/accelerate launch on GPUs: a DeepSpeed config JSON (e.g. "
           "ZeRO-3), passed to the trainer; needs the deepspeed package."),
    Option("merge", bool, False, "Also save the base model with the adapter merged in.", recipe=True),
    Option("report_to", default="none", choices=REPORT_TO, recipe=True,
           help="Where the trainer also logs (the package must be installed: pip install tensorboard, wandb or "
                "mlflow; W&B and MLflow read their own settings, e.g. WANDB_MODE=offline, MLFLOW_TRACKING_URI)."),
    Option("force", bool, False, "Train even if the tokenizer fingerprints differ.", recipe=True),
    replace(_QUIET, help="No progress bar or summary."),
)

GENERATE = (
    Option("model", required=True, path="existing-folder", help="Base (or merged) model folder."),
    Option("adapter", path="existing-folder",
           help="Adapter folder from prep train; without it the base model answers, for comparison."),
    replace(_TEMPLATE, recipe=False, help="Template (prep template --list); default: the one the adapter's shards "
                                          "used."),
    Option("system", help="A system message before each prompt."),
    Option("max_new_tokens", int, 128, "Longest completion in tokens.", low=1),
    Option("temperature", float, 0.0, "0: greedy decoding; above 0: sampling at this temperature.", low=0),
)

REPORT = (
    Option("output", flags=("-o", "--output"), path="file",
           help="The page to write; default: report.html in TARGET (beside it, for a report file)."),
    Option("tokenizer", help="Tokenizer folder for the decoded rows, if the one the manifest records has moved."),
    Option("quiet", bool, False, "Print nothing but errors.", flags=("-q", "--quiet")),
)

EXPORT = (
    Option("to", required=True, choices=EXPORTS,
           help="hf-dataset: a datasets.save_to_disk folder; axolotl, together: Parquet of input_ids, attention_mask, "
                "labels; jsonl: decoded text and trained spans; trl-grpo (prompt shards): JSONL of the messages-form "
                "prompt and the carried columns, for TRL's GRPOTrainer."),
    Option("output", required=True, flags=("-o", "--output"),
           help="A folder (hf-dataset), a .parquet file (axolotl, together) or a .jsonl file (jsonl, trl-grpo)."),
    Option("tokenizer", help="Tokenizer folder for --to jsonl, if the one the manifest records has moved."),
    Option("quiet", bool, False, "Print nothing but errors.", flags=("-q", "--quiet")),
)

RUN = (
    Option("sets", multiple=True, flags=("--set",),
           help="Override a recipe value, e.g. --set train.max_steps=50 --set output=/tmp/run (repeatable; the value "
                "is read as YAML; paths are relative to the current folder)."),
    Option("dry_run", bool, False, "Print the stages, their keys and which would run; run nothing."),
    Option("quiet", bool, False, "No progress view; print the summary only.", flags=("-q", "--quiet")),
    Option("events", path="file",
           help="Also write each stage's start, progress and end as JSON lines to FILE, as they happen (what `prep ui` "
                "shows live; a script can follow it too)."),
)

# `prep ui`: where it listens, and the secret a request must carry when it listens beyond this machine.
LOOPBACK = ("127.0.0.1", "::1", "localhost")
UI = (
    Option("host", default="127.0.0.1",
           help="Address to listen on; any but loopback (127.0.0.1, ::1, localhost) needs --token."),
    Option("port", int, 0, "Port to listen on (0: a free one, chosen when it starts).", low=0, high=65535),
    Option("token", help="A secret every request must carry (the printed URL holds it once; the page keeps it in a "
                         "cookie). Needed with a --host other than loopback."),
)

TABLES: dict[str, tuple[Option, ...]] = {
    "inputs": INPUTS, "convert": CONVERT, "validate": VALIDATE, "template": TEMPLATE, "tokenize": TOKENIZE,
    "pack": PACK, "verify": VERIFY, "inspect": INSPECT, "stats": STATS, "train": TRAIN, "generate": GENERATE,
    "report": REPORT, "export": EXPORT, "run": RUN, "mix": MIX, "dedup": DEDUP, "split": SPLIT,
    "decontaminate": DECONTAMINATE, "ui": UI,
}
RECIPE_SECTIONS = ("inputs", "convert", "mix", "dedup", "decontaminate", "split", "validate", "tokenize", "pack",
                   "train")


def option(verb: str, name: str) -> Option:
    """The option `name` of `verb`'s table."""
    return next(o for o in TABLES[verb] if o.name == name)


def check(verb: str, values: Mapping[str, Any]) -> None:
    """Refuse the first value `verb`'s table does not accept, naming the option as the CLI spells it."""
    table = {o.name: o for o in TABLES[verb]}
    for name, value in values.items():
        if name in table and (problem := table[name].problem(value)):
            raise PrepError(f"{table[name].flag} {problem}")


def defaults(verb: str) -> dict[str, Any]:
    """Each option of `verb` and its default."""
    return {o.name: o.default for o in TABLES[verb]}


def parse_size(text: str) -> tuple[int, float]:
    """A `shard_size` the table accepted (`256MB`, `2GB`, `50000rows`) as (most rows, most MB) per shard."""
    t = text.strip().lower().replace(" ", "")
    unit = next(u for u in ("rows", "kb", "mb", "gb") if t.endswith(u))
    n = float(t[: -len(unit)])
    return (int(n), 1e12) if unit == "rows" else (2**62, n * {"kb": 1 / 1024, "mb": 1.0, "gb": 1024.0}[unit])


_F = TypeVar("_F", bound=Callable[..., Any])
_PLAIN = (str, int, float, bool, list, tuple, os.PathLike, type(None))


def checked(verb: str) -> Callable[[_F], _F]:
    """A verb's Python function, refusing any argument its table does not accept before it starts, in the words the
    CLI and a recipe use. An object the API takes where the CLI takes a path (a loaded tokenizer) is not a value of
    the table and is left to the function."""

    def wrap(function: _F) -> _F:
        signature = inspect.signature(function)
        names = {o.name for o in TABLES[verb]} & set(signature.parameters)

        @functools.wraps(function)
        def run(*args: Any, **kwargs: Any) -> Any:
            given = signature.bind_partial(*args, **kwargs).arguments
            check(verb, {n: v for n, v in given.items() if n in names and isinstance(v, _PLAIN)})
            return function(*args, **kwargs)

        return run  # type: ignore[return-value]

    return wrap
