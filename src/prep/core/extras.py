"""The optional extras: what `pip install 'prep[train]'` (and `prep[ray]`) add, and the one-line refusal
when they are missing, instead of a bare ModuleNotFoundError deep inside a run."""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

from prep.core.findings import PrepError

TRAIN = ("torch", "transformers", "datasets", "accelerate", "peft", "trl", "matplotlib")
UI = ("starlette", "uvicorn")


def require_train_extra(load: bool = True) -> None:
    """Refuse, with the install line, when the packages of the train extra cannot be imported.

    `load=False` only looks for them (`importlib.util.find_spec`) without importing: what `prep run` checks when it
    reads a recipe with a train section, in milliseconds instead of the seconds torch takes to import before any
    stage (or none, on a re-run) needs it; the train stage imports them, so a broken install is found there."""
    for module in TRAIN:
        try:
            if load:
                importlib.import_module(module)
            elif importlib.util.find_spec(module) is None:
                raise ImportError("not installed")
        except (ImportError, ValueError) as e:  # find_spec: ValueError for a module whose __spec__ is None
            raise PrepError(f"prep train and generate need the train extra ({module} cannot be imported: {e}): pip install "
                            "'prep[train]' (torch first: pip install torch, or the CUDA build from "
                            "https://pytorch.org/get-started/locally)") from None


def require_ray() -> Any:
    """The `ray` module with Ray Data, or the refusal that names the extra (`--engine ray` only: the local engine
    never imports Ray)."""
    try:
        ray = importlib.import_module("ray")
        importlib.import_module("ray.data")
    except ImportError as e:
        raise PrepError(f"--engine ray needs the ray extra ({e}): pip install 'prep[ray]'") from None
    return ray


def require_ui_extra() -> None:
    """Refuse `prep ui`, with the install line, when the ui extra's web framework and server are not installed
    (looked for, not imported: the app imports them when it starts)."""
    missing = [m for m in UI if importlib.util.find_spec(m) is None]
    if missing:
        raise PrepError(f"prep ui needs the ui extra ({', '.join(missing)} not installed): pip install 'prep[ui]'")
