"""One `prep train` run over many processes (`torchrun`, `accelerate launch`, one process per device, on one
machine or many): which process is the main one, and the run's counts summed or maxed over all of them.

Each process trains on its own batches (the trainer's sampler deals them out), so each counts only its own
tokens and knows only its own peak memory; the report wants the run's. Only the main process (global rank 0)
writes what the run leaves behind (adapter, report, curves, checkpoint markers) and prints; the others would
write the same files into the same folder at the same time. Every method (sft, dpo, kto, orpo, reward, vision)
trains through trainer/train.py, which asks this module, so none of them has its own copy of these rules.

The launchers say who is who through the environment (RANK, WORLD_SIZE), read here without importing torch, so
the CLI can tell before anything loads; the counts are reduced over the process group the trainer set up.
Sharding the model over the processes (--fsdp, --deepspeed) is the trainer's; this module refuses it where
the trainer cannot take it up.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

from prep.core.findings import PrepError
from prep.trainer.options import TrainOptions


def world_size() -> int:
    """How many processes train together (1 when not launched by torchrun or accelerate launch)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def local_rank() -> int:
    """This process's index on its machine: the GPU it trains on."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    """Whether this is the process that writes the outputs and prints: global rank 0."""
    return int(os.environ.get("RANK", "0")) == 0


def _group() -> Any:
    """torch.distributed when the trainer has joined the processes into a group, else None (one process)."""
    import torch.distributed as dist  # noqa: PLC0415 - train extra

    return dist if dist.is_available() and dist.is_initialized() else None


def reduce(values: list[int], op: str = "sum") -> list[int]:
    """`values` summed (`op` "sum") or maxed ("max") element-wise over the processes; as they are in one
    process. Every process must call it at the same point, as any collective."""
    dist = _group()
    if dist is None:
        return values
    import torch  # noqa: PLC0415 - train extra

    # nccl reduces GPU tensors only; gloo (CPU) and the others take CPU tensors
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    tensor = torch.tensor(values, dtype=torch.int64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
    return [int(v) for v in tensor.tolist()]


def barrier() -> None:
    """Wait until every process gets here (e.g. each has saved its part of a checkpoint before it is marked
    complete); nothing with one process."""
    dist = _group()
    if dist is not None:
        dist.barrier()


def check_sharding(options: TrainOptions) -> None:
    """Refuse, before anything loads, --fsdp/--deepspeed values no run could use."""
    if options.fsdp and options.deepspeed:
        raise PrepError("--fsdp and --deepspeed each shard the model their own way: give one of them")
    if (options.qlora or options.quant) and (options.fsdp or options.deepspeed):
        flag = "--qlora" if options.qlora else f"--quant {options.quant}"
        raise PrepError(f"{flag} (a quantized base) with --fsdp or --deepspeed is not supported: train a quantized "
                        "base with one GPU per process (torchrun without them)")
    if options.deepspeed:
        if not Path(options.deepspeed).is_file():
            raise PrepError(f"--deepspeed {options.deepspeed}: no such file (give a DeepSpeed config JSON)")
        if importlib.util.find_spec("deepspeed") is None:
            raise PrepError("--deepspeed needs the deepspeed package, which the train extra does not install "
                            "(pip install deepspeed, on a machine with GPUs)")
    for flag, asked in (("--fsdp", options.fsdp), ("--deepspeed", options.deepspeed)):
        if asked and world_size() < 2:
            raise PrepError(f"{flag} shards the model over the processes of torchrun or accelerate launch, and this is "
                            f"one process: start it with e.g. `torchrun --nproc_per_node 2 -m prep train ...`")


def check_sharded(trainer: Any, options: TrainOptions) -> None:
    """Refuse --fsdp/--deepspeed the trainer did not take up: accelerate (1.x) shards with FSDP on GPUs and other
    accelerators only and never runs DeepSpeed on CPU; it would train whole copies instead, without a word."""
    for asked, enabled, flag in ((options.fsdp, trainer.is_fsdp_enabled, "--fsdp"),
                                 (options.deepspeed, trainer.is_deepspeed_enabled, "--deepspeed")):
        if asked and not enabled:
            raise PrepError(f"{flag}: the trainer did not shard the model (accelerate shards over several processes on "
                            f"GPUs only; this run: {trainer.args.device.type}, {world_size()} process(es)); "
                            f"without {flag} the processes train together, each holding a whole copy")
