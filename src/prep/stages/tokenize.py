"""`prep tokenize`: canonical records -> token ids and labels in unpacked shards (design §4, §5).

The encoder (prep.render.encoder) does the work; this stage reads the inputs, runs the encoder over
the batches and writes the shards. With one worker three threads overlap: reading and rendering a batch,
tokenizing the one before (the Rust tokenizer, on every core, without the GIL), labelling and writing the
one before that. With `workers > 1` a process pool does the work and the parent
only writes: each worker reads its own batches of the input (`formats.inputs.plan_inputs` cuts plain JSONL on
batch ends, as for Ray), renders, tokenizes and labels them; where the input cannot be cut (standard input,
registry entries, a big file of another format) the parent reads and sends the workers its batches. Batches come
back in order, so the shards are byte-identical to a one-worker run. `workers=0` (the default) picks the count: one
per core this process may use (at most `core.options.AUTO_WORKERS`) when a plain JSONL file of more than one batch is cut into
parts the workers read, else one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import queue
import signal
import sys
import threading
from collections import defaultdict, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from itertools import chain
from typing import Any

import numpy as np
import pyarrow as pa

from prep.checks.dataset_stats import LengthCounts
from prep.core.columns import KIND_OF_RECORD
from prep.core.findings import Batch, PrepError, Tally, count_by_file
from prep.core.heap import streaming
from prep.core.options import AUTO_WORKERS, DEFAULT_DATE, checked
from prep.core.records import Record, kind_of
from prep.core.result import Meter, ProgressFn, Result, outputs
from prep.files.guard import check_outputs
from prep.files.hashing import sha256_file
from prep.files.pieces import BATCH_ROWS
from prep.formats.inputs import Inputs, Part, plan_inputs, read_inputs, read_part
from prep.render.builtin import Template
from prep.render.encoder import Encoder, Settings, build_encoder
from prep.render.serving import serving_template
from prep.render.spans import resolve_train_on
from prep.render.templates import chat_template, parse_kwargs
from prep.render.tokenizer import Tokenizer, load_tokenizer
from prep.shards.writer import PartSpec, PartWriter, ShardWriter, WrittenPart
from prep.stages.engine import Engine, Ran, parts_wanted, run_parts

# running ---------------------------------------------------------------------------------------------------------

_worker: Any = None  # what a pool process runs: the Encoder (batches sent to it) or an _Encode (parts it reads)
_thread: Any = None  # the pool process's thread that runs it (see _init_worker)


def _init_worker(work: Any, parent: int) -> None:
    global _worker, _thread
    from concurrent.futures import ThreadPoolExecutor  # noqa: PLC0415 - start-up time: one worker needs no pool

    _die_with(parent)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the pool ends its workers with SIGTERM; only the parent cleans up
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})  # blocked from the fork until here (see _in_pool)
    _worker = work
    # The work runs in a thread, not the process's main thread: the Rust tokenizer (one thread per worker) then
    # allocates from that thread's own malloc arena, not the main arena it would share with Python's objects, which
    # costs it a fifth more CPU (19,980 alpaca chats: 7.0 CPU-s against 5.5)
    _thread = ThreadPoolExecutor(1, thread_name_prefix="prep-worker")


def _die_with(parent: int) -> None:
    """On Linux, have the kernel kill this worker when `parent` (prep) dies: a `kill -9` of prep would otherwise
    leave its workers waiting for work forever, holding the output's lock (inherited at fork), so that a new run
    into the same output is refused."""
    if sys.platform.startswith("linux"):
        import ctypes  # noqa: PLC0415 - only in pool workers

        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # died before that took hold
        os._exit(1)


_PR_SET_PDEATHSIG = 1  # prctl(2)

Encoded = tuple[Batch[str], pa.Table, list[tuple[str, int]]]  # Encoder.encode_measured's rows, table, lengths


def _work(batch: Batch[Record]) -> Encoded:
    return _thread.submit(lambda: _worker.encode_measured(_worker.prepare(batch))).result()


def _work_part(part: Part) -> list[Encoded]:
    return _thread.submit(lambda: list(_worker(part))).result()


def run_encoder(batches: Iterable[Batch[Record]], encoder: Encoder, workers: int = 1) -> Iterator[Encoded]:
    """Encode batches in order, in this process or in a pool of `workers` processes (a bounded window
    of batches in flight, so memory stays flat however long the input)."""
    if workers <= 1:  # three threads: read and render | tokenize (Rust, without the GIL) | label and write
        tokenized = _prefetch(map(encoder.tokenize, _prefetch(map(encoder.prepare, batches))), depth=1)
        yield from (encoder.encode_measured(jobs, tokenized=True) for jobs in tokenized)
        return
    yield from _in_pool(_work, batches, encoder, workers)


def _in_pool(fn: Any, items: Iterable[Any], work: Any, workers: int) -> Iterator[Any]:
    """`fn(item)` for every item, in order, in a pool of `workers` processes that hold `work` (at most two items
    per worker in flight)."""
    import multiprocessing  # noqa: PLC0415 - start-up time: one worker needs no pool

    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    # One Rust thread per worker (the workers are the parallelism), and no fork warning from tokenizers.
    saved = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    # The workers start with SIGTERM blocked: one the pool sends a worker still starting (a short run) would else
    # meet the parent's handler, inherited at fork, and print a traceback; _init_worker unblocks it.
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        pool = multiprocessing.get_context(method).Pool(workers, _init_worker, (work, os.getpid()))
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        if saved is None:
            del os.environ["TOKENIZERS_PARALLELISM"]
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = saved
    with pool:
        pending: deque[Any] = deque()
        for item in items:
            pending.append(pool.apply_async(fn, (item,)))
            if len(pending) >= 2 * workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


def _auto_workers() -> int:
    """One worker per core this process may run on, at most AUTO_WORKERS."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(cores, AUTO_WORKERS))


_WHOLE_PART_BYTES = 64 * 1024 * 1024  # a part that is a whole file (not cut into batches) at most: it travels whole


def _local_parts(inputs: Inputs, formats: dict[str, str], workers: int) -> list[Part]:
    """For `workers > 1`: the inputs as parts of one batch each, which the workers read themselves, so the parent
    does not read, parse and send every row. [] (the parent reads) for one worker, standard input or any input that
    is not a regular file (a pipe can be read once: planning would take its first rows), registry entries, a single
    batch, or a part that would carry more than `_WHOLE_PART_BYTES` of a file that cannot be cut (its output comes
    back whole)."""
    if workers <= 1 or inputs.datasets or not all(map(os.path.isfile, inputs.files)):  # stdin, a pipe: read once
        return []
    seen: dict[str, str] = {}
    parts = plan_inputs(inputs, seen, len(inputs.files) * 1_000_000, BATCH_ROWS)
    if len(parts) < 2 or any(p.piece.lines is None and os.path.getsize(p.piece.path) - p.piece.seek >
                             _WHOLE_PART_BYTES for p in parts):
        return []
    formats.update(seen)
    return parts


def _prefetch(items: Iterator[Any], depth: int = 4) -> Iterator[Any]:
    """`items`, computed `depth` ahead in a thread: reading and rendering (Python) overlap the Rust
    tokenizer, which releases the GIL. Errors are raised where the item would have been."""
    q: queue.Queue[tuple[Any, BaseException | None]] = queue.Queue(depth)
    stop = threading.Event()
    end = object()

    def put(entry: tuple[Any, BaseException | None]) -> bool:
        while not stop.is_set():
            try:
                q.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
            put((end, None))
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, which raises it
            put((end, e))

    thread = threading.Thread(target=produce, name="prep-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item, error = q.get()
            if item is end:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()
        thread.join()


def _hash_early(files: list[str]) -> threading.Thread:
    """Hash the input files in a thread now, beside the tokenizer's work (reading and hashing let go of the GIL), for
    the manifest's sha256 at the end to come from `sha256_file`'s memory instead of a pass over them after the last
    row (a file that cannot be hashed is left for that pass to report). Regular files only: a pipe or FIFO read
    here would take rows from its reader."""

    def run() -> None:
        for path in files:
            with contextlib.suppress(OSError):
                sha256_file(path)

    thread = threading.Thread(target=run, name="prep-hash-inputs", daemon=True)
    thread.start()
    return thread


def _heads(parts: list[Part], skip: dict[str, list[int]]) -> Iterator[Batch[Record]]:
    """The parts' batches, each part's first `_HEAD_LINES` lines read first on their own: the first record is
    nearly always there, and a whole part is a thousand rows to parse."""
    for part in parts:
        if part.piece.lines is not None and part.piece.lines > _HEAD_LINES:
            yield from read_part(replace(part, piece=replace(part.piece, lines=_HEAD_LINES)), skip)
        yield from read_part(part, skip)


_HEAD_LINES = 16


def _first_kind(batches: Iterator[Batch[Record]]) -> tuple[str, Iterator[Batch[Record]]]:
    """The shard kind the first record calls for (sft when there is none), without losing a batch."""
    seen: list[Batch[Record]] = []
    for batch in batches:
        seen.append(batch)
        if batch.items:
            return KIND_OF_RECORD[kind_of(batch.items[0])], chain(seen, batches)
    return "sft", iter(seen)


class _Sources:
    """What became of each input file's rows (design §5, the manifest's `sources`): their tally, the first
    shard row they wrote, and their token lengths before and after `max_len` (`prep report` draws them)."""

    def __init__(self) -> None:
        self.tallies: dict[str, Tally] = {}
        self.first_row: dict[str, int] = {}
        self.before: dict[str, LengthCounts] = defaultdict(LengthCounts)
        self.after: dict[str, LengthCounts] = defaultdict(LengthCounts)

    def add(self, out: Batch[str], after: np.ndarray, before: list[tuple[str, int]], written: int) -> None:
        """One encoded batch: `after` the written rows' lengths, `before` every tokenized row's (file, length),
        `written` the rows written before this batch."""
        count_by_file(out, self.tallies)
        names = [s.file for s in out.sources]
        if len(set(names)) == 1 and all(file == names[0] for file, _ in before):  # one file (nearly always)
            self.first_row.setdefault(names[0], written)
            self.after[names[0]].add(after)
            self.before[names[0]].add([n for _, n in before])
            return
        for k, file in enumerate(names):
            self.first_row.setdefault(file, written + k)
        files = np.array(names, dtype=object)
        for file in dict.fromkeys(names):
            self.after[file].add(after[files == file])
        by_file: dict[str, list[int]] = defaultdict(list)
        for file, n in before:
            by_file[file].append(n)
        for file, ns in by_file.items():
            self.before[file].add(ns)

    def follow(self, other: _Sources, written: int) -> None:
        """Add the sources of the rows that came next (a Ray worker's part), `written` the rows written before them:
        what adding their batches here would give."""
        for file, tally in other.tallies.items():
            self.tallies.setdefault(file, Tally()).add(tally)
        for file, row in other.first_row.items():
            self.first_row.setdefault(file, written + row)
        for mine, theirs in ((self.before, other.before), (self.after, other.after)):
            for file, counts in theirs.items():
                mine[file].merge(counts)

    def to_list(self) -> list[dict[str, Any]]:
        return [{"path": file, **tally.to_dict(), "first_row": self.first_row.get(file),
                 "lengths": {"before": self.before[file].to_dict(), "after": self.after[file].to_dict()}}
                for file, tally in self.tallies.items()]


def _bounded_lengths(kind: str, table: pa.Table) -> np.ndarray:
    """Each row's length as `max_len` bounds it: all its tokens, or for a pair the prompt and its longer answer."""
    if kind in ("sft", "pretrain", "prompt"):
        return table["num_tokens"].to_numpy()
    import pyarrow.compute as pc  # noqa: PLC0415 - start-up time: pairs only
    prompt = pc.list_value_length(table["prompt_input_ids"]).to_numpy()
    answers = [pc.list_value_length(table[c]).to_numpy() for c in ("chosen_input_ids", "rejected_input_ids",
                                                                   "completion_input_ids") if c in table.column_names]
    return prompt + np.maximum.reduce(answers)


@dataclass
class TokenizeResult(Result):
    manifest: dict[str, Any] = field(default_factory=dict)
    formats: dict[str, str] = field(default_factory=dict)
    workers: int = 1  # the processes that tokenized (--workers 0 picks them)

    def details(self) -> dict[str, Any]:
        return {"formats": self.formats, "manifest": self.manifest, "workers": self.workers}

    def summary(self) -> str:
        m = self.manifest
        trained = f", {m['tokens']['loss']:,} trained" if m["kind"] in ("sft", "pretrain") else ""
        items = (m.get("media") or {}).get("items")
        media = f", {items:,} media ({len(m['media']['files']):,} files)" if items else ""
        workers = f", {self.workers} workers" if self.workers > 1 else ""
        return (f"{self.tally.summary()}; {m['tokens']['total']:,} tokens{trained}{media} ({m['kind']}, template "
                f"{(m['template'] or {}).get('name', 'none')}{workers})")


@dataclass(frozen=True)
class _Encode:
    """The stage a Ray worker runs over one part: the local engine's reader and the same encoder functions
    (`Encoder.prepare`, `Encoder.encode_measured`). It reaches each worker once, tokenizer and template in it."""

    encoder: Encoder
    skip: dict[str, list[int]]

    def __call__(self, part: Part) -> Iterator[Encoded]:
        _one_rust_thread()
        return map(self.encoder.encode_measured, map(self.encoder.prepare, read_part(part, self.skip)))


def _one_rust_thread() -> None:
    """In a Ray worker, which reserved one CPU: the tokenizer runs one Rust thread, as in the local process pool
    (the workers are the parallelism; a node's workers must not each take all its cores)."""
    os.environ["TOKENIZERS_PARALLELISM"] = "false"


@dataclass(frozen=True)
class _EncodeAndWrite:
    """The stage a Ray worker runs over one part when it writes the part itself (design §13): the local engine's
    reader and encoder, and a `PartWriter` into the output's folder being made. It hands back the part's shard list
    and counts (and its rows' sources), never its rows."""

    encoder: Encoder
    skip: dict[str, list[int]]
    kind: str
    spec: PartSpec

    def __call__(self, job: tuple[int, Part]) -> Iterator[tuple[WrittenPart, _Sources]]:
        index, part = job
        _one_rust_thread()
        sources = _Sources()
        with PartWriter(self.spec, index) as writer:
            for out, table, lengths in run_encoder(read_part(part, self.skip), self.encoder):
                sources.add(out, _bounded_lengths(self.kind, table), lengths, writer.tally.written)
                writer.account(out)
                writer.add(table)
        assert writer.written is not None
        yield writer.written, sources


@checked("tokenize")
def tokenize(inputs: Inputs, tokenizer: str | Tokenizer, output: str, *, template: str | None = None,
             kind: str | None = None, train_on: str = "auto", max_len: int | None = None, overflow: str = "drop",
             workers: int = 0, rejects: str | None = None, progress: ProgressFn | None = None,
             train_on_reasoning: str = "yes", template_kwargs: Iterable[str] = (),
             date: str = DEFAULT_DATE, engine: str = "local", ray_address: str | None = None,
             ray_workers: int = 0) -> TokenizeResult:
    """Tokenize `inputs` into unpacked shards in `output` (design §5) and return the counts and manifest.

    `kind` defaults to the first record's (chat -> sft, text -> pretrain, preference -> dpo, feedback
    -> kto; `prompt` is asked for); `template` to the tokenizer's own, or a .jinja file. `template_kwargs`
    (KEY=VALUE, YAML values) and `date` (the day strftime_now gives) go to the jinja template. `engine="ray"`
    tokenizes the parts of the inputs on a Ray cluster (design §13): the same shards."""
    check_outputs([*inputs.files, tokenizer if isinstance(tokenizer, str) else None], {"-o": output,
                                                                                         "--rejects": rejects})
    kwargs = parse_kwargs(template_kwargs, template)
    hashing = _hash_early([f for f in inputs.files if os.path.isfile(f)])  # never a pipe: its reader would lose rows
    formats: dict[str, str] = {}
    where, ran = Engine(engine, ray_address, ray_workers), Ran()
    if where.ray:
        parts = plan_inputs(inputs, formats, parts_wanted(where))
    else:
        most = workers or _auto_workers()
        parts = _local_parts(inputs, formats, most)
        if not workers:  # one per core when a file was cut into batches the workers read (more than one batch)
            workers = min(most, len(parts)) if any(p.piece.lines is not None for p in parts) else 1
            parts = parts if workers > 1 else []
    if where.ray or parts:  # the workers read the parts: here only their first record, for the kind
        batches: Iterator[Batch[Record]] = iter(())
        kind = kind or _first_kind(_heads(parts, inputs.skip))[0]
    else:
        batches = read_inputs(inputs, formats)
        if kind is None:
            kind, batches = _first_kind(batches)
    if overflow == "turns" and kind != "sft":
        raise PrepError(f"--overflow turns drops conversation turns; {kind} rows can be dropped or truncated")
    tok = tokenizer if isinstance(tokenizer, Tokenizer) else load_tokenizer(tokenizer)
    if kind == "pretrain" and template:
        raise PrepError("--kind pretrain takes plain text, which no template applies to; to train on whole "
                        "conversations use --kind sft --train-on all")
    tmpl = None if kind == "pretrain" else chat_template(tok, template, kwargs, date)
    carried = inputs.fields.keep
    encoder = build_encoder(tok, tmpl, Settings(kind, train_on, max_len, overflow, train_on_reasoning == "yes",
                                                carried))
    about: dict[str, Any] = {"name": tmpl.name, "sha256": tmpl.sha256} if tmpl else {}
    if tmpl is not None and not isinstance(tmpl, Template):  # jinja: its arguments and day decide its text too
        about.update(kwargs=kwargs, date=date, reasoning="template" if tmpl.reads_reasoning else "think block")
    if tmpl:  # what prep train gives the model folder, so it is served as it was trained (design §6)
        about.update(serving_template(tmpl))
    meta: dict[str, Any] = {
        "tokenizer": tok.fingerprint(),
        "template": about or None,
        "train_on": {"sft": resolve_train_on(train_on, "chat"), "pretrain": "all"}.get(kind),
        "train_on_reasoning": train_on_reasoning if kind == "sft" else None,
        "max_len": max_len, "overflow": overflow,
        "processor": encoder.scheme.about(lambda t: encoder.single_token(t, "media token")) if encoder.media else None,
        "inputs": [], "options": {"kind": kind, **{k: v for k, v in dataclasses.asdict(inputs).items() if k != "files"}},
    }
    meter = Meter(progress)
    sources = _Sources()
    # transformers and torch leave millions of long-lived objects behind (up to a third of a run rescanned)
    with streaming(50_000), ShardWriter(output, kind, meta, rejects=rejects, carried=carried,
                                   media=encoder.media) as writer, contextlib.ExitStack() as stack:
        meter.start()
        if where.ray and not encoder.media:  # the workers write their parts; here they are adopted in order
            written = run_parts(list(enumerate(parts)), _EncodeAndWrite(encoder, inputs.skip, kind, writer.parts()),
                                where, ran)
            for part, part_sources in stack.enter_context(contextlib.closing(written)):
                sources.follow(part_sources, writer.tally.written)
                writer.adopt(part)
                meter.add(part.tally.read, part.tokens)
        else:  # here, or on Ray with media (their roots and files are numbered in the order the whole output meets them)
            if where.ray:
                encoded = run_parts(parts, _Encode(encoder, inputs.skip), where, ran)
            elif parts:  # the workers read their own batches
                encoded = chain.from_iterable(_in_pool(_work_part, parts, _Encode(encoder, inputs.skip), workers))
            else:
                encoded = run_encoder(batches, encoder, workers)
            for out, table, lengths in encoded:
                sources.add(out, _bounded_lengths(kind, table), lengths, writer.tally.written)
                writer.account(out)
                writer.add(table)
                meter.add(len(out.items) + len(out.rejects), int(table["num_tokens"].to_numpy().sum()))
        hashing.join()
        # a pipe or FIFO (like standard input) was read once, by the rows: nothing is left to hash
        meta["inputs"] = [{"path": p, "sha256": sha256_file(p) if os.path.isfile(p) else None} for p in formats]
        meta["sources"] = sources.to_list()
    return TokenizeResult(tally=writer.tally, outputs=outputs(output=output, rejects=rejects),
                          manifest=writer.manifest(), formats=formats, notes=tok.notes,
                          engine=ran.to_dict() if where.ray else {}, workers=1 if where.ray else workers)
