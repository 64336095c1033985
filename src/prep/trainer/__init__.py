"""Training: the only code that imports torch, peft or trl (inside functions: the train extra is
optional). train (LoRA/QLoRA/full SFT on shards), preference (DPO, KTO, ORPO and reward models on dpo/kto
shards through TRL's trainers), ranks (many processes under torchrun), generate, bridge (dpo/kto shards for TRL)."""
