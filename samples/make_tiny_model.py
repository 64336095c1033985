"""Build a tiny, randomly initialised Llama or Qwen2 model for the quickstart, the recipes and the tests.

Real loading code, small weights: the model is made from a config (never downloaded), seeded so it
is the same every time, and saved with the project's tokenizer beside it, so `prep train --model
DIR` finds a tokenizer whose fingerprint matches shards made with samples/tokenizer.

Weights are drawn with std 0.2 rather than transformers' 0.02: at hidden size 64 the latter keeps
every logit within about +-1.3, so the next-token distribution stays near uniform (loss ~ ln 2500)
whatever a LoRA adapter does, and a short run could not show learning.

    python samples/make_tiny_model.py runs/tiny-llama            # llama, from samples/tokenizer
    python samples/make_tiny_model.py runs/tiny-qwen2 --arch qwen2
"""

from __future__ import annotations

import argparse
from pathlib import Path

HERE = Path(__file__).resolve().parent


def make_tiny_model(out: str | Path, tokenizer: str | Path = HERE / "tokenizer", arch: str = "llama",
                    hidden: int = 64, layers: int = 2, seed: int = 0, init_std: float = 0.2) -> Path:
    """Write a tiny causal LM with `tokenizer` into `out` and return the folder."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    tok = AutoTokenizer.from_pretrained(str(tokenizer))
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", help="folder to write the model into")
    parser.add_argument("--arch", choices=("llama", "qwen2"), default="llama")
    parser.add_argument("--tokenizer", default=str(HERE / "tokenizer"))
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    args = parser.parse_args()
    print(make_tiny_model(args.out, args.tokenizer, args.arch, args.hidden, args.layers))


if __name__ == "__main__":
    main()
