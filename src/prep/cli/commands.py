"""The `prep` command's verbs: each is its options (from the tables) and docstring, run by the shell
(prep.cli.shell) through prep.verbs, with what only it shows (validate's findings, stats' tables, a rendered row).

The verbs' modules are imported inside each command, so `prep --help` and a verb that needs little load little."""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from prep.cli.shell import input_options, main, options, run_verb

# ---------------------------------------------------------------- the verbs


@main.command()
@input_options
@options("convert")
def convert(**values: Any) -> None:
    """Convert INPUT files (or --dataset entries) to another format.

    FROM is `auto` (the default: detected per file) or one of alpaca, sharegpt, openai, lf_parts,
    trl, autotrain, coqa, text. Rows that cannot be converted are counted, shown and kept with
    --rejects; exit code 0: all converted, 1: some rejected, 2: could not run.

    \b
    Examples:
      prep convert coqa coqa-dev-v1.0.json --to openai -o coqa.jsonl
      prep convert autotrain chats.csv --text-column dialogue --to sharegpt -o chats.jsonl
      prep convert --dataset-info data/dataset_info.json --dataset glaive_toolcall_en_demo --to openai
      prep convert --dataset-info data --dataset mllm_demo --to openai -o mllm.jsonl    # images as data URLs
      prep convert mllm.jsonl --to sharegpt -o lf/mllm.json          # and back as files, lf/media/<sha256>.jpg
    """
    run_verb("convert", values, "starting Ray" if values["engine"] == "ray" else "reading")


@main.command()
@input_options
@options("validate")
def validate(**values: Any) -> None:
    """Check INPUT files row by row and report every problem with its line, JSON path and a hint.

    Exit 0: no errors; 1: errors (or warnings with --strict); 2: could not run.
    Example: prep validate train.jsonl --validation valid.jsonl --report report.json --rejects bad.jsonl
    """
    from prep.stages import validate_report as show  # noqa: PLC0415 - start-up time

    report = values["report"]

    def display(result: Any) -> None:
        out = sys.stderr if report == "-" else sys.stdout
        if hasattr(out, "reconfigure"):
            out.reconfigure(errors="backslashreplace")  # a file name that is not UTF-8 must not crash the report
        show.show(result, out, values["quiet"])
        if result.engine and not values["quiet"]:
            click.echo(result.where().strip(" ()"), err=True)
        if report == "-":
            sys.stdout.write(show.dumps(result))
        elif report:
            show.write_json(result, report)

    run_verb("validate", values, display=display)


@main.command()
@input_options
@options("template")
def template(**values: Any) -> None:
    """Render INPUT conversations with a chat template: the exact text a model trains on, and the
    character spans that carry loss.

    \b
    Examples:
      prep template --list
      prep template samples/openai.jsonl --template chatml --show 2
      prep template data.jsonl --tokenizer ./Qwen2.5-7B-Instruct -o rendered.jsonl
    """
    from rich.console import Console  # noqa: PLC0415 - start-up time

    console = Console(highlight=False, soft_wrap=True)
    if values.pop("list_templates"):
        from rich.text import Text  # noqa: PLC0415 - start-up time

        from prep.render.templates import describe  # noqa: PLC0415 - start-up time

        for n, summary in describe():
            console.print(Text.assemble((f"{n:<10}", "bold"), " ", summary))
        return
    show, shown = values.pop("show"), []

    def show_row(row: dict[str, Any]) -> None:
        if len(shown) < show:
            shown.append(row["id"])
            console.rule(f"{row['id']}", align="left")
            console.print(_highlight(row))

    values["output"] = values["output"] or (None if show else "-")
    run_verb("template", values, on_row=show_row if show else None)


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


@main.command()
@input_options
@options("tokenize")
def tokenize(**values: Any) -> None:
    """Tokenize INPUT records into unpacked shards: token ids and labels, token-exact.

    \b
    Examples:
      prep tokenize data.jsonl --tokenizer ./Qwen2.5-7B-Instruct -o shards/
      prep tokenize alpaca_data.json --tokenizer ./llama3 --template llama3 --max-len 2048 --overflow truncate -o s/
      prep tokenize --dataset-info data/dataset_info.json --dataset dpo_en_demo --tokenizer ./tok -o dpo/
    """
    if values.get("tokenizer") and values.get("engine", "local") == "local":
        from prep.render.tokenizer import preload_tokenizer  # noqa: PLC0415 - start-up time

        preload_tokenizer(values["tokenizer"])  # before pyarrow is imported: their peaks do not add up
    run_verb("tokenize", values, "loading the tokenizer")


@main.command()
@input_options
@options("mix")
def mix(**values: Any) -> None:
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
    run_verb("mix", values)


@main.command()
@input_options
@options("dedup")
def dedup(**values: Any) -> None:
    """Remove exact and near-duplicate rows within and across INPUT files; each removed row is a reject
    naming the row it repeats (duplicate_of), which stays.

    \b
    Examples:
      prep dedup a.jsonl b.jsonl -o clean.jsonl --rejects removed.jsonl
      prep dedup data.jsonl --exact --fields user -o clean.jsonl
    """
    run_verb("dedup", values)


@main.command()
@input_options
@options("split")
def split(**values: Any) -> None:
    """Split INPUT files into DIR/train.jsonl and DIR/validation.jsonl, keeping exact and near-duplicate
    groups on one side (so no validation row has a twin in train).

    \b
    Examples:
      prep split a.jsonl b.jsonl c.jsonl --val 0.05 --per-source -o data/split
      prep split data.jsonl --val 500 --seed 1 -o data/split
    """
    run_verb("split", values)


@main.command()
@input_options
@options("decontaminate")
def decontaminate(**values: Any) -> None:
    """Drop the INPUT rows that share an n-gram with an item of a benchmark (--against, repeatable); each
    reject names the benchmark file, line and n-gram.

    \b
    Examples:
      prep decontaminate train.jsonl --against gsm8k_test.jsonl --against mmlu.parquet --field question -o clean.jsonl
      prep decontaminate zh.jsonl --against ceval.csv --ngram 20 -o clean.jsonl --rejects hits.jsonl
    """
    run_verb("decontaminate", values)


@main.command()
@click.argument("shards", type=click.Path(exists=True, file_okay=False))
@options("pack")
def pack(**values: Any) -> None:
    """Pack tokenized shards in SHARDS into rows of at most --max-len tokens."""
    run_verb("pack", values)


@main.command()
@click.argument("shards", type=click.Path(exists=True, file_okay=False))
@options("verify")
def verify(**values: Any) -> None:
    """Check a shard folder against its manifest: sha256 of every shard, schema, row invariants, counts."""

    def display(result: Any) -> None:
        for f in result.findings:
            click.echo(f"{f.file}:{f.line} {f.path} {f.code}: {f.message}" if f.line else
                       f"{f.file} {f.path} {f.code}: {f.message}", err=True)
        if hidden := sum(result.counts.values()) - len(result.findings):
            click.echo(f"… and {hidden} more", err=True)
        if not values["quiet"]:
            click.echo(result.summary(), err=True)

    run_verb("verify", values, display=display)


@main.command()
@click.argument("shards", type=click.Path(exists=True, file_okay=False))
@options("inspect")
def inspect(**values: Any) -> None:
    """Decode one shard row: trained tokens in colour, document boundaries marked."""
    from rich.console import Console  # noqa: PLC0415 - start-up time

    run_verb("inspect", values, display=lambda result: None, console=Console(highlight=False))  # the row is printed


@main.command()
@click.argument("targets", nargs=-1, required=True, metavar="INPUT_OR_DIR...")
@options("stats")
def stats(**values: Any) -> None:
    """Counts, token-length histogram, packing efficiency and trained share of a shard folder
    (or records, messages and characters of input files). Exit 1 when the folder's maker rejected rows."""

    def display(result: Any) -> None:
        if values["as_json"]:
            import json  # noqa: PLC0415 - start-up time

            click.echo(json.dumps(result.stats, indent=2))
        else:
            from rich.console import Console  # noqa: PLC0415 - start-up time

            from prep.stages.stats import print_stats  # noqa: PLC0415 - start-up time

            print_stats(result.stats, Console(highlight=False))

    run_verb("stats", values, display=display)


@main.command()
@click.argument("target", type=click.Path(exists=True))
@options("report")
def report(**values: Any) -> None:
    """One self-contained HTML page (it opens offline) of a run folder, a shard folder, a train folder or a
    validate report: row accounting, findings, token lengths, packing, decoded rows, training curves.

    \b
    Examples:
      prep report runs/quickstart                  # -> runs/quickstart/report.html
      prep report shards/packed -o packed.html
      prep report report.json -o findings.html     # a prep validate --report file
    """
    run_verb("report", values, display=lambda result: values["quiet"] or click.echo(result.summary(), err=True))


@main.command()
@click.argument("shards", type=click.Path(exists=True, file_okay=False))
@options("export")
def export(**values: Any) -> None:
    """Write SHARDS as other tools take them, one row per document (packed rows are split at their
    document boundaries; the labels are the shards' own).

    \b
    Examples:
      prep export runs/quickstart/pack --to axolotl -o train.parquet     # axolotl: no `type:`
      prep export runs/quickstart/pack --to together -o train.parquet    # together files upload
      prep export runs/quickstart/pack --to hf-dataset -o train_ds       # datasets.load_from_disk
      prep export runs/quickstart/pack --to jsonl -o train.jsonl         # text and trained spans
      prep export shards/rl --to trl-grpo -o grpo.jsonl                  # prompt shards: messages + answers
    """
    if values["to"] == "hf-dataset":
        _quiet_libraries()  # datasets' progress bars; the other targets load none of the train extra
    run_verb("export", values)


@main.command()
@click.argument("shards", type=click.Path(exists=True, file_okay=False))
@options("train")
def train(**values: Any) -> None:
    """LoRA / QLoRA / full fine-tuning on SHARDS, exactly on the tokens and labels stored there: SFT on
    sft and pretrain shards; DPO, ORPO or a reward model on dpo shards; KTO on kto shards; GRPO (online RL,
    scored by --reward) on prompt shards.

    \b
    Examples:
      prep train shards/packed --model runs/tiny-llama -o runs/lora
      prep train shards/packed --model ./Qwen2.5-0.5B --qlora --max-steps 200 --eval shards/val --save-steps 50 -o q/
      prep train shards/packed --model ./Qwen2.5-0.5B --max-steps 400 --save-steps 50 --resume -o q/
      prep train shards/dpo --model ./Qwen2.5-0.5B-Instruct --beta 0.1 --loss-type sigmoid -o runs/dpo
      prep train shards/dpo --model ./Qwen2.5-0.5B-Instruct --method reward -o runs/rm
      prep train shards/kto --model ./Qwen2.5-0.5B-Instruct --batch-size 8 -o runs/kto
      prep train shards/rl --model ./Qwen2.5-0.5B-Instruct --reward math:answer --reward format --beta 0 -o runs/grpo
    """

    def display(result: Any) -> None:
        if not values["quiet"]:
            from rich.console import Console  # noqa: PLC0415 - start-up time

            console = Console(stderr=True, highlight=False)
            for line in result.breakdown():
                console.print(line, soft_wrap=True)

    from prep.trainer import ranks  # noqa: PLC0415 - start-up time (it imports nothing heavy)

    values["quiet"] = values["quiet"] or not ranks.is_main()  # under torchrun: one progress and summary, rank 0's
    _quiet_libraries()
    run_verb("train", values, "loading", display=display)


@main.command("run")
@click.argument("recipe_file", metavar="RECIPE.yaml", type=click.Path(dir_okay=False))
@options("run")
def run_recipe(recipe_file: str, sets: tuple[str, ...], dry_run: bool, quiet: bool, events: str | None) -> None:
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
      prep run recipes/quickstart.yaml -q --events events.jsonl    # follow it: tail -f events.jsonl
    """
    import contextlib  # noqa: PLC0415 - start-up time

    from rich.console import Console  # noqa: PLC0415 - start-up time

    from prep.recipes.recipe import load_recipe  # noqa: PLC0415 - start-up time
    from prep.recipes.runner import plan, run, write_report, write_run_json  # noqa: PLC0415 - start-up time
    from prep.recipes.view import EventsView, RichView, print_plan, print_summary  # noqa: PLC0415 - start-up time

    recipe = load_recipe(recipe_file, sets)
    console = Console(stderr=True, highlight=False)
    if dry_run:
        print_plan(run(recipe, dry_run=True), console)
        return
    if "train" in recipe.stages:
        _quiet_libraries()
    stages = plan(recipe)
    with contextlib.ExitStack() as stack:
        view = None if quiet else stack.enter_context(RichView(stages, console))
        if events:
            view = EventsView(stages, stack.enter_context(open(events, "w", encoding="utf-8")), view)
        result = run(recipe, view=view, stages=stages)
    print_summary(result, console, write_run_json(result), write_report(result))
    sys.exit(result.exit_code)


@main.command()
@click.argument("root", default=".", type=click.Path(exists=True, file_okay=False))
@options("ui")
def ui(root: str, host: str, port: int, token: str | None) -> None:
    """A local web app over ROOT (default: this folder): look at the data and its findings, see a row's trained
    tokens, build a recipe from the options table, run it and watch it, compare runs. It reads and writes only
    under ROOT, listens on this machine only unless --host says otherwise (then --token is needed), and fetches
    nothing from the network. Needs the ui extra: pip install 'prep[ui]'.

    \b
    Examples:
      prep ui                                     # prints http://127.0.0.1:PORT/ (a free port)
      prep ui ~/data --port 8765
      prep ui . --host 0.0.0.0 --token "$(openssl rand -hex 16)"
    """
    from prep.core.extras import require_ui_extra  # noqa: PLC0415 - start-up time

    require_ui_extra()
    from prep.ui.app import serve  # noqa: PLC0415 - start-up time: the web framework only when the app starts

    serve(root, host, port, token)


@main.command()
@click.argument("prompts", nargs=-1, required=True)
@options("generate")
def generate(prompts: tuple[str, ...], model: str, adapter: str | None, template: str | None, system: str | None,
             max_new_tokens: int, temperature: float) -> None:
    """Stream a completion for each PROMPT (quote each one) through the template the model was trained with.

    \b
    Examples:
      prep generate --model runs/tiny-llama --adapter out/adapter "Name three primary colours."
      prep generate --model runs/tiny-llama --template chatml "Name three primary colours."  # the base model
    """
    from prep.trainer.generate import garbled_note, load  # noqa: PLC0415 - start-up time

    _quiet_libraries()
    generator = load(model, adapter, template)
    for note in generator.notes:
        click.echo(note, err=True)
    for i, prompt in enumerate(prompts):
        if len(prompts) > 1:
            click.echo(f"{'' if i == 0 else chr(10)}>>> {prompt}", err=True)
        text = generator(prompt, system=system, max_new_tokens=max_new_tokens, temperature=temperature,
                         on_text=lambda piece: click.echo(piece, nl=False))
        click.echo()
        if note := garbled_note(text):
            click.echo(note, err=True)


def _quiet_libraries() -> None:
    """prep train/generate draw their own progress: no loading bars or deprecation notes from the libraries. Said
    through their environment variables, so nothing is imported before a stage actually trains."""
    import logging  # noqa: PLC0415 - start-up time
    import warnings  # noqa: PLC0415 - start-up time

    warnings.filterwarnings("ignore", category=FutureWarning, module=r"(transformers|trl|peft)\.")
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)  # its optional CPU kernel package is not needed
    for name in ("HF_DATASETS_DISABLE_PROGRESS_BARS", "HF_HUB_DISABLE_PROGRESS_BARS"):  # datasets; transformers
        os.environ.setdefault(name, "1")
