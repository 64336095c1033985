"""prep: fine-tuning data in, validated and token-exact training shards out.

The Python API has the CLI's verbs, each taking `Inputs` (or a shard folder) and returning a result
with its tally, its outputs and `to_dict()`:

    >>> import prep
    >>> result = prep.convert(prep.Inputs(["samples/alpaca.json"]), "openai", "runs/doc/alpaca.jsonl")
    >>> result.tally.summary()
    'read 12, wrote 12, rejected 0'

Names are imported on first use, so `import prep` (and `prep --help`) stays fast.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

# the one place the version is written (pyproject reads it): importlib.metadata would cost every command ~0.1-0.3 s
__version__ = "0.1.0"

_WHERE = {
    "Inputs": "prep.formats.inputs", "convert": "prep.stages.convert", "validate": "prep.stages.validate",
    "template": "prep.stages.template", "tokenize": "prep.stages.tokenize", "pack": "prep.stages.pack",
    "verify": "prep.shards.verify", "inspect": "prep.stages.inspect", "stats": "prep.stages.stats",
    "TrainOptions": "prep.trainer.options", "train": "prep.trainer.train", "generate": "prep.trainer.generate",
    "load_recipe": "prep.recipes.recipe", "run": "prep.recipes.runner", "Progress": "prep.core.result",
    "Result": "prep.core.result", "Tally": "prep.core.findings", "Finding": "prep.core.findings",
    "PrepError": "prep.core.findings", "load_for_trl": "prep.trainer.bridge", "pretokenized": "prep.trainer.bridge",
    "report": "prep.stages.report", "export": "prep.stages.export",
    "mix": "prep.stages.mix", "dedup": "prep.stages.dedup", "split": "prep.stages.split",
    "decontaminate": "prep.stages.decontaminate",
}
_NAMES = {"generate": "load"}  # the public name, where the module's differs
__all__ = ["__version__", *_WHERE]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'prep' has no attribute {name!r}")
    value = getattr(import_module(_WHERE[name]), _NAMES.get(name, name))
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
