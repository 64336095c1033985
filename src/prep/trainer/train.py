"""`prep train`: LoRA, QLoRA or full fine-tuning on prep shards, with nothing re-tokenized.

--method sft (sft and pretrain shards) is described here; dpo, kto, orpo and reward (dpo and kto shards)
go through TRL's preference trainers (trainer/preference.py) with the same model loading, checks,
counting and report.

A thin stage on transformers, peft and TRL: the shards are loaded with `datasets` and handed to
TRL's SFTTrainer with `skip_prepare_dataset`; the stored `labels` are used as they are. Packed
shards train without attention masks: position ids restart at every document (from the stored
`seq_lengths`), so transformers masks attention per document, and the first label of each document
is already -100, so no document is predicted from the previous one. With flash-attention TRL's
padding-free collator concatenates a batch's rows; otherwise the rows are stacked (`_StackedRows`).
Unpacked shards train in padded batches. Before anything loads, the shards are verified and their
tokenizer fingerprint is compared with the model's tokenizer. Shards whose rows hold images train a
vision-language model (trainer/vision.py): the images are loaded by reference and processed at batch time.
"""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
import json
import math
import re
import resource
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from prep.core.extras import require_train_extra
from prep.core.findings import PrepError, Tally
from prep.core.options import check
from prep.core.result import Progress, ProgressFn, Result
from prep.files.atomic import replaced, write_json
from prep.render.tokenizer import describe_tokenizer, fingerprint, same_tokenizer
from prep.shards.layout import position_ids, read_manifest
from prep.shards.media import has_media
from prep.shards.verify import require_verified
from prep.trainer import grpo, preference, ranks, vision
from prep.trainer.bridge import shard_rows
from prep.trainer.checkpoints import COMPLETE, SIGNATURE, check_checkpoints, resume_point, signature
from prep.trainer.options import TrainOptions
from prep.trainer.preference import method_for
from prep.trainer.serving import GENERATION_CONFIG, save_serving

REPORT = "training_report.json"
TRAIN_INFO = "prep_train.json"
REAL_TOKENS = "prep_real_tokens"  # a batch's count of non-padding tokens, taken out before the model sees it


def check_shards(folder: str, role: str = "training", method: str | None = None) -> dict[str, Any]:
    """The manifest of a shard folder that verifies and that `method` trains on; anything else is refused."""
    manifest = read_manifest(folder)
    try:
        method_for(manifest["kind"], method)
    except PrepError as e:
        raise PrepError(f"{folder}: {e}") from None
    if not manifest["shards"]:
        raise PrepError(f"{folder}: the shards hold no rows (counts: {manifest.get('counts')})")
    require_verified(folder, role)
    return manifest


def check_tokenizer(manifest: dict[str, Any], tokenizer: Any, model: str, force: bool) -> None:
    """Refuse shards made with another tokenizer than the model's: their ids would mean other text."""
    mine = fingerprint(tokenizer)
    theirs = manifest.get("tokenizer") or {}
    if not same_tokenizer(theirs, mine) and not force:
        raise PrepError(f"the shards were tokenized with {describe_tokenizer(theirs)} but the model {model} has "
                        f"tokenizer {describe_tokenizer(mine)}; re-tokenize with the model's tokenizer, or pass "
                        "--force if you know they agree")


def _dataset(folder: str) -> Any:
    """The rows as stored; with media, each row's media (paths resolved) and its source ids, for the collator."""
    manifest = read_manifest(folder)
    data = shard_rows(folder, manifest)
    if has_media(manifest):
        return vision.with_paths(data.select_columns(["input_ids", "labels", "seq_lengths", "ids", "media"]),
                                 folder, manifest)
    return data.select_columns(["input_ids", "labels", "seq_lengths"])


def _packed(manifest: dict[str, Any]) -> bool:
    return (manifest.get("packing") or {}).get("strategy", "none") != "none"


@dataclass
class _Counts:
    """What the model was trained on in this run: real tokens, batch positions (real + padding) and
    tokens with a label, counted from the batches training steps receive (evaluation batches are not)."""

    tokens: int = 0
    positions: int = 0
    trained: int = 0
    run_tokens: int = 0  # `tokens` summed over the processes, as of the last logged step

    def total(self) -> tuple[int, int, int]:
        """(tokens, positions, trained) summed over the processes of the run: each counts only its own batches."""
        tokens, positions, trained = ranks.reduce([self.tokens, self.positions, self.trained])
        return tokens, positions, trained

    def add(self, batch: dict[str, Any], real: Any = None) -> None:
        """`real`: the real tokens of a batch that has padding but no attention mask (stacked packed rows)."""
        if "labels" not in batch:  # a preference batch, or a GRPO step's prompts and completions
            tokens, positions, trained = grpo.counts(batch) if "prompt_mask" in batch else preference.counts(batch)
            self.tokens, self.positions, self.trained = self.tokens + tokens, self.positions + positions, \
                self.trained + trained
            return
        ids = batch["input_ids"]
        mask = batch.get("attention_mask")
        self.tokens += int(real if real is not None else mask.sum() if mask is not None else ids.numel())
        self.positions += ids.numel()
        self.trained += int((batch["labels"] != -100).sum())


class _StackedRows:
    """Packed rows as a [batch, longest row] tensor with position ids restarting at every document and
    no attention mask, from which transformers masks attention per document in each row.

    TRL's padding-free collator instead concatenates the rows of a batch into one sequence, which
    flash-attention's variable-length kernels run without waste; the sdpa and eager kernels build a
    dense mask over it, batch x row length squared, so for them the rows are kept apart (the few
    padding positions at a row's end form their own document and carry no loss)."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        import torch  # noqa: PLC0415 - train extra


        width = max(len(e["input_ids"]) for e in examples)
        ids = torch.full((len(examples), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(examples), width), -100, dtype=torch.long)
        positions = torch.zeros((len(examples), width), dtype=torch.long)
        for i, e in enumerate(examples):
            n = len(e["input_ids"])
            ids[i, :n] = torch.tensor(e["input_ids"])
            labels[i, :n] = torch.tensor(e["labels"])
            positions[i] = torch.tensor(position_ids([*e["seq_lengths"], width - n] if width > n else e["seq_lengths"]))
        real = torch.tensor(sum(len(e["input_ids"]) for e in examples))
        return {"input_ids": ids, "labels": labels, "position_ids": positions, REAL_TOKENS: real}


def _load_model(options: TrainOptions, cuda: bool, bf16: bool, vocab_size: int | None,
                method: str = "sft", multimodal: bool = False) -> tuple[Any, Any]:
    """The policy: a causal LM (a sequence-classification model with one output for --method reward), with
    its LoRA adapter unless --full; and, for dpo and kto, the LoRA config for TRL to apply instead.

    TRL's DPO and KTO trainers given a model that already has an adapter keep a frozen copy of it (a
    second adapter, "ref") as the reference and run it on every reference pass; given the config, they add
    the adapter themselves and take the reference with it switched off: the same log-probs (a fresh
    adapter changes nothing), without the copy or its matmuls.

    `multimodal`: a vision-language model (AutoModelForImageTextToText), its vision tower frozen unless
    --train-vision, the LoRA on the language model's linear layers (and the tower's with --train-vision)."""
    import torch  # noqa: PLC0415 - train extra
    from transformers import (  # noqa: PLC0415 - train extra
        AutoModelForCausalLM,
        AutoModelForImageTextToText,
        AutoModelForSequenceClassification,
        BitsAndBytesConfig,
    )

    if options.lora_init == "loftq" and not cuda:  # peft (0.21) computes the quantization error on "cuda" or "xpu"
        raise PrepError("--lora-init loftq needs a GPU: peft computes the 4-bit base's quantization error there")
    dtype = torch.bfloat16 if bf16 else torch.float32
    kwargs: dict[str, Any] = {"dtype": dtype}
    if options.attn_implementation:
        kwargs["attn_implementation"] = options.attn_implementation
    bits = _bits(options)
    if bits == 4:
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=dtype)
    elif bits == 8:
        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
    if bits:
        kwargs["device_map"] = {"": ranks.local_rank()} if cuda else {"": "cpu"}  # each process its own GPU
    if method == "reward":
        kwargs["num_labels"] = 1
    auto = AutoModelForSequenceClassification if method == "reward" else \
        AutoModelForImageTextToText if multimodal else AutoModelForCausalLM
    try:
        model = auto.from_pretrained(options.model, **kwargs)
    except (ImportError, OSError, ValueError) as e:
        first = str(e).splitlines()[0]
        # e.g. flash_attention_2 without the flash_attn package or a GPU, or a kernel transformers does not know
        if options.attn_implementation and (isinstance(e, ImportError) or "attn_implementation" in first):
            raise PrepError(f"--attn-implementation {options.attn_implementation}: {first}") from None
        if isinstance(e, ImportError):
            raise
        raise PrepError(f"cannot load the model {options.model}: {first}") from None
    rows = model.get_input_embeddings().num_embeddings
    if vocab_size and vocab_size > rows:  # even with --force: those ids would index past the embeddings
        raise PrepError(f"the shards' tokenizer has {vocab_size} tokens but the model {options.model} has {rows} "
                        "embeddings; re-tokenize with the model's tokenizer")
    model.config.use_cache = False  # a cache would stop transformers from masking attention per packed document
    if options.full:
        if multimodal and not options.train_vision:
            vision.freeze_vision(model)
        return model, None
    if options.freeze_layers:
        _freeze_layers(model, options)
        return model, None
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training  # noqa: PLC0415 - train extra

    if bits:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=options.gradient_checkpointing)
    targets: Any = options.target_modules
    if multimodal:  # by full name: a tower's layers may share the language model's names, and all-linear takes both
        targets = vision.lora_targets(model, targets, options.train_vision)
    elif targets != "all-linear":
        targets = [t.strip() for t in targets.split(",") if t.strip()]
    config = LoraConfig(r=options.lora_r, lora_alpha=options.lora_alpha, lora_dropout=options.lora_dropout,
                        target_modules=targets, use_rslora=options.use_rslora, use_dora=options.use_dora,
                        init_lora_weights=_INIT[options.lora_init],
                        task_type="SEQ_CLS" if method == "reward" else "CAUSAL_LM")
    if method in ("dpo", "kto"):
        return model, config
    try:
        model = get_peft_model(model, config)
    except ValueError as e:  # e.g. --target-modules naming no module of this model
        raise _target_modules(options, e) from None
    if options.lora_init == "loftq":  # A and B from the base's weights as stored, against their 4-bit copies
        from peft import replace_lora_weights_loftq  # noqa: PLC0415 - train extra

        local = Path(options.model).is_dir()  # else peft finds the weights in the hub cache
        replace_lora_weights_loftq(model, model_path=str(options.model) if local else None)
    return model, None


# --lora-init: peft's init_lora_weights (loftq: the default, then replace_lora_weights_loftq on the 4-bit base)
_INIT: dict[str, Any] = {"default": True, "gaussian": "gaussian", "pissa": "pissa_niter_16", "olora": "olora",
                         "loftq": True}
CONVERTED = ("pissa", "olora")  # initialisations that change the base: the saved adapter is converted back
INITIAL_ADAPTER = "initial_adapter"  # the adapter as initialised, which the conversion subtracts
_LAYER = re.compile(r"\.layers\.(\d+)\.")  # a decoder layer's weights: model.layers.N. (language_model.layers.N.)


def _bits(options: TrainOptions) -> int | None:
    """The base's quantization: 4 for --qlora or --quant 4, 8 for --quant 8, else None."""
    return 4 if options.qlora else options.quant


def _freeze_layers(model: Any, options: TrainOptions) -> None:
    """--freeze-layers N: only the weights of the last N decoder layers train (LLaMA-Factory's freeze tuning)."""
    layers = sorted({int(m.group(1)) for name, _ in model.named_parameters() if (m := _LAYER.search(name))})
    if options.freeze_layers > len(layers):
        raise PrepError(f"--freeze-layers {options.freeze_layers}: {options.model} has {len(layers)} decoder layers")
    trained = set(layers[-options.freeze_layers:])
    for name, parameter in model.named_parameters():
        m = _LAYER.search(name)
        parameter.requires_grad_(m is not None and int(m.group(1)) in trained)


def _save_initial(model: Any, folder: Path) -> None:
    """The pissa/olora adapter before training, which saving converts against (peft's recipe): marked as a
    default-initialised adapter, so loading it for the conversion does not run the decomposition again."""
    config = model.peft_config["default"]
    init, config.init_lora_weights = config.init_lora_weights, True
    with replaced(folder, folder=True) as tmp:
        model.save_pretrained(tmp)
    config.init_lora_weights = init


def _target_modules(options: TrainOptions, e: ValueError) -> PrepError:
    return PrepError(f"--target-modules {options.target_modules}: {str(e).splitlines()[0]}")


def _load_reference(options: TrainOptions, model: Any, cuda: bool, bf16: bool) -> Any:
    """--ref-model: a frozen causal LM beside the policy, with the policy's vocabulary."""
    import torch  # noqa: PLC0415 - train extra
    from transformers import AutoModelForCausalLM  # noqa: PLC0415 - train extra

    try:
        ref = AutoModelForCausalLM.from_pretrained(options.ref_model, dtype=torch.bfloat16 if bf16 else torch.float32)
    except (OSError, ValueError) as e:
        raise PrepError(f"--ref-model: cannot load {options.ref_model}: {str(e).splitlines()[0]}") from None
    mine, theirs = model.get_input_embeddings().num_embeddings, ref.get_input_embeddings().num_embeddings
    if mine != theirs:
        raise PrepError(f"--ref-model {options.ref_model} has {theirs} embeddings and the model {options.model} "
                        f"{mine}: a reference must score the same ids")
    ref.config.use_cache = False
    return ref.eval().requires_grad_(False).to("cuda" if cuda else "cpu")


def _peak_memory(cuda: bool) -> dict[str, Any]:
    """This process's peak (its GPU's reserved memory, else its RSS), maxed over the processes of the run."""
    if cuda:
        import torch  # noqa: PLC0415 - train extra

        kind, peak = "cuda_max_reserved", int(torch.cuda.max_memory_reserved())
    else:
        kind, peak = "process_max_rss", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"kind": kind, "bytes": ranks.reduce([peak], "max")[0], "processes": ranks.world_size()}


def _check_options(options: TrainOptions) -> None:
    """Refuse option values training cannot use, naming the option, for API callers as for the CLI: each value
    against the options table, before anything loads (the libraries would fail later with messages about
    something else, e.g. --lora-r 0 as a --target-modules error), then the combinations."""
    check("train", asdict(options))  # again: a caller may have changed a field since
    if options.qlora and options.quant:
        raise PrepError("--qlora is --quant 4; give one of them")
    if options.quant not in (None, 4, 8):
        raise PrepError(f"--quant {options.quant}: must be 4 or 8 (bits)")
    whole = "--full" if options.full else f"--freeze-layers {options.freeze_layers}" if options.freeze_layers else None
    if options.full and options.freeze_layers:
        raise PrepError("--freeze-layers trains the last layers' weights; --full trains every weight: give one")
    if whole:
        given = [flag for flag, on in (("--qlora", options.qlora), (f"--quant {options.quant}", options.quant),
                                       (f"--lora-init {options.lora_init}", options.lora_init != "default"),
                                       (f"--loraplus-lr-ratio {options.loraplus_lr_ratio}", options.loraplus_lr_ratio),
                                       ("--merge", options.merge)) if on]
        if given:
            raise PrepError(f"{given[0]} goes with a LoRA adapter; {whole} trains the model's own weights "
                            "(and saves the whole model)")
    if options.lora_init == "loftq" and _bits(options) != 4:
        raise PrepError("--lora-init loftq makes up for a 4-bit base's quantization error: add --qlora (or --quant 4)")
    if options.lora_init in CONVERTED and _bits(options):
        raise PrepError(f"--lora-init {options.lora_init} takes the adapter out of the base's full-precision weights; "
                        "it cannot be combined with a quantized base (--qlora, --quant)")
    if options.max_steps <= 0 and options.epochs <= 0:
        raise PrepError("give --epochs above 0 or --max-steps")
    ranks.check_sharding(options)
    if options.report_to != "none" and importlib.util.find_spec(options.report_to) is None:
        raise PrepError(f"--report-to {options.report_to} needs the {options.report_to} package: pip install "
                        f"{options.report_to}")


def _config(options: TrainOptions, out: Path, cuda: bool, bf16: bool, flatten: bool, method: str,
            multimodal: bool = False) -> Any:
    from trl import SFTConfig  # noqa: PLC0415 - train extra

    saving = options.save_steps is not None
    # transformers 5 renamed gradient_checkpointing to activation_checkpointing (the old name warns)
    names = {f.name for f in dataclasses.fields(SFTConfig)}
    checkpointing = "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"
    common = dict(
        output_dir=str(out / "checkpoints"), per_device_train_batch_size=options.batch_size,
        per_device_eval_batch_size=options.batch_size, gradient_accumulation_steps=options.grad_accum,
        learning_rate=options.lr, num_train_epochs=options.epochs, max_steps=options.max_steps,
        lr_scheduler_type=options.scheduler, warmup_steps=float(options.warmup_ratio),  # below 1: a ratio
        weight_decay=options.weight_decay, seed=options.seed, data_seed=options.seed,
        **{checkpointing: options.gradient_checkpointing}, logging_steps=options.logging_steps,
        save_strategy="steps" if saving else "no", save_steps=options.save_steps or 500,
        eval_strategy="steps" if options.eval and saving else "no", eval_steps=options.save_steps,
        report_to=options.report_to, use_cpu=not cuda, bf16=bf16, disable_tqdm=True, dataloader_num_workers=0,
        deepspeed=options.deepspeed, **({"fsdp": True} if options.fsdp else {}),
        **({"remove_unused_columns": False} if multimodal else {}),  # the collator reads the media column
        **options.extra)
    if method == "grpo":
        return grpo.config(options, common)
    if method != "sft":
        return preference.config(method, options, common)
    return SFTConfig(**common, padding_free=flatten, dataset_kwargs={"skip_prepare_dataset": True}, max_length=None)


@dataclass
class TrainResult(Result):
    report: dict[str, Any] = field(default_factory=dict)  # training_report.json

    def breakdown(self) -> list[str]:
        return summary_lines(self.report)

    def details(self) -> dict[str, Any]:
        return {"report": self.report}


def train(shards: str, options: TrainOptions, progress: ProgressFn | None = None) -> TrainResult:
    """Train on `shards`; writes the adapter (or model), checkpoints and the report into options.output.

    `progress` is called after every logged step with the step, the steps in all, the loss and the
    tokens trained on so far.

    Under torchrun or accelerate launch every process calls this; each trains on its share of the batches,
    and only the main one writes the outputs, calls `progress` and gets the notes (trainer/ranks.py); every
    process returns the same report, its counts summed (memory maxed) over the processes."""
    main = ranks.is_main()
    progress = progress if main else None
    _check_options(options)
    require_train_extra()
    manifest = check_shards(shards, method=options.method)
    method = method_for(manifest["kind"], options.method)
    if options.lora_init in CONVERTED and method in ("dpo", "kto", "grpo"):
        raise PrepError(f"--lora-init {options.lora_init} changes the base's weights, and --method {method} takes the "
                        "base with the adapter off as its reference: use the default initialisation")
    if method != "sft":
        preference.check_options(method, options)
    if method == "grpo":
        grpo.check_options(options)
        reward_funcs = grpo.rewards(options, manifest)
    elif options.reward:
        raise PrepError(f"--reward: --method {method} learns from the shards' answers; rewards score generated ones "
                        "(--method grpo, on prompt shards)")
    eval_manifest = check_shards(options.eval, "evaluation", method) if options.eval else None
    config = vision.model_config(options.model)
    for folder, m in ((shards, manifest), (options.eval, eval_manifest)):
        if m:
            vision.check_media_shards(folder, m, config, options.model, method)
    multimodal = config is not None and vision.is_vision_language(config)
    if multimodal and method != "sft":
        raise PrepError(f"--method {method}: {options.model} is a vision-language model, which prep trains with sft")
    if options.train_vision and not multimodal:
        raise PrepError(f"--train-vision: {options.model} has no vision tower (it is not a vision-language model)")
    out = Path(options.output)
    checkpoints = out / "checkpoints"
    signed = signature(shards, options)
    check_checkpoints(checkpoints, signed, options.resume)

    import torch  # noqa: PLC0415 - train extra
    from transformers import AutoTokenizer, PrinterCallback, TrainerCallback, set_seed  # noqa: PLC0415 - train extra
    from trl import SFTTrainer  # noqa: PLC0415 - train extra

    try:
        tokenizer = AutoTokenizer.from_pretrained(options.model)
    except (OSError, ValueError) as e:
        raise PrepError(f"cannot load the tokenizer of {options.model}: {str(e).splitlines()[0]}") from None
    check_tokenizer(manifest, tokenizer, options.model, options.force)
    if eval_manifest:
        check_tokenizer(eval_manifest, tokenizer, options.model, options.force)
    cuda = torch.cuda.is_available()
    bf16 = cuda and torch.cuda.is_bf16_supported()
    # documents kept apart by position ids (no attention mask) as soon as either side is packed: exact
    # for unpacked rows too, while masked batches of packed rows would let their documents attend to each other
    padding_free = _packed(manifest) or bool(eval_manifest and _packed(eval_manifest))
    vocab = max((m.get("tokenizer") or {}).get("vocab_size") or 0 for m in (manifest, eval_manifest or {}))
    set_seed(options.seed)  # before the adapter's random initialisation, so --seed makes a run repeatable
    model, lora = _load_model(options, cuda, bf16, vocab, method, multimodal)
    ref_model = _load_reference(options, model, cuda, bf16) if options.ref_model else None
    attention = str(model.config._attn_implementation)
    flatten = padding_free and cuda and attention.startswith("flash")
    batching = ("packed rows concatenated" if flatten else "packed rows stacked") if padding_free else "padded"
    out.mkdir(parents=True, exist_ok=True)
    counter = _Counts()

    base = SFTTrainer if method == "sft" else grpo.trainer_class() if method == "grpo" else \
        preference.trainer_class(method)

    class Trainer(base):  # type: ignore[misc, valid-type]
        seen_before: int | None = None  # tokens trained on before a resumed checkpoint

        def training_step(self, model: Any, inputs: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
            if method != "grpo":  # a GRPO step's batch is generated inside it, and counted in _prepare_inputs
                inputs = dict(inputs)
                counter.add(inputs, inputs.pop(REAL_TOKENS, None))
            return super().training_step(model, inputs, *args, **kwargs)

        def _prepare_inputs(self, inputs: Any) -> Any:
            prepared = super()._prepare_inputs(inputs)
            if method == "grpo" and self.model.training:
                counter.add(prepared)
            return prepared

        def prediction_step(self, model: Any, inputs: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
            return super().prediction_step(model, {k: v for k, v in inputs.items() if k != REAL_TOKENS}, *args, **kwargs)

        def create_optimizer(self, *args: Any, **kwargs: Any) -> Any:
            """--loraplus-lr-ratio: peft's LoRA+ optimizer (AdamW, the B matrices at the ratio times --lr)."""
            if not options.loraplus_lr_ratio or self.optimizer is not None:
                return super().create_optimizer(*args, **kwargs)
            from peft.optimizers import create_loraplus_optimizer  # noqa: PLC0415 - train extra

            self.optimizer = create_loraplus_optimizer(
                self.model, torch.optim.AdamW, lr=self.args.learning_rate, loraplus_lr_ratio=options.loraplus_lr_ratio,
                weight_decay=self.args.weight_decay)
            return self.optimizer

        def _save_checkpoint(self, model: Any, trial: Any) -> None:
            super()._save_checkpoint(model, trial)
            ranks.barrier()  # every process has saved its part (its random state, its optimizer shard)
            if main:
                write_json(checkpoints / f"checkpoint-{self.state.global_step}" / COMPLETE,
                           {"step": self.state.global_step})

        def log(self, logs: dict[str, Any], *args: Any, **kwargs: Any) -> None:
            if "loss" in logs:  # our count, kept in the trainer state so that it carries over a --resume
                if self.seen_before is None:
                    self.seen_before = max((h.get("tokens_seen", 0) for h in self.state.log_history), default=0)
                counter.run_tokens = ranks.reduce([counter.tokens])[0]  # every process logs the same steps
                logs["tokens_seen"] = self.seen_before + counter.run_tokens
            super().log(logs, *args, **kwargs)

    def data(folder: str) -> Any:
        if method == "grpo":
            return grpo.dataset(folder, tokenizer)
        return _dataset(folder) if method == "sft" else preference.dataset(method, folder, options.margin_column)

    kwargs: dict[str, Any] = {"ref_model": ref_model, "peft_config": lora} if method in ("dpo", "kto") else {}
    collator = vision.MediaCollator(options.model, config, tokenizer.pad_token_id or 0) if multimodal and \
        not padding_free else _StackedRows(tokenizer.pad_token_id or 0) if padding_free and not flatten else None
    if method == "grpo":  # GRPOTrainer's collator is its own (the rows as they are, generated from in the step)
        kwargs = {"reward_funcs": reward_funcs}
        model.generation_config.eos_token_id = grpo.stop_ids(manifest, tokenizer, model.generation_config.eos_token_id,
                                                             options.model)
    else:
        kwargs["data_collator"] = collator
    try:
        trainer = Trainer(model=model, args=_config(options, out, cuda, bf16, flatten, method, multimodal),
                          train_dataset=data(shards), eval_dataset=data(options.eval) if options.eval else None,
                          processing_class=tokenizer, **kwargs)
    except ValueError as e:  # TRL adds the dpo/kto adapter: --target-modules naming no module of this model
        if lora is None or "target modules" not in str(e).lower():
            raise
        raise _target_modules(options, e) from None
    ranks.check_sharded(trainer, options)
    trainer.remove_callback(PrinterCallback)  # it prints every log dict; the CLI draws its own progress
    started = time.perf_counter()

    class OnLog(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **_: Any) -> None:
            if progress and logs and "loss" in logs:
                progress(Progress(tokens=counter.run_tokens, seconds=time.perf_counter() - started,
                                  step=state.global_step, steps=state.max_steps, loss=float(logs["loss"])))

    trainer.add_callback(OnLog())
    checkpoints.mkdir(parents=True, exist_ok=True)
    if main:
        write_json(checkpoints / SIGNATURE, signed)
    notes: list[str] = []
    start = resume_point(checkpoints, notes, remove=main) if options.resume else None
    resumed_from = int(start.name.rsplit("-", 1)[1]) if start else None
    initial = out / INITIAL_ADAPTER
    if main and options.lora_init in CONVERTED and not (options.resume and initial.is_dir()):
        _save_initial(trainer.model, initial)
    result = trainer.train(resume_from_checkpoint=str(start) if start else None)
    runtime = time.perf_counter() - started
    whole = options.full or options.freeze_layers
    saved = out / ("model" if whole else "adapter")
    if whole:  # off for training only (see _load_model); generation from the saved model wants its cache
        trainer.model.config.use_cache = True
    # sharded weights (FSDP, ZeRO-3) are gathered by every process together; the main one saves them
    state = trainer.accelerator.get_state_dict(trainer.model_wrapped) if options.fsdp or options.deepspeed else None
    if main:
        with replaced(saved, folder=True) as tmp:  # a full disk leaves the earlier adapter, never half a new one
            unwrapped = trainer.accelerator.unwrap_model(trainer.model)
            # pissa/olora: the adapter as the change from the initial one, which applies to the original base
            converted = {"path_initial_model_for_weight_conversion": str(initial)} \
                if options.lora_init in CONVERTED else {}
            unwrapped.save_pretrained(tmp, state_dict=state, **converted)
            save_serving(tmp, manifest, tokenizer, None if method == "reward" else unwrapped, notes)
            if isinstance(collator, vision.MediaCollator):  # the image settings, for whoever loads the adapter
                collator.processor.save_pretrained(tmp)
            _write_info(tmp, manifest, options, method)
    metrics = trainer.evaluate() if options.eval else {}  # every process evaluates its share
    tokens, positions, trained = counter.total()
    curve = _curve(trainer.state.log_history)
    losses = [p["loss"] for p in curve if p.get("loss") is not None]
    report = {
        "shards": str(shards), "model": str(options.model),
        "method": "full" if options.full else "freeze" if options.freeze_layers else "qlora" if _bits(options) == 4
        else "lora", "objective": method, "quant_bits": _bits(options), "lora_init": options.lora_init,
        "trainable_params": sum(p.numel() for p in trainer.model.parameters() if p.requires_grad),
        "optimizer_groups": [{"lr": g.get("initial_lr", g["lr"]), "tensors": len(g["params"]),
                              "params": sum(p.numel() for p in g["params"])} for g in trainer.optimizer.param_groups],
        "packed": _packed(manifest), "padding_free": padding_free, "batching": batching,
        "attn_implementation": attention, "output": str(saved),
        "vision_tower": None if not multimodal else ("trained" if options.full else "lora") if options.train_vision
        else "frozen",
        "steps": result.global_step, "resumed_from_step": resumed_from, "epochs": result.metrics.get("epoch"),
        "processes": ranks.world_size(), "runtime_s": round(runtime, 3), "tokens": tokens,
        "batch_positions": positions, "trained_tokens": trained,
        "tokens_per_s": round(tokens / runtime, 1) if runtime else None,
        "train_loss": result.training_loss, "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None, "eval_loss": metrics.get("eval_loss"),
        "eval": {k: v for k, v in metrics.items() if isinstance(v, (int, float))},
        "peak_memory": _peak_memory(cuda), "options": json.loads(json.dumps(asdict(options), default=str)),
        "loss_curve": curve, "notes": notes,
    }
    rows = manifest["counts"]["rows"]
    outputs = {"output": str(out), "model": str(saved), "report": str(out / REPORT)}
    if not main:  # the main process writes, merges and says what it noted
        return TrainResult(tally=Tally(rows, rows), report=report, outputs=outputs)
    _write_curve(out, curve)  # report and curve first: a failed merge must not lose them
    write_json(out / REPORT, report)
    if options.merge:
        try:
            report["merged"] = str(merge(options.model, saved, out / "merged"))
        except (OSError, ValueError) as e:
            raise PrepError(f"--merge failed ({str(e).splitlines()[0]}); the trained {saved.name} and {REPORT} are "
                            f"saved in {out}; merge them with prep.trainer.train.merge(base, adapter, target)") from None
        write_json(out / REPORT, report)
    return TrainResult(tally=Tally(rows, rows), report=report, notes=notes, outputs=outputs)


_CURVE = ("step", "loss", "eval_loss", "learning_rate", "tokens_seen")  # first in the CSV; then what the trainer logs
_NOT_CURVE = {"epoch", "total_flos", "train_runtime", "train_samples_per_second", "train_steps_per_second",
              "eval_runtime", "eval_samples_per_second", "eval_steps_per_second", "train_loss"}


def _curve(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every number the trainer logged beside a training or evaluation loss, by step, from its log (which a
    checkpoint carries over): the losses and learning rate, and for the preference methods rewards/chosen,
    rewards/rejected, rewards/margins, rewards/accuracies (reward: accuracy, margin), logps/..."""
    points: dict[int, dict[str, Any]] = {}
    for log in history:
        if "loss" in log or "eval_loss" in log:
            point = points.setdefault(log["step"], {"step": log["step"]})
            for key, value in log.items():
                if key not in _NOT_CURVE and key != "step" and isinstance(value, (int, float)) \
                        and not isinstance(value, bool):
                    point[key] = int(value) if key == "tokens_seen" else float(value)
    return [points[s] for s in sorted(points)]


def _write_info(folder: Path, manifest: dict[str, Any], options: TrainOptions, method: str) -> None:
    """What `prep generate` needs later, beside the weights: the template and tokenizer of the shards, and
    what was trained (a reward model does not generate)."""
    info = {k: manifest.get(k) for k in ("kind", "template", "train_on", "tokenizer")}
    info["base_model"], info["objective"] = str(options.model), method
    write_json(folder / TRAIN_INFO, info)


def merge(base: str, adapter: str | Path, target: str | Path) -> Path:
    """Base model + adapter folded into plain weights, saved with the tokenizer and prep_train.json.

    The base is reloaded unquantized (peft cannot merge into 4-bit weights), so a QLoRA adapter is
    merged into the full-precision model it was trained to correct. A reward adapter (task SEQ_CLS)
    is merged into the base with its one-output scoring head."""
    from peft import PeftConfig, PeftModel  # noqa: PLC0415 - train extra
    from transformers import (  # noqa: PLC0415 - train extra
        AutoImageProcessor,
        AutoModelForCausalLM,
        AutoModelForImageTextToText,
        AutoModelForSequenceClassification,
        AutoTokenizer,
    )

    adapter, target = Path(adapter), Path(target)
    config = vision.model_config(base)
    multimodal = config is not None and vision.is_vision_language(config)
    if PeftConfig.from_pretrained(adapter).task_type == "SEQ_CLS":
        loaded = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1)
    else:
        loaded = (AutoModelForImageTextToText if multimodal else AutoModelForCausalLM).from_pretrained(base)
    model = PeftModel.from_pretrained(loaded, adapter)
    model.merge_and_unload().save_pretrained(target)
    AutoTokenizer.from_pretrained(adapter).save_pretrained(target)  # with the template the adapter carries
    if (adapter / GENERATION_CONFIG).is_file():  # the stop ids it was trained with, over the base's
        (target / GENERATION_CONFIG).write_bytes((adapter / GENERATION_CONFIG).read_bytes())
    if multimodal:
        AutoImageProcessor.from_pretrained(base).save_pretrained(target)
    if (adapter / TRAIN_INFO).is_file():
        (target / TRAIN_INFO).write_bytes((adapter / TRAIN_INFO).read_bytes())
    return target


# the preference panels of loss_curve.png: (title, the series drawn, training and evaluation alike)
_PANELS = (("rewards", ("rewards/chosen", "rewards/rejected", "rewards/margins", "margin")),
           ("accuracy", ("rewards/accuracies", "accuracy")))


def _write_curve(out: Path, curve: list[dict[str, Any]]) -> None:
    """loss_curve.csv (every logged series) and loss_curve.png: training loss, and evaluation loss where there
    is one, and for the preference methods the rewards and the accuracy beside it."""
    columns = [*_CURVE, *dict.fromkeys(k for p in curve for k in p if k not in _CURVE)]
    with open(out / "loss_curve.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        writer.writerows(curve)
    if not curve:
        return
    import matplotlib  # noqa: PLC0415 - train extra

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415 - train extra

    panels = [(title, keys) for title, keys in _PANELS if any(k in p or f"eval_{k}" in p for p in curve for k in keys)]
    fig, axes = plt.subplots(1, 1 + len(panels), figsize=(7 + 5 * len(panels), 4), dpi=100, squeeze=False)
    ax = axes[0][0]
    for (title, keys), other in zip(panels, axes[0][1:], strict=True):
        for key in keys:
            for name, style in ((key, "-"), (f"eval_{key}", "o--")):
                points = [(p["step"], p[name]) for p in curve if p.get(name) is not None]
                if points:
                    other.plot(*zip(*points, strict=True), style, label=name, linewidth=1.5)
        other.set_xlabel("step")
        other.set_title(title)
        other.grid(alpha=0.3)
        other.legend()
    every = []
    for key, label, style in (("loss", "training", "-"), ("eval_loss", "evaluation", "o--")):
        points = [(p["step"], p[key]) for p in curve if p.get(key) is not None]
        if points:
            ax.plot(*zip(*points, strict=True), style, label=label, linewidth=1.5)
            every += [v for _, v in points]
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("prep train" if not panels else "loss")
    ax.grid(alpha=0.3)
    ax.legend()
    if every and min(every) > 0 and max(every) / min(every) > 20:
        ax.set_yscale("log")
    fig.tight_layout()
    fig.savefig(out / "loss_curve.png")
    plt.close(fig)


def summary_lines(report: dict[str, Any]) -> list[str]:
    """The end-of-run summary, in the spirit of the Unsloth notebooks."""
    mem = report["peak_memory"]
    where = "peak reserved GPU memory" if mem["kind"].startswith("cuda") else "peak process RSS"
    processes = mem.get("processes", 1)
    where += f" (the largest of {processes} processes)" if processes > 1 else ""
    resumed = f" (resumed at step {report['resumed_from_step']})" if report.get("resumed_from_step") else ""
    objective = report.get("objective", "sft")
    lines = [f"{report['method']}{'' if objective == 'sft' else ' ' + objective} on {report['shards']}: "
             f"{report['steps']} steps{resumed} in {report['runtime_s']:.1f} s",
             f"tokens: {report['tokens']:,} trained on, {report['trained_tokens']:,} with loss, "
             f"{report['tokens_per_s']:,.0f} tokens/s"]
    if report["first_loss"] is not None:
        lines.append(f"loss: {report['first_loss']:.4f} -> {report['last_loss']:.4f}")
    scores = [p["reward"] for p in report.get("loss_curve") or () if p.get("reward") is not None]
    if scores:  # GRPO: the mean reward of the completions generated at the first and the last logged step
        lines.append(f"reward: {scores[0]:.4f} -> {scores[-1]:.4f}")
    if report.get("eval_loss") is not None:
        lines.append(f"eval loss: {report['eval_loss']:.4f} (perplexity {math.exp(min(report['eval_loss'], 50)):.2f})")
    last = report["loss_curve"][-1] if report.get("loss_curve") else {}
    rewards = [f"{k} {last[k]:.4f}" for k in ("rewards/chosen", "rewards/rejected", "rewards/margins",
                                               "rewards/accuracies", "accuracy", "margin") if k in last]
    if rewards:
        lines.append(f"last step: {', '.join(rewards)}")
    lines.append(f"{where}: {mem['bytes'] / 2**30:.2f} GiB")
    lines.append(f"saved: {report['output']}" + (f", merged: {report['merged']}" if report.get("merged") else ""))
    return lines
