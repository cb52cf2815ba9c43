"""Tokenizers, model presets and loading: every toy checkpoint is an ordinary Hugging Face folder.

The toy tokenizer is character-level (printable ASCII, one token per character, BOS added in front),
built offline as a `transformers` fast tokenizer and saved with each checkpoint. Toy models are Llama
configurations from about 0.2M to 10M parameters, so `AutoModelForCausalLM` (and vLLM on a GPU) load
them like any other model. Real models load by hub id, local folder or `.gguf` file through the same code.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import string
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import LlamaConfig, PreTrainedModel, PreTrainedTokenizerBase

METADATA_FILE = "rftlab.json"
CHECKPOINT_FORMAT = "rftlab.checkpoint/1"
PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
CHARACTERS = [c for c in string.printable if c not in "\r\x0b\x0c"]  # 97: letters, digits, punctuation, space, \t, \n


@dataclass(frozen=True)
class Preset:
    """A toy model size: hidden width, layers, attention heads, MLP width."""

    hidden: int
    layers: int
    heads: int
    mlp: int


PRESETS: dict[str, Preset] = {
    "tiny": Preset(32, 1, 2, 96),  # for tests
    "xs": Preset(96, 2, 4, 256),
    "s": Preset(128, 3, 4, 352),
    "m": Preset(128, 4, 4, 352),
    "l": Preset(192, 4, 6, 512),
    "xl": Preset(256, 6, 8, 688),
    "xxl": Preset(384, 6, 6, 1024),
}
DEFAULT_PRESET = "m"
TOY_CONTEXT = 512


def char_tokenizer() -> PreTrainedTokenizerBase:
    """The toy world's character-level tokenizer (no training needed)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = [PAD, BOS, EOS, UNK]
    vocab = {token: index for index, token in enumerate(specials + CHARACTERS)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    backend.decoder = decoders.Fuse()
    backend.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, vocab[BOS])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        model_max_length=TOY_CONTEXT,
        split_special_tokens=True,  # text "</s>" is five characters, never an EOS
    )


def toy_config(preset: str, tokenizer: PreTrainedTokenizerBase) -> LlamaConfig:
    """A Llama configuration of the named size for the given tokenizer."""
    from transformers import LlamaConfig

    try:
        size = PRESETS[preset]
    except KeyError:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}") from None
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=size.hidden,
        intermediate_size=size.mlp,
        num_hidden_layers=size.layers,
        num_attention_heads=size.heads,
        num_key_value_heads=size.heads,
        max_position_embeddings=TOY_CONTEXT,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def new_toy_model(preset: str, tokenizer: PreTrainedTokenizerBase, seed: int) -> PreTrainedModel:
    """A freshly initialised toy model; the same seed gives the same weights."""
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    return LlamaForCausalLM(toy_config(preset, tokenizer))


def count_parameters(model: PreTrainedModel, non_embedding: bool = False) -> int:
    """Parameters of a model (tied weights once); `non_embedding` leaves the token embeddings out."""
    total = sum(parameter.numel() for parameter in model.parameters())
    if non_embedding:
        total -= model.get_input_embeddings().weight.numel()
    return total


def load_model(
    name: str | Path, dtype: str = "auto", device: str | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A causal LM and its tokenizer from a checkpoint folder, a hub id, or a `.gguf` file."""
    tokenizer = load_tokenizer(name)
    return load_weights(name, dtype, device), tokenizer


def load_weights(name: str | Path, dtype: str = "auto", device: str | None = None) -> PreTrainedModel:
    """The causal LM alone (a GGUF file's tokenizer takes longer to build than its weights to de-quantize)."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    location, extra = _location(name)
    try:
        model = AutoModelForCausalLM.from_pretrained(location, dtype=dtype, **extra)
    except Exception as error:  # a truncated or random weights file, a bad config.json, a missing file
        raise _data_error(str(name), f"cannot load the model: {error}") from error
    if extra:  # the GGUF file itself
        _unmark_gguf(model)
    if device is not None:
        model.to(device)
    return model


def load_tokenizer(name: str | Path) -> PreTrainedTokenizerBase:
    """The tokenizer of a checkpoint folder, hub id or `.gguf` file (padding with EOS where it has no pad)."""
    from transformers import AutoTokenizer

    location, extra = _location(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(location, **extra)
    except Exception as error:  # no tokenizer files, a corrupt one
        raise _data_error(str(name), f"cannot load the tokenizer: {error}") from error
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def check_local(name: str | Path) -> None:
    """DataError when `name` can only mean a local model (a path that is absolute, starts with `.` or `~`, ends in
    `.gguf`, or lies in an existing folder) and nothing is there; a hub id (`org/name`) passes."""
    text, path = str(name), Path(name)
    if path.exists():
        return
    local = path.is_absolute() or text.startswith((".", "~")) or path.suffix == ".gguf" or text.count("/") > 1
    if local or ("/" in text and path.parent.is_dir()):
        raise _data_error(text, "no such model file or folder (nor a hub id: those are ORG/NAME)")


def _data_error(path: str, message: str) -> Exception:
    from rftlab.data import DataError

    return DataError(path, None, message)


def _location(name: str | Path) -> tuple[str, dict[str, str]]:
    """What `from_pretrained` reads: the folder or hub id; for a `.gguf` file, its de-quantized copy
    (`gguf_folder`), or where that cannot be written, its folder and `gguf_file`."""
    check_local(name)
    path = Path(name)
    if path.suffix != ".gguf":
        return str(name), {}
    try:
        return str(gguf_folder(path)), {}
    except OSError as error:
        print(f"rftlab: {path}: reading the GGUF file itself: no de-quantized copy ({error})", file=sys.stderr)
        return str(path.parent), {"gguf_file": path.name}


def gguf_folder(path: Path) -> Path:
    """A float32 safetensors copy of a `.gguf` file and its tokenizer, made once in rftlab's cache (`cache_folder`)
    under the file's fingerprint and renamed into place when whole: de-quantizing takes half a minute on a CPU (a
    tokenizer built from GGUF metadata as long), loading the copy seconds."""
    fingerprint = model_fingerprint(path) or ""
    target = cache_folder() / "gguf" / f"{path.stem}-{fingerprint.removeprefix('sha256:')[:16]}"
    if target.is_dir():
        return target
    from rftlab.data import atomic_folder

    with atomic_folder(target) as partial:
        model, tokenizer = _from_gguf(path)
        model.save_pretrained(partial)
        tokenizer.save_pretrained(partial)
    return target


def _from_gguf(path: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The model (float32) and tokenizer of a `.gguf` file, as transformers de-quantizes and builds them."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype="float32")
        tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    except Exception as error:  # not a GGUF file, a truncated one, an architecture transformers cannot read
        raise _data_error(str(path), f"cannot load the model: {error}") from error
    _unmark_gguf(model)
    return model, tokenizer


def _unmark_gguf(model: PreTrainedModel) -> None:
    """transformers de-quantizes a GGUF file into ordinary weights on load but leaves the model marked as
    quantized, which only stops the Trainer from fine-tuning it (and saved copies from loading plainly)."""
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


def encode_prompt(
    tokenizer: PreTrainedTokenizerBase, query: str, template: str, shots: Sequence[tuple[str, str]] = ()
) -> list[int]:
    """Token ids of the prompt for a question: a named template (BOS added as the tokenizer does), or `chat`,
    the tokenizer's own chat template with the question as the user's turn. `shots` are (question,
    solution) demonstrations put first, each in the same template (in-context learning)."""
    from rftlab.data import CHAT_TEMPLATE, PROMPT_TEMPLATES

    if template == CHAT_TEMPLATE:
        messages = []
        for question, solution in shots:
            messages += [{"role": "user", "content": question}, {"role": "assistant", "content": solution}]
        messages.append({"role": "user", "content": query})
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return tokenizer(text, add_special_tokens=False)["input_ids"]  # the template writes its own specials
    form = PROMPT_TEMPLATES[template]
    demonstrations = "".join(form.format(query=question) + solution + "\n\n" for question, solution in shots)
    return tokenizer(demonstrations + form.format(query=query), add_special_tokens=True)["input_ids"]


def read_metadata(checkpoint: str | Path) -> dict[str, Any]:
    """rftlab's record of how a checkpoint was made (empty for checkpoints from elsewhere); DataError naming the
    file when it is not a JSON object."""
    from rftlab.data import DataError, read_json

    path = Path(checkpoint) / METADATA_FILE
    if not path.is_file():
        return {}
    record = read_json(path)
    if not isinstance(record, dict):
        raise DataError(path, None, "expected a JSON object")
    return record


def write_metadata(checkpoint: str | Path, metadata: dict[str, Any]) -> None:
    """Saves rftlab's record beside the weights."""
    from rftlab.data import write_json

    write_json(Path(checkpoint) / METADATA_FILE, {"format": CHECKPOINT_FORMAT, **metadata})


def cache_folder() -> Path:
    """rftlab's cache outside the repository (downloaded and converted models): RFTLAB_CACHE, else ~/.cache/rftlab."""
    return Path(os.environ.get("RFTLAB_CACHE") or Path.home() / ".cache" / "rftlab")


MOST_CHARACTERS_A_TOKEN = 64
"""A bound on the characters of one token, to cut a text before encoding it to at most N tokens."""
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth")
_HASH_CHUNK = 1 << 24


def model_fingerprint(name: str | Path) -> str | None:
    """What identifies a model's weights: for a local folder or file, a SHA-256 over its weight files (names and
    bytes, hashed once per process for a given path, size and modification time); for a hub id, the commit its
    main branch resolves to (from the hub, else the local hub cache). None when a hub id cannot be resolved."""
    check_local(name)
    path = Path(name)
    if path.exists():
        files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.suffix in WEIGHT_SUFFIXES)
        digest = hashlib.sha256()
        for file in files:
            digest.update(f"{file.name}\0{_file_sha256(file)}\0".encode())
        return "sha256:" + digest.hexdigest()
    revision = hub_revision(str(name))
    return None if revision is None else f"hub:{revision}"


@functools.cache
def hub_revision(repo: str, revision: str = "main") -> str | None:
    """The commit a hub id's revision resolves to: asked of the hub unless HF_HUB_OFFLINE is set, else read from
    the local hub cache; None when neither knows it. Asked once per process."""
    if os.environ.get("HF_HUB_OFFLINE", "0") in ("0", "", "false"):
        with contextlib.suppress(Exception):  # no network, no such repo, no huggingface_hub: try the cache
            from huggingface_hub import HfApi

            return HfApi().model_info(repo, revision=revision, timeout=10).sha
    with contextlib.suppress(Exception):
        from huggingface_hub import constants

        ref = Path(constants.HF_HUB_CACHE) / f"models--{repo.replace('/', '--')}" / "refs" / revision
        return ref.read_text().strip() or None
    return None


_FILE_HASHES: dict[tuple[str, int, int], str] = {}


def _file_sha256(path: Path) -> str:
    status = path.stat()
    memo = (str(path.resolve()), status.st_size, status.st_mtime_ns)
    if memo not in _FILE_HASHES:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            while chunk := handle.read(_HASH_CHUNK):
                digest.update(chunk)
        _FILE_HASHES[memo] = digest.hexdigest()
    return _FILE_HASHES[memo]
