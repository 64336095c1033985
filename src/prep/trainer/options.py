"""`TrainOptions`: everything `prep train` takes, field by field the options table's `train` section (a test
keeps names and defaults equal), each value checked by the table when the options are made."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from prep.core.options import check


@dataclass
class TrainOptions:
    """Everything `prep train` takes; defaults follow the common LoRA recipes (r 16, alpha 32, lr 2e-4)."""

    model: str
    output: str
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: str = "all-linear"
    use_rslora: bool = False
    use_dora: bool = False
    qlora: bool = False
    quant: int | None = None  # 4 or 8: a bitsandbytes base under the adapter
    lora_init: str = "default"
    loraplus_lr_ratio: float | None = None
    freeze_layers: int = 0
    full: bool = False
    train_vision: bool = False
    method: str | None = None  # None: from the shard kind
    beta: float = 0.1
    reward: tuple[str, ...] = ()
    num_generations: int = 4
    max_completion_len: int = 256
    temperature: float = 1.0
    loss_type: str | None = None
    desirable_weight: float = 1.0
    undesirable_weight: float = 1.0
    margin_column: str | None = None
    ref_model: str | None = None
    lr: float = 2e-4
    epochs: float = 1.0
    max_steps: int = -1
    batch_size: int = 4
    grad_accum: int = 1
    warmup_ratio: float = 0.03
    scheduler: str = "cosine"
    weight_decay: float = 0.0
    seed: int = 42
    gradient_checkpointing: bool = False
    eval: str | None = None
    save_steps: int | None = None
    resume: bool = False
    fsdp: bool = False
    deepspeed: str | None = None
    merge: bool = False
    report_to: str = "none"
    force: bool = False
    logging_steps: int = 1
    extra: dict[str, Any] = field(default_factory=dict)
    attn_implementation: str | None = None  # None: transformers' default (sdpa); flash_attention_2 needs a GPU

    def __post_init__(self) -> None:
        """Each value against the options table, however the options were made (CLI, recipe or Python)."""
        check("train", asdict(self))
