"""Build a tiny, randomly initialised Llama or Qwen2 model for the quickstart, the recipes and the tests.

Real loading code, small weights: the model is made from a config (never downloaded), seeded so it
is the same every time, and saved with the project's tokenizer beside it, so `prep train --model
DIR` finds a tokenizer whose fingerprint matches shards made with samples/tokenizer.

Weights are drawn with std 0.2 rather than transformers' 0.02: at hidden size 64 the latter keeps
every logit within about +-1.3, so the next-token distribution stays near uniform (loss ~ ln 2500)
whatever a LoRA adapter does, and a short run could not show learning.

    python samples/make_tiny_model.py runs/tiny-llama            # llama, from samples/tokenizer
    python samples/make_tiny_model.py runs/tiny-qwen2 --arch qwen2
    python samples/make_tiny_model.py runs/tiny-qwen2-vl --arch qwen2-vl --tokenizer ../shared/fixtures/processors/qwen2-vl

`--arch qwen2-vl` builds a Qwen2VLForConditionalGeneration (a vision tower of one block, width 32, whose merger
feeds the text model; `--arch qwen2.5-vl`: a Qwen2_5_VLForConditionalGeneration, two blocks, one with window
attention) over a processor folder: the tokenizer (with `<|vision_start|>`, `<|vision_end|>`,
`<|image_pad|>`, `<|video_pad|>`), its `preprocessor_config.json` (the image settings, copied unchanged: the
trainer's image processor reads them) and `chat_template.json`. The text model's M-RoPE sections sum to half its
head size (hidden 64, 4 heads: 16 / 2 = 2 + 3 + 3), as Qwen2-VL's [16, 24, 24] do for 128.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

HERE = Path(__file__).resolve().parent


def make_tiny_model(out: str | Path, tokenizer: str | Path = HERE / "tokenizer", arch: str = "llama",
                    hidden: int = 64, layers: int = 2, seed: int = 0, init_std: float = 0.2) -> Path:
    """Write a tiny causal LM (`arch` qwen2-vl: a vision-language model over a processor folder) with `tokenizer`
    into `out` and return the folder."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    tok = AutoTokenizer.from_pretrained(str(tokenizer))
    if arch in ("qwen2-vl", "qwen2.5-vl"):
        return _make_tiny_qwen2_vl(Path(out), Path(tokenizer), tok, hidden, layers, seed, init_std, arch)
    config_cls, model_cls = {"llama": (LlamaConfig, LlamaForCausalLM), "qwen2": (Qwen2Config, Qwen2ForCausalLM)}[arch]
    config = config_cls(vocab_size=len(tok), hidden_size=hidden, intermediate_size=hidden * 2,
                        num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                        max_position_embeddings=4096, tie_word_embeddings=False, initializer_range=init_std,
                        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(seed)
    model = model_cls(config)
    out = Path(out)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


# what a processor folder holds beside the tokenizer, copied into the model folder unchanged
PROCESSOR_FILES = ("preprocessor_config.json", "chat_template.json", "chat_template.jinja")


def _mrope_sections(head: int) -> list[int]:
    """Qwen2-VL's split of a head's rotary pairs into time, height and width ([16, 24, 24] of 64), for `head`."""
    half = head // 2
    t = max(half // 4, 1)
    h = (half - t) // 2
    return [t, h, half - t - h]


def _make_tiny_qwen2_vl(out: Path, processor: Path, tok: object, hidden: int, layers: int, seed: int,
                        init_std: float, arch: str) -> Path:
    import torch
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
    )

    if not (processor / "preprocessor_config.json").is_file():
        raise SystemExit(f"{processor}: no preprocessor_config.json; --arch {arch} takes a processor folder")
    ids = {name: tok.convert_tokens_to_ids(f"<|{name}|>") for name in ("vision_start", "vision_end", "image_pad",
                                                                       "video_pad")}
    text = dict(vocab_size=len(tok), hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=layers,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32768,
                initializer_range=init_std, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                pad_token_id=tok.pad_token_id,
                rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": _mrope_sections(hidden // 4)})
    common = dict(patch_size=14, spatial_merge_size=2, temporal_patch_size=2, initializer_range=init_std)
    if arch == "qwen2-vl":
        config_cls, model_cls = Qwen2VLConfig, Qwen2VLForConditionalGeneration
        vision = dict(depth=1, embed_dim=32, hidden_size=hidden, num_heads=2, mlp_ratio=2, **common)
    else:  # Qwen2.5-VL: a window-attention block, then a full-attention one; its merger outputs out_hidden_size
        config_cls, model_cls = Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
        vision = dict(depth=2, hidden_size=32, out_hidden_size=hidden, num_heads=2, intermediate_size=64,
                      window_size=112, fullatt_block_indexes=[1], **common)
    config = config_cls(text_config=text, vision_config=vision, image_token_id=ids["image_pad"],
                        video_token_id=ids["video_pad"], vision_start_token_id=ids["vision_start"],
                        vision_end_token_id=ids["vision_end"], tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = model_cls(config)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    for name in PROCESSOR_FILES:
        if (processor / name).is_file():
            shutil.copyfile(processor / name, out / name)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", help="folder to write the model into")
    parser.add_argument("--arch", choices=("llama", "qwen2", "qwen2-vl", "qwen2.5-vl"), default="llama")
    parser.add_argument("--tokenizer", default=str(HERE / "tokenizer"))
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    args = parser.parse_args()
    print(make_tiny_model(args.out, args.tokenizer, args.arch, args.hidden, args.layers))


if __name__ == "__main__":
    main()
