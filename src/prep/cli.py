"""The `prep` command: a thin shell over the Python API (same verb names), its options built from the
options tables (prep.core.options).

Exit codes everywhere: 0 done, 1 done but some rows rejected (or findings), 2 could not run.
User data never produces a traceback; set PREP_DEBUG=1 to see one for a bug in prep itself.

The verbs are imported inside each command, so `prep --help` and a verb that needs little load little."""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

import click

from prep import __version__
from prep.core.findings import PrepError, Tally
from prep.core.options import READABLE, SETTINGS, TABLES, Option
from prep.core.result import Progress


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as e:  # one line, like every other refusal
            where = e.ctx.command_path if e.ctx else ctx.command_path
            click.echo(f"{where}: {' '.join(e.format_message().split())} (see '{where} --help')", err=True)
            ctx.exit(2)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except PrepError as e:
            click.echo(f"prep: {e}", err=True)
            ctx.exit(2)
        except BrokenPipeError:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            ctx.exit(0)
        except KeyboardInterrupt:
            click.echo("prep: interrupted; no output was left half-written", err=True)
            ctx.exit(130)
        except OSError as e:  # the system refused (no space, read-only, a folder, a loop): not a bug in prep
            from prep.files.errors import os_error_message  # noqa: PLC0415 - start-up time

            click.echo(f"prep: {os_error_message(e)}", err=True)
            ctx.exit(2)
        except RecursionError:
            click.echo("prep: a value is nested too deeply to read (more levels than Python can hold); flatten it",
                       err=True)
            ctx.exit(2)
        except Exception as e:
            if os.environ.get("PREP_DEBUG"):
                raise
            click.echo(f"prep: internal error ({type(e).__name__}: {e}); this is a bug in prep, please report it "
                       "with PREP_DEBUG=1 set to include the traceback", err=True)
            ctx.exit(2)


# The parameters of the verbs that name what they read, and those that name what they write.
_READS = ("args", "validation", "against", "shards", "target", "targets", "dataset_info", "tokenizer", "model",
          "adapter", "eval", "recipe_file")
_WRITES = {"output": "-o", "rejects": "--rejects", "report": "--report"}


def _terminate(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # SIGTERM cleans up as Ctrl-C does: temporary files removed, no half output


class _Command(click.Command):
    """A verb: its outputs are checked against its inputs before it starts (files.check_outputs), and SIGTERM
    stops it as Ctrl-C does."""

    def invoke(self, ctx: click.Context) -> Any:
        import prep.shards.layout  # noqa: F401, PLC0415 - registers the names in shard folders with files.guard
        from prep.files.guard import check_outputs  # noqa: PLC0415 - start-up time

        reads: list[str] = []
        for name in _READS:
            value = ctx.params.get(name)
            reads += [value] if isinstance(value, str) else list(value or ())
        check_outputs(reads, {flag: ctx.params.get(name) for name, flag in _WRITES.items()})
        signal.signal(signal.SIGTERM, _terminate)
        try:
            return super().invoke(ctx)
        except OSError as e:  # a write that failed for want of space says nothing of where: name the output
            if e.filename is None and e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                e.filename = next((str(v) for k in _WRITES if (v := ctx.params.get(k)) not in (None, "-")), None)
            raise


_Group.command_class = _Command


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="prep")
def main() -> None:
    """Turn fine-tuning data into validated, token-exact training shards."""
    # Arrow's default pool (jemalloc) holds on to freed buffers: the system allocator keeps ~50 MB off the peak
    # RSS of prep tokenize at the same speed (bench/tokenize_speed.py). Set before pyarrow loads; a user's wins.
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")


# ---------------------------------------------------------------- options from the tables


class _Checked(click.ParamType):
    """A number or a choice of the options table: parsed, then checked by the table, so a bad value gets the
    same words as from a recipe or the Python API ("--lora-alpha 0.5: must be an integer of at least 1")."""

    def __init__(self, option: Option) -> None:
        self.option = option
        self.name = option.type.__name__

    def get_metavar(self, param: click.Parameter, ctx: click.Context) -> str | None:
        if self.option.choices:
            return "[" + "|".join(self.option.choices) + "]"
        return {int: "INTEGER", float: "FLOAT"}.get(self.option.type, "TEXT")

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str) and self.option.type in (int, float):
            with contextlib.suppress(ValueError):  # else refused below, in the table's words
                value = self.option.type(value)
        if problem := self.option.problem(value):
            raise PrepError(f"{self.option.flag} {problem}")
        return value


_PATHS = {"file": click.Path(dir_okay=False), "file-or-dash": click.Path(dir_okay=False, allow_dash=True),
          "folder": click.Path(file_okay=False), "existing-folder": click.Path(exists=True, file_okay=False)}


def _click_option(option: Option) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    flags = option.flags or ("--" + option.name.replace("_", "-"),)
    kwargs: dict[str, Any] = {"help": option.help, "required": option.required, "multiple": option.multiple}
    if option.type is bool:
        kwargs.update(default=option.default, show_default="/" in flags[0])  # --ids/--no-ids shows its default
        if "/" not in flags[0]:
            kwargs["is_flag"] = True
    else:
        if option.multiple or option.default is not None:
            kwargs["default"] = () if option.multiple else option.default
        kwargs["show_default"] = option.default is not None and not option.required
        if option.path:
            kwargs["type"] = _PATHS[option.path]
        elif option.choices or option.type in (int, float):
            kwargs["type"] = _Checked(option)
    return click.option(*flags, option.name, **kwargs)


def options(verb: str, *, skip: tuple[str, ...] = ()) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The click options of `verb`'s table (the CLI ones, but `skip`), in table order."""

    def add(command: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed(TABLES[verb]):
            if option.cli and option.name not in skip:
                command = _click_option(option)(command)
        return command

    return add


def input_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The input side of every verb that reads records ([FROM] INPUT..., --from, --dataset-info/--dataset
    and the format options); the command receives them as one `inputs: Inputs`."""

    @functools.wraps(command)
    def wrapper(**kw: Any) -> Any:
        from prep.formats.inputs import Inputs  # noqa: PLC0415 - start-up time: the verb's layers load with it

        files, source = list(kw.pop("args")), kw.pop("format")
        if files and files[0] in ("auto", *READABLE) and not os.path.exists(files[0]):
            if source not in ("auto", files[0]):
                raise click.UsageError(f"FROM {files[0]!r} and --from {source!r} disagree")
            source = files.pop(0)
        settings = {k: v for k in SETTINGS if (v := kw.pop(k)) is not None}
        kw["inputs"] = Inputs(files, source, settings, kw.pop("input_type"), kw.pop("txt_split"),
                              kw.pop("dataset_info"), kw.pop("datasets"), kw.pop("seed"), kw.pop("max_row_bytes"),
                              keep_columns=kw.pop("keep_columns"), strict_fields=kw.pop("strict_fields"),
                              split_think=kw.pop("split_think"))
        return command(**kw)

    return click.argument("args", nargs=-1, metavar="[FROM] INPUT...")(options("inputs")(wrapper))


def _require_inputs(inputs: Any) -> None:
    if not inputs.files and not inputs.datasets:
        raise click.UsageError("give INPUT files, or --dataset-info FILE --dataset NAME")


def _report_rejects(tally: Tally, rejects_file: str | None) -> None:
    """The first rejects of each reason, so a run without --rejects still says what went wrong where."""
    for rej in tally.examples:
        f = rej.findings[0]
        click.echo(f"  {rej.source} {f.path} {f.code}: {f.message}" + (f" ({f.hint})" if f.hint else ""), err=True)
    if tally.rejected_total > len(tally.examples):
        click.echo(f"  … and {tally.rejected_total - len(tally.examples)} more", err=True)
    if tally.rejected_total and not rejects_file:
        click.echo("  keep every rejected row with its reasons: --rejects FILE", err=True)


def _formats(formats: dict[str, str]) -> None:
    for path, fmt in formats.items():
        click.echo(f"{path}: read as {fmt}", err=True)


def _ran(result: Any) -> str:
    """The summary's last words under --engine ray: how many parts, workers and nodes ran."""
    e = result.engine
    if not e:
        return ""
    return (f" ({e['name']}: {e['parts']} parts on {e['workers']} worker{'s' * (e['workers'] != 1)}, "
            f"{e['nodes']} node{'s' * (e['nodes'] != 1)})")


def _notes(result: Any) -> None:
    for note in result.notes:
        click.echo(f"note: {note}", err=True)


# ---------------------------------------------------------------- the verbs


@main.command()
@input_options
@options("convert")
def convert(inputs: Any, to: str, output: str, rejects: str | None, ids: bool, quiet: bool, **kw: Any) -> None:
    """Convert INPUT files (or --dataset entries) to another format.

    FROM is `auto` (the default: detected per file) or one of alpaca, sharegpt, openai, lf_parts,
    trl, autotrain, coqa, text. Rows that cannot be converted are counted, shown and kept with
    --rejects; exit code 0: all converted, 1: some rejected, 2: could not run.

    \b
    Examples:
      prep convert coqa coqa-dev-v1.0.json --to openai -o coqa.jsonl
      prep convert autotrain chats.csv --text-column dialogue --to sharegpt -o chats.jsonl
      prep convert --dataset-info data/dataset_info.json --dataset glaive_toolcall_en_demo --to openai
    """
    from prep.stages.convert import convert as run  # noqa: PLC0415 - start-up time

    _require_inputs(inputs)
    with _Bar("convert", quiet or kw["engine"] == "local", "starting Ray") as bar:
        result = run(inputs, to, output, rejects=rejects, ids=ids, progress=bar, **kw)
    _notes(result)
    if not quiet:
        _formats(result.formats)
        click.echo(result.tally.summary() + ("" if output == "-" else f" -> {output}") + _ran(result), err=True)
        _report_rejects(result.tally, rejects)
    sys.exit(result.exit_code)


@main.command()
@input_options
@options("validate")
def validate(inputs: Any, report: str | None, quiet: bool, **kw: Any) -> None:
    """Check INPUT files row by row and report every problem with its line, JSON path and a hint.

    Exit 0: no errors; 1: errors (or warnings with --strict); 2: could not run.
    Example: prep validate train.jsonl --validation valid.jsonl --report report.json --rejects bad.jsonl
    """
    from prep.stages import validate_report as show  # noqa: PLC0415 - start-up time
    from prep.stages.validate import validate as run  # noqa: PLC0415 - start-up time

    _require_inputs(inputs)
    result = run(inputs, **kw)
    _notes(result)
    out = sys.stderr if report == "-" else sys.stdout
    if hasattr(out, "reconfigure"):
        out.reconfigure(errors="backslashreplace")  # a file name that is not UTF-8 must not crash the report
    show.show(result, out, quiet)
    if result.engine and not quiet:
        click.echo(_ran(result).strip(" ()"), err=True)
    if report == "-":
        sys.stdout.write(show.dumps(result))
    elif report:
        show.write_json(result, report)
    sys.exit(result.exit_code)


@main.command()
@input_options
@options("template")
def template(inputs: Any, template: str | None, tokenizer: str | None, train_on: str, output: str | None, show: int,
             rejects: str | None, list_templates: bool, quiet: bool, **kw: Any) -> None:
    """Render INPUT conversations with a chat template: the exact text a model trains on, and the
    character spans that carry loss.

    \b
    Examples:
      prep template --list
      prep template samples/openai.jsonl --template chatml --show 2
      prep template data.jsonl --tokenizer ./Qwen2.5-7B-Instruct -o rendered.jsonl
    """
    from rich.console import Console  # noqa: PLC0415 - start-up time

    from prep.render.templates import describe  # noqa: PLC0415 - start-up time
    from prep.stages.template import template as run  # noqa: PLC0415 - start-up time

    console = Console(highlight=False, soft_wrap=True)
    if list_templates:
        from rich.text import Text  # noqa: PLC0415 - start-up time

        for n, summary in describe():
            console.print(Text.assemble((f"{n:<10}", "bold"), " ", summary))
        return
    _require_inputs(inputs)
    shown = 0

    def show_row(row: dict[str, Any]) -> None:
        nonlocal shown
        if shown < show:
            shown += 1
            console.rule(f"{row['id']}", align="left")
            console.print(_highlight(row))

    result = run(inputs, template, tokenizer, output or (None if show else "-"), train_on=train_on, rejects=rejects,
                 on_row=show_row if show else None, **kw)
    _notes(result)
    if not quiet:
        _formats(result.formats)
        click.echo(f"{result.tally.summary()} (template {result.template})" + (f" -> {output}" if output else ""),
                   err=True)
        _report_rejects(result.tally, rejects)
    sys.exit(result.exit_code)


def _highlight(row: dict[str, Any]) -> Any:
    """A rendered row as rich text: trained spans green, the rest grey (preference: prompt grey,
    chosen green, rejected red)."""
    from rich.text import Text  # noqa: PLC0415 - start-up time

    from prep.stages.inspect import TRAINED, UNTRAINED  # noqa: PLC0415 - start-up time

    if "spans" not in row:
        text = Text(row["prompt"], style=UNTRAINED)
        for side, style in (("chosen", TRAINED), ("rejected", "red"), ("completion", TRAINED)):
            if side in row:
                text.append(f"\n[{side}]\n", style="bold")
                text.append(row[side], style=style)
        return text
    text = Text(row["text"], style=UNTRAINED)
    for start, end in row["spans"]:
        text.stylize(TRAINED, start, end)
    return text


class _Bar:
    """A progress bar on stderr, fed with a verb's `Progress` (pass the bar as the verb's `progress`)."""

    def __init__(self, name: str, quiet: bool, first: str) -> None:
        from rich.console import Console  # noqa: PLC0415 - start-up time
        from rich.progress import BarColumn, TextColumn, TimeElapsedColumn  # noqa: PLC0415 - start-up time
        from rich.progress import Progress as Bars  # noqa: PLC0415 - start-up time

        self.bars = Bars(TextColumn(f"[bold]{name}"), BarColumn(), TextColumn("{task.fields[info]}"),
                         TimeElapsedColumn(), console=Console(stderr=True, highlight=False), disable=quiet)
        self.task = self.bars.add_task(name, total=None, info=first)

    def __enter__(self) -> _Bar:
        self.bars.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self.bars.stop()

    def __call__(self, progress: Progress) -> None:
        self.bars.update(self.task, info=progress.line(), completed=progress.step or 0, total=progress.steps)


@main.command()
@input_options
@options("tokenize")
def tokenize(inputs: Any, output: str, rejects: str | None, quiet: bool, **kw: Any) -> None:
    """Tokenize INPUT records into unpacked shards: token ids and labels, token-exact.

    \b
    Examples:
      prep tokenize data.jsonl --tokenizer ./Qwen2.5-7B-Instruct -o shards/
      prep tokenize alpaca_data.json --tokenizer ./llama3 --template llama3 --max-len 2048 --overflow truncate -o s/
      prep tokenize --dataset-info data/dataset_info.json --dataset dpo_en_demo --tokenizer ./tok -o dpo/
    """
    from prep.stages.tokenize import tokenize as run  # noqa: PLC0415 - start-up time

    _require_inputs(inputs)
    with _Bar("tokenize", quiet, "loading the tokenizer") as bar:
        result = run(inputs, kw.pop("tokenizer"), output, rejects=rejects, progress=bar, **kw)
    _notes(result)
    if not quiet:
        _formats(result.formats)
        m = result.manifest
        trained = f", {m['tokens']['loss']:,} trained" if m["kind"] in ("sft", "pretrain") else ""
        click.echo(f"{result.tally.summary()}; {m['tokens']['total']:,} tokens{trained} ({m['kind']}, template "
                   f"{(m['template'] or {}).get('name', 'none')}) -> {output}{_ran(result)}", err=True)
        _report_rejects(result.tally, rejects)
    sys.exit(result.exit_code)


def _done(result: Any, quiet: bool, output: str, rejects: str | None, extra: str = "") -> None:
    """The end of a verb that keeps some rows: formats read, the tally, where it went, the first rejects."""
    if not quiet:
        _formats(getattr(result, "formats", {}))
        click.echo(result.tally.summary() + extra + ("" if output == "-" else f" -> {output}"), err=True)
        _report_rejects(result.tally, rejects)
    sys.exit(result.exit_code)


@main.command()
@input_options
@options("mix")
def mix(inputs: Any, output: str, rejects: str | None, quiet: bool, **kw: Any) -> None:
    """Mix INPUT files (or shard folders) into one set with exactly the asked rows (or tokens) from each.

    Each INPUT is SRC (every row once), SRC:N (exactly N), SRC:xK (K times the source) or SRC:RATIO (a
    share of the output, e.g. 0.3). Whole passes first, then a sample without replacement; the sources are
    interleaved evenly. Rows left out are counted as not_sampled (kept with --rejects).

    \b
    Examples:
      prep mix a.jsonl:20000 b.jsonl:x2 c.jsonl -o mixed.jsonl
      prep mix a.jsonl:0.7 b.jsonl:0.3 -o mixed.jsonl --seed 1
      prep mix shards/a:2000000 shards/b:1000000 --by tokens -o shards/mixed
    """
    from prep.stages.mix import mix as run  # noqa: PLC0415 - start-up time

    if inputs.datasets:
        raise click.UsageError("mix takes files and shard folders; convert --dataset entries first")
    _require_inputs(inputs)
    result = run(list(inputs.files), output, rejects=rejects, inputs=inputs, seed=inputs.seed, **kw)
    summary = result.manifest.get("mix", result.manifest)  # shard folders keep it under "mix"
    if not quiet:
        for s in summary["sources"]:
            click.echo(f"{s['source']}: {s['asked']} -> {s['rows_written']} rows ({s['passes']} whole passes, "
                       f"{s['sampled']} sampled once more)" + (f", {s['tokens_written']:,} tokens"
                                                                 if "tokens_written" in s else ""), err=True)
    _done(result, quiet, output, rejects)


@main.command()
@input_options
@options("dedup")
def dedup(inputs: Any, output: str, rejects: str | None, quiet: bool, **kw: Any) -> None:
    """Remove exact and near-duplicate rows within and across INPUT files; each removed row is a reject
    naming the row it repeats (duplicate_of), which stays.

    \b
    Examples:
      prep dedup a.jsonl b.jsonl -o clean.jsonl --rejects removed.jsonl
      prep dedup data.jsonl --exact --fields user -o clean.jsonl
    """
    from prep.stages.dedup import dedup as run  # noqa: PLC0415 - start-up time

    _require_inputs(inputs)
    result = run(inputs, output, rejects=rejects, **kw)
    _done(result, quiet, output, rejects, _ran(result))


@main.command()
@input_options
@options("split")
def split(inputs: Any, output: str, rejects: str | None, quiet: bool, **kw: Any) -> None:
    """Split INPUT files into DIR/train.jsonl and DIR/validation.jsonl, keeping exact and near-duplicate
    groups on one side (so no validation row has a twin in train).

    \b
    Examples:
      prep split a.jsonl b.jsonl c.jsonl --val 0.05 --per-source -o data/split
      prep split data.jsonl --val 500 --seed 1 -o data/split
    """
    from prep.stages.split import split as run  # noqa: PLC0415 - start-up time

    _require_inputs(inputs)
    result = run(inputs, output, rejects=rejects, seed=inputs.seed, **kw)
    if not quiet:
        for s in result.manifest["sources"]:
            click.echo(f"{s['source']}: {s['validation']} of {s['rows']} rows to validation (asked "
                       f"{s['validation_asked']})", err=True)
    rows = result.manifest["rows"]
    _done(result, quiet, output, rejects, f"; train {rows['train']}, validation {rows['validation']}")


@main.command()
@input_options
@options("decontaminate")
def decontaminate(inputs: Any, output: str, rejects: str | None, quiet: bool, against: tuple[str, ...],
                  **kw: Any) -> None:
    """Drop the INPUT rows that share an n-gram with an item of a benchmark (--against, repeatable); each
    reject names the benchmark file, line and n-gram.

    \b
    Examples:
      prep decontaminate train.jsonl --against gsm8k_test.jsonl --against mmlu.parquet --field question -o clean.jsonl
      prep decontaminate zh.jsonl --against ceval.csv --ngram 20 -o clean.jsonl --rejects hits.jsonl
    """
    from prep.stages.decontaminate import decontaminate as run  # noqa: PLC0415 - start-up time

    _require_inputs(inputs)
    result = run(inputs, output, against=list(against), rejects=rejects, **kw)
    if not quiet:
        for b in result.benchmarks:
            click.echo(f"{b['file']}: {b['items']} items, {b['hits']} rows dropped"
                       + (f", {b['shorter_than_ngram']} items shorter than the n-gram" if b["shorter_than_ngram"]
                          else "") + (f", {b['skipped']} rows without text" if b["skipped"] else ""), err=True)
    _done(result, quiet, output, rejects)


def _parse_size(text: str) -> tuple[int, float]:
    """`--shard-size`: `256MB`, `2GB` or `50000rows` -> (max rows, max MB)."""
    t = text.strip().lower().replace(" ", "")
    units = {"rows": None, "kb": 1 / 1024, "mb": 1.0, "gb": 1024.0}
    for unit, mb in units.items():
        if t.endswith(unit) and t[: -len(unit)].replace(".", "", 1).isdigit():
            n = float(t[: -len(unit)])
            if n > 0:
                return (int(n), 1e12) if mb is None else (2**62, n * mb)
    raise click.BadParameter(f"{text!r}: give a size like 256MB, 2GB or 50000rows", param_hint="--shard-size")


@main.command()
@click.argument("shards", type=click.Path(exists=True, file_okay=False))
@options("pack")
def pack(shards: str, output: str, max_len: int, shard_size: str, quiet: bool, **kw: Any) -> None:
    """Pack tokenized shards in SHARDS into rows of at most --max-len tokens."""
    from prep.stages.pack import pack as run  # noqa: PLC0415 - start-up time

    rows, mb = _parse_size(shard_size)
    result = run(shards, output, max_len, shard_rows=rows, shard_mb=mb, **kw)
    _notes(result)  # e.g. --strategy wrap under --engine ray runs here, carried columns stay unpacked
    counts, packing = result.manifest["counts"], result.manifest["packing"]
    if not quiet:
        click.echo(f"read {counts['read']} documents, packed {counts['written']} into {counts['rows']} rows of "
                   f"<= {max_len} tokens ({packing['strategy']}, efficiency {packing.get('efficiency', 0):.2%}), "
                   f"rejected {sum(counts['rejected'].values())} -> {output}{_ran(result)}", err=True)
    sys.exit(result.exit_code)


@main.command()
@click.argument("shards", type=click.Path(exists=True, file_okay=False))
@options("verify")
def verify(shards: str, quiet: bool) -> None:
    """Check a shard folder against its manifest: sha256 of every shard, schema, row invariants, counts."""
    from prep.shards.verify import verify as run  # noqa: PLC0415 - start-up time

    result = run(shards)
    for f in result.findings:
        click.echo(f"{f.file}:{f.line} {f.path} {f.code}: {f.message}" if f.line else f"{f.file} {f.path} {f.code}: "
                   f"{f.message}", err=True)
    hidden = sum(result.counts.values()) - len(result.findings)
    if hidden:
        click.echo(f"… and {hidden} more", err=True)
    if not quiet:
        verdict = "OK" if result.ok else f"FAILED ({result.errors} errors)"
        click.echo(f"{shards}: {verdict}: {result.rows} rows, {result.tokens} tokens checked", err=True)
    sys.exit(result.exit_code)


@main.command()
@click.argument("shards", type=click.Path(exists=True, file_okay=False))
@options("inspect")
def inspect(shards: str, **kw: Any) -> None:
    """Decode one shard row: trained tokens in colour, document boundaries marked."""
    from rich.console import Console  # noqa: PLC0415 - start-up time

    from prep.stages.inspect import inspect as run  # noqa: PLC0415 - start-up time

    _notes(run(shards, console=Console(highlight=False), **kw))


@main.command()
@click.argument("targets", nargs=-1, required=True, metavar="INPUT_OR_DIR...")
@options("stats")
def stats(targets: tuple[str, ...], format: str, as_json: bool) -> None:
    """Counts, token-length histogram, packing efficiency and trained share of a shard folder
    (or records, messages and characters of input files)."""
    import json  # noqa: PLC0415 - start-up time

    from rich.console import Console  # noqa: PLC0415 - start-up time

    from prep.formats.inputs import Inputs  # noqa: PLC0415 - start-up time
    from prep.stages.stats import print_stats  # noqa: PLC0415 - start-up time
    from prep.stages.stats import stats as run  # noqa: PLC0415 - start-up time

    folder = len(targets) == 1 and os.path.isdir(targets[0])
    result = run(targets[0] if folder else Inputs(files=list(targets), format=format))
    if as_json:
        click.echo(json.dumps(result.stats, indent=2))
    else:
        print_stats(result.stats, Console(highlight=False))


@main.command()
@click.argument("target", type=click.Path(exists=True))
@options("report")
def report(target: str, output: str | None, tokenizer: str | None, quiet: bool) -> None:
    """One self-contained HTML page (it opens offline) of a run folder, a shard folder, a train folder or a
    validate report: row accounting, findings, token lengths, packing, decoded rows, training curves.

    \b
    Examples:
      prep report runs/quickstart                  # -> runs/quickstart/report.html
      prep report shards/packed -o packed.html
      prep report report.json -o findings.html     # a prep validate --report file
    """
    from prep.stages.report import report as run  # noqa: PLC0415 - start-up time

    result = run(target, output, tokenizer=tokenizer)
    if not quiet:
        for note in result.notes:
            click.echo(f"note: {note}", err=True)
        click.echo(f"{result.outputs['report']} ({result.bytes / 1024:,.0f} KB)", err=True)


@main.command()
@click.argument("shards", type=click.Path(exists=True, file_okay=False))
@options("export")
def export(shards: str, to: str, output: str, tokenizer: str | None, quiet: bool) -> None:
    """Write SHARDS as other tools take them, one row per document (packed rows are split at their
    document boundaries; the labels are the shards' own).

    \b
    Examples:
      prep export runs/quickstart/pack --to axolotl -o train.parquet     # axolotl: no `type:`
      prep export runs/quickstart/pack --to together -o train.parquet    # together files upload
      prep export runs/quickstart/pack --to hf-dataset -o train_ds       # datasets.load_from_disk
      prep export runs/quickstart/pack --to jsonl -o train.jsonl         # text and trained spans
    """
    from prep.stages.export import export as run  # noqa: PLC0415 - start-up time

    if to == "hf-dataset":
        _quiet_libraries()  # datasets' progress bars; the other targets load none of the train extra
    result = run(shards, to, output, tokenizer=tokenizer)
    if not quiet:
        click.echo(f"{result.tally.summary()} ({', '.join(result.columns)}) -> {output}", err=True)
        _report_rejects(result.tally, None)
    sys.exit(result.exit_code)


@main.command()
@click.argument("shards", type=click.Path(exists=True, file_okay=False))
@options("train")
def train(shards: str, quiet: bool, **kw: Any) -> None:
    """LoRA / QLoRA / full fine-tuning on SHARDS, exactly on the tokens and labels stored there: SFT on
    sft and pretrain shards; DPO, ORPO or a reward model on dpo shards; KTO on kto shards.

    \b
    Examples:
      prep train shards/packed --model runs/tiny-llama -o runs/lora
      prep train shards/packed --model ./Qwen2.5-0.5B --qlora --max-steps 200 --eval shards/val --save-steps 50 -o q/
      prep train shards/packed --model ./Qwen2.5-0.5B --max-steps 400 --save-steps 50 --resume -o q/
      prep train shards/dpo --model ./Qwen2.5-0.5B-Instruct --beta 0.1 --loss-type sigmoid -o runs/dpo
      prep train shards/dpo --model ./Qwen2.5-0.5B-Instruct --method reward -o runs/rm
      prep train shards/kto --model ./Qwen2.5-0.5B-Instruct --batch-size 8 -o runs/kto
    """
    from rich.console import Console  # noqa: PLC0415 - start-up time

    from prep.trainer.train import TrainOptions, summary_lines  # noqa: PLC0415 - start-up time
    from prep.trainer.train import train as run  # noqa: PLC0415 - start-up time

    options = TrainOptions(**kw)
    _quiet_libraries()
    with _Bar("train", quiet, "loading") as bar:
        result = run(shards, options, bar)
    _notes(result)
    if not quiet:
        console = Console(stderr=True, highlight=False)
        for line in summary_lines(result.report):
            console.print(line, soft_wrap=True)


@main.command("run")
@click.argument("recipe_file", metavar="RECIPE.yaml", type=click.Path(dir_okay=False))
@options("run")
def run_recipe(recipe_file: str, sets: tuple[str, ...], dry_run: bool, quiet: bool) -> None:
    """Run a recipe: convert -> validate -> tokenize -> pack -> train, skipping stages whose output is
    already there for the same inputs and options.

    Exit 0: done; 1: validation stopped the run, or some rows were rejected (kept in each stage's
    rejects.jsonl); 2: could not run (a bad recipe: the message names the line; or a stage could not
    run: the summary and run.json say which, after what the stages before it did).

    \b
    Examples:
      prep run recipes/quickstart.yaml
      prep run recipes/alpaca-ko-lora.yaml --set train.max_steps=200 --set output=runs/ko-200
      prep run recipes/quickstart.yaml --dry-run
    """
    from rich.console import Console  # noqa: PLC0415 - start-up time

    from prep.recipes.recipe import load_recipe  # noqa: PLC0415 - start-up time
    from prep.recipes.runner import (  # noqa: PLC0415 - start-up time
        RichView,
        plan,
        print_plan,
        print_summary,
        run,
        write_report,
        write_run_json,
    )

    recipe = load_recipe(recipe_file, sets)
    console = Console(stderr=True, highlight=False)
    if dry_run:
        print_plan(run(recipe, dry_run=True), console)
        return
    if "train" in recipe.stages:
        _quiet_libraries()
    if quiet:
        result = run(recipe)
    else:
        stages = plan(recipe)
        with RichView(stages, console) as view:
            result = run(recipe, view=view, stages=stages)
    print_summary(result, console, write_run_json(result), write_report(result))
    sys.exit(result.exit_code)


@main.command()
@click.argument("prompts", nargs=-1, required=True)
@options("generate")
def generate(prompts: tuple[str, ...], model: str, adapter: str | None, template: str | None, system: str | None,
             max_new_tokens: int, temperature: float) -> None:
    """Stream a completion for each PROMPT (quote each one) through the template the model was trained with.

    \b
    Examples:
      prep generate --model runs/tiny-llama --adapter out/adapter "Name three primary colours."
      prep generate --model runs/tiny-llama "Name three primary colours."    # the base model, to compare
    """
    from prep.trainer.generate import load  # noqa: PLC0415 - start-up time

    _quiet_libraries()
    generator = load(model, adapter, template)
    for note in generator.notes:
        click.echo(note, err=True)
    for i, prompt in enumerate(prompts):
        if len(prompts) > 1:
            click.echo(f"{'' if i == 0 else chr(10)}>>> {prompt}", err=True)
        generator(prompt, system=system, max_new_tokens=max_new_tokens, temperature=temperature,
                  on_text=lambda text: click.echo(text, nl=False))
        click.echo()


def _quiet_libraries() -> None:
    """prep train/generate draw their own progress: no loading bars or deprecation notes from the libraries."""
    import logging  # noqa: PLC0415 - start-up time
    import warnings  # noqa: PLC0415 - start-up time

    warnings.filterwarnings("ignore", category=FutureWarning, module=r"(transformers|trl|peft)\.")
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)  # its optional CPU kernel package is not needed
    try:
        import datasets  # noqa: PLC0415 - train extra
        from transformers.utils import logging as hf_logging  # noqa: PLC0415 - train extra
    except ImportError:  # the train extra is missing; prep.trainer says so
        return
    datasets.disable_progress_bars()
    hf_logging.disable_progress_bar()
