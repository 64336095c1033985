"""prep train --method grpo on prompt shards, with a tiny llama, and export --to trl-grpo.

The ids TRL's GRPOTrainer generates from (and computes the loss on) are recorded at the points it uses them and
compared with the shards' prompt_input_ids; the reward functions are seen receiving the carried `answer`; a
reward the tiny random model can learn (the share of its tokens in the lower half of the vocabulary) rises
over 30 steps. The built-in rewards are checked on their own, and the export's messages render (with the
tokenizer's own template, as TRL does) to exactly the shards' ids.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from conftest import SAMPLES, fixture, make_tiny_model
from prep.core.findings import PrepError
from prep.formats.inputs import Inputs
from prep.shards.layout import read_manifest
from prep.shards.reader import iter_tables
from prep.stages.export import export
from prep.stages.tokenize import tokenize
from prep.trainer.rewards import final_answer, math_equal, reward_functions

QUESTIONS = [(1, 2), (3, 4), (5, 6), (7, 8), (2, 9), (4, 4), (6, 1), (8, 3)]

# A reward of one's own, as TRL calls it: it notes the answers it was given beside itself, and rewards the share
# of a completion's tokens in the lower half of the 2,500-token samples vocabulary, which the random tiny model
# samples about half the time and can learn to prefer within a few steps.
REWARD_FILE = '''
import json
from pathlib import Path

def low_half(prompts, completions, completion_ids, answer, prompt_input_ids, **kwargs):
    with open(Path(__file__).with_name("seen.jsonl"), "a") as f:
        f.write(json.dumps({"answer": answer, "prompt_input_ids": prompt_input_ids}) + "\\n")
    return [sum(t < 1250 for t in ids) / len(ids) for ids in completion_ids]
'''


def write_questions(path: Path) -> Path:
    rows = [{"messages": [{"role": "system", "content": "Answer with a number."},
                          {"role": "user", "content": f"What is {a} plus {b}?"}], "answer": str(a + b)}
            for a, b in QUESTIONS]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("grpo")


@pytest.fixture(scope="module")
def prompts(root: Path) -> str:
    """Prompt shards of eight sums, their answers carried (chatml, the samples tokenizer)."""
    out = str(root / "prompts")
    tokenize(Inputs([str(write_questions(root / "sums.jsonl"))], keep_columns=["answer"]), str(SAMPLES / "tokenizer"),
             out, template="chatml", kind="prompt")
    return out


def shard_rows(folder: str) -> list[dict[str, Any]]:
    return [r for t in iter_tables(folder) for r in t.to_pylist()]


# --- the built-in rewards --------------------------------------------------------------------------------------

def test_exact_and_math_rewards_compare_with_the_carried_column() -> None:
    exact, math, fmt, length = reward_functions(["exact", "math:solution", "format", "length:4"],
                                                ["answer", "solution"], 16)
    completions = ["<think>3 and 4</think> 7", "7.0", "The sum is \\boxed{\\frac{14}{2}}.", "8"]
    assert exact(completions=completions, answer=["7"] * 4) == [1.0, 0.0, 0.0, 0.0]
    assert math(completions=completions, solution=["7"] * 4) == [1.0, 1.0, 1.0, 0.0]
    assert exact(completions=["7"], answer=[None]) == [None]  # no answer: left out of the mean, not a 0
    assert fmt(completions=completions) == [1.0, 0.0, 0.0, 0.0]
    assert length(completion_ids=[[1] * 4, [1] * 2, [1] * 9]) == [1.0, 0.5, 0.0]
    assert [f.__name__ for f in (exact, math, fmt, length)] == ["exact_answer", "math_solution", "format", "length_4"]


def test_math_equal() -> None:
    assert final_answer("so 1,234 apples, not 5") == "5"
    assert final_answer("\\boxed{\\frac{1}{2}} and 3") == "\\frac{1}{2}"
    assert math_equal("0.5", "1/2") and math_equal("\\frac{1}{2}", ".5") and math_equal("$1,000$", "1000")
    assert not math_equal("0.51", "1/2") and math_equal("x+1", "x + 1") and not math_equal("x", "y")


def test_reward_specs_are_checked_before_training(tmp_path: Path) -> None:
    def refused(spec: str, carried: tuple[str, ...] = ("answer",)) -> str:
        with pytest.raises(PrepError) as e:
            reward_functions([spec], list(carried), 16)
        return str(e.value)

    assert "carry no column answer (they carry none); tokenize with --keep-columns answer" in refused("exact", ())
    assert "not a reward" in refused("exactly")
    assert "does not compile" in refused("format:(")
    assert "at least 1" in refused("length:0") and "at least 1" in refused("length:many")
    assert f"no file {tmp_path / 'r.py'}" in refused(f"{tmp_path / 'r.py'}:f")
    (tmp_path / "r.py").write_text("def g(**kwargs):\n    return []\nraise_me = 1\n")
    assert "defines no function f" in refused(f"{tmp_path / 'r.py'}:f")
    assert "name the function too" in refused(f"{tmp_path / 'r.py'}")
    (tmp_path / "bad.py").write_text("import not_a_module_anywhere\n")
    assert "importing" in refused(f"{tmp_path / 'bad.py'}:f") and "ModuleNotFoundError" in refused(
        f"{tmp_path / 'bad.py'}:f")
    with pytest.raises(PrepError, match="at least one --reward"):
        reward_functions([], ["answer"], 16)


# --- training ---------------------------------------------------------------------------------------------------

def _train_extra() -> None:
    for name in ("torch", "trl", "peft", "transformers"):
        pytest.importorskip(name)


def test_completions_stop_where_the_served_model_will(root: Path, prompts: str, tmp_path: Path, monkeypatch) -> None:
    """GRPO's stop ids are the ones the saved model is served with (`serving.eos_ids`): the model's own, the EOS, and
    the end-of-turn token as the manifest records it; for prompts rendered with a .jinja file (named in the manifest
    by its file name alone) too, from another working directory."""
    pytest.importorskip("transformers")
    from transformers import AutoTokenizer  # noqa: PLC0415 - train extra

    from prep.trainer.grpo import stop_ids  # noqa: PLC0415 - imports the trainer layer
    from prep.trainer.serving import eos_ids  # noqa: PLC0415 - as above

    hf = AutoTokenizer.from_pretrained(str(SAMPLES / "tokenizer"))
    end, eos, start = (hf.convert_tokens_to_ids(t) for t in ("<|im_end|>", hf.eos_token, "<|im_start|>"))
    assert read_manifest(prompts)["template"]["eot"] == "<|im_end|>" and end == eos  # the samples' EOS ends turns
    model = str(SAMPLES / "tokenizer")
    assert stop_ids(read_manifest(prompts), hf, [7, eos], model) == eos_ids([7, eos], hf, "<|im_end|>") == [7, eos]
    # the manifest's, as recorded (a name it would not be built again from)
    assert stop_ids({"template": {"name": "chatml", "eot": "<|im_start|>"}}, hf, 7, model) == [7, eos, start]
    template = tmp_path / "turns.jinja"
    template.write_text("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
                        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}", encoding="utf-8")
    out = tmp_path / "prompts"
    tokenize(Inputs([str(write_questions(tmp_path / "sums.jsonl"))]), str(SAMPLES / "tokenizer"), str(out),
             template=str(template), kind="prompt")
    manifest = read_manifest(out)
    assert manifest["template"]["name"] == "turns.jinja"
    monkeypatch.chdir(root)  # where no turns.jinja is (the name alone was read as a path there)
    assert manifest["template"]["eot"] == "<|im_end|>" and stop_ids(manifest, hf, None, model) == [eos]
    old = {"template": {"name": "turns.jinja"}}  # an older prep's manifest, no eot recorded, away from the file
    assert stop_ids(old, hf, None, model) == [eos]


def test_older_prompt_shards_stop_at_their_templates_end_of_turn_too() -> None:
    """Shards made before manifests recorded the end-of-turn token: it comes from their template, built again by
    name (phi-3: `<|end|>`, 32007, beside the EOS `<|endoftext|>`, 32000)."""
    pytest.importorskip("transformers")
    from transformers import AutoTokenizer  # noqa: PLC0415 - train extra

    from prep.trainer.grpo import stop_ids  # noqa: PLC0415 - imports the trainer layer

    phi = str(fixture("tokenizers", "phi-3-mini"))
    hf = AutoTokenizer.from_pretrained(phi)
    end = hf.convert_tokens_to_ids("<|end|>")
    assert end != hf.eos_token_id
    for name in ("phi3", "tokenizer"):
        assert stop_ids({"template": {"name": name}}, hf, None, phi) == [hf.eos_token_id, end], name


@pytest.mark.slow  # each refusal comes after train() has imported torch, transformers and trl (40 s at load 20)
def test_grpo_is_refused_where_it_cannot_train(root: Path, prompts: str) -> None:
    _train_extra()
    from prep.trainer.train import TrainOptions, train  # noqa: PLC0415 - needs the train extra

    def refused(shards: str, **options: Any) -> str:
        with pytest.raises(PrepError) as e:
            train(shards, TrainOptions(model=str(root / "nowhere"), output=str(root / "refused"), **options))
        return str(e.value)

    assert "at least one --reward" in refused(prompts)
    assert "must be a multiple of --num-generations (4)" in refused(prompts, reward=("exact",), batch_size=6)
    assert "--method dpo trains on dpo shards, and these are prompt shards" in refused(prompts, method="dpo")
    sft = str(root / "sft")
    tokenize(Inputs([str(SAMPLES / "openai.jsonl")]), str(SAMPLES / "tokenizer"), sft, template="chatml")
    assert "--method grpo trains on prompt shards" in refused(sft, method="grpo")
    assert "--reward: --method sft learns from the shards' answers" in refused(sft, reward=("exact",))
    dpo = str(root / "dpo")
    tokenize(Inputs([str(SAMPLES / "openai_dpo.jsonl")]), str(SAMPLES / "tokenizer"), dpo, template="chatml", kind="dpo")
    assert "--beta 0: --method dpo takes a --beta above 0" in refused(dpo, beta=0.0)


@pytest.mark.slow  # 30 GRPO steps, each generating 8 completions of 8 tokens: ~60 s on a quiet 2-core machine
def test_grpo_trains_on_the_shards_prompt_ids_and_its_reward_rises(root: Path, prompts: str, monkeypatch) -> None:
    _train_extra()
    import trl  # noqa: PLC0415 - train extra

    from prep.trainer.train import TrainOptions, train  # noqa: PLC0415 - needs the train extra

    generated: list[list[int]] = []  # the prompt ids generation started from
    trained: list[list[int]] = []  # the prompt ids of the batches the loss was computed on (padding removed)
    generate, score = trl.GRPOTrainer._generate_single_turn, trl.GRPOTrainer._generate_and_score_completions

    def spy_generate(self: Any, prompt_ids: list[list[int]], *args: Any, **kwargs: Any) -> Any:
        generated.extend(list(map(int, ids)) for ids in prompt_ids)
        return generate(self, prompt_ids, *args, **kwargs)

    def spy_score(self: Any, inputs: Any) -> Any:
        out = score(self, inputs)
        trained.extend(ids[mask.bool()].tolist() for ids, mask in zip(out["prompt_ids"], out["prompt_mask"],
                                                                       strict=True))
        return out

    monkeypatch.setattr(trl.GRPOTrainer, "_generate_single_turn", spy_generate)
    monkeypatch.setattr(trl.GRPOTrainer, "_generate_and_score_completions", spy_score)
    (root / "rewards").mkdir()
    (root / "rewards" / "mine.py").write_text(REWARD_FILE, encoding="utf-8")
    model = make_tiny_model(root / "tiny-llama")
    result = train(prompts, TrainOptions(
        model=str(model), output=str(root / "grpo"), method="grpo", reward=(f"{root / 'rewards' / 'mine.py'}:low_half",
                                                                          "exact"),
        num_generations=4, batch_size=8, max_completion_len=8, max_steps=30, lr=2e-2, beta=0.0, warmup_ratio=0.0,
        scheduler="constant"))

    shards = shard_rows(prompts)
    ids = {tuple(r["prompt_input_ids"]): r for r in shards}
    # each generation batch: 2 prompts x 4 completions; every prompt id list is a shard row's, as it is
    assert len(generated) == 30 * 8 and all(tuple(g) in ids for g in generated)
    assert trained == generated and {tuple(g) for g in generated} == set(ids)
    # the reward functions got each completion's row's answer, beside that row's prompt ids
    seen = [json.loads(line) for line in (root / "rewards" / "seen.jsonl").read_text().splitlines()]
    assert len(seen) == 30
    for call in seen:
        assert call["answer"] == [ids[tuple(p)]["answer"] for p in call["prompt_input_ids"]]
    curve = result.report["loss_curve"]
    rewards = [p["rewards/low_half/mean"] for p in curve]
    first, last = sum(rewards[:5]) / 5, sum(rewards[-5:]) / 5
    assert len(curve) == 30 and last > first + 0.15, rewards
    assert all(p["rewards/exact_answer/mean"] == 0.0 for p in curve)  # random weights never say "3"
    report = result.report
    assert report["objective"] == "grpo" and report["steps"] == 30
    prompt_tokens = sum(len(g) for g in generated)
    assert report["trained_tokens"] == 30 * 8 * 8  # every completion ran to 8 tokens (no end-of-turn sampled)
    assert report["tokens"] == prompt_tokens + report["trained_tokens"]
    assert (root / "grpo" / "adapter" / "adapter_config.json").is_file()
    assert "reward" in (root / "grpo" / "loss_curve.csv").read_text().splitlines()[0].split(",")


# --- export ------------------------------------------------------------------------------------------------------

def test_export_trl_grpo_messages_render_to_the_shard_ids(tmp_path: Path) -> None:
    """The exported messages, rendered as TRL's GRPOTrainer renders them (the tokenizer's chat template,
    add_generation_prompt), are the shards' prompt ids: Qwen2.5's template adds its default system message."""
    transformers = pytest.importorskip("transformers")
    qwen = str(fixture("tokenizers", "qwen2.5"))
    shards = str(tmp_path / "prompts")
    tokenize(Inputs([str(write_questions(tmp_path / "sums.jsonl")), str(SAMPLES / "openai.jsonl")],
                    keep_columns=["answer"]), qwen, shards, kind="prompt")
    out = tmp_path / "grpo.jsonl"
    result = export(shards, "trl-grpo", str(out))
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    # the sample rows with tools are refused: TRL renders every prompt with the trainer's tools
    assert result.tally.written == len(rows) == len(shard_rows(shards)) - 2 and result.tally.rejected == {
        "not_expressible": 2} and result.columns == ["id", "prompt", "answer"]
    assert rows[0] == {"id": "sums.jsonl:1", "prompt": [{"role": "system", "content": "Answer with a number."},
                                                         {"role": "user", "content": "What is 1 plus 2?"}],
                       "answer": "3"}
    assert rows[-1]["answer"] is None and rows[-1]["prompt"][-1]["role"] == "user"  # a chat row: its final answer cut
    tok = transformers.AutoTokenizer.from_pretrained(qwen)
    by_id = {r["ids"][0]: r for r in shard_rows(shards)}
    for row in rows:
        shard = by_id[row["id"]]
        rendered = tok.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=True, return_dict=True)
        assert rendered["input_ids"] == shard["prompt_input_ids"], row["id"]
    assert not result.notes  # the tokenizer's own template, no arguments: nothing to tell TRL


def test_export_trl_grpo_says_what_trl_must_be_told(root: Path, prompts: str, tmp_path: Path) -> None:
    result = export(prompts, "trl-grpo", str(tmp_path / "g.jsonl"))
    assert "built-in template chatml" in result.notes[0]
    with pytest.raises(PrepError, match="name it \\*.jsonl"):
        export(prompts, "trl-grpo", str(tmp_path / "g.parquet"))
    sft = str(tmp_path / "sft")
    tokenize(Inputs([str(SAMPLES / "openai.jsonl")]), str(SAMPLES / "tokenizer"), sft, template="chatml")
    with pytest.raises(PrepError, match="sft shards; --to trl-grpo writes the prompts of prompt shards"):
        export(sft, "trl-grpo", str(tmp_path / "s.jsonl"))
