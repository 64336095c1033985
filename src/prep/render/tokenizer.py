"""Tokenizers: loading one from a local folder, and its identity.

A folder loads with `tokenizers` alone, from `tokenizer.json` and `tokenizer_config.json` (named
special tokens, added tokens, chat templates from the config, `chat_template.jinja`,
`additional_chat_templates/` or a processor folder's `chat_template.json`), into the pipeline
transformers 5 builds for it: as the file says for the generic classes, and rebuilt the way `LlamaTokenizer` and `Qwen2Tokenizer` rebuild it (a test
compares the two pipelines on every fixture tokenizer). Other classes that transformers rebuilds load
through transformers, with a note saying so: exact, but seconds slower to start. A folder without
`tokenizer.json` (a SentencePiece model alone) is refused in one line that says how to write one:
transformers would convert it on every load, seconds each time, and print its own errors when it cannot.

A fingerprint (the sha256 of its files, of its vocabulary, its size and special ids) goes into every
manifest, so a trainer can refuse shards made with another tokenizer: their ids would mean other text.
The vocabulary part is cached by the files' sha256.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import tokenizers
from tokenizers import Regex, decoders, models, normalizers, pre_tokenizers
from tokenizers import Tokenizer as Backend

from prep.core.findings import PrepError
from prep.core.options import DEFAULT_DATE
from prep.files.atomic import replaced, write_json
from prep.files.hashing import cache_path, read_cache, sha256_kept, write_cache
from prep.files.read import config_file, read_config
from prep.render.spans import Specials

if TYPE_CHECKING:
    from prep.render.jinja import JinjaTemplate

# The files that decide how a folder tokenizes (never model weights), hashed into the fingerprint.
_TOKENIZER_FILES = re.compile(r"^(tokenizer.*|special_tokens_map\.json|added_tokens\.json|vocab\..*|merges\.txt|"
                              r".*\.tiktoken|chat_template.*|spiece\.model)$")
SPECIAL_TOKENS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
_GENERIC = ("", "PreTrainedTokenizer", "TokenizersBackend")  # the file is the pipeline (after "Fast" is cut)
_FINGERPRINT_VERSION = 1  # of the cached part; bump when what it holds changes
_SPLIT_VERSION = 2  # of a kept split tokenizer.json (see _read_backend)
_SHELL = "tokenizer.json"  # a split's pipeline without the BPE model's vocabulary and merges
_SPLIT_FILES = (_SHELL, "vocab.json", "merges.txt")
_STAMP = "split.json"  # written last: the sizes of _SPLIT_FILES
_NONE = "none"  # a tokenizer whose split would not load back the same
_BPE_OPTIONS = ("dropout", "unk_token", "continuing_subword_prefix", "end_of_word_suffix", "fuse_unk", "byte_fallback",
                "ignore_merges")
# transformers' Qwen2Tokenizer splits text with this pattern before byte-level BPE
_QWEN2_SPLIT = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|"""
                r"""\s+(?!\S)|\s+""")


@dataclass
class Tokenizer:
    """A loaded tokenizer: its Rust backend (batched tokenizing, and picklable for worker processes), its named
    special tokens, its chat templates, and notes for the user (how it was loaded, when that is slower)."""

    path: Path
    backend: Any
    specials: Specials
    special_tokens: dict[str, str]  # bos_token, eos_token, ...: what chat templates receive
    chat_templates: dict[str, str]  # by name: "default", "tool_use", ...
    loaded_as: str  # the class transformers 5 loads it as, recorded in the fingerprint
    clean_up_spaces: bool = False  # decoding drops spaces before punctuation, as transformers does
    notes: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.path.name

    def token_id(self, token: str | None) -> int | None:
        return None if token is None else self.backend.token_to_id(token)

    def added_tokens(self, special_only: bool = False) -> list[str]:
        return [t.content for t in self.backend.get_added_tokens_decoder().values() if t.special or not special_only]

    def decode(self, ids: list[int]) -> str:
        """Text of `ids` as transformers' `decode` gives it (special tokens kept)."""
        text = self.backend.decode(ids, skip_special_tokens=False)
        return _clean_up_spaces(text) if self.clean_up_spaces else text

    def chat_template(self, tools: bool = False) -> str:
        """The chat template (its tool-use variant for rows with tools, when it has one)."""
        templates = self.chat_templates
        if not templates:
            raise PrepError(f"the tokenizer at {self.path} has no chat template; choose one with --template "
                            "(see `prep template --list`)")
        if tools and "tool_use" in templates:
            return templates["tool_use"]
        if "default" not in templates:
            raise PrepError(f"the tokenizer at {self.path} has several chat templates and none is the default "
                            f"({', '.join(sorted(templates))}); choose one with --template")
        return templates["default"]

    def jinja(self, source: str | None = None, name: str = "tokenizer", kwargs: dict[str, Any] | None = None,
              date: str = DEFAULT_DATE) -> JinjaTemplate:
        """The tokenizer's own chat template (tool-use variant when it has one), or `source` (a .jinja file) with this
        tokenizer's special tokens; `kwargs` are the template arguments, `date` the day strftime_now gives
        (`today`: the machine's clock)."""
        from prep.render.jinja import JinjaTemplate  # noqa: PLC0415 - start-up time: jinja2 only for jinja templates

        pinned = None if date == "today" else date
        if source is not None:
            return JinjaTemplate(source, None, dict(self.special_tokens), self.name, self.added_tokens(), kwargs,
                                 pinned, name)
        return JinjaTemplate(self.chat_template(), self.chat_template(tools=True), dict(self.special_tokens),
                             self.name, self.added_tokens(), kwargs, pinned)

    @property
    def has_chat_template(self) -> bool:
        return bool(self.chat_templates)

    def _files(self) -> dict[str, str]:
        return {p.name: sha256_kept(p) for p in sorted(self.path.iterdir()) if p.is_file() and _TOKENIZER_FILES.match(p.name)}

    def files_key(self) -> str:
        """What names this tokenizer's pipeline in the cache: the sha256 of its files and the class it loads as."""
        return f"{_files_sha(self._files())}-{self.loaded_as}"

    def fingerprint(self) -> dict[str, Any]:
        """What shards record about the tokenizer: its name and folder, the sha256 of its files, the sha256 of its
        vocabulary (token -> id, added tokens included: what the ids mean), the vocabulary size, the special ids."""
        files = self._files()
        sha = _files_sha(files)
        cache = cache_path("fingerprints", f"{sha}-{self.loaded_as}-{_FINGERPRINT_VERSION}.json")
        vocab = read_cache(cache)
        if vocab is None:
            special_ids = {k: self.token_id(self.special_tokens.get(f"{k}_token")) for k in ("bos", "eos", "pad", "unk")}
            vocab = vocabulary_identity(self.backend.get_vocab(with_added_tokens=True),
                                        self.backend.get_vocab_size(with_added_tokens=True), special_ids)
            write_cache(cache, vocab)
        return {"name": self.path.name, "path": str(self.path), "sha256": sha, "files": files, **vocab,
                "class": self.loaded_as}


def _files_sha(files: dict[str, str]) -> str:
    return hashlib.sha256("".join(f"{n}\0{h}\n" for n, h in files.items()).encode()).hexdigest()


def fingerprint(tokenizer: Any) -> dict[str, Any]:
    """The fingerprint of a transformers tokenizer (the trainer's): that of its folder when it has one (the same
    files make the same fingerprint), else of the object itself."""
    try:
        return load_tokenizer(str(tokenizer.name_or_path)).fingerprint()
    except PrepError:
        special_ids = {k: getattr(tokenizer, f"{k}_token_id") for k in ("bos", "eos", "pad", "unk")}
        return {"name": str(tokenizer.name_or_path), "path": None, "sha256": hashlib.sha256(b"").hexdigest(),
                "files": {}, **vocabulary_identity(tokenizer.get_vocab(), len(tokenizer), special_ids),
                "class": type(tokenizer).__name__}


def vocabulary_identity(vocab: dict[str, int], size: int, special_ids: dict[str, int | None]) -> dict[str, Any]:
    """The part of a fingerprint that says what the ids mean: the vocabulary's sha256, its size, the special ids."""
    ordered = sorted(vocab.items(), key=lambda kv: kv[1])
    return {"vocab_sha256": hashlib.sha256(json.dumps(ordered, ensure_ascii=False).encode()).hexdigest(),
            "vocab_size": size, "special_ids": special_ids}


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


def shard_decoder(manifest: dict[str, Any], given: str | None) -> Tokenizer:
    """The tokenizer a shard folder's ids are decoded with (`prep inspect`, `report`, `export`): the folder given,
    else the one its manifest records; refused when it is not the shards' own (their ids would read as other
    text). It decodes as the model reads: special tokens kept, and no space cleaned up even where transformers
    would (`clean_up_tokenization_spaces` changes the text, not what was trained)."""
    info = manifest.get("tokenizer") or {}
    path = given or info.get("path") or info.get("name")
    if not path or not Path(path).exists():
        raise PrepError(f"cannot find the shards' tokenizer ({path or 'not recorded'}); pass --tokenizer DIR")
    tokenizer = replace(load_tokenizer(path), clean_up_spaces=False)
    if info.get("vocab_sha256") and not same_tokenizer(info, tokenizer.fingerprint()):
        raise PrepError(f"the tokenizer in {tokenizer.path} is not the one these shards were made with "
                        f"({describe_tokenizer(info)}); pass --tokenizer with that one")
    return tokenizer


_PRELOADED: dict[tuple[str, tuple[int, ...]], Tokenizer] = {}  # at most one, by path and its files' mtimes


def preload_tokenizer(path: str) -> None:
    """Load the tokenizer at `path` now, for the next `load_tokenizer(path)` to take: the CLI does this before a verb
    imports pyarrow, so the peak of parsing tokenizer.json (tens of MB, freed at once) and pyarrow's libraries do not
    add up (a one-row `prep tokenize` peaks where loading the tokenizer alone does). A folder that cannot be loaded
    is left for the verb to refuse, in its place among the verb's checks."""
    _PRELOADED.clear()
    with contextlib.suppress(PrepError):
        _PRELOADED[_preload_key(path)] = load_tokenizer(path)


def _preload_key(path: str | Path) -> tuple[str, tuple[int, ...]]:
    """A preloaded tokenizer is taken only while its files are the ones it was loaded from."""
    folder = Path(path).expanduser()
    files = (folder / "tokenizer.json", folder / "tokenizer_config.json")
    return str(path), tuple(f.stat().st_mtime_ns if f.is_file() else 0 for f in files)


def load_tokenizer(path: str | Path) -> Tokenizer:
    """A tokenizer from a local folder (or a hub id already in the local cache; nothing is downloaded)."""
    if _PRELOADED and (preloaded := _PRELOADED.pop(_preload_key(path), None)) is not None:
        return preloaded
    folder = tokenizer_folder(str(path))
    config = _read_json(folder / "tokenizer_config.json") or {}
    if not isinstance(config, dict):
        raise PrepError(f"{folder / 'tokenizer_config.json'}: not a JSON object")
    declared = str(config.get("tokenizer_class") or "")
    base = declared.removesuffix("Fast")
    if base not in _GENERIC and base not in _REBUILDS:
        return _load_with_transformers(folder, f"{folder}: transformers rebuilds a {declared} at load in its own way "
                                               "(prep replicates LlamaTokenizer and Qwen2Tokenizer): loading it "
                                               "with transformers, which takes seconds to start")
    special = _special_tokens(folder, config)
    try:
        config_file(folder / "tokenizer.json", "tokenizer file")
        backend = _read_backend(folder / "tokenizer.json")
        if base in _REBUILDS:
            _REBUILDS[base](backend, config)
            backend = _with_config_added_tokens(backend, config)
    except Exception as e:  # noqa: BLE001 - the Rust library raises its own exception types for a bad file
        raise PrepError(f"cannot load the tokenizer in {folder}: {e}") from None
    known = {t.content for t in backend.get_added_tokens_decoder().values()}
    missing = [t for t in special.values() if t not in known]
    if missing:  # as transformers does: a named special token the vocabulary lacks is added
        from tokenizers import AddedToken  # noqa: PLC0415 - start-up time: only for incomplete tokenizer folders

        backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in missing])
    bos = special.get("bos_token")
    bos_id = backend.token_to_id(bos) if bos else None
    adds_bos = bos_id is not None and backend.encode("a").ids[:1] == [bos_id]
    loaded_as = "TokenizersBackend" if base in _GENERIC else base
    return Tokenizer(folder, backend, Specials(bos, special.get("eos_token"), adds_bos), special,
                     _chat_templates(folder, config), loaded_as, bool(config.get("clean_up_tokenization_spaces")))


def _read_backend(file: Path) -> Any:
    """tokenizer.json as a Rust tokenizer. A BPE one loads from its split kept in the cache: the pipeline alone, and
    the model's vocabulary and merges in the two files `models.BPE.from_file` reads without serde's untagged enums
    (qwen2.5's 18 MB file, 294k merges: 0.30 s instead of 0.47). That load is start-up no other core can share (it
    holds the GIL, and pool workers inherit the tokenizer), so it bounds how close `prep tokenize` gets to the
    tokenizer's pace. A split is kept only when what it loads serializes to the same JSON as the file's tokenizer
    (else a `none` file says so, and the file loads as it is), and read only while its files have the sizes its stamp,
    written last, gives them (a split cut short, by a crash before the disk had it all, could load other merges
    without a word): else the file loads and the split is written again."""
    kept = cache_path("tokenizers", f"{sha256_kept(file)}-{tokenizers.__version__}-{_SPLIT_VERSION}")
    stamp = read_cache(kept / _STAMP)
    if isinstance(stamp, dict) and _sizes(kept) == stamp:
        try:
            return _from_split(kept)
        except Exception:  # noqa: BLE001 - a damaged split (the Rust library raises its own types): written again
            pass
    backend = Backend.from_file(str(file))
    if not (kept / _NONE).is_file():
        _keep_split(backend, kept)
    return backend


def _sizes(folder: Path) -> dict[str, int] | None:
    try:
        return {name: (folder / name).stat().st_size for name in _SPLIT_FILES}
    except OSError:
        return None


def _from_split(folder: Path) -> Any:
    backend = Backend.from_file(str(folder / _SHELL))
    backend.model = models.BPE.from_file(str(folder / "vocab.json"), str(folder / "merges.txt"),
                                         **_bpe_options(backend.model))
    return backend


def _bpe_options(model: Any) -> dict[str, Any]:
    """A BPE model's settings (those set), which its JSON holds beside the vocabulary and merges."""
    return {k: v for k in _BPE_OPTIONS if (v := getattr(model, k)) is not None}


def _keep_split(backend: Any, folder: Path) -> None:
    """Keep `backend` split in `folder` with its stamp (see _read_backend), or a `none` file alone when the split does
    not load back the same (merges.txt cannot hold a token with a space: phi-3's). A split that cannot be written
    (a full disk, a read-only cache) is not kept at all: a later load tries again."""
    with contextlib.suppress(Exception), replaced(folder, folder=True) as new:
        if type(backend.model).__name__ == "BPE":
            _write_split(backend, new)
            if _loads_back(backend, new):
                write_json(new / _STAMP, _sizes(new))
                return
            for kept in new.iterdir():
                kept.unlink()
        (new / _NONE).write_text("", encoding="utf-8")


def _write_split(backend: Any, folder: Path) -> None:
    """The model's vocab.json and merges.txt, and the pipeline with the added tokens (they keep their ids when it
    loads) and a model of their own while it is written."""
    model = backend.model
    model.save(str(folder))
    backend.model = models.BPE({t.content: i for i, t in backend.get_added_tokens_decoder().items()}, [],
                               **_bpe_options(model))
    try:
        (folder / _SHELL).write_text(backend.to_str(), encoding="utf-8")
    finally:
        backend.model = model


def _loads_back(backend: Any, folder: Path) -> bool:
    try:
        return _from_split(folder).to_str() == backend.to_str()
    except Exception:  # noqa: BLE001 - BPE refuses a merges.txt with a token holding a space, in its own types
        return False


def _load_with_transformers(folder: Path, note: str) -> Tokenizer:
    """The slow path, for what prep cannot build from tokenizer.json alone: transformers builds it, prep keeps its
    Rust backend."""
    try:
        from transformers import AutoTokenizer  # noqa: PLC0415 - start-up time: only for tokenizers prep cannot build
    except ImportError:
        raise PrepError(f"{note.split(': loading it')[0]}: that takes transformers (pip install transformers, or "
                        "'prep[train]')") from None
    try:
        hf = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except Exception as e:  # noqa: BLE001 - transformers raises many kinds for a folder it cannot read
        raise PrepError(f"cannot load the tokenizer in {folder}: {e}") from None
    backend = getattr(hf, "_tokenizer", None)
    if backend is None or not hasattr(backend, "encode_batch"):
        raise PrepError(f"{folder}: prep needs a fast (Rust) tokenizer (tokenizer.json); this one is "
                        f"{type(hf).__name__}")
    templates = hf.chat_template if isinstance(hf.chat_template, dict) else \
        {"default": hf.chat_template} if hf.chat_template else {}
    bos_id = hf.bos_token_id
    adds_bos = bos_id is not None and hf("a")["input_ids"][:1] == [bos_id]
    return Tokenizer(folder, backend, Specials(hf.bos_token, hf.eos_token, adds_bos), dict(hf.special_tokens_map),
                     templates, type(hf).__name__, bool(hf.clean_up_tokenization_spaces), [note])


def _read_json(path: Path) -> Any:
    if not path.is_file():
        return None
    try:
        return json.loads(read_config(path, "tokenizer configuration"))
    except (OSError, ValueError) as e:
        raise PrepError(f"{path}: not valid JSON ({e})") from None


def _token_text(value: Any) -> str | None:
    """A special token as a config spells it: a string, or an AddedToken object with its `content`."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) and value else None


def _special_tokens(folder: Path, config: dict[str, Any]) -> dict[str, str]:
    """The named special tokens: the config's, and, for folders whose config has no added_tokens_decoder,
    special_tokens_map.json's (transformers reads that legacy file then)."""
    values = {k: config.get(k) for k in SPECIAL_TOKENS}
    if "added_tokens_decoder" not in config:
        legacy = _read_json(folder / "special_tokens_map.json") or {}
        values.update({k: legacy[k] for k in SPECIAL_TOKENS if k in legacy})
    return {k: text for k in SPECIAL_TOKENS if (text := _token_text(values.get(k)))}


def _chat_templates(folder: Path, config: dict[str, Any]) -> dict[str, str]:
    """Chat templates by name: chat_template.jinja and additional_chat_templates/*.jinja when there are any
    (they take priority, as in transformers), else the config's `chat_template` (text, or a list of
    {"name", "template"}), else a processor folder's chat_template.json."""
    templates = {}
    if (folder / "chat_template.jinja").is_file():
        templates["default"] = read_config(folder / "chat_template.jinja", "chat template")
    extra = folder / "additional_chat_templates"
    if extra.is_dir():
        templates.update({p.stem: read_config(p, "chat template") for p in sorted(extra.glob("*.jinja"))})
    if templates:
        return templates
    given = config.get("chat_template")
    if given is None:  # a processor folder keeps it in chat_template.json, which transformers' processor reads
        given = (_read_json(folder / "chat_template.json") or {}).get("chat_template")
    if isinstance(given, str):
        return {"default": given}
    if isinstance(given, list):
        return {t["name"]: t["template"] for t in given if isinstance(t, dict) and "name" in t and "template" in t}
    return {}


def _with_config_added_tokens(backend: Any, config: dict[str, Any]) -> Any:
    """The added tokens as the config lists them (transformers takes them from there when it rebuilds a class);
    the file's are kept when they are the same, as in every tokenizer seen so far."""
    given = config.get("added_tokens_decoder")
    if not isinstance(given, dict):
        return backend
    wanted = [_added_token(int(i), t) for i, t in sorted(given.items(), key=lambda kv: int(kv[0]))]
    have = [{"id": i, **{k: getattr(t, k) for k in ("content", "single_word", "lstrip", "rstrip", "normalized",
                                                     "special")}}
            for i, t in sorted(backend.get_added_tokens_decoder().items())]
    if wanted == have:
        return backend
    spec = json.loads(backend.to_str())
    spec["added_tokens"] = wanted
    return Backend.from_str(json.dumps(spec))


def _added_token(index: int, token: dict[str, Any]) -> dict[str, Any]:
    return {"id": index, "content": token["content"], "single_word": token.get("single_word", False),
            "lstrip": token.get("lstrip", False), "rstrip": token.get("rstrip", False),
            "normalized": token.get("normalized", not token.get("special", False)),
            "special": token.get("special", False)}


def _as_llama(backend: Any, config: dict[str, Any]) -> None:
    """transformers 5's LlamaTokenizer: byte-fallback BPE, no normalizer, a Metaspace pre-tokenizer that adds the
    prefix space only at the start of the text (not after every special token) unless `legacy`, and a decoder
    that strips that space."""
    prefix = config.get("add_prefix_space")
    prefix = True if prefix is None else bool(prefix)
    _bpe(backend, unk_token=None, fuse_unk=True, byte_fallback=True)
    backend.normalizer = None
    scheme = ("always" if config.get("legacy", False) else "first") if prefix else "never"
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme=scheme, split=False)
    steps = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    backend.decoder = decoders.Sequence(steps + ([decoders.Strip(" ", 1, 0)] if prefix else []))


def _as_qwen2(backend: Any, config: dict[str, Any]) -> None:
    """transformers 5's Qwen2Tokenizer: byte-level BPE that always applies the merges, NFC, Qwen's split pattern."""
    _bpe(backend, unk_token=None, continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False,
         byte_fallback=False)
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(_QWEN2_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=bool(config.get("add_prefix_space") or False), use_regex=False)])
    backend.decoder = decoders.ByteLevel()


def _bpe(backend: Any, **settings: Any) -> None:
    """The BPE model's settings as the class sets them; merges always apply (no whole-word shortcut)."""
    model = backend.model
    if type(model).__name__ != "BPE":
        raise PrepError(f"a {type(model).__name__} model where this tokenizer class builds a BPE model")
    for name, value in {"dropout": None, "ignore_merges": False, **settings}.items():
        setattr(model, name, value)


_REBUILDS = {"LlamaTokenizer": _as_llama, "Qwen2Tokenizer": _as_qwen2}


def _clean_up_spaces(text: str) -> str:
    """transformers' `clean_up_tokenization`: no space before punctuation and English contractions."""
    for before, after in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                          (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):
        text = text.replace(before, after)
    return text


def tokenizer_folder(path: str) -> Path:
    """The folder of a tokenizer prep can load (a hub id: its copy in the local cache), or a one-line PrepError
    saying what is missing; a recipe checks its tokenizer with it before any stage runs."""
    folder = Path(path).expanduser()
    if folder.is_file():
        raise PrepError(f"{path}: a file; give the folder that holds tokenizer.json")
    if not folder.is_dir():
        folder = _cached_hub_folder(path)
    if not (folder / "tokenizer.json").is_file():
        held = "a SentencePiece tokenizer.model but " if (folder / "tokenizer.model").is_file() else ""
        raise PrepError(f"{path}: holds {held}no tokenizer.json, which prep loads tokenizers from; write one with "
                        f"transformers: AutoTokenizer.from_pretrained(\"{path}\").save_pretrained(\"{path}\")")
    return folder.resolve()


def _cached_hub_folder(path: str) -> Path:
    """A hub id's folder in the local cache (nothing is downloaded)."""
    hub = path.count("/") == 1 and not path.startswith((".", "/", "~"))
    if hub:
        try:
            from huggingface_hub import snapshot_download  # noqa: PLC0415 - start-up time: only for hub ids

            return Path(snapshot_download(path, local_files_only=True))
        except Exception:  # noqa: BLE001 - any failure means: not in the local cache
            pass
    raise PrepError(f"{path}: no such tokenizer folder: give a local folder with tokenizer.json and "
                    "tokenizer_config.json" + (" (nor a hub id in the local cache: prep never downloads)" if hub else ""))
