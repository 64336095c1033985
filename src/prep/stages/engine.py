"""Where a stage's batches run (design §13): here (`--engine local`: this process, or tokenize's process pool),
or on a Ray cluster through Ray Data (`--engine ray`).

Under Ray the driver (this process) plans the work as parts (`formats.inputs.plan_inputs`: files, and plain
JSONL cut into pieces of whole batches on line boundaries), a pool of Ray Data actors each receives the stage
once (a `Work`: the stage's own per-batch functions and what they hold, the tokenizer included, put in the
object store once and kept as actor state) and runs it over the parts it is given; the outputs come back to the
driver in input order. Either they are rows, which the driver writes with the same writers as the local engine
(the local engine's output, byte for byte), or the worker has written its part itself and what comes back is
the list of its files and its counts, which the driver adopts in order and commits: tokenize's and pack's shards
and rejects in the output's folder being made (`shards.writer.PartWriter`: the same rows, a shard per part),
convert's JSONL lines beside the output (copied in order: the same bytes). A worker that dies
is restarted by Ray Data and its part run again; its output reaches the driver once, since only what a part
returns is written or adopted, never what a worker did half-way.

Ray is imported only here, and only when `--engine ray` is asked for.
"""

from __future__ import annotations

import os
import pickle
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from prep.core.extras import require_ray
from prep.core.findings import PrepError

Work = Callable[[Any], Iterator[Any]]  # one part in, its per-batch outputs out (picklable: it goes to the workers)


@dataclass(frozen=True)
class Engine:
    """Which engine runs a stage: `name` local or ray; for Ray the cluster's `address` (None: $RAY_ADDRESS if set,
    else start a local Ray with this machine's cores) and the number of `workers` (Ray Data actors; 0: one per CPU
    of the cluster). The verbs check the values with their options tables first."""

    name: str = "local"
    address: str | None = None
    workers: int = 0

    @property
    def ray(self) -> bool:
        return self.name == "ray"


LOCAL = Engine()


@dataclass
class Ran:
    """What an engine did, for a verb's result and summary: the engine, the parts the input was cut into, and the
    distinct workers and nodes that returned a part."""

    engine: str = "local"
    parts: int = 0
    workers: set[str] = field(default_factory=set)
    nodes: set[str] = field(default_factory=set)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.engine, "parts": self.parts, "workers": len(self.workers), "nodes": len(self.nodes)}


def connect(engine: Engine) -> int:
    """Connect to Ray: to `engine.address`, else to $RAY_ADDRESS (as Ray's own tools do), or to a Ray this process
    already started, or to a new local Ray with this machine's cores (loopback only, no usage reporting). Returns
    the number of workers the stage gets."""
    import logging  # noqa: PLC0415 - start-up time: only Ray's runs set log levels

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    address = engine.address or os.environ.get("RAY_ADDRESS")
    if not address:  # a one-machine Ray: every process on the loopback address (read when Ray is imported)
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    ray = require_ray()
    if not ray.is_initialized():
        quiet = {"log_to_driver": False, "logging_level": logging.ERROR}
        main = threading.current_thread() is threading.main_thread()
        handler = signal.getsignal(signal.SIGTERM) if main else None
        if address:  # given one (flag or $RAY_ADDRESS), ray.init refuses a local Ray's num_cpus: join it
            ray.init(address=address, **quiet)
        else:
            ray.init(num_cpus=max(os.cpu_count() or 1, engine.workers), include_dashboard=False,
                     _node_ip_address="127.0.0.1", **quiet)
        if handler is not None:  # Ray puts its own (a stack dump, exit 15): prep's removes what it half wrote, exit 130
            signal.signal(signal.SIGTERM, handler)
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # parts come back in input order
    context.enable_progress_bars = False  # the verb draws its own, in rows/s over the whole cluster
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    return engine.workers or int(ray.cluster_resources().get("CPU", 1))


class _Worker:
    """A Ray Data actor: gets the stage's `Work` from the object store once, then runs it over each part."""

    def __init__(self, work: list[Any]) -> None:
        ray = require_ray()
        self.work = ray.get(work[0])  # the reference comes in a list: Ray passes it on as it is
        context = ray.get_runtime_context()
        self.worker, self.node = context.get_actor_id() or str(os.getpid()), context.get_node_id()

    def _run(self, part: Any) -> tuple[list[Any], str | None]:
        """A part's outputs, and the PrepError that stopped it (the file broke off): the driver raises it where
        the local engine would, after the outputs before it."""
        outputs: list[Any] = []
        try:
            outputs.extend(self.work(part))
        except PrepError as e:
            return outputs, str(e)
        return outputs, None

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        import numpy as np  # noqa: PLC0415 - inside the Ray worker

        out = [pickle.dumps(self._run(pickle.loads(part)), pickle.HIGHEST_PROTOCOL) for part in batch["part"]]
        n = len(out)
        return {"out": np.array(out, dtype=object), "worker": np.array([self.worker] * n, dtype=object),
                "node": np.array([self.node] * n, dtype=object)}


def parts_wanted(engine: Engine) -> int:
    """How many parts to cut the input into: four per worker, so a slow part or a restarted worker leaves the
    others busy."""
    return 4 * connect(engine)


def run_parts(parts: Sequence[Any], work: Work, engine: Engine, ran: Ran) -> Iterator[Any]:
    """Each part's outputs (what `work(part)` yields), part after part in input order, the parts run by a pool of
    Ray Data actors; `ran` counts the parts, workers and nodes."""
    workers = max(1, min(connect(engine), len(parts)))
    ray = require_ray()
    ran.engine, ran.parts = engine.name, len(parts)
    if not parts:
        return
    items = [{"part": pickle.dumps(p, pickle.HIGHEST_PROTOCOL)} for p in parts]
    stage = ray.put(work)  # once, for every worker; held here so a restarted worker finds it again
    data = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
        _Worker, fn_constructor_kwargs={"work": [stage]}, batch_size=1, num_cpus=1,
        compute=ray.data.ActorPoolStrategy(size=workers))
    for row in data.iter_rows():
        ran.workers.add(row["worker"])
        ran.nodes.add(row["node"])
        outputs, error = pickle.loads(row["out"])
        yield from outputs
        if error is not None:
            raise PrepError(error)
