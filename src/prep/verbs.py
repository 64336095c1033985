"""The verbs, each declared once: the function that does it and what it reads. The CLI (`prep VERB`), a recipe's
stage (`prep run`) and a Python caller all reach that one function with values named as in the verb's options
table (core/options.py), filled with the table's defaults and checked by it (design §8).

A verb's function is imported when it is first called, so `prep --help` loads none of them.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from importlib import import_module
from typing import Any

from prep.core.findings import PrepError
from prep.core.options import INPUTS, TABLES, Option, check
from prep.core.result import ProgressFn, Result


@dataclass(frozen=True)
class Verb:
    """`function` is `module:name`; `reads` names its first argument: `inputs` (records: an `Inputs`, or built from
    the inputs table's values), a path (`shards`, `target`, `targets`) or nothing; `options` names a class the verb's values are
    gathered in (train's TrainOptions) instead of being passed one by one."""

    name: str
    function: str
    reads: str = "inputs"
    options: str = ""

    @property
    def table(self) -> tuple[Option, ...]:
        """Every option the verb takes: its own table, and the inputs table when it reads records."""
        return TABLES[self.name] + (INPUTS if self.reads == "inputs" else ())

    def load(self, what: str | None = None) -> Any:
        module, name = (what or self.function).split(":")
        return getattr(import_module(module), name)

    @cached_property
    def parameters(self) -> frozenset[str]:
        """The table names the function (or its options class) takes; the others are the caller's (quiet, ...)."""
        taker = self.load(self.options) if self.options else self.load()
        return frozenset(inspect.signature(taker).parameters)

    @cached_property
    def reports_progress(self) -> bool:
        """Whether the function takes `progress` (inspect and report show one row or one page: they do not)."""
        return "progress" in inspect.signature(self.load()).parameters

    def arguments(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """The function's keyword arguments from table-named `values`: every name must be in the table, each value
        is checked by it, and the table's defaults fill the rest; the values the function does not take are the
        caller's own (quiet, validate's --report)."""
        names = {o.name for o in self.table} | {self.reads}
        unknown = [k for k in values if k not in names]
        if unknown:
            raise PrepError(f"prep {self.name} has no option {unknown[0]!r}")
        check(self.name, values)  # the inputs table's values are checked by Inputs itself
        own = TABLES[self.name]
        given = {o.name: () if o.multiple else o.default for o in own} | dict(values)
        missing = next((o for o in own if o.required and given.get(o.name) in (None, ())), None)
        if missing is not None:
            raise PrepError(f"prep {self.name} needs {missing.flag}")
        if self.reads == "inputs":  # the inputs table's values make the Inputs (a name both tables hold: both)
            inputs = given.get("inputs") or self.load("prep.formats.inputs:Inputs").from_options(
                {o.name: given[o.name] for o in INPUTS if o.name in given})
            if not inputs.files and not inputs.datasets:
                raise PrepError(f"prep {self.name}: give INPUT files, or --dataset-info FILE --dataset NAME")
            given = {o.name: given[o.name] for o in own} | {"inputs": inputs}
        takes = self.parameters | {self.reads}
        return {k: v for k, v in given.items() if k in takes}

    def call(self, values: Mapping[str, Any], progress: ProgressFn | None = None, **objects: Any) -> Result:
        """Run the verb on table-named `values`; `objects` are arguments no table holds (a console, a row callback)."""
        kwargs = self.arguments(values)
        function: Callable[..., Any] = self.load()
        if self.options:
            gathered = {k: kwargs.pop(k) for k in list(kwargs) if k != self.reads}
            kwargs["options"] = self.load(self.options)(**gathered)
        if self.reports_progress:
            kwargs["progress"] = progress
        return function(**kwargs, **objects)


VERBS: dict[str, Verb] = {v.name: v for v in (
    Verb("convert", "prep.stages.convert:convert"),
    Verb("validate", "prep.stages.validate:validate"),
    Verb("template", "prep.stages.template:template"),
    Verb("tokenize", "prep.stages.tokenize:tokenize"),
    Verb("mix", "prep.stages.mix:mix"),
    Verb("dedup", "prep.stages.dedup:dedup"),
    Verb("split", "prep.stages.split:split"),
    Verb("decontaminate", "prep.stages.decontaminate:decontaminate"),
    Verb("pack", "prep.stages.pack:pack", reads="shards"),
    Verb("verify", "prep.shards.verify:verify", reads="shards"),
    Verb("inspect", "prep.stages.inspect:inspect", reads="shards"),
    Verb("stats", "prep.stages.stats:stats", reads="targets"),
    Verb("report", "prep.stages.report:report", reads="target"),
    Verb("export", "prep.stages.export:export", reads="shards"),
    Verb("train", "prep.trainer.train:train", reads="shards", options="prep.trainer.options:TrainOptions"),
)}


def call(verb: str, values: Mapping[str, Any], progress: ProgressFn | None = None, **objects: Any) -> Result:
    """Run `verb` on table-named values (what the CLI parsed, a recipe's section): see `Verb.call`."""
    return VERBS[verb].call(values, progress, **objects)
