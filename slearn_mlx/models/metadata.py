"""A GGUF file's key-value metadata, kept with its types: what an import keeps of its source file and an export writes
back (the tokenizer's vocabulary, merges and special tokens, the chat template, the hyperparameters)."""

from __future__ import annotations

from pathlib import Path

from slearn_mlx.errors import ModelError

SOURCE_METADATA = "source_metadata.gguf"  # in an imported model's directory: its source file's metadata, no tensors
# Written by the writer itself, or describing the tensors of the file they came from.
_NOT_COPIED = ("GGUF.", "general.architecture", "general.file_type", "general.quantization_version")


def copy_fields(reader, writer, replaced: dict | None = None) -> None:
    """Every key-value field of a `gguf.GGUFReader` into a `gguf.GGUFWriter`, with its type, but those the writer
    writes itself or that describe the source's tensors; `replaced` keys are written with their new values."""
    import gguf

    replaced = replaced or {}
    for name, field in reader.fields.items():
        if name.startswith(_NOT_COPIED) or name in replaced:
            continue
        kind = field.types[0]
        sub = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(name, field.contents(), kind, sub_type=sub)
    for name, (value, kind) in replaced.items():
        writer.add_key_value(name, value, kind)


def keep_metadata(source: Path, out: Path) -> None:
    """Write `source`'s metadata alone (no tensors) as the GGUF file `out`."""
    import gguf

    reader = gguf.GGUFReader(source)
    arch = str(reader.fields["general.architecture"].contents())
    writer = gguf.GGUFWriter(str(out), arch)
    copy_fields(reader, writer)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def pre_tokenizer_name(tokenizer_json: dict) -> str:
    """llama.cpp's name for a byte-level tokenizer.json's pre-tokenizer: the split slearn writes for SmolLM2 ("smollm"),
    GPT-2's regex ("gpt-2"), or a split regex llama.cpp knows (Qwen2's, Llama 3's, tekken, ...)."""
    from slearn_mlx.models.tokenizer import QWEN2_SPLIT, converter_splits

    pre = tokenizer_json.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    kinds = [step.get("type") for step in steps]
    if kinds == ["ByteLevel"] and steps[0].get("use_regex", True):
        return "gpt-2"
    if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits"):
        return "smollm"
    if kinds == ["Split", "ByteLevel"]:
        regex = steps[0].get("pattern", {}).get("Regex")
        if regex == QWEN2_SPLIT:
            return "qwen2"
        for name, known in converter_splits().items():
            if regex == known:
                return name
    raise ModelError(f"cannot name this tokenizer's pre-tokenizer ({' + '.join(map(str, kinds))}) for llama.cpp")


def _hyperparameters(config: dict, arch: str) -> dict[str, int | float]:
    """The `{arch}.*` keys llama.cpp reads, from an mlx-lm config."""
    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    out = {
        "context_length": config.get("max_position_embeddings", 2048),
        "embedding_length": config["hidden_size"],
        "block_count": config["num_hidden_layers"],
        "feed_forward_length": config["intermediate_size"],
        "attention.head_count": heads,
        "attention.head_count_kv": config.get("num_key_value_heads") or heads,
        "attention.layer_norm_rms_epsilon": float(config.get("rms_norm_eps", 1e-6)),
        "rope.freq_base": float(config.get("rope_theta", 10000.0)),
        "rope.dimension_count": int(head_dim * config.get("partial_rotary_factor", 1.0)),
        "vocab_size": config["vocab_size"],
    }
    if arch in ("qwen3", "gemma3"):
        out |= {"attention.key_length": head_dim, "attention.value_length": head_dim}
    if arch == "gemma3":
        out["attention.sliding_window"] = config["sliding_window"]
    if arch == "phi3":
        out["rope.scaling.original_context_length"] = config.get("original_max_position_embeddings", 4096)
    return out


def rebuild_metadata(model_dir: Path, config: dict, arch: str, out: Path) -> None:
    """For a model not imported from GGUF: the metadata llama.cpp needs (hyperparameters, the byte-level BPE
    vocabulary with its merges, token types and special tokens, the chat template), from its config and tokenizer
    files through `gguf`'s own readers, written as a GGUF file without tensors, as an import keeps its source's."""
    import json

    import gguf
    from gguf.vocab import SpecialVocab

    path = model_dir / "tokenizer.json"
    tokenizer_json = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    model = tokenizer_json.get("model", {})
    if (
        model.get("type") != "BPE"
        or model.get("byte_fallback")
        or (tokenizer_json.get("decoder") or {}).get("type") != "ByteLevel"
    ):
        raise ModelError(
            f"{model_dir} has no byte-level BPE tokenizer.json, the one kind of tokenizer a GGUF export rebuilds; "
            "export a model imported from GGUF, or --to mlx"
        )
    pre = pre_tokenizer_name(tokenizer_json)
    ids = dict(model["vocab"])
    added = {t["content"]: t for t in tokenizer_json.get("added_tokens", [])}
    ids |= {content: t["id"] for content, t in added.items()}
    tokens = [""] * config["vocab_size"]
    types = [gguf.TokenType.UNUSED] * config["vocab_size"]
    # An added token marked special is a control token to llama.cpp, another added one user-defined.
    kinds = {None: gguf.TokenType.NORMAL, True: gguf.TokenType.CONTROL, False: gguf.TokenType.USER_DEFINED}
    for text, i in ids.items():
        if i < len(tokens):
            tokens[i], types[i] = text, kinds[added.get(text, {}).get("special")]
    for i, text in enumerate(tokens):  # rows of the embedding no token uses (padding to a round size)
        if not text:
            tokens[i] = f"[PAD{i}]"
    writer = gguf.GGUFWriter(str(out), arch)
    writer.add_name(model_dir.name)
    for key, value in _hyperparameters(config, arch).items():
        kind = gguf.GGUFValueType.FLOAT32 if isinstance(value, float) else gguf.GGUFValueType.UINT32
        writer.add_key_value(f"{arch}.{key}", value, kind)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types([int(t) for t in types])
    SpecialVocab(model_dir, load_merges=True, n_vocab=len(tokens)).add_to_gguf(writer, quiet=True)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
