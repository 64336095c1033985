"""Checkpoints of one training run: each marked complete last, signed with what decides its contents, so
`--resume` (and `prep run`) go on only from a complete checkpoint of the very same run."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

from prep.core.findings import PrepError
from prep.files.hashing import sha256_file
from prep.shards.layout import MANIFEST
from prep.trainer import ranks
from prep.trainer.options import TrainOptions

COMPLETE = "prep_complete.json"  # written into a checkpoint last: one without it was cut off while it was saved
SIGNATURE = "prep_signature.json"  # in checkpoints/: what the checkpoints were trained on, checked by --resume
# options a resumed run may change: how long to train, how often to save, what to do after (not what a step computes)
_RESUMABLE = {"max_steps", "epochs", "resume", "save_steps", "output", "merge", "report_to", "logging_steps", "force"}


def signature(shards: str, options: TrainOptions) -> dict[str, Any]:
    """What decides the checkpoints' contents: the shards (their manifest's sha256), the model and every
    option a step depends on, keyed as the CLI spells them."""
    signature = {"shards manifest sha256": sha256_file(Path(shards) / MANIFEST),
                 "eval manifest sha256": sha256_file(Path(options.eval) / MANIFEST) if options.eval else None}
    for key, value in asdict(options).items():
        if key not in _RESUMABLE:
            signature[f"--{key.replace('_', '-')}"] = value
    if ranks.world_size() > 1:  # the batches each step takes; one process signs none, as before processes were
        signature["processes"] = ranks.world_size()
    return json.loads(json.dumps(signature, default=str))


def check_checkpoints(checkpoints: Path, signature: dict[str, Any], resume: bool) -> None:
    """One run's checkpoints per folder: a new run never mixes its checkpoints with an earlier run's, and
    --resume continues only a run with the same shards, model and options."""
    complete, cut = _checkpoints(checkpoints)
    found = bool(complete or cut)
    if not resume:
        if found:
            raise PrepError(f"{checkpoints} holds checkpoints of an earlier run: pass --resume to continue it, or "
                            "train into another -o (or delete that folder)")
        return
    if not complete:
        raise PrepError(f"--resume: no complete checkpoint in {checkpoints} to resume from"
                        + (f" ({', '.join(p.name for p in cut)} cut off while saved)" if cut else
                           " (train with --save-steps)"))
    try:
        before = json.loads((checkpoints / SIGNATURE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise PrepError(f"--resume: {checkpoints} has no readable {SIGNATURE}, so which run its checkpoints belong "
                        "to is unknown; train into another -o (or delete that folder)") from None
    differ = [f"{k} {before.get(k)} then, {signature.get(k)} now" for k in dict.fromkeys([*before, *signature])
              if before.get(k) != signature.get(k)]
    if differ:
        raise PrepError(f"--resume: the checkpoints in {checkpoints} were trained otherwise: {'; '.join(differ)}; "
                        "resume with the same shards, model and options, or train into another -o")


def can_resume(shards: str, options: TrainOptions) -> bool:
    """Whether options.output holds checkpoints of this very run (same shards, model and options), so an
    interrupted run can go on from them instead of starting again (prep run uses it)."""
    try:
        check_checkpoints(Path(options.output) / "checkpoints", signature(shards, options), resume=True)
    except PrepError:
        return False
    return True


def _checkpoints(checkpoints: Path) -> tuple[list[Path], list[Path]]:
    """The complete checkpoints (their marker written last) and the incomplete ones (a run killed while saving),
    each by step."""
    found = sorted((p for p in checkpoints.glob("checkpoint-*") if p.is_dir() and p.name[11:].isdigit()),
                   key=lambda p: int(p.name[11:]))
    complete = [p for p in found if (p / COMPLETE).is_file()]
    return complete, [p for p in found if p not in complete]


def resume_point(checkpoints: Path, notes: list[str], remove: bool = True) -> Path:
    """The newest complete checkpoint; newer incomplete ones are removed (by the main process only: `remove`),
    and the notes say which."""
    complete, cut = _checkpoints(checkpoints)
    for p in cut if remove else ():
        notes.append(f"skipped {p.name}: it was cut off while it was saved (removed); resuming from "
                     f"{complete[-1].name if complete else 'the start'}")
        shutil.rmtree(p)
    return complete[-1]
