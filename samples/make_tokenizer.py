"""Train the project's own small tokenizer on the texts in samples/ and write samples/tokenizer/.

A byte-level BPE in the style of Qwen2 (NFC, the same pre-tokenizer split, byte-level
alphabet, so any text encodes without unknown tokens) with a chatml chat template like
Qwen2.5's minus its default system prompt. It lets the quickstart and the always-on tests
run a real `transformers` tokenizer without the hub. Same samples in, same bytes out:

    python samples/make_tokenizer.py [OUT_DIR]     # default: samples/tokenizer
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

SAMPLES = Path(__file__).resolve().parent
VOCAB_SIZE = 2500
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# A fixed list, so adding a sample file does not change the tokenizer (editing one of these does:
# then re-run this script and commit its output).
TRAINING_FILES = ("alpaca.json", "alpaca_ko.json", "alpaca_kto.json", "alpaca_preference.json", "autotrain.csv",
                  "autotrain_dpo.csv", "coqa.json", "coqa_hf.jsonl", "openai.jsonl", "openai_dpo.jsonl",
                  "sharegpt.jsonl", "sharegpt_preference.jsonl", "text.jsonl", "text.txt", "trl_kto.jsonl",
                  "trl_preference.jsonl", "trl_prompt_completion.jsonl")
# Qwen2's pre-tokenizer split: contractions, letter runs, single digits, punctuation, whitespace.
SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
         r"\s*[\r\n]+|\s+(?!\S)|\s+")

# Qwen2.5's chatml template (tools as <tools> JSON, calls as <tool_call>, results as
# <tool_response> in a user turn) without the default system prompt: a system turn appears
# only when the conversation has one, or tools need one.
CHAT_TEMPLATE = """\
{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] + '\\n\\n' }}
    {%- endif %}
    {{- "# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\nYou are provided with \
function signatures within <tools></tools> XML tags:\\n<tools>" }}
    {%- for tool in tools %}
        {{- "\\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within \
<tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\"name\\": <function-name>, \\"arguments\\": \
<args-json-object>}\\n</tool_call><|im_end|>\\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or \
(message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\\n<tool_call>\\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\\n<tool_response>\\n' }}
        {{- message.content }}
        {{- '\\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
"""


def _strings(value: Any) -> Iterator[str]:
    """Every string inside a JSON value (keys too: they are what chat templates print)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)
    elif isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from _strings(v)


def corpus(folder: Path) -> Iterator[str]:
    """The sample texts, read with the standard library only, plus the chatml markup the
    tokenizer will mostly see."""
    for path in (folder / name for name in TRAINING_FILES):
        if path.suffix == ".json":
            yield from _strings(json.loads(path.read_text(encoding="utf-8")))
        elif path.suffix == ".jsonl":
            for line in path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    yield from _strings(json.loads(line))
        elif path.suffix in (".csv", ".tsv"):
            with path.open(encoding="utf-8", newline="") as f:
                for row in csv.reader(f, delimiter="," if path.suffix == ".csv" else "\t"):
                    yield from row
        elif path.suffix == ".txt":
            yield path.read_text(encoding="utf-8")
    for role in ("system", "user", "assistant"):
        yield f"<|im_start|>{role}\nHello.<|im_end|>\n"
    yield "<tool_call>\n{\"name\": \"f\", \"arguments\": {}}\n</tool_call>\n<tool_response>\n{}\n</tool_response>"


def build(folder: Path) -> Tokenizer:
    tok = Tokenizer(models.BPE(unk_token=None, byte_fallback=False, ignore_merges=True))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, min_frequency=1, show_progress=False,
                                  special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus(folder), trainer=trainer)
    return tok


def config() -> dict[str, Any]:
    """tokenizer_config.json: chatml ends a turn with <|im_end|> (the EOS), pads with <|endoftext|>."""
    return {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": {
            str(i): {"content": t, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
                     "special": True}
            for i, t in enumerate(SPECIAL_TOKENS)
        },
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
        "bos_token": None,
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "model_max_length": 4096,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "PreTrainedTokenizerFast",
        "unk_token": None,
    }


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tok = build(SAMPLES)
    (out / "tokenizer.json").write_text(tok.to_str(pretty=True) + "\n", encoding="utf-8")
    (out / "tokenizer_config.json").write_text(json.dumps(config(), indent=2, ensure_ascii=False) + "\n",
                                               encoding="utf-8")
    print(f"{out}: {tok.get_vocab_size()} tokens")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else SAMPLES / "tokenizer")
