"""The shell every `prep` verb runs in: click options built from the options tables (prep.core.options), one
line for every refusal (exit 2), the output guard and SIGTERM before a verb starts, one progress meter, the
result's own summary, and the result's exit code.

Exit codes everywhere: 0 done, 1 done but some rows rejected (or findings), 2 could not run.
User data never produces a traceback; set PREP_DEBUG=1 to see one for a bug in prep itself."""

from __future__ import annotations

import contextlib
import errno
import functools
import importlib.util
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

import click

from prep import __version__
from prep.core.findings import PrepError, Tally
from prep.core.options import READABLE, TABLES, Option
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
            if _interrupted(e):  # Ctrl-C or SIGTERM landed inside threading's lock handling, which then failed
                click.echo("prep: interrupted; no output was left half-written", err=True)
                ctx.exit(130)
            if os.environ.get("PREP_DEBUG"):
                raise
            click.echo(f"prep: internal error ({type(e).__name__}: {e}); this is a bug in prep, please report it "
                       "with PREP_DEBUG=1 set to include the traceback", err=True)
            ctx.exit(2)


def _interrupted(error: BaseException) -> bool:
    """Whether `error` was raised while a KeyboardInterrupt was being handled: a signal that arrives while the main
    thread waits on a pool's result can interrupt `threading.Condition` between its lock's release and acquire, and
    the `with` then fails with "release unlocked lock" (seen once in 1,245 tests under SIGTERM)."""
    seen: set[int] = set()
    at: BaseException | None = error
    while at is not None and id(at) not in seen:
        if isinstance(at, KeyboardInterrupt):
            return True
        seen.add(id(at))
        at = at.__context__
    return False


# The parameters of the verbs that name what they read, and those that name what they write.
_READS = ("files", "validation", "against", "shards", "target", "targets", "dataset_info", "tokenizer", "model",
          "adapter", "eval", "recipe_file")
_WRITES = {"output": "-o", "rejects": "--rejects", "report": "--report", "events": "--events"}


def _terminate(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # SIGTERM cleans up as Ctrl-C does: temporary files removed, no half output


class _Command(click.Command):
    """A verb: its outputs are checked against its inputs before it starts (files.guard.check_outputs), and SIGTERM
    stops it as Ctrl-C does."""

    def invoke(self, ctx: click.Context) -> Any:
        import prep.shards.layout  # noqa: F401, PLC0415 - registers the names in shard folders with files.guard
        from prep.files.guard import check_outputs  # noqa: PLC0415 - start-up time

        reads: list[str] = []
        for name in _READS:
            value = ctx.params.get(name)
            reads += [value] if isinstance(value, str) else list(value or ())
        check_outputs(reads, {flag: ctx.params.get(name) for name, flag in _WRITES.items()})
        before = signal.signal(signal.SIGTERM, _terminate)
        try:
            return super().invoke(ctx)
        except OSError as e:  # a write that failed for want of space says nothing of where: name the output
            if e.filename is None and e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                e.filename = next((str(v) for k in _WRITES if (v := ctx.params.get(k)) not in (None, "-")), None)
            raise
        finally:  # a caller running the CLI in its own process (a test, a notebook) gets its handler back
            signal.signal(signal.SIGTERM, before)


_Group.command_class = _Command


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="prep")
def main() -> None:
    """Turn fine-tuning data into validated, token-exact training shards."""
    # Arrow's default pool (jemalloc) holds on to freed buffers: the system allocator keeps ~50 MB off the peak
    # RSS of prep tokenize at the same speed (bench/tokenize_speed.py). Set before pyarrow loads; a user's wins.
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
    # numpy's OpenBLAS starts a thread per core as it loads: 50-100 ms of a data verb's start-up, for linear algebra
    # no data verb does. The verbs that may train keep the user's setting (their compute is torch's own).
    if click.get_current_context().invoked_subcommand not in _MAY_TRAIN:
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


_MAY_TRAIN = frozenset({"train", "generate", "run", "ui"})


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
        elif option.choices or option.type in (int, float) or option.pattern:
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
    """The input side of every verb that reads records ([FROM] INPUT..., --from, --dataset-info/--dataset and the
    format options), passed on as the inputs table's names; a first INPUT that names a format is FROM."""

    @functools.wraps(command)
    def wrapper(**kw: Any) -> Any:
        files = list(kw["files"])
        if files and files[0] in ("auto", *READABLE) and not os.path.exists(files[0]):
            if kw["format"] not in ("auto", files[0]):
                raise click.UsageError(f"FROM {files[0]!r} and --from {kw['format']!r} disagree")
            kw["format"] = files.pop(0)
        kw["files"] = files
        return command(**kw)

    return click.argument("files", nargs=-1, metavar="[FROM] INPUT...")(options("inputs")(wrapper))


_own_process = False  # set by run(): the CLI is this process's whole work, not a call inside a test or a notebook


def run() -> None:
    """The `prep` command as a process of its own (the console script, `python -m prep`). A data verb that finished on
    the local engine ends it at once, after flushing standard output and error (`os._exit`): every output is closed
    by then (written whole or not at all), and the interpreter's teardown, freeing the tokenizer and every module's
    objects for memory the system takes back anyway, would add 0.05 s to a 3 s `prep tokenize`. Verbs that may train
    or serve, and Ray runs (their cluster is shut down at exit), end as usual."""
    global _own_process
    _own_process = True
    main()


def run_verb(verb: str, values: dict[str, Any], first: str = "reading", display: Callable[[Any], None] | None = None,
           **objects: Any) -> None:
    """Every verb the same way: its values (named as in its options table) to the verb through `prep.verbs`, one
    progress meter on stderr (none with --quiet), its notes, then `display` or the result's own breakdown and
    summary with where it went and the first rejects, and the result's exit code."""
    from prep.verbs import VERBS  # noqa: PLC0415 - start-up time

    quiet = values.get("quiet", False)
    data_verb = VERBS[verb].function.startswith("prep.stages.")
    if data_verb:  # no pandas (design §9, start-up cost)
        _arrow_without_pandas()
    with _Bar(verb, quiet or not VERBS[verb].reports_progress, first) as bar:
        result = VERBS[verb].call(values, bar, **objects)
    for note in result.notes:
        click.echo(f"note: {note}", err=True)
    if display is not None:
        display(result)
    elif not quiet:
        for path, fmt in getattr(result, "formats", {}).items():
            click.echo(f"{path}: read as {fmt}", err=True)
        for line in result.breakdown():
            click.echo(line, err=True)
        output = values.get("output")
        if line := result.summary():
            click.echo(line + ("" if output in (None, "-") else f" -> {output}") + result.where(), err=True)
        _report_rejects(result.tally, values.get("rejects"))
    if _own_process and data_verb and values.get("engine", "local") == "local":
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(result.exit_code)  # see run()
    sys.exit(result.exit_code)


def _arrow_without_pandas() -> None:
    """Let pyarrow look for pandas once, as soon as it is loaded, and not find it: its first conversion of a Python
    list otherwise imports pandas (measured: 0.3 s and 35 MB of a one-row `prep tokenize`), which no data verb uses.
    pyarrow imports pandas after all when a caller asks it for pandas objects (`to_pandas`), so nothing is lost.
    Done by a hook on pyarrow's import, not by importing it: a verb that never loads pyarrow (validating JSONL) does
    not pay for it (0.15 s)."""
    if "pandas" in sys.modules:
        return
    if "pyarrow" in sys.modules:
        _no_pandas(sys.modules["pyarrow"])
    elif not any(isinstance(f, _ArrowLoaded) for f in sys.meta_path):
        sys.meta_path.insert(0, _ArrowLoaded())


class _ArrowLoaded:
    """A finder that finds pyarrow as the others do (then leaves) and has `_no_pandas` run when it has loaded."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name != "pyarrow":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        run = spec.loader.exec_module

        def exec_module(module: Any) -> None:
            run(module)
            _no_pandas(module)

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def _no_pandas(pa: Any) -> None:
    """pyarrow's first list conversion, while pandas cannot be found (pyarrow remembers that it is not there).
    Not when pandas is loaded or loading (Ray Data imports it, and pandas pyarrow): there is nothing to spare, and
    pyarrow would find the half-made module."""
    if "pandas" in sys.modules:
        return

    class _NoPandas:
        def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
            if name == "pandas":
                raise ModuleNotFoundError("pandas is not needed here", name=name)

    finder = _NoPandas()
    sys.meta_path.insert(0, finder)
    try:
        pa.array([0])
    finally:
        sys.meta_path.remove(finder)


def _report_rejects(tally: Tally, rejects_file: str | None) -> None:
    """The first rejects of each reason, so a run without --rejects still says what went wrong where; rows a verb
    leaves out on purpose (mix's not_sampled, dedup's duplicates) are counted, not listed."""
    for rej in tally.examples:
        f = rej.findings[0]
        click.echo(f"  {rej.source} {f.path} {f.code}: {f.message}" + (f" ({f.hint})" if f.hint else ""), err=True)
    if tally.examples and tally.rejected_total > len(tally.examples):
        click.echo(f"  … and {tally.rejected_total - len(tally.examples)} more", err=True)
    if tally.rejected_total and not rejects_file:
        click.echo("  keep every rejected row with its reasons: --rejects FILE", err=True)


class _Bar:
    """A verb's progress on stderr, fed with its `Progress` (pass the bar as the verb's `progress`): a live bar on a
    terminal; elsewhere (a log, a pipe) a plain line every LOG_SECONDS, so a short run prints none."""

    LOG_SECONDS = 10.0

    def __init__(self, name: str, quiet: bool, first: str) -> None:
        self.name, self.quiet, self.live = name, quiet, False
        self.bars: Any = None
        self.logged = time.monotonic()
        if quiet:  # nothing to draw: rich is not imported (start-up time)
            return
        from rich.console import Console  # noqa: PLC0415 - start-up time
        from rich.progress import BarColumn, TextColumn, TimeElapsedColumn  # noqa: PLC0415 - start-up time
        from rich.progress import Progress as Bars  # noqa: PLC0415 - start-up time

        console = Console(stderr=True, highlight=False)
        self.live = console.is_terminal
        self.bars = Bars(TextColumn(f"[bold]{name}"), BarColumn(), TextColumn("{task.fields[info]}"),
                         TimeElapsedColumn(), console=console, disable=not self.live)
        self.task = self.bars.add_task(name, total=None, info=first)

    def __enter__(self) -> _Bar:
        if self.bars is not None:
            self.bars.start()
        return self

    def __exit__(self, *_: Any) -> None:
        if self.bars is not None:
            self.bars.stop()

    def __call__(self, progress: Progress) -> None:
        if self.bars is None:
            return
        self.bars.update(self.task, info=progress.line(), completed=progress.step or 0, total=progress.steps)
        if not (self.live or self.quiet) and time.monotonic() - self.logged >= self.LOG_SECONDS:
            self.logged = time.monotonic()
            click.echo(f"{self.name}: {progress.line()}", err=True)
