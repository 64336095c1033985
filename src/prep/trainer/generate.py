"""`prep generate`: a completion from a base model, or the model with a trained adapter, streamed.

The prompt is rendered through the template the shards were made with (the adapter's
prep_train.json, written by `prep train`) and tokenized up to the answer's first token, so a
fine-tuned model is asked with exactly the ids it was trained on. Without an adapter there is no record: the
prompt goes through the tokenizer's own chat template, so a side-by-side comparison with the base model passes
the adapter's template with --template. Decoding is greedy unless a temperature is given.

A model with random or untrained weights (the tiny stand-in of samples/make_tiny_model.py) emits ids no text
makes: byte tokens out of order decode to U+FFFD, others to control characters. The stream shows control
characters as \\xNN (a terminal would act on them: \\r returns the cursor), and `garbled_note` says in words what
such an answer means.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prep.core.extras import require_train_extra
from prep.core.findings import PrepError
from prep.core.options import checked
from prep.render.templates import AnyTemplate, get_template, render_pair
from prep.render.tokenizer import Tokenizer, describe_tokenizer, load_tokenizer, same_tokenizer
from prep.trainer.train import TRAIN_INFO

_CONTROLS = "\x00-\x08\x0b-\x1f\x7f-\x9f"  # C0 but tab and newline, DEL, C1
_CONTROL = re.compile(f"[{_CONTROLS}]")
_NOT_TEXT = re.compile(f"[{_CONTROLS}\ufffd]")  # and U+FFFD, what a decoder puts for bytes that are no UTF-8


def visible(text: str) -> str:
    """`text` with its control characters (but tab and newline) written as \\xNN, safe to print."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m[0]):02x}", text)


def garbled_note(text: str) -> str | None:
    """A note for an answer holding characters no text has (broken UTF-8, control characters): what a model whose
    weights are random or untrained for this tokenizer writes. None for an answer that is text."""
    bad = len(_NOT_TEXT.findall(text))
    if not bad:
        return None
    return (f"note: {bad} of the answer's {len(text)} characters are not text (broken UTF-8 shows as \ufffd, control "
            "characters as \\xNN): the model emits ids no text makes, as one with random or untrained weights does "
            "(the tiny stand-in model's are random)")


@dataclass
class Generator:
    """A loaded model (with its adapter, if any), its tokenizer and the template prompts go through."""

    model: Any
    tokenizer: Tokenizer
    text_tokenizer: Any  # transformers' own, for streaming the decoded text
    template: AnyTemplate | None  # None: plain text (pretraining shards), the prompt as it is
    stop_ids: list[int]
    notes: list[str] = field(default_factory=list)  # which template, and warnings about the base model

    def prompt_ids(self, prompt: str, system: str | None = None) -> list[int]:
        """The ids the model continues: exactly the ids `prep tokenize` gives the same conversation, up to
        its first answer token. The text is cut after tokenizing, not before: a template that puts a space
        before the answer (llama2, mistral, vicuna) has it merged into the answer's first token in
        training, so the rendered text up to the answer would end in a lone space token never trained on."""
        encode = self.tokenizer.backend.encode
        if self.template is None:
            specials = self.tokenizer.specials
            text = (specials.bos or "" if specials.adds_bos else "") + prompt
            return encode(text, add_special_tokens=False).ids
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
        # a placeholder answer starting with a letter, as answers do, so the token holding its first
        # character is the one training started the labels at
        start, text = render_pair(self.template, messages, [{"role": "assistant", "content": "Answer"}], None, "$")
        enc = encode(text, add_special_tokens=False)
        cut = next(i for i, (_, end) in enumerate(enc.offsets) if end > start)
        return enc.ids[:cut]

    @checked("generate")
    def __call__(self, prompt: str, *, system: str | None = None, max_new_tokens: int = 128,
                 temperature: float = 0.0, on_text: Callable[[str], None] | None = None) -> str:
        """The completion of `prompt`; `on_text` receives it piece by piece as it is generated, control characters
        made `visible`."""
        import torch  # noqa: PLC0415 - train extra
        from transformers import TextStreamer  # noqa: PLC0415 - train extra

        hf = self.text_tokenizer
        ids = torch.tensor([self.prompt_ids(prompt, system)])
        pieces: list[str] = []

        class Stream(TextStreamer):
            def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
                pieces.append(text)
                if on_text and text:
                    on_text(visible(text))

        sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
        with torch.no_grad():
            self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                                eos_token_id=self.stop_ids, pad_token_id=hf.pad_token_id or self.stop_ids[0],
                                streamer=Stream(hf, skip_prompt=True, skip_special_tokens=True), **sampling)
        return "".join(pieces)


def train_info(*folders: str | Path | None) -> tuple[dict[str, Any], Path | None]:
    """The first prep_train.json found in `folders` (an adapter or merged model folder) and its folder, or {}."""
    for folder in folders:
        if folder and (Path(folder) / TRAIN_INFO).is_file():
            return json.loads((Path(folder) / TRAIN_INFO).read_text(encoding="utf-8")), Path(folder)
    return {}, None


@checked("generate")
def load(model: str, adapter: str | None = None, template: str | None = None) -> Generator:
    """The model at `model` (a local folder) with `adapter` applied; `template` overrides the one
    recorded by `prep train` (default: that one, else the tokenizer's own chat template).

    The Generator's `notes` say which template is used and whether the base model is the one the
    adapter was trained on (its tokenizer, its folder)."""
    require_train_extra()
    from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: PLC0415 - train extra

    if adapter and not (Path(adapter) / "adapter_config.json").is_file():
        raise PrepError(f"--adapter {adapter}: no adapter_config.json there (give the adapter folder prep train wrote)")
    info, where = train_info(adapter, model)
    if info.get("objective") == "reward":
        raise PrepError(f"{where}: a reward model (prep train --method reward) scores answers and does not generate; "
                        "give an adapter or model trained with sft, dpo, kto or orpo")
    tok = load_tokenizer(adapter if adapter and _has_tokenizer(adapter) else model)
    name = template or (info["template"]["name"] if info.get("template") else None)
    if template:
        why = "--template"
    elif name:
        why = f"recorded in {where / TRAIN_INFO}" if where else ""
    elif not info and tok.has_chat_template:
        name, why = "tokenizer", f"the chat template of the tokenizer in {tok.path}"
    else:
        why = f"{where / TRAIN_INFO} records pretraining shards" if where else "no chat template anywhere"
    notes = [f"template: {name} ({why})" if name else f"template: none, the prompt as plain text ({why})"]
    if adapter and info:
        notes += _base_model_notes(info, model)
    tmpl = get_template(name, tok.specials, tok.jinja) if name else None
    try:
        lm = AutoModelForCausalLM.from_pretrained(model)
    except (OSError, ValueError) as e:
        raise PrepError(f"cannot load the model {model}: {str(e).splitlines()[0]}") from None
    if adapter:
        from peft import PeftModel  # noqa: PLC0415 - train extra

        lm = PeftModel.from_pretrained(lm, adapter)
    lm.eval()
    stops = [i for i in (tok.token_id(tmpl.eot) if tmpl else None, tok.token_id(tok.specials.eos)) if i is not None]
    return Generator(lm, tok, AutoTokenizer.from_pretrained(str(tok.path)), tmpl, list(dict.fromkeys(stops)),
                     tok.notes + notes)


def _base_model_notes(info: dict[str, Any], model: str) -> list[str]:
    """Warnings when `model` is not the base the adapter was trained on: another tokenizer than the shards'
    (the adapter learned ids that mean other text there), or another folder than the recorded base_model."""
    notes = []
    recorded = info.get("tokenizer") or {}
    if recorded and _has_tokenizer(model):
        mine = load_tokenizer(model).fingerprint()
        if not same_tokenizer(recorded, mine):
            notes.append(f"warning: the adapter was trained on shards tokenized with {describe_tokenizer(recorded)}, "
                         f"but {model} has tokenizer {describe_tokenizer(mine)}: its answers may be nonsense; give "
                         "the base model it was trained on")
    base = info.get("base_model")
    if base and Path(base).resolve() != Path(model).resolve():
        notes.append(f"warning: the adapter was trained on the base model {base}; --model is {model}")
    return notes


def _has_tokenizer(folder: str) -> bool:
    return (Path(folder) / "tokenizer.json").is_file()
