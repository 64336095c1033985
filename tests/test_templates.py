"""Templates: built-ins write exactly what the real models' chat templates write, spans cover exactly the
trained text, and the tokenizer's own template is rendered as transformers renders it, or refused."""

from __future__ import annotations

import json

import pytest
from transformers.utils.chat_template_utils import render_jinja_template

from conftest import SAMPLES, hf_tokenizer, run_prep
from prep.core.findings import PrepError, RowError
from prep.render.builtin import BUILTIN, NAMES, Template
from prep.render.jinja import JinjaTemplate
from prep.render.spans import Specials
from prep.render.templates import describe, get_template
from prep.render.tokenizer import load_tokenizer
from prep.stages.template import rows_stage

# Published chat templates (transcribed from the models' tokenizer_config.json) for the families that have
# no fixture tokenizer here. Rendering them with transformers' renderer is the reference for our text.
LLAMA2_CHAT = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = "
    "messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}"
    "{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ "
    "raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if "
    "loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + "
    "'\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}{% if "
    "message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] "
    "== 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}")
MISTRAL_V03 = (  # the branches without tools
    '{%- if messages[0]["role"] == "system" %}{%- set system_message = messages[0]["content"] %}{%- set '
    'loop_messages = messages[1:] %}{%- else %}{%- set loop_messages = messages %}{%- endif %}{{- bos_token }}'
    '{%- for message in loop_messages %}{%- if message["role"] == "user" %}{%- if loop.last and system_message is '
    'defined %}{{- "[INST] " + system_message + "\\n\\n" + message["content"] + "[/INST]" }}{%- else %}{{- "[INST] " '
    '+ message["content"] + "[/INST]" }}{%- endif %}{%- elif message["role"] == "assistant" %}{{- " " + '
    'message["content"]|trim + eos_token}}{%- endif %}{%- endfor %}')
GEMMA3 = (
    "{{ bos_token }}{%- if messages[0]['role'] == 'system' -%}{%- set first_user_prefix = messages[0]['content'] + "
    "'\\n\\n' -%}{%- set loop_messages = messages[1:] -%}{%- else -%}{%- set first_user_prefix = \"\" -%}{%- set "
    "loop_messages = messages -%}{%- endif -%}{%- for message in loop_messages -%}{%- if (message['role'] == 'user') "
    "!= (loop.index0 % 2 == 0) -%}{{ raise_exception(\"Conversation roles must alternate\") }}{%- endif -%}{%- if "
    "(message['role'] == 'assistant') -%}{%- set role = \"model\" -%}{%- else -%}{%- set role = message['role'] -%}"
    "{%- endif -%}{{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else \"\") }}{{ "
    "message['content'] | trim }}{{ '<end_of_turn>\\n' }}{%- endfor -%}{%- if add_generation_prompt -%}"
    "{{'<start_of_turn>model\\n'}}{%- endif -%}")
ZEPHYR = (
    "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + message['content'] + "
    "eos_token }}\n{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' + message['content'] + eos_token }}\n"
    "{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n"
    "{% endif %}\n{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}")
SP = {"bos_token": "<s>", "eos_token": "</s>"}


def m(role: str, content: str, **extra: object) -> dict:
    return {"role": role, "content": content, **extra}


SINGLE = [m("user", "What is 2+2?"), m("assistant", "4")]
MULTI = [m("user", " Hi there "), m("assistant", " Hello! \n"), m("user", "Bye"), m("assistant", "Goodbye.")]
WITH_SYSTEM = [m("system", "Be brief."), m("user", "Name a colour."), m("assistant", "Blue.")]


def reference(source: str, messages: list[dict], generation: bool = False, **variables: str) -> str:
    return render_jinja_template([messages], chat_template=source, add_generation_prompt=generation,
                                 **variables)[0][0]


@pytest.mark.parametrize(("name", "source", "variables", "conversations"), [
    ("llama2", LLAMA2_CHAT, SP, [SINGLE, MULTI, WITH_SYSTEM]),
    ("mistral", MISTRAL_V03, SP, [SINGLE, MULTI]),
    ("gemma", GEMMA3, {"bos_token": "<bos>"}, [SINGLE, MULTI, WITH_SYSTEM]),
    ("zephyr", ZEPHYR, SP, [SINGLE, MULTI, WITH_SYSTEM]),
])
def test_builtin_text_equals_published_template(name: str, source: str, variables: dict, conversations: list) -> None:
    template = get_template(name, Specials(variables.get("bos_token"), variables.get("eos_token", "</s>")))
    for conversation in conversations:
        assert template.render(conversation).text == reference(source, conversation, **variables)


def test_mistral_folds_the_system_prompt_into_the_first_user_turn() -> None:
    """The published v0.3 template writes a system prompt only when the last message is a user turn, so it
    would vanish from training data; prep keeps it, where the model sees it at inference for one turn."""
    template = get_template("mistral", Specials("<s>", "</s>"))
    rendered = template.render(WITH_SYSTEM)
    prompt = reference(MISTRAL_V03, WITH_SYSTEM[:2], **SP)
    assert rendered.text.startswith(prompt)
    assert rendered.text == prompt + " Blue.</s>"


def test_vicuna_matches_fastchat() -> None:
    """FastChat's vicuna_v1.1: system, ' ', then 'USER: q ASSISTANT: a</s>' per turn; BOS from the tokenizer."""
    text = get_template("vicuna", Specials("<s>", "</s>")).render(MULTI).text
    assert text == ("<s>A chat between a curious user and an artificial intelligence assistant. The assistant gives "
                    "helpful, detailed, and polite answers to the user's questions. USER:  Hi there  ASSISTANT:  "
                    "Hello! \n</s>USER: Bye ASSISTANT: Goodbye.</s>")


def test_alpaca_templates() -> None:
    alpaca = get_template("alpaca", Specials(None, "</s>"))
    assert alpaca.render(SINGLE).text == (
        "Below is an instruction that describes a task. Write a response that appropriately completes the request."
        "\n\n### Instruction:\nWhat is 2+2?\n\n### Response:\n4</s>\n\n")
    ko = get_template("alpaca_ko", Specials("<s>", "</s>", adds_bos=True))
    with_input = [m("user", "다음 문장을 영어로 번역하세요."), m("user", "안녕하세요"), m("assistant", "Hello")]
    rendered = ko.render(with_input)
    assert rendered.text == (
        "<s>아래에는 작업을 설명하는 지시 사항과 추가적인 컨텍스트를 제공하는 입력이 있습니다. 요청을 적절하게 완료하는 응답을 "
        "작성하세요.\n\n### instruction:\n다음 문장을 영어로 번역하세요.\n\n### input:\n안녕하세요\n\n### output:\nHello</s>\n\n")
    assert [rendered.text[s:e] for s, e in rendered.spans("assistant")] == ["Hello</s>"]
    assert "### input:" not in ko.render(SINGLE).text


def test_templates_that_need_the_tokenizers_eos_say_so() -> None:
    for name in ("alpaca", "alpaca_ko", "plain"):
        with pytest.raises(PrepError, match="--tokenizer"):
            get_template(name)


PROBES = [SINGLE, MULTI, WITH_SYSTEM, [m("user", "q"), m("assistant", "skip me", weight=0), m("user", "q2"),
                                       m("assistant", "train me")]]


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_spans_cover_exactly_contents_and_answers(name: str) -> None:
    """Every template: each answer span is the (trimmed) content followed by the end-of-turn token, every
    content span is the content, `last` is the final answer, `all` everything, weight 0 is never trained."""
    template: Template = BUILTIN[name](Specials("<s>", "</s>", adds_bos=True))
    for conversation in PROBES:
        rendered = template.render(conversation)
        text = rendered.text
        answers = []
        for turn in rendered.turns:
            message = conversation[turn.index]
            assert text[slice(*turn.content)] in (message["content"], message["content"].strip(),
                                                  message["content"].rstrip())
            if turn.answer:
                answer = text[slice(*turn.answer)]
                assert answer.startswith(text[slice(*turn.content)])
                assert answer.rstrip().endswith(template.eot)
                assert answer[len(text[slice(*turn.content)]):].strip() == template.eot
                answers.append((answer, message.get("weight", 1)))
        assert sorted(t.index for t in rendered.turns) == list(range(len(conversation)))
        assert [text[s:e] for s, e in rendered.spans("assistant")] == [a for a, w in answers if w]
        assert [text[s:e] for s, e in rendered.spans("last")] == [a for a, w in answers[-1:] if w]
        assert rendered.spans("all") == [(0, len(text))]
        content = [text[s:e] for s, e in rendered.spans("content")]
        assert "skip me" not in "".join(content)
        assert content == [text[slice(*(t.answer or t.content))] for t in rendered.turns
                           if (t.trained or not t.answer) and (t.answer or t.content)[1] > (t.answer or t.content)[0]]


def test_chatml_renders_tools_like_qwen() -> None:
    call = {"id": "call_0", "type": "function", "function": {"name": "add", "arguments": {"a": 1, "b": "é"}}}
    tools = [{"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}]
    conversation = [m("user", "1+1?"), m("assistant", "", tool_calls=[call]), m("tool", "2", tool_call_id="call_0"),
                    m("tool", "also 2", tool_call_id="call_0"), m("assistant", "Two.")]
    rendered = get_template("chatml").render(conversation, tools)
    assert rendered.text.startswith("<|im_start|>system\n# Tools\n\nYou may call one or more functions")
    assert '\n{"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}\n</tools>' \
        in rendered.text
    spans = [rendered.text[s:e] for s, e in rendered.spans("assistant")]
    assert spans == ['<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": "é"}}\n</tool_call><|im_end|>',
                     "Two.<|im_end|>"]
    assert ("<|im_start|>user\n<tool_response>\n2\n</tool_response>\n<tool_response>\nalso 2\n</tool_response>"
            "<|im_end|>\n") in rendered.text


@pytest.mark.parametrize("name", sorted(set(BUILTIN) - {"chatml"}))
def test_templates_without_tool_support_refuse_tools(name: str) -> None:
    template = BUILTIN[name](Specials("<s>", "</s>"))
    with pytest.raises(RowError) as e:
        template.render(SINGLE, [{"type": "function", "function": {"name": "f"}}])
    assert e.value.findings[0].code == "template_cannot_render"


def test_alternating_templates_refuse_two_user_turns() -> None:
    with pytest.raises(RowError, match="alternates user and assistant"):
        get_template("llama2").render([m("user", "a"), m("user", "b"), m("assistant", "c")])


@pytest.fixture(scope="module")
def samples_tokenizer():
    return load_tokenizer(str(SAMPLES / "tokenizer"))


def test_chatml_equals_the_samples_tokenizer_template(samples_tokenizer) -> None:
    """The project's tokenizer carries a Qwen3-style chatml template (tools, no default system)."""
    from prep.formats import read_records

    chatml = get_template("chatml", samples_tokenizer.specials)
    own = samples_tokenizer.jinja()
    checked = 0
    for batch in read_records([str(SAMPLES / "openai.jsonl"), str(SAMPLES / "sharegpt.jsonl"),
                               str(SAMPLES / "alpaca.json")]):
        for record in batch.items:
            a = chatml.render(record["messages"], record.get("tools"))
            b = own.render(record["messages"], record.get("tools"))
            assert a.text == b.text == hf_tokenizer(samples_tokenizer.path).apply_chat_template(
                record["messages"], tools=record.get("tools"), tokenize=False)
            assert a.spans("assistant") == b.spans("assistant")
            checked += 1
    assert checked >= 20


def _with_template(tokenizer, source: str) -> JinjaTemplate:
    """`source` as the tokenizer's own template (the shared tokenizer object is left as it is)."""
    added = tokenizer.added_tokens()
    return JinjaTemplate(source, None, dict(tokenizer.special_tokens), tokenizer.name, added)


REASONING = (  # drops the reasoning of every assistant turn but the last, as Qwen3's template does
    "{%- for message in messages %}{%- if message.role == 'assistant' %}{%- set content = message.content %}"
    "{%- if not loop.last and '</think>' in content %}{%- set content = content.split('</think>')[-1].lstrip() %}"
    "{%- endif %}{{- '<|im_start|>assistant\\n' + content + '<|im_end|>\\n' }}{%- else %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}")
COUNTING = (  # the header depends on the number of messages: no conversation prefix renders the same
    "{{- '<|im_start|>system\\n' + (messages | length | string) + ' messages<|im_end|>\\n' }}"
    "{%- for message in messages %}{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}"
    "{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}")
THINKING = [m("user", "2+2?"), m("assistant", "<think>add them</think>\n4"), m("user", "3+3?"),
            m("assistant", "<think>again</think>\n6")]


def test_template_that_rewrites_earlier_turns_gives_exact_ids_and_labels(samples_tokenizer) -> None:
    """Rendering turn 2 changes turn 1 (its reasoning goes): the text is still exactly the full render,
    and each answer span is that turn as the full render writes it."""
    template = _with_template(samples_tokenizer, REASONING)
    rendered = template.render(THINKING)
    assert rendered.text == hf_tokenizer(samples_tokenizer.path).apply_chat_template(THINKING, chat_template=REASONING, tokenize=False)
    assert "add them" not in rendered.text
    assert [rendered.text[s:e] for s, e in rendered.spans("assistant")] == [
        "4<|im_end|>", "<think>again</think>\n6<|im_end|>"]


def test_template_that_is_not_prefix_stable_is_refused_naming_the_turn(samples_tokenizer) -> None:
    template = _with_template(samples_tokenizer, COUNTING)
    with pytest.raises(RowError) as e:
        template.render(SINGLE)
    finding = e.value.findings[0]
    assert finding.code == "template_not_prefix_stable"
    assert "tokenizer (tokenizer)" in finding.message and "assistant message 2" in finding.message
    assert finding.path == "$.messages[1]"


def test_template_that_drops_a_role_is_refused(samples_tokenizer) -> None:
    """A template with no branch for tool results would train without them: refused, not silently dropped."""
    template = _with_template(samples_tokenizer, REASONING.replace("{%- else %}", "{%- elif message.role != 'tool' %}"))
    conversation = [m("user", "q"), m("tool", "result"), m("assistant", "a")]
    with pytest.raises(RowError) as e:
        template.render(conversation)
    assert e.value.findings[0].code == "template_drops_content"
    assert "message 2 (tool)" in e.value.findings[0].message


def test_template_without_a_stop_token_is_refused(samples_tokenizer) -> None:
    with pytest.raises(PrepError, match="does not end an assistant turn with a special token"):
        _with_template(samples_tokenizer, "{% for message in messages %}{{ message.content }}\n{% endfor %}")


def test_rows_stage_writes_text_rows_for_every_kind(samples_tokenizer) -> None:
    from prep.core.findings import Batch, Source

    records = [
        {"id": "c", "messages": SINGLE},
        {"id": "t", "text": "plain"},
        {"id": "p", "prompt": [m("user", "q")], "chosen": [m("assistant", "good")], "rejected": [m("assistant", "bad")]},
        {"id": "f", "prompt": [m("user", "q")], "completion": [m("assistant", "meh")], "label": False},
        {"id": "img", "messages": [m("user", "<image>2+2?"), SINGLE[-1]],
         "media": [{"type": "image", "path": "a.png", "root": "/data", "at": "$.images[0]"}]},
    ]
    batch = Batch()
    for i, r in enumerate(records):
        batch.add(r, Source("x.jsonl", i + 1, i + 1))
    chatml = get_template("chatml", samples_tokenizer.specials)
    out = next(rows_stage([batch], chatml, "auto", samples_tokenizer.specials))
    rows = {r["id"]: r for r in out.items}
    assert rows["c"]["text"][slice(*rows["c"]["spans"][0])] == "4<|im_end|>"
    assert rows["t"] == {"id": "t", "text": "plain<|im_end|>", "spans": [[0, 15]]}
    assert rows["p"] == {"id": "p", "prompt": "<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n",
                         "chosen": "good<|im_end|>\n", "rejected": "bad<|im_end|>\n"}
    assert rows["f"]["completion"] == "meh<|im_end|>\n" and rows["f"]["label"] is False
    assert [r.findings[0].code for r in out.rejects] == ["unsupported_media"]


def test_list_and_names() -> None:
    assert [n for n, _ in describe()] == list(NAMES)
    assert set(NAMES) == {"chatml", "llama3", "llama2", "mistral", "gemma", "zephyr", "phi3", "vicuna", "alpaca",
                          "alpaca_ko", "plain", "tokenizer"}
    listed = run_prep("template", "--list")
    assert listed.returncode == 0 and b"alpaca_ko" in listed.stdout and b"tokenizer" in listed.stdout


@pytest.mark.slow
def test_template_cli_writes_rows_and_shows(tmp_path) -> None:
    out = tmp_path / "rendered.jsonl"
    done = run_prep("template", str(SAMPLES / "openai.jsonl"), "--tokenizer", str(SAMPLES / "tokenizer"),
                    "-o", str(out), "--show", "1")
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 6 and all(set(r) == {"id", "text", "spans"} for r in rows)
    assert b"openai.jsonl:1" in done.stdout and b"read 6, wrote 6" in done.stderr


def test_template_cli_errors() -> None:
    from click.testing import CliRunner

    from prep.cli import main

    missing = CliRunner().invoke(main, ["template", str(SAMPLES / "openai.jsonl")])
    assert missing.exit_code == 2 and "--template NAME or --tokenizer" in missing.stderr
    bad = CliRunner().invoke(main, ["template", str(SAMPLES / "openai.jsonl"), "--template", "nope"])
    assert bad.exit_code == 2 and "--template nope: must be a template name" in bad.stderr
    refused = CliRunner().invoke(main, ["template", str(SAMPLES / "openai.jsonl"), "--template", "llama3"])
    assert refused.exit_code == 1 and "template_cannot_render" in refused.stderr


_CALLS = [{"id": "1", "type": "function", "function": {"name": "g", "arguments": {"a": "é"}}},
          {"id": "2", "type": "function", "function": {"name": "h"}}]
_SERVED = [
    [{"role": "user", "content": " Q1 "}, {"role": "assistant", "content": " A1 "}, {"role": "user", "content": "Q2"},
     {"role": "assistant", "content": "A2", "weight": 0}],
    [{"role": "system", "content": "S"}, {"role": "user", "content": "I"}, {"role": "user", "content": "In"},
     {"role": "user", "content": "I2"}, {"role": "assistant", "content": "A2"}],
    [{"role": "developer", "content": "D"}, {"role": "user", "content": "안녕"},
     {"role": "assistant", "content": "Yo", "reasoning_content": "think"}],
    [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"},
     {"role": "assistant", "content": "", "tool_calls": _CALLS}, {"role": "tool", "content": "r1"},
     {"role": "tool", "content": "r2"}, {"role": "assistant", "content": "done"}],
]


@pytest.mark.parametrize("name", list(BUILTIN))
def test_each_builtin_jinja_form_renders_what_it_renders(name: str) -> None:
    """What a model trained on a built-in is served with (design §6): transformers renders the jinja form to the
    built-in's text, and with the generation prompt to the text before the answer, for every conversation the
    built-in takes (tools, reasoning, developer, instruction + input), with and without a BOS."""
    compared = 0
    for specials in (Specials(bos="<s>", eos="</s>", adds_bos=True), Specials(eos="<|endoftext|>")):
        template = BUILTIN[name](specials)
        source = template.jinja()
        for messages in _SERVED:
            tools = [{"type": "function", "function": {"name": "g", "parameters": {}}}] if "tool" in str(messages) \
                else None
            try:
                want = template.render(messages, tools)
            except RowError:  # a conversation the built-in refuses (tools, alternation)
                continue
            given = [{k: v for k, v in m.items() if k != "weight"} for m in messages]
            assert render_jinja_template([given], tools, chat_template=source)[0][0] == want.text
            start = next(t.answer[0] for t in reversed(want.turns) if t.answer)
            last = max(t.index for t in want.turns if t.answer)
            prompt = render_jinja_template([given[:last]], tools, chat_template=source, add_generation_prompt=True)
            assert prompt[0][0] == want.text[:start]
            compared += 1
    assert compared >= 2
