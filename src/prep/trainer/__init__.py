"""Training: the only code that imports torch, peft or trl (inside functions: the train extra is
optional). train (LoRA/QLoRA/full SFT on shards), generate, bridge (dpo/kto shards for TRL)."""
