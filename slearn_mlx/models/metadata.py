"""A GGUF file's key-value metadata, kept with its types: what an import keeps of its source file and an export writes
back (the tokenizer's vocabulary, merges and special tokens, the chat template, the hyperparameters)."""

from __future__ import annotations

from pathlib import Path

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
