"""prep train --method dpo|kto|orpo|reward on tiny llamas built from a config.

The batches each method's trainer steps on are compared with the shards' ids (llama3 template: one BOS,
the answer's own <|eot_id|>, nothing added); the first DPO loss is checked against ln 2 and against a hand
computation from the tiny models' log-probs; DPO and the reward model learn dpo_en_demo pairs; QLoRA DPO
saves and reloads, and a merged DPO adapter gives the adapter's logits.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import pytest

from conftest import SAMPLES, fixture, make_tiny_model
from prep.core.findings import PrepError
from prep.formats.inputs import Inputs
from prep.shards.reader import iter_tables
from prep.stages.tokenize import tokenize

torch = pytest.importorskip("torch")
pytest.importorskip("trl")
peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")

from prep.trainer.generate import load  # noqa: E402 - needs the train extra
from prep.trainer.train import TrainOptions, train  # noqa: E402 - needs the train extra

TOKENIZER = str(SAMPLES / "tokenizer")
SEQUENTIAL = {"train_sampling_strategy": "sequential"}  # batches in file order, so a test knows which rows


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("preference")


@pytest.fixture(scope="module")
def model(root: Path) -> str:
    return str(make_tiny_model(root / "tiny-llama"))


@pytest.fixture(scope="module")
def shards(root: Path) -> dict[str, str]:
    """The sample pairs and feedback rows, chatml (the samples tokenizer) and llama3 (a BOS template)."""
    out = {}
    llama3 = str(fixture("tokenizers", "llama3"))
    for name, tok, template in (("", TOKENIZER, "chatml"), ("llama3-", llama3, "llama3")):
        out[f"{name}dpo"] = str(root / f"{name}dpo")
        tokenize(Inputs([str(SAMPLES / "openai_dpo.jsonl")]), tok, out[f"{name}dpo"], template=template, kind="dpo")
        out[f"{name}kto"] = str(root / f"{name}kto")
        tokenize(Inputs([str(SAMPLES / "trl_kto.jsonl")]), tok, out[f"{name}kto"], template=template, kind="kto")
    return out


def rows(folder: str) -> list[dict[str, Any]]:
    return [r for t in iter_tables(folder) for r in t.to_pylist()]


def logps(lm: Any, prompt: list[int], answer: list[int]) -> float:
    """log p(answer | prompt) under `lm`: the answer's token log-probs summed, the row run alone."""
    ids = torch.tensor([prompt + answer])
    with torch.no_grad():
        logits = lm(input_ids=ids, use_cache=False).logits[0, :-1].double()
    picked = torch.log_softmax(logits, -1).gather(1, ids[0, 1:, None])[:, 0]
    return float(picked[len(prompt) - 1:].sum())


def unpadded(ids: list[int], mask: list[int]) -> list[int]:
    """A row of a right-padded batch without its padding (the mask is ones, then zeros)."""
    n = sum(mask)
    assert mask == [1] * n + [0] * (len(mask) - n)
    return ids[:n]


@pytest.fixture(scope="module")
def llama3_model(root: Path) -> str:
    """A tiny llama with the llama3 tokenizer (128k ids), narrow so that its embeddings stay small."""
    return str(make_tiny_model(root / "tiny-llama3", fixture("tokenizers", "llama3"), hidden=16))


@pytest.mark.parametrize("method", ["dpo", "kto", "orpo", "reward"])
def test_every_batch_is_the_shard_ids(method: str, root: Path, llama3_model: str, shards: dict[str, str],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[dict[str, list]] = []
    step = transformers.Trainer.training_step

    def spy(self: Any, model: Any, inputs: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        seen.append({k: v.tolist() for k, v in inputs.items() if torch.is_tensor(v)})
        return step(self, model, inputs, *args, **kwargs)

    monkeypatch.setattr(transformers.Trainer, "training_step", spy)
    folder = shards["llama3-kto" if method == "kto" else "llama3-dpo"]
    report = train(folder, TrainOptions(model=llama3_model, output=str(root / f"ids-{method}"), method=method,
                                        max_steps=2, batch_size=2, extra=SEQUENTIAL)).report
    assert report["objective"] == method and report["steps"] == 2 and len(seen) == 2
    expected = rows(folder)
    bos, eot = 128000, 128009  # <|begin_of_text|>, <|eot_id|>
    for n, batch in enumerate(seen):
        part = expected[2 * n:2 * n + 2]
        if method == "kto":
            assert batch["label"] == [r["label"] for r in part]
            sides = [(i, r["prompt_input_ids"], r["completion_input_ids"]) for i, r in enumerate(part)]
        else:  # dpo and reward batches are [chosen of each row..., rejected of each row...]
            sides = [(i + half, r["prompt_input_ids"], r[f"{side}_input_ids"]) for half, side in ((0, "chosen"), (2,
                     "rejected")) for i, r in enumerate(part)]
        if method == "orpo":  # one tensor per side, labels -100 on the prompt
            sides = [(side, i, r["prompt_input_ids"], r[f"{side}_input_ids"]) for side in ("chosen", "rejected")
                     for i, r in enumerate(part)]
            for side, i, prompt, answer in sides:
                ids = unpadded(batch[f"{side}_input_ids"][i], batch[f"{side}_attention_mask"][i])
                assert ids == prompt + answer
                assert batch[f"{side}_labels"][i][:len(ids)] == [-100] * len(prompt) + answer
            whole = [p + a for *_, p, a in sides]
        else:
            for i, prompt, answer in sides:
                ids = unpadded(batch["input_ids"][i], batch["attention_mask"][i])
                assert ids == prompt + answer
                if method != "reward":
                    assert batch["completion_mask"][i][:len(ids)] == [0] * len(prompt) + [1] * len(answer)
            whole = [p + a for _, p, a in sides]
        for ids in whole:  # the template's one BOS, the answer's own end-of-turn token, none added
            assert ids[0] == bos and ids.count(bos) == 1 and ids[-1] == eot and ids.count(eot) == ids.count(128007)


def dpo_loss(policy: Any, reference: Any, part: list[dict[str, Any]], beta: float = 0.1) -> float:
    """DPO's sigmoid loss of a batch, by hand: -log sigmoid(beta * (policy - reference log-ratio margins))."""
    losses = []
    for r in part:
        prompt = r["prompt_input_ids"]
        margin = (logps(policy, prompt, r["chosen_input_ids"]) - logps(reference, prompt, r["chosen_input_ids"])
                  - logps(policy, prompt, r["rejected_input_ids"]) + logps(reference, prompt, r["rejected_input_ids"]))
        losses.append(-torch.nn.functional.logsigmoid(torch.tensor(beta * margin, dtype=torch.float64)).item())
    return sum(losses) / len(losses)


def test_first_dpo_loss_is_ln2_under_lora_and_writes_the_curves(root: Path, model: str,
                                                                 shards: dict[str, str]) -> None:
    """The reference is the policy with its adapter off; the fresh adapter (B = 0) changes nothing."""
    out = root / "ln2"
    report = train(shards["dpo"], TrainOptions(model=model, output=str(out), max_steps=3, batch_size=2)).report
    assert report["objective"] == "dpo" and report["method"] == "lora"
    assert report["first_loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert report["tokens_per_s"] > 0 and report["peak_memory"]["bytes"] > 0
    with open(out / "loss_curve.csv", newline="", encoding="utf-8") as f:
        curve = list(csv.DictReader(f))
    assert len(curve) == 3
    assert {"loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"} <= set(curve[0])
    assert float(curve[0]["rewards/margins"]) == 0.0 and float(curve[0]["rewards/accuracies"]) == 0.0
    assert (out / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    info = json.loads((out / "adapter" / "prep_train.json").read_text())
    assert info["kind"] == "dpo" and info["template"]["name"] == "chatml"
    # one adapter: the reference is the adapter switched off, not a frozen copy of it (TRL's "ref" adapter)
    assert not (out / "adapter" / "ref").exists()
    assert json.loads((out / "adapter" / "adapter_config.json").read_text())["r"] == 16


def test_first_dpo_loss_is_the_hand_computation(root: Path, model: str, shards: dict[str, str]) -> None:
    """--full beside a frozen copy of the base: ln 2; beside --ref-model another tiny llama: the loss from the two
    models' log-probs on the shard ids of the first batch."""
    part = rows(shards["dpo"])[:2]
    same = train(shards["dpo"], TrainOptions(model=model, output=str(root / "full-same"), full=True, max_steps=1,
                                             batch_size=2, extra=SEQUENTIAL)).report
    assert same["first_loss"] == pytest.approx(math.log(2), abs=1e-6)
    other = str(make_tiny_model(root / "tiny-llama-seed1", seed=1))
    report = train(shards["dpo"], TrainOptions(model=model, output=str(root / "full-ref"), full=True, max_steps=1,
                                               batch_size=2, beta=0.1, ref_model=other, extra=SEQUENTIAL)).report
    base = transformers.AutoModelForCausalLM.from_pretrained(model).eval()
    reference = transformers.AutoModelForCausalLM.from_pretrained(other).eval()
    expected = dpo_loss(base, reference, part)
    assert abs(expected - math.log(2)) > 0.01  # the two models disagree about these pairs
    assert report["first_loss"] == pytest.approx(expected, abs=1e-5)


@pytest.fixture(scope="module")
def demo(root: Path) -> str:
    """dpo_en_demo's first 24 pairs with prompts that fit 256 tokens (answers cut to fit), as chatml dpo shards."""
    source = json.loads(fixture("data", "llamafactory", "dpo_en_demo.json").read_text(encoding="utf-8"))
    registry = json.loads(fixture("data", "llamafactory", "dataset_info.json").read_text(encoding="utf-8"))
    folder = root / "demo-data"
    folder.mkdir()
    (folder / "dpo_head.json").write_text(json.dumps(source[:24]), encoding="utf-8")
    (folder / "dataset_info.json").write_text(json.dumps({"dpo_head": {**registry["dpo_en_demo"],
                                                                       "file_name": "dpo_head.json"}}))
    tokenize(Inputs(registry=str(folder / "dataset_info.json"), datasets=["dpo_head"]), TOKENIZER,
             str(root / "demo"), template="chatml", kind="dpo", max_len=256, overflow="truncate")
    assert 8 <= len(rows(str(root / "demo"))) <= 24
    return str(root / "demo")


@pytest.mark.slow
def test_twenty_dpo_steps_learn_the_demo_pairs(root: Path, model: str, demo: str) -> None:
    report = train(demo, TrainOptions(model=model, output=str(root / "demo-dpo"), max_steps=20, batch_size=4,
                                      lr=5e-3, eval=demo)).report
    losses = [p["loss"] for p in report["loss_curve"] if "loss" in p]
    assert losses[0] == pytest.approx(math.log(2), abs=1e-6)
    assert sum(losses[-4:]) / 4 < 0.5 * math.log(2), losses
    assert report["eval"]["eval_rewards/accuracies"] > 0.5 and report["eval"]["eval_rewards/margins"] > 0
    tuned = peft.PeftModel.from_pretrained(transformers.AutoModelForCausalLM.from_pretrained(model),
                                           report["output"]).eval()
    with tuned.disable_adapter():  # the reference, as the trainer had it
        reference = {(i, side): logps(tuned, r["prompt_input_ids"], r[f"{side}_input_ids"])
                     for i, r in enumerate(rows(demo)) for side in ("chosen", "rejected")}
    right = [logps(tuned, r["prompt_input_ids"], r["chosen_input_ids"]) - reference[i, "chosen"]
             > logps(tuned, r["prompt_input_ids"], r["rejected_input_ids"]) - reference[i, "rejected"]
             for i, r in enumerate(rows(demo))]
    assert sum(right) / len(right) > 0.5  # the reward accuracy on the training pairs, by hand


@pytest.mark.slow
def test_the_reward_model_ranks_the_demo_pairs(root: Path, model: str, demo: str) -> None:
    report = train(demo, TrainOptions(model=model, output=str(root / "demo-reward"), method="reward", max_steps=20,
                                      batch_size=4, lr=5e-3, eval=demo)).report
    assert report["objective"] == "reward" and report["eval"]["eval_accuracy"] > 0.5
    scorer = peft.PeftModel.from_pretrained(
        transformers.AutoModelForSequenceClassification.from_pretrained(model, num_labels=1), report["output"]).eval()
    with torch.no_grad():
        score = [[scorer(input_ids=torch.tensor([r["prompt_input_ids"] + r[f"{s}_input_ids"]])).logits.item()
                  for s in ("chosen", "rejected")] for r in rows(demo)]
    assert sum(c > r for c, r in score) / len(score) > 0.5
    with pytest.raises(PrepError, match="a reward model .* scores answers and does not generate"):
        load(model, report["output"])


@pytest.mark.slow
def test_qlora_dpo_runs_saves_and_reloads(root: Path, model: str, shards: dict[str, str]) -> None:
    pytest.importorskip("bitsandbytes")
    report = train(shards["dpo"], TrainOptions(model=model, output=str(root / "qlora-dpo"), qlora=True, max_steps=3,
                                               batch_size=1, lr=5e-2, eval=shards["dpo"])).report
    assert report["method"] == "qlora" and report["objective"] == "dpo" and report["steps"] == 3
    four_bit = transformers.BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                               bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=torch.float32)
    quantized = transformers.AutoModelForCausalLM.from_pretrained(model, quantization_config=four_bit,
                                                                  device_map={"": "cpu"})
    tuned = peft.PeftModel.from_pretrained(quantized, report["output"]).eval()

    class Off:  # the reloaded adapter switched off: the 4-bit reference the trainer had
        def __call__(self, **kw: Any) -> Any:
            with tuned.disable_adapter():
                return tuned(**kw)

    # evaluated one pair per batch: the mean of the pairs' losses (bitsandbytes' CPU 4-bit kernels sum in a
    # thread-dependent order, and this loss is made of differences of summed log-probs: 3e-4 seen)
    assert dpo_loss(tuned, Off(), rows(shards["dpo"])) == pytest.approx(report["eval_loss"], rel=2e-3)
    assert report["eval_loss"] < math.log(2)


@pytest.mark.slow
def test_a_merged_dpo_adapter_gives_the_adapters_logits(root: Path, model: str, shards: dict[str, str]) -> None:
    report = train(shards["dpo"], TrainOptions(model=model, output=str(root / "merged-dpo"), max_steps=3,
                                               batch_size=2, lr=5e-2, merge=True)).report
    merged = transformers.AutoModelForCausalLM.from_pretrained(report["merged"]).eval()
    base = transformers.AutoModelForCausalLM.from_pretrained(model).eval()
    tuned = peft.PeftModel.from_pretrained(base, report["output"]).eval()
    r = rows(shards["dpo"])[0]
    ids = torch.tensor([r["prompt_input_ids"] + r["chosen_input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(merged(input_ids=ids).logits, tuned(input_ids=ids).logits, atol=1e-4, rtol=1e-4)
        with tuned.disable_adapter():
            assert not torch.allclose(tuned(input_ids=ids).logits, merged(input_ids=ids).logits, atol=1e-3)


def test_a_reward_margin_column_reaches_the_batches(root: Path, model: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """--margin-column: a number per pair carried into the dpo shards (--keep-columns) is TRL's `margin`."""
    pairs = [json.loads(line) for line in (SAMPLES / "openai_dpo.jsonl").read_text(encoding="utf-8").splitlines()]
    source = root / "margins.jsonl"
    source.write_text("".join(json.dumps({**p, "gap": 0.5 * i}) + "\n" for i, p in enumerate(pairs)))
    folder = str(root / "margins")
    tokenize(Inputs([str(source)], keep_columns=["gap"]), TOKENIZER, folder, template="chatml", kind="dpo")
    seen: list[list[float]] = []
    step = transformers.Trainer.training_step

    def spy(self: Any, model: Any, inputs: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        seen.append(inputs["margin"].tolist())
        return step(self, model, inputs, *args, **kwargs)

    monkeypatch.setattr(transformers.Trainer, "training_step", spy)
    options = TrainOptions(model=model, output=str(root / "rm-margin"), method="reward", margin_column="gap",
                           max_steps=2, batch_size=2, extra=SEQUENTIAL)
    train(folder, options)
    assert seen == [[0.0, 0.5], [1.0, 1.5]]
    with pytest.raises(PrepError, match="--margin-column nope: .* carries no column nope"):
        train(folder, TrainOptions(model=model, output=str(root / "rm-nope"), method="reward", margin_column="nope"))
    with pytest.raises(PrepError, match="--margin-column: --method dpo takes no margin"):
        train(folder, TrainOptions(model=model, output=str(root / "rm-dpo"), margin_column="gap"))
