"""Tokenizers: loading one from a local folder, and its identity. A fingerprint (its files' sha256, its
vocabulary's sha256, size and special ids) goes into every manifest, so a trainer can refuse shards
made with another tokenizer: their ids would mean other text."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prep.core.findings import PrepError
from prep.files import sha256_file
from prep.render.jinja import JinjaTemplate
from prep.render.templates import Specials

# The files that decide how a folder tokenizes (never model weights), hashed into the fingerprint.
_TOKENIZER_FILES = re.compile(r"^(tokenizer.*|special_tokens_map\.json|added_tokens\.json|vocab\..*|merges\.txt|"
                              r".*\.tiktoken|chat_template.*|spiece\.model)$")


@dataclass
class Tokenizer:
    """A loaded tokenizer: transformers' own (`hf`, for its chat template and special tokens) and
    its Rust backend, which does the batched tokenizing and can be handed to worker processes."""

    path: Path
    hf: Any
    backend: Any
    specials: Specials

    @property
    def name(self) -> str:
        return self.path.name

    def token_id(self, token: str | None) -> int | None:
        return None if token is None else self.backend.token_to_id(token)

    def jinja(self) -> JinjaTemplate:
        """The tokenizer's own chat template (tool-use variant when it has one)."""
        try:
            source = self.hf.get_chat_template()
        except ValueError:
            raise PrepError(f"the tokenizer at {self.path} has no chat template; choose one with --template "
                            "(see `prep template --list`)") from None
        tool_source = self.hf.get_chat_template(tools=[])
        added = [t.content for t in self.hf.added_tokens_decoder.values()]
        return JinjaTemplate(source, tool_source, dict(self.hf.special_tokens_map), self.name, added)

    @property
    def has_chat_template(self) -> bool:
        return bool(self.hf.chat_template)

    def fingerprint(self) -> dict[str, Any]:
        return fingerprint(self.hf, self.path)


def fingerprint(tokenizer: Any, folder: Path | None = None) -> dict[str, Any]:
    """What shards record about a (transformers) tokenizer so a trainer can refuse another one: its name
    and folder, the sha256 of its files, the sha256 of its vocabulary (token -> id, added tokens included:
    what the ids in the shards mean), the vocabulary size and the special token ids."""
    if folder is None:
        try:
            folder = _tokenizer_folder(str(tokenizer.name_or_path))
        except PrepError:
            folder = None
    files = {p.name: sha256_file(p) for p in sorted(folder.iterdir())
             if p.is_file() and _TOKENIZER_FILES.match(p.name)} if folder else {}
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    return {
        "name": folder.name if folder else str(tokenizer.name_or_path),
        "path": str(folder) if folder else None,
        "sha256": hashlib.sha256("".join(f"{n}\0{h}\n" for n, h in files.items()).encode()).hexdigest(),
        "files": files,
        "vocab_sha256": hashlib.sha256(json.dumps(vocab, ensure_ascii=False).encode()).hexdigest(),
        "vocab_size": len(tokenizer),
        "special_ids": {k: getattr(tokenizer, f"{k}_token_id") for k in ("bos", "eos", "pad", "unk")},
        "class": type(tokenizer).__name__,
    }


def same_tokenizer(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Two fingerprints name the same tokenizer for training purposes: the same files, or the same
    vocabulary and special ids (the same tokenizer saved again by another library version)."""
    if a.get("sha256") and a.get("sha256") == b.get("sha256") and a.get("files"):
        return True
    return (a.get("vocab_sha256") is not None and a.get("vocab_sha256") == b.get("vocab_sha256")
            and a.get("vocab_size") == b.get("vocab_size") and a.get("special_ids") == b.get("special_ids"))


def describe_tokenizer(fp: dict[str, Any]) -> str:
    """A fingerprint in a few words, for messages that name two tokenizers that differ."""
    return (f"{fp.get('name', '?')} (sha256 {str(fp.get('sha256'))[:12]}, vocab {fp.get('vocab_size')}, "
            f"special ids {fp.get('special_ids')})")


def load_tokenizer(path: str) -> Tokenizer:
    """A tokenizer from a local folder (or a hub id already in the local cache; nothing is downloaded)."""
    folder = _tokenizer_folder(path)
    try:
        from transformers import AutoTokenizer  # noqa: PLC0415 - start-up time: transformers only when a tokenizer loads

        hf = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except Exception as e:  # noqa: BLE001 - transformers raises many kinds for a folder it cannot read
        raise PrepError(f"cannot load the tokenizer in {folder}: {e}") from None
    backend = getattr(hf, "_tokenizer", None)
    if backend is None or not hasattr(backend, "encode_batch"):
        raise PrepError(f"{folder}: prep needs a fast (Rust) tokenizer (tokenizer.json); this one is "
                        f"{type(hf).__name__}")
    bos_id = hf.bos_token_id
    adds_bos = bos_id is not None and hf("a")["input_ids"][:1] == [bos_id]
    return Tokenizer(folder, hf, backend, Specials(hf.bos_token, hf.eos_token, adds_bos))


def _tokenizer_folder(path: str) -> Path:
    folder = Path(path).expanduser()
    if folder.is_dir():
        return folder.resolve()
    if folder.exists():
        raise PrepError(f"--tokenizer {path}: give the folder that holds tokenizer.json, not a file")
    if path.count("/") == 1 and not path.startswith((".", "/", "~")):
        try:
            from huggingface_hub import snapshot_download  # noqa: PLC0415 - start-up time: transformers only when a tokenizer loads

            return Path(snapshot_download(path, local_files_only=True))
        except Exception:  # noqa: BLE001 - any failure means: not in the local cache
            pass
    raise PrepError(f"tokenizer {path!r} not found: give a local folder with tokenizer.json and "
                    "tokenizer_config.json (prep never downloads)")
