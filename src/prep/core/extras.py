"""The optional extras: what `pip install 'prep[train]'` (and `prep[ray]`) add, and the one-line refusal
when they are missing, instead of a bare ModuleNotFoundError deep inside a run."""

from __future__ import annotations

import importlib
from typing import Any

from prep.core.findings import PrepError

TRAIN = ("torch", "transformers", "datasets", "accelerate", "peft", "trl", "matplotlib")


def require_train_extra() -> None:
    """Refuse, with the install line, when the packages of the train extra cannot be imported."""
    for module in TRAIN:
        try:
            importlib.import_module(module)
        except ImportError as e:
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
