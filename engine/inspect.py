"""Read model files without loading them: safetensors and GGUF headers, config.json, tokenizer files.

Nothing here imports torch, Django or Celery, and nothing here unpickles: every check reads a
header of a few KB per file, so the console can validate an upload inside the request."""

from __future__ import annotations

import json
import struct
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from engine import pickles

PICKLE_SUFFIXES = frozenset({".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib"})
MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024  # the limit the safetensors library itself enforces
MAX_JSON_BYTES = 64 * 1024 * 1024
HOW_TO_CONVERT = ("Load it in a trusted environment and save it with `model.save_pretrained(folder)` "
                  "(transformers writes safetensors by default), then upload that folder.")

# safetensors dtype → (bytes per element, torch-style name)
SAFETENSORS_DTYPES: dict[str, tuple[float, str]] = {
    "F64": (8, "float64"), "F32": (4, "float32"), "F16": (2, "float16"), "BF16": (2, "bfloat16"),
    "F8_E4M3": (1, "float8_e4m3fn"), "F8_E5M2": (1, "float8_e5m2"), "F8_E8M0": (1, "float8_e8m0fnu"),
    "F4": (0.5, "float4_e2m1fn_x2"), "I64": (8, "int64"), "I32": (4, "int32"), "I16": (2, "int16"),
    "I8": (1, "int8"), "U64": (8, "uint64"), "U32": (4, "uint32"), "U16": (2, "uint16"), "U8": (1, "uint8"),
    "BOOL": (1, "bool"),
}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "spiece.model", "sentencepiece.bpe.model", "vocab.txt",
                   "tokenizer.tiktoken")


class InvalidModel(ValueError):
    """The files are not a model Tauon can accept. The message says what is wrong and how to fix it."""

    def __init__(self, message: str, code: str = "invalid_model"):
        super().__init__(message)
        self.message, self.code = message, code


@dataclass(slots=True)
class SafetensorsInfo:
    parameter_count: int
    dtype_counts: dict[str, int]  # torch-style dtype name → number of parameters
    metadata: dict[str, str]


@dataclass(slots=True)
class GGUFInfo:
    version: int
    architecture: str
    name: str
    parameter_count: int
    tensor_count: int
    file_type: int | None
    chat_template: str
    size: int


@dataclass(slots=True)
class ModelInfo:
    architecture: str
    model_type: str
    parameter_count: int
    dtype: str
    has_tokenizer: bool
    chat_template: str
    total_size: int
    files: list[str] = field(default_factory=list)  # relative paths, sorted


# --- pickles ---------------------------------------------------------------------------------

def refuse_pickle(relpath: str, path: Path) -> None:
    if Path(relpath).suffix.lower() in PICKLE_SUFFIXES:
        raise InvalidModel(f"'{relpath}' is a pickle checkpoint; Tauon accepts only safetensors and GGUF "
                           f"because loading a pickle can run arbitrary code. {HOW_TO_CONVERT}", code="pickle_refused")
    kind = pickles.kind_of(path)
    if kind == "pickle":
        raise InvalidModel(f"'{relpath}' is a Python pickle (whatever its name says); Tauon accepts only "
                           f"safetensors and GGUF because loading a pickle can run arbitrary code. {HOW_TO_CONVERT}",
                           code="pickle_refused")
    if kind == "npy-object":
        raise InvalidModel(f"'{relpath}' is a NumPy array of Python objects, stored as a pickle; Tauon accepts only "
                           f"safetensors and GGUF because loading a pickle can run arbitrary code. {HOW_TO_CONVERT}",
                           code="pickle_refused")
    if kind == "zip":
        raise InvalidModel(f"'{relpath}' is a zip container (a torch checkpoint, an .npz or a nested archive) that may "
                           f"hold pickles; Tauon accepts only safetensors and GGUF. {HOW_TO_CONVERT}",
                           code="pickle_refused")


# --- safetensors -----------------------------------------------------------------------------

def read_safetensors(path: Path, relpath: str | None = None) -> SafetensorsInfo:
    """Parse the header and check the file holds exactly the bytes the header describes."""
    name = relpath or path.name
    size = path.stat().st_size
    cut_short = "The file was cut short (an interrupted download or copy); re-create the archive from the complete file."
    with path.open("rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise InvalidModel(f"'{name}' is only {size} bytes, too short to be a safetensors file. {cut_short}",
                               code="truncated_safetensors")
        (header_len,) = struct.unpack("<Q", raw)
        if header_len > MAX_SAFETENSORS_HEADER:
            raise InvalidModel(f"'{name}' is not a valid safetensors file (its header claims {header_len} bytes).",
                               code="invalid_safetensors")
        if 8 + header_len > size:
            raise InvalidModel(f"'{name}' is incomplete: its header needs {8 + header_len} bytes but the file has "
                               f"{size}. {cut_short}", code="truncated_safetensors")
        try:
            header = json.loads(f.read(header_len))
        except (UnicodeDecodeError, ValueError) as exc:
            raise InvalidModel(f"'{name}' is not a valid safetensors file (unreadable header: {exc}).",
                               code="invalid_safetensors") from exc
    if not isinstance(header, dict):
        raise InvalidModel(f"'{name}' is not a valid safetensors file (header is not a JSON object).",
                           code="invalid_safetensors")
    metadata = header.pop("__metadata__", None) or {}
    ranges: list[tuple[int, int, str]] = []
    counts: Counter[str] = Counter()
    for tensor, spec in header.items():
        try:
            dtype, shape, (begin, end) = spec["dtype"], spec["shape"], spec["data_offsets"]
            numel = 1
            for dim in shape:
                if not isinstance(dim, int) or dim < 0:
                    raise ValueError(f"bad dimension {dim!r}")
                numel *= dim
            if not (isinstance(begin, int) and isinstance(end, int) and 0 <= begin <= end):
                raise ValueError(f"bad data offsets {begin!r}, {end!r}")
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidModel(f"'{name}' is not a valid safetensors file (tensor '{tensor}': {exc}).",
                               code="invalid_safetensors") from exc
        if dtype not in SAFETENSORS_DTYPES:
            raise InvalidModel(f"'{name}': tensor '{tensor}' has unknown dtype {dtype!r}.", code="invalid_safetensors")
        itemsize, torch_name = SAFETENSORS_DTYPES[dtype]
        if end - begin != int(numel * itemsize):
            raise InvalidModel(f"'{name}': tensor '{tensor}' ({dtype} {shape}) needs {int(numel * itemsize)} bytes "
                               f"but its offsets span {end - begin}.", code="invalid_safetensors")
        counts[torch_name] += numel
        ranges.append((begin, end, tensor))
    data_len = size - 8 - header_len
    position = 0
    for begin, end, tensor in sorted(ranges):
        if begin != position:
            raise InvalidModel(f"'{name}' is not a valid safetensors file (tensor '{tensor}' does not follow the "
                               f"previous one).", code="invalid_safetensors")
        position = end
    if position > data_len:
        raise InvalidModel(f"'{name}' is incomplete: its header describes {position} bytes of tensor data but the "
                           f"file holds only {data_len}. {cut_short}", code="truncated_safetensors")
    if position < data_len:
        raise InvalidModel(f"'{name}' has {data_len - position} unexpected bytes after its tensor data; it is not a "
                           f"valid safetensors file.", code="invalid_safetensors")
    return SafetensorsInfo(parameter_count=sum(counts.values()), dtype_counts=dict(counts),
                           metadata={str(k): str(v) for k, v in metadata.items()})


# --- GGUF ------------------------------------------------------------------------------------

GGUF_MAGIC = b"GGUF"
GGUF_NAME = "source.gguf"  # a GGUF version's original file, kept byte for byte beside its safetensors conversion
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
_MAX_COUNT = 10_000_000
_MAX_ARRAY_DEPTH = 8  # llama.cpp writes flat arrays; deeper nesting is hostile


class _Reader:
    def __init__(self, f: BinaryIO, size: int, name: str):
        self.f, self.size, self.name = f, size, name

    def truncated(self) -> InvalidModel:
        return InvalidModel(f"'{self.name}' is incomplete: it ends inside its header. The file was cut short; "
                            f"upload the complete .gguf file.", code="truncated_gguf")

    def read(self, n: int) -> bytes:
        data = self.f.read(n)
        if len(data) != n:
            raise self.truncated()
        return data

    def unpack(self, fmt: str) -> Any:
        return struct.unpack(fmt, self.read(struct.calcsize(fmt)))[0]

    def count(self) -> int:
        n = self.unpack("<Q")
        if n > _MAX_COUNT:
            raise InvalidModel(f"'{self.name}' is not a valid GGUF file (a count of {n}).", code="invalid_gguf")
        return int(n)

    def string(self, keep: bool = True) -> str:
        n = self.unpack("<Q")
        if n > self.size:
            raise self.truncated()
        if not keep:
            self.f.seek(n, 1)
            return ""
        return self.read(n).decode("utf-8", errors="replace")

    def value(self, vtype: int, keep: bool = True, depth: int = 0) -> Any:
        if vtype in _SCALARS:
            return self.unpack(_SCALARS[vtype])
        if vtype == _STRING:
            return self.string(keep)
        if vtype == _ARRAY:
            item_type, n = self.unpack("<I"), self.count()
            if item_type in _SCALARS:  # skip fixed-size items in one seek
                self.f.seek(n * struct.calcsize(_SCALARS[item_type]), 1)
            else:
                if item_type == _ARRAY and depth >= _MAX_ARRAY_DEPTH:
                    raise InvalidModel(f"'{self.name}' is not a valid GGUF file (arrays nested more than "
                                       f"{_MAX_ARRAY_DEPTH} deep in its metadata).", code="invalid_gguf")
                for _ in range(n):
                    self.value(item_type, keep=False, depth=depth + 1)
            return None
        raise InvalidModel(f"'{self.name}' is not a valid GGUF file (unknown value type {vtype}).", code="invalid_gguf")


def read_gguf(path: Path, relpath: str | None = None) -> GGUFInfo:
    """Walk the GGUF header (metadata and tensor table) and check every tensor's data lies inside
    the file. Reads the header only: well under a second even for large files."""
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType  # numpy-only, no framework

    name = relpath or path.name
    size = path.stat().st_size
    with path.open("rb", buffering=1024 * 1024) as f:
        r = _Reader(f, size, name)
        if f.read(4) != GGUF_MAGIC:
            raise InvalidModel(f"'{name}' is not a GGUF file (it does not start with the GGUF magic bytes). Upload a "
                               f".gguf written by llama.cpp, or a .zip/.tar.gz of a Hugging Face model folder.",
                               code="invalid_gguf")
        version = r.unpack("<I")
        if version not in (2, 3):
            raise InvalidModel(f"'{name}' is GGUF version {version}; only versions 2 and 3 are supported. "
                               f"Re-convert it with a current llama.cpp.", code="invalid_gguf")
        tensor_count, kv_count = r.count(), r.count()
        meta: dict[str, Any] = {}
        for _ in range(kv_count):
            key = r.string()
            vtype = r.unpack("<I")
            meta[key] = r.value(vtype)
        alignment = int(meta.get("general.alignment") or 32)
        tensors = []
        for _ in range(tensor_count):
            tname = r.string()
            n_dims = r.unpack("<I")
            if n_dims > 8:
                raise InvalidModel(f"'{name}' is not a valid GGUF file (tensor '{tname}' has {n_dims} dims).",
                                   code="invalid_gguf")
            dims = [r.unpack("<Q") for _ in range(n_dims)]
            ttype, offset = r.unpack("<I"), r.unpack("<Q")
            tensors.append((tname, dims, ttype, offset))
        data_start = -(-f.tell() // alignment) * alignment
    params = 0
    for tname, dims, ttype, offset in tensors:
        numel = 1
        for d in dims:
            numel *= d
        try:
            block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(ttype)]
        except (ValueError, KeyError) as exc:
            raise InvalidModel(f"'{name}': tensor '{tname}' has unknown GGML type {ttype}.", code="invalid_gguf") from exc
        end = data_start + offset + numel // block * type_size
        if end > size:
            raise InvalidModel(f"'{name}' is incomplete: tensor '{tname}' ends at byte {end} but the file has {size}. "
                               f"The file was cut short; upload the complete .gguf file.", code="truncated_gguf")
        params += numel
    return GGUFInfo(version=version, architecture=str(meta.get("general.architecture") or ""),
                    name=str(meta.get("general.name") or ""), parameter_count=params, tensor_count=tensor_count,
                    file_type=meta.get("general.file_type"), chat_template=str(meta.get("tokenizer.chat_template") or ""),
                    size=size)


# --- Hugging Face folders --------------------------------------------------------------------

def list_files(root: Path) -> list[str]:
    """Relative paths of the regular files under root, sorted. Links and special files are refused."""
    found = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            raise InvalidModel(f"'{rel}' is a symbolic link; a model folder must hold plain files only.",
                               code="link_refused")
        if path.is_dir():
            continue
        if not path.is_file():
            raise InvalidModel(f"'{rel}' is not a regular file.", code="special_file_refused")
        found.append(rel)
    return found


def read_json(path: Path, relpath: str) -> dict[str, Any]:
    data = read_json_value(path, relpath)
    if not isinstance(data, dict):
        raise InvalidModel(f"'{relpath}' must hold a JSON object.", code="invalid_config")
    return data


def read_json_value(path: Path, relpath: str) -> Any:
    if path.stat().st_size > MAX_JSON_BYTES:
        raise InvalidModel(f"'{relpath}' is larger than {MAX_JSON_BYTES // 2**20} MiB; that is not a config file.",
                           code="invalid_config")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidModel(f"'{relpath}' is not valid JSON ({exc}); fix or regenerate it with save_pretrained().",
                           code="invalid_config") from exc
    except RecursionError as exc:
        raise InvalidModel(f"'{relpath}' nests too deeply to be a config file.", code="invalid_config") from exc
    return data


def remote_code_key(data: Any) -> str | None:
    """'auto_map' or 'trust_remote_code' when either appears (turned on) anywhere in a JSON value."""
    stack = [data]
    while stack:  # iterative: a deeply nested file must not exhaust the stack
        value = stack.pop()
        if isinstance(value, dict):  # (a vocabulary's token ids are ints: a token named so is no entry)
            if isinstance(value.get("auto_map"), dict | list | str):
                return "auto_map"
            if value.get("trust_remote_code") is True:
                return "trust_remote_code"
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return None


def refuse_remote_code(data: Any, relpath: str) -> None:
    key = remote_code_key(data)
    if key is not None:
        raise InvalidModel(f"'{relpath}' has a `{key}` entry: this model needs custom Python code from its "
                           f"repository (trust_remote_code), which Tauon never runs. Use a model whose architecture is "
                           f"built into transformers, or remove `{key}` if the architecture is built in.",
                           code="remote_code_refused")


def read_config(root: Path) -> dict[str, Any]:
    if not (root / "config.json").is_file():
        raise InvalidModel("There is no config.json at the top of the model folder. Upload the folder that "
                           "`save_pretrained()` writes (config.json, *.safetensors and the tokenizer files), with "
                           "config.json at the top of the archive or inside a single top folder.",
                           code="missing_config")
    config = read_json(root / "config.json", "config.json")
    refuse_remote_code(config, "config.json")
    if not (config.get("architectures") or config.get("model_type")):
        raise InvalidModel("config.json names neither `architectures` nor `model_type`, so no loader knows what "
                           "the model is; regenerate it with save_pretrained().", code="invalid_config")
    return config


def chat_template_of(root: Path) -> str:
    if (root / "chat_template.jinja").is_file():
        return (root / "chat_template.jinja").read_text(encoding="utf-8", errors="replace")
    for name in ("chat_template.json", "tokenizer_config.json"):
        if (root / name).is_file():
            template = read_json(root / name, name).get("chat_template")
            if isinstance(template, list):  # named templates: [{"name": ..., "template": ...}]
                named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
                template = named.get("default") or next(iter(named.values()), None)
            if isinstance(template, str) and template:
                return template
    return ""


def has_tokenizer(files: list[str]) -> bool:
    top = set(files)
    return any(name in top for name in TOKENIZER_FILES) or {"vocab.json", "merges.txt"} <= top


def inspect_folder(root: Path, *, originals: tuple[str, ...] = ()) -> ModelInfo:
    """Validate a Hugging Face model folder and describe it. Raises InvalidModel on anything unsafe
    or incomplete: pickles, remote code, no config.json, no or truncated safetensors.
    `originals` are files kept beside the model (the .gguf it was converted from): counted, not checked."""
    files = list_files(root)
    for rel in files:
        if rel in originals:
            continue
        refuse_pickle(rel, root / rel)
        if rel.lower().endswith(".gguf"):
            raise InvalidModel(f"'{rel}' is a GGUF file inside a model folder; upload the .gguf file on its own.",
                               code="unexpected_gguf")
    config = read_config(root)
    for rel in files:  # every JSON file: processor, generation and tokenizer configs can all name remote code
        if rel.lower().endswith(".json") and rel not in originals:
            refuse_remote_code(read_json_value(root / rel, rel), rel)
    weights = [rel for rel in files if rel.endswith(".safetensors")]
    if not weights:
        raise InvalidModel("The model folder has no *.safetensors weights. Save the model with "
                           "`save_pretrained()` (safetensors is its default) and upload that folder.",
                           code="missing_weights")
    index = root / "model.safetensors.index.json"
    if index.is_file():
        shards = set(read_json(index, index.name).get("weight_map", {}).values())
        missing = sorted(str(s) for s in shards if str(s) not in files)
        if missing:
            raise InvalidModel(f"model.safetensors.index.json lists shards that are missing: {', '.join(missing[:5])}.",
                               code="missing_weights")
    dtypes: Counter[str] = Counter()
    params = 0
    for rel in weights:
        info = read_safetensors(root / rel, rel)
        params += info.parameter_count
        dtypes.update(info.dtype_counts)
    architectures = config.get("architectures") or []
    return ModelInfo(
        architecture=str(architectures[0] if architectures else config.get("model_type", "")),
        model_type=str(config.get("model_type", "")),
        parameter_count=params,
        dtype=dtypes.most_common(1)[0][0] if dtypes else "",
        has_tokenizer=has_tokenizer(files),
        chat_template=chat_template_of(root),
        total_size=sum((root / rel).stat().st_size for rel in files),
        files=files,
    )
