"""prep train and prep generate on a tiny llama built from a config, with the project's tokenizer and sample shards.

One LoRA run (packed shards, 30 steps, evaluated on the unpacked shards, merged) is shared by the module;
the other runs are one to six steps."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path

import pytest

from conftest import SAMPLES, fixture, invoke_prep, make_tiny_model, run_prep
from prep.core.findings import PrepError
from prep.formats.inputs import Inputs
from prep.shards.layout import read_manifest
from prep.shards.reader import iter_tables
from prep.shards.verify import verify
from prep.stages.pack import pack
from prep.stages.tokenize import tokenize

torch = pytest.importorskip("torch")
pytest.importorskip("trl")
peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")

from prep.trainer.train import TrainOptions, train  # noqa: E402 - needs the train extra

TOKENIZER = str(SAMPLES / "tokenizer")
CHATS = [str(SAMPLES / n) for n in ("sharegpt.jsonl", "openai.jsonl", "alpaca.json")]


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("train")


@pytest.fixture(scope="module")
def model(root: Path) -> str:
    return str(make_tiny_model(root / "tiny-llama"))


@pytest.fixture(scope="module")
def shards(root: Path) -> dict[str, str]:
    """The sample conversations (chatml) unpacked, packed, with loss on the last answer only, and sample text."""
    out = {"unpacked": root / "sft", "last": root / "last", "text": root / "text"}
    tokenize(Inputs(CHATS), TOKENIZER, str(out["unpacked"]), template="chatml")
    tokenize(Inputs([str(SAMPLES / "sharegpt.jsonl")]), TOKENIZER, str(out["last"]), template="chatml",
             train_on="last")
    tokenize(Inputs([str(SAMPLES / "text.jsonl")] * 3), TOKENIZER, str(out["text"]), kind="pretrain")
    out["packed"] = root / "packed"
    pack(out["unpacked"], out["packed"], 1024)
    out["pretrain"] = root / "pretrain"
    pack(out["text"], out["pretrain"], 128, strategy="wrap")
    return {k: str(v) for k, v in out.items()}


@pytest.fixture(scope="module")
def lora(root: Path, model: str, shards: dict[str, str]) -> dict:
    options = TrainOptions(model=model, output=str(root / "lora"), max_steps=30, lr=2e-2, batch_size=1,
                           eval=shards["unpacked"], merge=True)
    return train(shards["packed"], options).report


def rows(folder: str) -> list[dict]:
    return [r for t in iter_tables(folder) for r in t.to_pylist()]


def manual_loss(lm, folder: str, per_row: bool = False) -> float:
    """Cross-entropy on the labelled tokens only, every document run on its own: the token mean over the
    folder, or (`per_row`, as Trainer.evaluate averages batches of one row) the mean of row means."""
    total = count = 0.0
    means = []
    with torch.no_grad():
        for row in rows(folder):
            row_total = row_count = 0.0
            start = 0
            for n in row["seq_lengths"]:
                ids = torch.tensor([row["input_ids"][start:start + n]])
                target = torch.tensor(row["labels"][start + 1:start + n], dtype=torch.long)
                logits = lm(input_ids=ids, use_cache=False).logits[0, :-1].float()
                keep = target != -100
                row_total += torch.nn.functional.cross_entropy(logits[keep], target[keep], reduction="sum").item()
                row_count += int(keep.sum())
                start += n
            total, count = total + row_total, count + row_count
            means.append(row_total / max(row_count, 1))
    return sum(means) / len(means) if per_row else total / count


def base(model: str):
    return transformers.AutoModelForCausalLM.from_pretrained(model).eval()


def test_lora_lowers_the_loss_and_writes_its_report(lora: dict, root: Path, model: str, shards: dict) -> None:
    # the model folder holds the tokenizer saved again (other files, other sha256): same vocabulary, accepted
    from prep.render.tokenizer import fingerprint

    mine = fingerprint(transformers.AutoTokenizer.from_pretrained(model))
    assert mine["sha256"] != read_manifest(shards["packed"])["tokenizer"]["sha256"]
    assert lora["method"] == "lora" and lora["packed"] and lora["padding_free"] and lora["steps"] == 30
    # one packed row per step, four rows: compare whole epochs, so no row's own difficulty decides
    assert read_manifest(shards["packed"])["counts"]["rows"] == 4
    losses = [p["loss"] for p in lora["loss_curve"]]
    assert sum(losses[-4:]) < 0.5 * sum(losses[:4]), losses
    assert lora["last_loss"] < 0.6 * lora["first_loss"]
    out = root / "lora"
    report = json.loads((out / "training_report.json").read_text())
    assert report["steps"] == 30 and report["tokens_per_s"] > 0 and report["peak_memory"]["bytes"] > 0
    csv_lines = (out / "loss_curve.csv").read_text().splitlines()
    assert csv_lines[0].startswith("step,loss,eval_loss,learning_rate,tokens_seen,") and len(csv_lines) == 31
    assert (out / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    info = json.loads((out / "adapter" / "prep_train.json").read_text())
    assert info["template"]["name"] == "chatml" and info["kind"] == "sft"


def test_adapter_reloads_with_peft_and_gives_the_trained_outputs(lora: dict, model: str, shards: dict) -> None:
    tuned = peft.PeftModel.from_pretrained(base(model), lora["output"]).eval()
    # the trainer evaluated its model on the unpacked shards one row per batch at the end of training
    assert manual_loss(tuned, shards["unpacked"], per_row=True) == pytest.approx(lora["eval_loss"], rel=1e-4)
    assert manual_loss(base(model), shards["unpacked"], per_row=True) > lora["eval_loss"] + 1


def test_merged_model_matches_the_adapter(lora: dict, model: str) -> None:
    merged = transformers.AutoModelForCausalLM.from_pretrained(lora["merged"]).eval()
    tuned = peft.PeftModel.from_pretrained(base(model), lora["output"]).eval()
    ids = torch.tensor([rows(lora["shards"])[0]["input_ids"][:200]])
    with torch.no_grad():
        torch.testing.assert_close(merged(input_ids=ids).logits, tuned(input_ids=ids).logits, atol=1e-4, rtol=1e-4)
    assert (Path(lora["merged"]) / "prep_train.json").is_file()


@pytest.mark.parametrize("name", ["packed", "last", "pretrain"])
def test_first_step_loss_is_on_the_labelled_tokens_of_each_document(name: str, root: Path, model: str,
                                                                   shards: dict) -> None:
    """One step over the whole shard set: the logged loss is the base model's cross-entropy on exactly the
    stored labels, each document seen alone (padding-free for packed rows, a padded batch for the unpacked
    rows of `last`, which keeps only the final answer of each conversation); pretraining shards train in full."""
    folder = shards[name]
    manifest = read_manifest(folder)
    options = TrainOptions(model=model, output=str(root / f"one-{name}"), max_steps=1, lr=1e-3,
                           batch_size=manifest["counts"]["rows"], full=name == "pretrain")
    report = train(folder, options).report
    assert report["tokens"] == manifest["tokens"]["total"]
    assert report["trained_tokens"] == manifest["tokens"]["loss"]
    assert report["batching"] == ("padded" if name == "last" else "packed rows stacked")  # sdpa on CPU
    assert report["batch_positions"] > report["tokens"]  # rows of unequal length: padding, not counted as tokens
    assert report["first_loss"] == pytest.approx(manual_loss(base(model), folder), rel=1e-4)
    if name == "last":  # the earlier answers are in the rows but carry no loss
        assert report["trained_tokens"] < read_manifest(shards["unpacked"])["tokens"]["loss"]
        everything = manual_loss(base(model), shards["unpacked"])
        assert abs(report["first_loss"] - everything) > 1e-3
    if name == "pretrain":  # --full saves a whole model, its cache (off for packed training) on again
        assert transformers.AutoModelForCausalLM.from_pretrained(report["output"]) is not None
        assert transformers.AutoConfig.from_pretrained(report["output"]).use_cache is True


def test_qlora_runs_saves_and_reloads(root: Path, model: str, shards: dict) -> None:
    pytest.importorskip("bitsandbytes")
    # short pretraining rows: bitsandbytes' 4-bit matmuls are slow on CPU
    options = TrainOptions(model=model, output=str(root / "qlora"), qlora=True, max_steps=3, lr=2e-2, batch_size=1,
                           eval=shards["pretrain"])
    report = train(shards["pretrain"], options).report
    assert report["method"] == "qlora" and report["steps"] == 3
    config = json.loads((Path(report["output"]) / "adapter_config.json").read_text())
    assert config["r"] == 16 and config["lora_alpha"] == 32
    four_bit = transformers.BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                               bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=torch.float32)
    quantized = transformers.AutoModelForCausalLM.from_pretrained(model, quantization_config=four_bit,
                                                                  device_map={"": "cpu"})
    assert quantized.is_loaded_in_4bit
    before = manual_loss(quantized, shards["pretrain"], per_row=True)
    tuned = peft.PeftModel.from_pretrained(quantized, report["output"]).eval()
    # bitsandbytes' CPU 4-bit kernels sum in a thread-dependent order: the reloaded adapter's loss agrees to
    # ~1e-4 (measured 1.4e-4 on a loaded machine), far inside the change 3 steps make
    assert manual_loss(tuned, shards["pretrain"], per_row=True) == pytest.approx(report["eval_loss"], rel=1e-3)
    assert report["eval_loss"] < before


def test_resume_continues_from_the_checkpoint_step(root: Path, model: str, shards: dict) -> None:
    """Six steps straight, or three, stop, and --resume to six: the same adapter (the checkpoint brings back
    the optimizer, the schedule, the data position and the random state)."""
    common = {"model": model, "lr": 1e-2, "batch_size": 1, "scheduler": "constant", "warmup_ratio": 0.0,
              "save_steps": 3}
    straight = train(shards["packed"], TrainOptions(output=str(root / "straight"), max_steps=6, **common)).report
    first = train(shards["packed"], TrainOptions(output=str(root / "resumed"), max_steps=3, **common)).report
    assert first["steps"] == 3 and (root / "resumed" / "checkpoints" / "checkpoint-3").is_dir()
    resumed = train(shards["packed"], TrainOptions(output=str(root / "resumed"), max_steps=6, resume=True, **common)).report
    assert resumed["resumed_from_step"] == 3 and resumed["steps"] == 6
    curve = [(p["step"], p["tokens_seen"]) for p in resumed["loss_curve"]]
    assert curve == [(p["step"], p["tokens_seen"]) for p in straight["loss_curve"]] and len(curve) == 6
    losses = [p["loss"] for p in resumed["loss_curve"]]
    assert losses == pytest.approx([p["loss"] for p in straight["loss_curve"]], rel=1e-5)
    assert resumed["tokens"] < straight["tokens"]  # only steps 4-6 were trained in the resumed run
    a = peft.PeftModel.from_pretrained(base(model), straight["output"]).state_dict()
    b = peft.PeftModel.from_pretrained(base(model), resumed["output"]).state_dict()
    lora_keys = [k for k in a if "lora_" in k]
    assert lora_keys
    for k in lora_keys:
        torch.testing.assert_close(a[k], b[k])
    with pytest.raises(PrepError, match="no complete checkpoint"):
        train(shards["packed"], TrainOptions(output=str(root / "fresh"), max_steps=6, resume=True, **common))


def test_checkpoints_of_another_run_are_never_mixed_or_resumed(root: Path, model: str, shards: dict) -> None:
    """A new run into a folder with checkpoints is refused; --resume refuses checkpoints trained on other shards
    or with other options (all refused before any model loads)."""
    common = {"model": model, "batch_size": 1, "scheduler": "constant", "warmup_ratio": 0.0, "save_steps": 2}
    out = str(root / "signed")
    train(shards["packed"], TrainOptions(output=out, max_steps=2, lr=1e-2, **common))
    assert (root / "signed" / "checkpoints" / "checkpoint-2").is_dir()
    with pytest.raises(PrepError, match="holds checkpoints of an earlier run: pass --resume"):
        train(shards["packed"], TrainOptions(output=out, max_steps=2, lr=1e-2, **common))
    with pytest.raises(PrepError, match=r"--lr 0.01 then, 0.02 now"):
        train(shards["packed"], TrainOptions(output=out, max_steps=4, lr=2e-2, resume=True, **common))
    with pytest.raises(PrepError, match="shards manifest sha256 [0-9a-f]{64} then, [0-9a-f]{64} now"):
        train(shards["pretrain"], TrainOptions(output=out, max_steps=4, lr=1e-2, resume=True, **common))
    refused = invoke_prep("train", shards["packed"], "--model", model, "-o", out, "--max-steps", "2")
    assert refused.exit_code == 2 and "--resume" in refused.stderr, refused.output


def swapped_tokenizer(folder: Path) -> Path:
    """The project's tokenizer with two token ids exchanged: same size and specials, other ids."""
    shutil.copytree(TOKENIZER, folder)
    data = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    vocab = data["model"]["vocab"]
    a, b = (t for t, i in vocab.items() if i in (700, 701))
    vocab[a], vocab[b] = vocab[b], vocab[a]
    (folder / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return folder


def test_fingerprint_mismatch_is_refused_and_force_overrides(root: Path, model: str, tmp_path: Path) -> None:
    other = swapped_tokenizer(tmp_path / "swapped")
    shards = tmp_path / "swapped-shards"
    tokenize(Inputs([str(SAMPLES / "openai.jsonl")]), str(other), str(shards), template="chatml")
    refused = run_prep("train", str(shards), "--model", model, "-o", str(tmp_path / "out"), "--max-steps", "1")
    err = refused.stderr.decode()
    assert refused.returncode == 2, err
    assert "swapped" in err and "tiny-llama" in err and "--force" in err and "Traceback" not in err
    forced = invoke_prep("train", str(shards), "--model", model, "-o", str(tmp_path / "out"), "--max-steps", "1",
                         "--force")
    assert forced.exit_code == 0, forced.output
    assert (tmp_path / "out" / "adapter" / "adapter_model.safetensors").is_file()
    assert "1 steps" in forced.stderr


def test_a_tokenizer_larger_than_the_model_is_refused_even_with_force(model: str, tmp_path: Path) -> None:
    qwen = fixture("tokenizers", "qwen2.5")
    shards = tmp_path / "qwen"
    tokenize(Inputs([str(SAMPLES / "openai.jsonl")]), str(qwen), str(shards), template="chatml")
    with pytest.raises(PrepError, match="qwen2.5"):
        train(str(shards), TrainOptions(model=model, output=str(tmp_path / "o"), max_steps=1))
    with pytest.raises(PrepError, match="151665 tokens but the model .* has 2500 embeddings"):
        train(str(shards), TrainOptions(model=model, output=str(tmp_path / "o"), max_steps=1, force=True))


def test_corrupted_shard_is_refused(shards: dict, model: str, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(shards["packed"], broken)
    shard = broken / read_manifest(broken)["shards"][0]["path"]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    done = invoke_prep("train", str(broken), "--model", model, "-o", str(tmp_path / "out"))
    assert done.exit_code == 2 and "fail verification" in done.stderr, done.output
    assert not (tmp_path / "out").exists()


def test_a_method_is_refused_shards_it_does_not_read(model: str, tmp_path: Path) -> None:
    tokenize(Inputs([str(SAMPLES / "trl_preference.jsonl")]), TOKENIZER, str(tmp_path / "dpo"), template="chatml")
    with pytest.raises(PrepError, match="--method sft trains on sft or pretrain shards, and these are dpo shards "
                                        r"\(they train with --method dpo, orpo, reward\)"):
        train(str(tmp_path / "dpo"), TrainOptions(model=model, output=str(tmp_path / "o"), method="sft"))
    with pytest.raises(PrepError, match="--method kto trains on kto shards, and these are dpo shards"):
        train(str(tmp_path / "dpo"), TrainOptions(model=model, output=str(tmp_path / "o"), method="kto"))
    with pytest.raises(PrepError, match="--loss-type kto: --method dpo takes one of sigmoid, hinge"):
        train(str(tmp_path / "dpo"), TrainOptions(model=model, output=str(tmp_path / "o"), loss_type="kto"))
    assert not (tmp_path / "o").exists()


def test_generate_streams_the_fine_tuned_answer_through_the_training_template(lora: dict, model: str) -> None:
    from prep.trainer.generate import load, visible

    prompt = "What is the capital of France?"
    chatml = f"<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n"
    tokenizer = transformers.AutoTokenizer.from_pretrained(lora["output"])
    tuned = peft.PeftModel.from_pretrained(base(model), lora["output"]).eval()
    ids = torch.tensor([tokenizer(chatml, add_special_tokens=False)["input_ids"]])
    stops = [tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.eos_token_id]
    with torch.no_grad():
        out = tuned.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, do_sample=False,
                             eos_token_id=stops, pad_token_id=tokenizer.pad_token_id)
    expected = tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
    assert expected.strip()
    done = run_prep("generate", "--model", model, "--adapter", lora["output"], "--max-new-tokens", "12", prompt)
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode().strip() == visible(expected).strip()
    err = done.stderr.decode()
    assert "template: chatml (recorded in " in err and "prep_train.json" in err and "warning" not in err, err
    generator = load(model)  # the base model: no prep_train.json, so the tokenizer's own template
    assert generator.template is not None and generator.template.name == "tokenizer"
    assert generator.notes == [f"template: tokenizer (the chat template of the tokenizer in {Path(model).resolve()})"]
    assert load(model, lora["output"]).prompt_ids(prompt) == tokenizer(chatml, add_special_tokens=False)["input_ids"]


def test_generate_shows_what_a_random_model_writes_as_not_text(model: str) -> None:
    """The tiny model's weights are random: its answer holds broken UTF-8 and control characters. The stream
    writes the control characters as \\xNN (never raw to a terminal) and the note says what such an answer means."""
    from prep.trainer.generate import garbled_note, load, visible

    streamed: list[str] = []
    answer = load(model)("Who wrote the story?", max_new_tokens=96, on_text=streamed.append)
    assert "".join(streamed) == visible(answer) and not any(c in "".join(streamed) for c in "\r\x04\x1b")
    note = garbled_note(answer)
    assert note is not None and "random or untrained weights" in note, answer
    assert visible("a\rb\x04\n\tc\x85") == "a\\x0db\\x04\n\tc\\x85"
    assert garbled_note("Mark Twain wrote it.\n") is None
    assert garbled_note("a\ufffd\x04b").startswith("note: 2 of the answer's 4 characters are not text")


def test_generate_needs_an_adapter_folder(model: str, tmp_path: Path) -> None:
    from prep.trainer.generate import load

    with pytest.raises(PrepError, match="no adapter_config.json"):
        load(model, str(tmp_path))


@pytest.mark.parametrize("name", ["chatml", "mistral", "llama2", "vicuna", "alpaca"])
def test_generate_asks_with_the_ids_training_saw_before_the_answer(name: str, tmp_path: Path) -> None:
    """The prompt ids are the tokenized conversation's ids up to its first trained token, even where the
    template puts a space before the answer (llama2, mistral, vicuna: trained as part of the answer's first token)."""
    from prep.render.templates import get_template
    from prep.render.tokenizer import load_tokenizer
    from prep.trainer.generate import Generator

    system, prompt = "Be brief.", "What is the capital of France?"
    chat = {"messages": [{"role": "system", "content": system}, {"role": "user", "content": prompt},
                         {"role": "assistant", "content": "Paris is."}]}
    (tmp_path / "chat.jsonl").write_text(json.dumps(chat) + "\n", encoding="utf-8")
    tokenize(Inputs([str(tmp_path / "chat.jsonl")]), TOKENIZER, str(tmp_path / "shards"), template=name)
    [row] = rows(str(tmp_path / "shards"))
    first_trained = next(i for i, label in enumerate(row["labels"]) if label != -100)
    tok = load_tokenizer(TOKENIZER)
    generator = Generator(None, tok, None, get_template(name, tok.specials, tok.jinja), [])
    assert generator.prompt_ids(prompt, system) == row["input_ids"][:first_trained]


BAD_OPTIONS = [("--batch-size", "0", "batch_size", 0), ("--grad-accum", "0", "grad_accum", 0),
               ("--warmup-ratio", "-0.5", "warmup_ratio", -0.5), ("--warmup-ratio", "1", "warmup_ratio", 1.0),
               ("--lr", "-1", "lr", -1.0), ("--lora-r", "0", "lora_r", 0), ("--lora-dropout", "2", "lora_dropout", 2.0)]


@pytest.mark.parametrize(("flag", "text", "name", "value"), BAD_OPTIONS)
def test_bad_option_values_are_refused_naming_the_option(flag: str, text: str, name: str, value: float,
                                                          shards: dict, tmp_path: Path) -> None:
    done = invoke_prep("train", shards["packed"], "--model", str(tmp_path), "-o", str(tmp_path / "o"), flag, text)
    assert done.exit_code == 2 and flag in done.output and "internal error" not in done.output, done.output
    with pytest.raises(PrepError, match=f"^{flag} "):
        train(shards["packed"], TrainOptions(model=str(tmp_path), output=str(tmp_path / "o"), **{name: value}))
    assert not (tmp_path / "o").exists()


def test_warmup_ratio_reaches_transformers_as_a_share_of_the_steps(tmp_path: Path) -> None:
    from prep.trainer.train import _config

    for method in ("sft", "dpo", "kto", "orpo", "reward"):  # every method's TRL config takes the shared arguments
        config = _config(TrainOptions(model="m", output=str(tmp_path), warmup_ratio=0.5, beta=0.25), tmp_path, False,
                         False, False, method)
        assert config.get_warmup_steps(40) == 20
        assert getattr(config, "beta", 0.25) == 0.25


@pytest.mark.parametrize("missing", ["torch", "peft"])
def test_a_missing_train_extra_is_named_with_the_install_line(missing: str, shards: dict, tmp_path: Path) -> None:
    """A Python where `missing` cannot be imported (its sys.modules entry is None): one line, no internal error."""
    import subprocess
    import sys

    from conftest import ROOT

    run = f"import sys; sys.modules[{missing!r}] = None; from prep.cli import main; main()"
    for args in (["train", shards["packed"], "--model", str(tmp_path), "-o", str(tmp_path / "o")],
                 ["generate", "--model", str(tmp_path), "Hi"]):
        done = subprocess.run([sys.executable, "-c", run, *args], capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
        assert done.returncode == 2, done.stderr
        assert "train extra" in done.stderr and f"{missing} cannot be imported" in done.stderr, done.stderr
        assert "pip install 'prep[train]'" in done.stderr and "internal error" not in done.stderr, done.stderr


def test_attn_implementation_reaches_the_model(root: Path, model: str, shards: dict) -> None:
    """eager on CPU: packed rows still stacked, same first loss; flash-attention without its package (or a GPU)
    is refused naming the option."""
    options = TrainOptions(model=model, output=str(root / "eager"), max_steps=1, lr=1e-3, batch_size=4,
                           attn_implementation="eager")
    report = train(shards["packed"], options).report
    assert report["attn_implementation"] == "eager" and report["batching"] == "packed rows stacked"
    assert report["first_loss"] == pytest.approx(manual_loss(base(model), shards["packed"]), rel=1e-4)
    if importlib.util.find_spec("flash_attn") is None:
        done = invoke_prep("train", shards["packed"], "--model", model, "-o", str(root / "flash"),
                           "--attn-implementation", "flash_attention_2")
        assert done.exit_code == 2 and "--attn-implementation flash_attention_2" in done.output, done.output


def test_the_adapter_and_the_merged_model_serve_as_trained(lora: dict, shards: dict) -> None:
    """Both folders carry the shards' built-in chatml (as its jinja form) and stop on <|im_end|>: transformers
    renders every sample conversation from them alone to the shards' ids."""
    for folder in (lora["output"], lora["merged"]):
        result = verify(shards["unpacked"], serving=folder)
        assert result.ok, [str(f) for f in result.findings]
        assert result.serving["rows"] == read_manifest(shards["unpacked"])["counts"]["rows"]
    generation = json.loads((Path(lora["merged"]) / "generation_config.json").read_text(encoding="utf-8"))
    assert 2 in generation["eos_token_id"]  # <|im_end|>
    assert read_manifest(shards["unpacked"])["template"]["name"] == "chatml"
    assert (Path(lora["merged"]) / "chat_template.jinja").read_text(encoding="utf-8") == \
        read_manifest(shards["unpacked"])["template"]["chat_template"]


def test_a_failed_merge_keeps_the_report_and_the_adapter(model: str, shards: dict, tmp_path: Path) -> None:
    """The base model's weights vanish during training (deleted at the last step): --merge cannot reload them,
    and says so in one line, after the report, the loss curve and the adapter were written."""
    base_copy = tmp_path / "base"
    shutil.copytree(model, base_copy)

    def progress(point: dict) -> None:
        (base_copy / "model.safetensors").unlink(missing_ok=True)

    out = tmp_path / "o"
    with pytest.raises(PrepError, match="--merge failed .*training_report.json are saved"):
        train(shards["packed"], TrainOptions(model=str(base_copy), output=str(out), max_steps=1, batch_size=4,
                                             merge=True), progress)
    report = json.loads((out / "training_report.json").read_text())
    assert report["steps"] == 1 and "merged" not in report
    assert len((out / "loss_curve.csv").read_text().splitlines()) == 2
    assert (out / "adapter" / "adapter_model.safetensors").is_file() and (out / "adapter" / "prep_train.json").is_file()
    assert not list(out.rglob(".*.tmp-*"))


def test_generate_warns_when_the_base_model_is_not_the_one_trained_on(lora: dict, model: str, tmp_path: Path) -> None:
    """The tiny llama with another tokenizer (two ids swapped), in another folder: both are named on stderr."""
    other = tmp_path / "other-llama"
    shutil.copytree(model, other)
    swapped = swapped_tokenizer(tmp_path / "swapped")
    shutil.copy(swapped / "tokenizer.json", other / "tokenizer.json")
    done = invoke_prep("generate", "--model", str(other), "--adapter", lora["output"], "--max-new-tokens", "2", "Hi")
    err = done.stderr
    assert done.exit_code == 0, done.output
    assert "template: chatml" in err
    assert "but " + str(other) + " has tokenizer other-llama" in err, err
    assert f"trained on the base model {model}; --model is {other}" in err, err
