"""The `prep` command: a thin shell over the Python API (same verb names).

Exit codes everywhere: 0 done, 1 done but some rows rejected (or findings), 2 could not run.
User data never produces a traceback; set PREP_DEBUG=1 to see one for a bug in prep itself."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any

import click

from prep import __version__
from prep.core.findings import PrepError, Tally
from prep.files import CONTAINERS, TXT_SPLITS
from prep.formats import READABLE, WRITABLE
from prep.formats.inputs import SETTINGS
from prep.render.spans import OVERFLOW, TRAIN_ON


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
        except Exception as e:
            if os.environ.get("PREP_DEBUG"):
                raise
            click.echo(f"prep: internal error ({type(e).__name__}: {e}); this is a bug in prep, please report it "
                       "with PREP_DEBUG=1 set to include the traceback", err=True)
            ctx.exit(2)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="prep")
def main() -> None:
    """Turn fine-tuning data into validated, token-exact training shards."""


def _report_rejects(tally: Tally, rejects_file: str | None) -> None:
    """The first rejects of each reason, so a run without --rejects still says what went wrong where."""
    for rej in tally.examples:
        f = rej.findings[0]
        click.echo(f"  {rej.source} {f.path} {f.code}: {f.message}" + (f" ({f.hint})" if f.hint else ""), err=True)
    if tally.rejected_total > len(tally.examples):
        click.echo(f"  … and {tally.rejected_total - len(tally.examples)} more", err=True)
    if tally.rejected_total and not rejects_file:
        click.echo("  keep every rejected row with its reasons: --rejects FILE", err=True)


_INPUT_OPTIONS = (
    click.argument("args", nargs=-1, metavar="[FROM] INPUT..."),
    click.option("--from", "source", type=click.Choice(("auto", *READABLE)), help="Input format (same as FROM)."),
    click.option("--dataset-info", type=click.Path(), help="A LLaMA-Factory dataset_info.json (or its folder)."),
    click.option("--dataset", "datasets", multiple=True, help="Entry of --dataset-info to read (repeatable)."),
    click.option("--input-type", type=click.Choice(CONTAINERS), help="File type when the name does not tell."),
    click.option("--txt-split", type=click.Choice(TXT_SPLITS), default="file", show_default=True,
                 help="A .txt file is one document, or one per blank-line-separated paragraph, or per line."),
    click.option("--system", help="CoQA system prompt; {story} is replaced by the story."),
    click.option("--text-column", help="AutoTrain: dialogue/chosen column [text]."),
    click.option("--rejected-text-column", help="AutoTrain: rejected column [rejected_text]."),
    click.option("--prompt-text-column", help="AutoTrain: prompt column [prompt]."),
    click.option("--human-prefix", help="AutoTrain: user turn prefix [human:]."),
    click.option("--bot-prefix", help="AutoTrain: assistant turn prefix [bot:]."),
    click.option("--seed", default=42, show_default=True, help="Seed for dataset_info num_samples."),
)


def input_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The input side of every verb that reads records ([FROM] INPUT..., --from, --dataset-info/--dataset
    and the format options), defined once; the command receives them as one `inputs: Inputs`."""

    @functools.wraps(command)
    def wrapper(**kw: Any) -> Any:
        from prep.formats.inputs import Inputs

        files, source = list(kw.pop("args")), kw.pop("source")
        if files and files[0] in ("auto", *READABLE) and not os.path.exists(files[0]):
            if source and source != files[0]:
                raise click.UsageError(f"FROM {files[0]!r} and --from {source!r} disagree")
            source = files.pop(0)
        settings = {k: v for k in SETTINGS if (v := kw.pop(k)) is not None}
        kw["inputs"] = Inputs(files, source or "auto", settings, kw.pop("input_type"), kw.pop("txt_split"),
                              kw.pop("dataset_info"), kw.pop("datasets"), kw.pop("seed"))
        return command(**kw)

    for option in reversed(_INPUT_OPTIONS):
        wrapper = option(wrapper)
    return wrapper


def _require_inputs(inputs: Any) -> None:
    if not inputs.files and not inputs.datasets:
        raise click.UsageError("give INPUT files, or --dataset-info FILE --dataset NAME")


@main.command()
@input_options
@click.option("--to", "to", required=True, type=click.Choice(WRITABLE), help="Format to write.")
@click.option("-o", "--output", default="-", show_default=True,
              help="Output file (.jsonl .json .csv .tsv .parquet, optionally .gz/.zst); - for stdout.")
@click.option("--rejects", type=click.Path(dir_okay=False), help="Keep rejected rows with their reasons (JSONL).")
@click.option("--ids/--no-ids", default=True, show_default=True, help="Write each row's id.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")
def convert(inputs: Any, to: str, output: str, rejects: str | None, ids: bool, quiet: bool) -> None:
    """Convert INPUT files (or --dataset entries) to another format.

    FROM is `auto` (the default: detected per file) or one of alpaca, sharegpt, openai, trl,
    autotrain, coqa, text. Rows that cannot be converted are counted, shown and kept with
    --rejects; exit code 0: all converted, 1: some rejected, 2: could not run.

    \b
    Examples:
      prep convert coqa coqa-dev-v1.0.json --to openai -o coqa.jsonl
      prep convert autotrain chats.csv --text-column dialogue --to sharegpt -o chats.jsonl
      prep convert --dataset-info data/dataset_info.json --dataset glaive_toolcall_en_demo --to openai
    """
    from prep.stages.convert import convert as run

    _require_inputs(inputs)
    result = run(inputs, to, output, rejects=rejects, ids=ids)
    if not quiet:
        for path, fmt in result.formats.items():
            click.echo(f"{path}: read as {fmt}", err=True)
        click.echo(result.tally.summary() + ("" if output == "-" else f" -> {output}"), err=True)
        _report_rejects(result.tally, rejects)
    sys.exit(1 if result.tally.rejected_total else 0)


@main.command()
@click.argument("inputs", nargs=-1, required=True, metavar="INPUT...")
@click.option("--format", "fmt", type=click.Choice(("auto", *READABLE)), default="auto", show_default=True,
              help="Input format; detected per file by default.")
@click.option("--kind", type=click.Choice(("sft", "dpo", "kto", "pretrain")), help="Require rows of this kind.")
@click.option("--validation", multiple=True, type=click.Path(dir_okay=False),
              help="A validation file: checked too, and for near-duplicates of the training rows (repeatable). "
                   "Inputs named *val*/*valid*/*dev*/*eval*/*test* given beside others count as validation files.")
@click.option("--strict", is_flag=True, help="Warnings fail the run too (exit 1).")
@click.option("--report", "report_file", type=click.Path(dir_okay=False, allow_dash=True),
              help="Write every finding and the summary as JSON (- for stdout).")
@click.option("--rejects", type=click.Path(dir_okay=False), help="Keep the rows with errors, with their findings (JSONL).")
@click.option("--min-rows", default=1, show_default=True, type=click.IntRange(min=0),
              help="Fewest usable rows a file may have.")
@click.option("--max-findings", default=10_000, show_default=True, type=click.IntRange(min=0),
              help="Findings kept for the report; counts stay exact.")
@click.option("--max-chars", default=32_000, show_default=True, type=click.IntRange(min=1),
              help="Warn about rows longer than this many characters.")
@click.option("--input-type", type=click.Choice(CONTAINERS), help="File type when the name does not tell.")
@click.option("--txt-split", type=click.Choice(TXT_SPLITS), default="file", show_default=True,
              help="A .txt file is one document, or one per paragraph, or per line.")
@click.option("--text-column", help="AutoTrain: dialogue/chosen column [text].")
@click.option("--rejected-text-column", help="AutoTrain: rejected column [rejected_text].")
@click.option("--prompt-text-column", help="AutoTrain: prompt column [prompt].")
@click.option("--tokenizer", help="A tokenizer folder: adds token statistics and token-level checks.")
@click.option("--template", help="Chat template for --tokenizer (default: the tokenizer's own; see "
                                 "`prep template --list`).")
@click.option("--max-len", type=click.IntRange(min=2), help="With --tokenizer: report rows longer than this.")
@click.option("-q", "--quiet", is_flag=True, help="Print only the summary line.")
def validate(inputs: tuple[str, ...], fmt: str, kind: str | None, validation: tuple[str, ...], strict: bool,
             report_file: str | None, rejects: str | None, min_rows: int, max_findings: int, max_chars: int,
             input_type: str | None, txt_split: str, text_column: str | None, rejected_text_column: str | None,
             prompt_text_column: str | None, tokenizer: str | None, template: str | None, max_len: int | None,
             quiet: bool) -> None:
    """Check INPUT files row by row and report every problem with its line, JSON path and a hint.

    Exit 0: no errors; 1: errors (or warnings with --strict); 2: could not run.
    Example: prep validate train.jsonl --validation valid.jsonl --report report.json --rejects bad.jsonl
    """
    from prep.stages import validate_report as show
    from prep.stages.validate import validate as run

    settings = {k: v for k, v in dict(text_column=text_column, rejected_text_column=rejected_text_column,
                                      prompt_text_column=prompt_text_column).items() if v is not None}
    result = run(inputs, validation=validation, format=fmt, kind=kind, settings=settings, container=input_type,
                 txt_split=txt_split, strict=strict, rejects=rejects, min_rows=min_rows, max_findings=max_findings,
                 max_chars=max_chars, tokenizer=tokenizer, template=template, max_len=max_len)
    out = sys.stderr if report_file == "-" else sys.stdout
    if hasattr(out, "reconfigure"):
        out.reconfigure(errors="backslashreplace")  # a file name that is not UTF-8 must not crash the report
    show.show(result, out, quiet)
    if report_file == "-":
        sys.stdout.write(show.dumps(result))
    elif report_file:
        show.write_json(result, report_file)
    sys.exit(result.exit_code)


@main.command()
@input_options
@click.option("--template", "name", help="Template name (see --list); default: the --tokenizer's own chat template.")
@click.option("--tokenizer", help="Tokenizer folder: its chat template, and the BOS/EOS tokens templates write.")
@click.option("--train-on", type=click.Choice(TRAIN_ON), default="auto", show_default=True,
              help="Which spans carry loss: assistant turns, the last one, all text, or message contents.")
@click.option("-o", "--output", help="Write {id, text, spans} rows here (.jsonl .json .parquet ...); default: "
              "stdout, unless --show.")
@click.option("--show", type=click.IntRange(min=0), default=0, help="Print the first N rows, trained text in colour.")
@click.option("--rejects", type=click.Path(dir_okay=False), help="Keep rows that cannot be rendered, with reasons.")
@click.option("--list", "list_templates", is_flag=True, help="List the templates and exit.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")
def template(inputs: Any, name: str | None, tokenizer: str | None, train_on: str, output: str | None, show: int,
             rejects: str | None, list_templates: bool, quiet: bool) -> None:
    """Render INPUT conversations with a chat template: the exact text a model trains on, and the
    character spans that carry loss.

    \b
    Examples:
      prep template --list
      prep template samples/openai.jsonl --template chatml --show 2
      prep template data.jsonl --tokenizer ./Qwen2.5-7B-Instruct -o rendered.jsonl
    """
    from rich.console import Console

    from prep.render.templates import describe
    from prep.stages.template import template as run

    console = Console(highlight=False, soft_wrap=True)
    if list_templates:
        from rich.text import Text

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

    result = run(inputs, name, tokenizer, output or (None if show else "-"), train_on=train_on, rejects=rejects,
                 show=show_row if show else None)
    if not quiet:
        for path, fmt in result.formats.items():
            click.echo(f"{path}: read as {fmt}", err=True)
        click.echo(f"{result.tally.summary()} (template {result.template})" + (f" -> {output}" if output else ""),
                   err=True)
        _report_rejects(result.tally, rejects)
    sys.exit(1 if result.tally.rejected_total else 0)


def _highlight(row: dict[str, Any]) -> Any:
    """A rendered row as rich text: trained spans green, the rest grey (preference: prompt grey,
    chosen green, rejected red)."""
    from rich.text import Text

    from prep.stages.inspect import TRAINED, UNTRAINED

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


@main.command()
@input_options
@click.option("--tokenizer", required=True, help="Tokenizer folder (tokenizer.json, tokenizer_config.json), or a "
              "hub id already in the local cache.")
@click.option("--template", "name", help="Template (prep template --list); default: the tokenizer's own.")
@click.option("--kind", type=click.Choice(("sft", "dpo", "kto", "pretrain")),
              help="Shard kind; default: from the first record (chat: sft, preference: dpo, feedback: kto, "
              "text: pretrain).")
@click.option("--train-on", type=click.Choice(TRAIN_ON), default="auto", show_default=True,
              help="Loss on: every assistant turn, the last one, all tokens, or message contents.")
@click.option("--max-len", type=click.IntRange(min=2), help="Longest row in tokens.")
@click.option("--overflow", type=click.Choice(OVERFLOW), default="drop", show_default=True,
              help="A row over --max-len: reject it, cut it (keeping the EOS trained), or drop trailing turns.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Processes tokenizing batches (order and output do not depend on it).")
@click.option("-o", "--output", "outdir", required=True, type=click.Path(file_okay=False), help="Shard folder.")
@click.option("--rejects", type=click.Path(dir_okay=False), help="Keep rejected and cut rows with reasons (JSONL).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or summary.")
def tokenize(inputs: Any, tokenizer: str, name: str | None, kind: str | None, train_on: str, max_len: int | None,
             overflow: str, workers: int, outdir: str, rejects: str | None, quiet: bool) -> None:
    """Tokenize INPUT records into unpacked shards: token ids and labels, token-exact.

    \b
    Examples:
      prep tokenize data.jsonl --tokenizer ./Qwen2.5-7B-Instruct -o shards/
      prep tokenize alpaca_data.json --tokenizer ./llama3 --template llama3 --max-len 2048 --overflow truncate -o s/
      prep tokenize --dataset-info data/dataset_info.json --dataset dpo_en_demo --tokenizer ./tok -o dpo/
    """
    import time

    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from prep.stages.tokenize import tokenize as run

    _require_inputs(inputs)
    console = Console(stderr=True, highlight=False)
    with Progress(TextColumn("[bold]tokenize"), BarColumn(), TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
                  console=console, disable=quiet) as bar:
        task = bar.add_task("tokenize", total=None, info="loading the tokenizer")
        done = [0, 0, time.perf_counter()]  # rows, tokens, when tokenizing started

        def progress(rows: int, tokens: int) -> None:
            if not rows and not done[0]:  # called once before the first batch: rates leave out loading
                done[2] = time.perf_counter()
            done[0] += rows
            done[1] += tokens
            took = max(time.perf_counter() - done[2], 1e-9)
            bar.update(task, info=f"{done[0]:,} rows {done[1]:,} tokens  {done[0] / took:,.0f} rows/s "
                       f"{done[1] / took:,.0f} tokens/s")

        result = run(inputs, tokenizer, outdir, template=name, kind=kind, train_on=train_on, max_len=max_len,
                     overflow=overflow, workers=workers, rejects=rejects, progress=progress)
    if not quiet:
        for path, fmt in result.formats.items():
            click.echo(f"{path}: read as {fmt}", err=True)
        m = result.manifest
        trained = f", {m['tokens']['loss']:,} trained" if m["kind"] in ("sft", "pretrain") else ""
        click.echo(f"{result.tally.summary()}; {m['tokens']['total']:,} tokens{trained} ({m['kind']}, template "
                   f"{(m['template'] or {}).get('name', 'none')}) -> {outdir}", err=True)
        _report_rejects(result.tally, rejects)
    sys.exit(1 if result.tally.rejected_total else 0)


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
@click.argument("indir", type=click.Path(exists=True, file_okay=False))
@click.option("-o", "--output", "outdir", required=True, type=click.Path(file_okay=False), help="Folder for packed shards.")
@click.option("--max-len", required=True, type=click.IntRange(min=2), help="Tokens per packed row.")
@click.option("--strategy", type=click.Choice(("bfd", "wrap")), default="bfd", show_default=True,
              help="bfd: whole documents, best-fit decreasing; wrap: concatenate and cut (pretraining).")
@click.option("--seed", default=0, show_default=True, help="Seed for the order of packed rows.")
@click.option("--window", default=100_000, show_default=True, type=click.IntRange(min=0),
              help="Documents packed together (0: the whole input at once).")
@click.option("--shard-size", default="256MB", show_default=True, help="Shard bound: 256MB, 2GB or 50000rows.")
@click.option("--rejects", type=click.Path(dir_okay=False), help="Keep rows too long to pack, with reasons.")
@click.option("-q", "--quiet", is_flag=True)
def pack(indir: str, outdir: str, max_len: int, strategy: str, seed: int, window: int, shard_size: str,
         rejects: str | None, quiet: bool) -> None:
    """Pack tokenized shards in INDIR into rows of at most --max-len tokens."""
    from prep.stages.pack import pack as run

    rows, mb = _parse_size(shard_size)
    manifest = run(indir, outdir, max_len, strategy=strategy, seed=seed, window=window, shard_rows=rows,
                   shard_mb=mb, rejects=rejects)
    counts = manifest["counts"]
    if not quiet:
        packing = manifest["packing"]
        click.echo(f"read {counts['read']} documents, packed {counts['written']} into {counts['rows']} rows of "
                   f"<= {max_len} tokens ({packing['strategy']}, efficiency {packing.get('efficiency', 0):.2%}), "
                   f"rejected {sum(counts['rejected'].values())} -> {outdir}", err=True)
    sys.exit(1 if counts["rejected"] else 0)


@main.command()
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@click.option("-q", "--quiet", is_flag=True, help="Print only the findings.")
def verify(folder: str, quiet: bool) -> None:
    """Check a shard folder against its manifest: sha256 of every shard, schema, row invariants, counts."""
    from prep.shards.verify import verify as run

    result = run(folder)
    for f in result.findings:
        click.echo(f"{f.file}:{f.line} {f.path} {f.code}: {f.message}" if f.line else f"{f.file} {f.path} {f.code}: "
                   f"{f.message}", err=True)
    hidden = sum(result.counts.values()) - len(result.findings)
    if hidden:
        click.echo(f"… and {hidden} more", err=True)
    if not quiet:
        verdict = "OK" if result.ok else f"FAILED ({result.errors} errors)"
        click.echo(f"{folder}: {verdict}: {result.rows} rows, {result.tokens} tokens checked", err=True)
    sys.exit(0 if result.ok else 1)


@main.command()
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@click.option("--row", default=0, show_default=True, type=click.IntRange(min=0), help="Row to show (0-based).")
@click.option("--ids", "show_ids", is_flag=True, help="Show every token with its id.")
@click.option("--tokenizer", help="Tokenizer folder, if the one recorded in the manifest has moved.")
def inspect(folder: str, row: int, show_ids: bool, tokenizer: str | None) -> None:
    """Decode one shard row: trained tokens in colour, document boundaries marked."""
    from rich.console import Console

    from prep.stages.inspect import inspect_row

    inspect_row(folder, row, tokenizer=tokenizer, show_ids=show_ids, console=Console(highlight=False))


@main.command()
@click.argument("targets", nargs=-1, required=True, metavar="INPUT_OR_DIR...")
@click.option("--from", "source", type=click.Choice(("auto", *READABLE)), default="auto",
              help="Input format, for input files.")
@click.option("--json", "as_json", is_flag=True, help="Print the statistics as JSON.")
def stats(targets: tuple[str, ...], source: str, as_json: bool) -> None:
    """Counts, token-length histogram, packing efficiency and trained share of a shard folder
    (or records, messages and characters of input files)."""
    import json

    from rich.console import Console

    from prep.formats.inputs import Inputs
    from prep.stages.stats import print_stats
    from prep.stages.stats import stats as run

    target = targets[0] if len(targets) == 1 else list(targets)
    result = run(target, Inputs(files=list(targets), format=source))
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        print_stats(result, Console(highlight=False))


@main.command()
@click.argument("shards", type=click.Path(exists=True, file_okay=False))
@click.option("--model", required=True, help="Base model: a local folder (or a hub id where the hub is reachable).")
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False), help="Folder for adapter and report.")
@click.option("--lora-r", default=16, show_default=True, type=click.IntRange(min=1))
@click.option("--lora-alpha", default=32, show_default=True, type=click.IntRange(min=1))
@click.option("--lora-dropout", default=0.05, show_default=True, type=click.FloatRange(0, 1, max_open=True))
@click.option("--target-modules", default="all-linear", show_default=True, help="all-linear or q_proj,v_proj,...")
@click.option("--use-rslora", is_flag=True, help="Rank-stabilised LoRA scaling (alpha / sqrt(r)).")
@click.option("--use-dora", is_flag=True, help="Weight-decomposed LoRA.")
@click.option("--qlora", is_flag=True, help="4-bit NF4 base with double quantization (bitsandbytes).")
@click.option("--full", is_flag=True, help="Train every weight, no adapter.")
@click.option("--lr", default=2e-4, show_default=True, type=click.FloatRange(min=0, min_open=True))
@click.option("--epochs", default=1.0, show_default=True, type=click.FloatRange(min=0))
@click.option("--max-steps", default=-1, show_default=True, type=click.IntRange(min=-1),
              help="Stop after this many steps (overrides --epochs).")
@click.option("--batch-size", default=4, show_default=True, type=click.IntRange(min=1),
              help="Rows per device step (packed rows when packed).")
@click.option("--grad-accum", default=1, show_default=True, type=click.IntRange(min=1))
@click.option("--warmup-ratio", default=0.03, show_default=True, type=click.FloatRange(0, 1, max_open=True),
              help="Share of the training steps spent warming the learning rate up.")
@click.option("--scheduler", default="cosine", show_default=True,
              type=click.Choice(("cosine", "linear", "constant", "constant_with_warmup", "cosine_with_restarts")))
@click.option("--weight-decay", default=0.0, show_default=True, type=click.FloatRange(min=0))
@click.option("--seed", default=42, show_default=True)
@click.option("--gradient-checkpointing", is_flag=True)
@click.option("--attn-implementation",
              type=click.Choice(("sdpa", "eager", "flash_attention_2", "flash_attention_3", "flex_attention")),
              help="Attention kernel (default: transformers' choice, sdpa). With flash_attention_2/3 on a GPU the "
                   "packed rows of a step are concatenated, without padding.")
@click.option("--eval", "eval_shards", type=click.Path(exists=True, file_okay=False), help="Shards to evaluate on.")
@click.option("--save-steps", type=click.IntRange(min=1), help="Checkpoint (and evaluate) every N steps.")
@click.option("--resume", is_flag=True, help="Continue from the last checkpoint in OUTPUT.")
@click.option("--merge", is_flag=True, help="Also save the base model with the adapter merged in.")
@click.option("--report-to", type=click.Choice(("none", "tensorboard")), default="none", show_default=True)
@click.option("--force", is_flag=True, help="Train even if the tokenizer fingerprints differ.")
@click.option("-q", "--quiet", is_flag=True)
def train(shards: str, model: str, output: str, quiet: bool, eval_shards: str | None, **kw: Any) -> None:
    """LoRA / QLoRA / full fine-tuning on SHARDS, exactly on the tokens and labels stored there.

    \b
    Examples:
      prep train shards/packed --model runs/tiny-llama -o runs/lora
      prep train shards/packed --model ./Qwen2.5-0.5B --qlora --max-steps 200 --eval shards/val --save-steps 50 -o q/
      prep train shards/packed --model ./Qwen2.5-0.5B --max-steps 400 --save-steps 50 --resume -o q/
    """
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from prep.trainer.train import TrainOptions, summary_lines
    from prep.trainer.train import train as run

    options = TrainOptions(model=model, output=output, eval=eval_shards, **kw)
    _quiet_libraries()
    console = Console(stderr=True, highlight=False)
    with Progress(TextColumn("[bold]train"), BarColumn(), TextColumn("step {task.completed}/{task.total}"),
                  TextColumn("{task.fields[info]}"), TimeRemainingColumn(), console=console,
                  disable=quiet) as bar:
        task = bar.add_task("train", total=None, info="loading")

        def progress(point: dict[str, Any]) -> None:
            bar.update(task, completed=point["step"], total=point["max_steps"],
                       info=f"loss {point['loss']:.4f}  {point['tokens_per_s']:.0f} tok/s")

        report = run(shards, options, progress)
    if not quiet:
        for line in summary_lines(report):
            console.print(line, soft_wrap=True)


@main.command("run")
@click.argument("recipe_file", metavar="RECIPE.yaml", type=click.Path(dir_okay=False))
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Override a recipe value, e.g. --set train.max_steps=50 --set output=/tmp/run (repeatable; the "
                   "value is read as YAML; paths are relative to the current folder).")
@click.option("--dry-run", is_flag=True, help="Print the stages, their keys and which would run; run nothing.")
@click.option("-q", "--quiet", is_flag=True, help="No progress view; print the summary only.")
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
    from rich.console import Console

    from prep.recipes.recipe import load_recipe
    from prep.recipes.runner import RichView, plan, print_plan, print_summary, run, write_run_json

    recipe = load_recipe(recipe_file, sets)
    console = Console(stderr=True, highlight=False)
    if dry_run:
        print_plan(run(recipe, dry_run=True), console)
        return
    _quiet_libraries()
    if quiet:
        result = run(recipe)
    else:
        stages = plan(recipe)
        with RichView(stages, console) as view:
            result = run(recipe, view=view, stages=stages)
    print_summary(result, console, write_run_json(result))
    sys.exit(result.exit_code)


@main.command()
@click.argument("prompts", nargs=-1, required=True)
@click.option("--model", required=True, type=click.Path(exists=True, file_okay=False), help="Base (or merged) model folder.")
@click.option("--adapter", type=click.Path(exists=True, file_okay=False), help="Adapter folder from prep train; "
              "without it the base model answers, for comparison.")
@click.option("--template", help="Template (prep template --list); default: the one the adapter's shards used.")
@click.option("--system", help="A system message before each prompt.")
@click.option("--max-new-tokens", default=128, show_default=True, type=click.IntRange(min=1))
@click.option("--temperature", default=0.0, show_default=True, type=click.FloatRange(min=0),
              help="0: greedy decoding; above 0: sampling at this temperature.")
def generate(prompts: tuple[str, ...], model: str, adapter: str | None, template: str | None, system: str | None,
             max_new_tokens: int, temperature: float) -> None:
    """Stream a completion for each PROMPT (quote each one) through the template the model was trained with.

    \b
    Examples:
      prep generate --model runs/tiny-llama --adapter out/adapter "Name three primary colours."
      prep generate --model runs/tiny-llama "Name three primary colours."    # the base model, to compare
    """
    from prep.trainer.generate import load

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
    import logging
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning, module=r"(transformers|trl|peft)\.")
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)  # its optional CPU kernel package is not needed
    try:
        import datasets
        from transformers.utils import logging as hf_logging
    except ImportError:  # the train extra is missing; prep.train says so
        return
    datasets.disable_progress_bars()
    hf_logging.disable_progress_bar()
