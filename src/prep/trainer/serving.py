"""The serving hand-off (design §6): a saved adapter, model or merged model carries the chat template its shards
were rendered with (the template arguments written in as defaults) and a `generation_config.json` whose
`eos_token_id` holds the end-of-turn token every trained answer ends with, so vLLM, SGLang, llama.cpp, Ollama and
TGI, which read only those two, render prompts as prep trained them and stop where the model learned to stop."""

from __future__ import annotations

from pathlib import Path
from typing import Any

GENERATION_CONFIG = "generation_config.json"


def eos_ids(existing: Any, tokenizer: Any, eot: str | None) -> list[int]:
    """The model's own stop ids (an int, a list or None), then the tokenizer's EOS and the trained end-of-turn
    token, each once."""
    ids = list(existing) if isinstance(existing, (list, tuple)) else [existing] if existing is not None else []
    extra = [tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids(eot) if eot else None]
    return list(dict.fromkeys(int(i) for i in [*ids, *extra] if i is not None and i != tokenizer.unk_token_id))


def save_serving(folder: str | Path, manifest: dict[str, Any], tokenizer: Any, model: Any | None,
                 notes: list[str]) -> None:
    """Write the tokenizer into `folder` with the shards' chat template, and, for a model that generates
    (`model` not None), its generation config with the trained end-of-turn id among the EOS ids. Shards made
    before manifests recorded the template's text keep the tokenizer's own template, and `notes` says so."""
    template = manifest.get("template") or {}
    if template.get("chat_template") is not None:
        tokenizer.chat_template = template["chat_template"]
    elif template:
        notes.append(f"the shards' manifest does not record the text of their template {template.get('name')} "
                     "(they were made by an older prep): the saved tokenizer keeps its own chat template; "
                     "re-tokenize to carry the trained one")
    tokenizer.save_pretrained(folder)
    if model is None:
        return
    generation = model.generation_config
    generation.eos_token_id = eos_ids(generation.eos_token_id, tokenizer, template.get("eot"))
    generation.save_pretrained(folder)
