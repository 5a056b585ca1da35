"""Hugging Face BERT-family checkpoints (``--backbone hf:DIR``): find, read, check, and a NumPy forward pass.

A checkpoint is a folder with ``config.json`` (``model_type`` ``bert``: BERT and the families that
share its weight layout, e.g. MiniLM), ``model.safetensors`` and ``vocab.txt`` or
``tokenizer.json``; or a ``.zip`` of such a folder (extracted once into a cache folder); or the name
of an installed package that ships one as ``model.zip`` (``hf:all_minilm_l6_v2``). The weights are
read with the ``safetensors`` library, every tensor's name and shape is checked against the config,
and :func:`numpy_forward` is an independent forward pass that :mod:`tlkeras.core.text.hf_encoder`
checks the Keras encoder against at load.

Pooling comes from the checkpoint's own files: a sentence-transformers pooling config
(``modules.json`` -> ``1_Pooling/config.json``) says ``mean`` or ``cls``; without one, a checkpoint
with a pooler uses it (``pooler``: tanh(dense([CLS])), what TF-Hub's BERT calls ``pooled_output``),
one without uses the masked mean.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tlkeras.errors import TLKerasError

__all__ = ["HF_PREFIX", "HFCheckpoint", "BERT_FIELDS", "hf_folder", "load_hf_checkpoint", "numpy_forward", "LIMITS"]

HF_PREFIX = "hf:"
# Upper bounds on config values: a damaged or hostile config.json fails here instead of asking for
# terabytes (BERT-large is 1024 x 24 x 16, 4096 wide, 512 positions, vocabularies up to ~250k).
LIMITS = {"vocab_size": 1_000_000, "hidden_size": 4096, "num_hidden_layers": 48, "num_attention_heads": 64,
          "intermediate_size": 16384, "max_position_embeddings": 8192, "type_vocab_size": 16}
BERT_FIELDS = tuple(LIMITS)
_ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu")
_SPECIAL = ("[CLS]", "[SEP]", "[UNK]")
_MAX_SMALL_FILE = 64 << 20  # config / vocabulary / tokenizer files; tokenizer.json of BERT is ~0.5 MB


@dataclass
class HFCheckpoint:
    """A read, checked BERT-layout checkpoint.

    Attributes:
        folder: where its files are.
        config: the architecture fields (:data:`BERT_FIELDS`, ``hidden_act``, ``layer_norm_eps``,
            ``hidden_dropout_prob``, ``attention_probs_dropout_prob``).
        weights: tensor name (without a ``bert.`` prefix) -> float32 array, HF's layout (dense
            kernels ``[out, in]``).
        vocab: the WordPiece vocabulary by id.
        lower_case: whether its tokenizer lower-cases.
        pooling: ``mean``, ``cls`` or ``pooler``; ``pooling_source`` says which file decided.
    """

    folder: Path
    config: dict[str, Any]
    weights: dict[str, np.ndarray]
    vocab: list[str]
    lower_case: bool
    pooling: str
    pooling_source: str
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- finding the folder


def _cache_root() -> Path:
    base = os.environ.get("TLKERAS_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "tlkeras")
    return Path(base) / "hf"


def _extract_zip(path: Path) -> Path:
    """Extracts ``path`` once into the cache (atomically: a temporary sibling renamed into place).

    Side effect: creates ``<cache>/hf/<stem>-<size>-<mtime>/``; later calls reuse it.
    """
    stat = path.stat()
    target = _cache_root() / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', path.stem)}-{stat.st_size}-{int(stat.st_mtime)}"
    if (target / "config.json").is_file():
        return target
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise TLKerasError(f"{path} is not a readable zip file ({exc}); pass the checkpoint folder or a good copy of the zip") from None
    with archive:
        names = archive.namelist()
        for name in names:
            parts = Path(name).parts
            if name.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
                raise TLKerasError(f"{path} holds the entry {name!r}, a path escaping the folder; refusing to extract it")
        prefix = ""
        if "config.json" not in names:  # a zip of the folder itself: everything under one top folder
            tops = {n.split("/", 1)[0] for n in names if "/" in n}
            if len(tops) == 1 and f"{next(iter(tops))}/config.json" in names:
                prefix = next(iter(tops)) + "/"
            else:
                raise TLKerasError(f"{path} has no config.json (at its top or in one top folder); zip a Hugging Face checkpoint folder")
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
        try:
            archive.extractall(tmp)
            source = tmp / prefix if prefix else tmp
            try:
                os.replace(source, target)
            except OSError:
                if not (target / "config.json").is_file():  # another process did not win the race either
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def hf_folder(spec: str) -> Path:
    """The checkpoint folder ``spec`` names (``hf:`` prefix optional): a folder, a ``.zip`` of one,
    or an installed package that ships ``model.zip`` (found without importing it).

    Side effect: a zip is extracted once into ``$TLKERAS_CACHE/hf`` (default ``~/.cache/tlkeras/hf``).

    Raises:
        TLKerasError: nothing usable at ``spec``.
    """
    spec = str(spec)
    if spec.startswith(HF_PREFIX):
        spec = spec[len(HF_PREFIX):]
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file() and (path / "model.zip").is_file():
            return _extract_zip(path / "model.zip")
        return path
    if path.is_file() and path.suffix.lower() == ".zip":
        return _extract_zip(path)
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", spec):
        try:
            found = importlib.util.find_spec(spec)
        except (ImportError, ValueError):
            found = None
        if found is not None and found.origin:
            zipped = Path(found.origin).parent / "model.zip"
            if zipped.is_file():
                return _extract_zip(zipped)
    raise TLKerasError(f"hf:{spec} is not a checkpoint folder, a .zip of one, or an installed package with model.zip; pass "
                       f"hf:<folder with config.json, model.safetensors, vocab.txt or tokenizer.json>")


# --------------------------------------------------------------------------- reading


def _inside(folder: Path, relative: str, what: str) -> Path:
    """``folder / relative``, refusing a path (or link) that leads out of ``folder``."""
    root = folder.resolve()
    path = (folder / relative).resolve()
    if path != root and root not in path.parents:
        raise TLKerasError(f"{what} {relative!r} in {folder} leads outside the checkpoint folder; refusing it")
    return path


def _read_json(folder: Path, name: str, required: bool = True) -> Any:
    path = _inside(folder, name, "file")
    if not path.is_file():
        if required:
            raise TLKerasError(f"{folder} has no {name}; a Hugging Face checkpoint folder holds config.json, model.safetensors and vocab.txt or tokenizer.json")
        return None
    if path.stat().st_size > _MAX_SMALL_FILE:
        raise TLKerasError(f"{path} is larger than {_MAX_SMALL_FILE >> 20} MB; it is not a checkpoint's {name}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TLKerasError(f"{path} is not valid JSON ({exc}); restore the checkpoint's {name}") from None


def _architecture(folder: Path) -> dict[str, Any]:
    raw = _read_json(folder, "config.json")
    if not isinstance(raw, dict):
        raise TLKerasError(f"{folder}/config.json is not a JSON object; restore the checkpoint's config.json")
    kind = str(raw.get("model_type", "")).lower()
    if kind != "bert":
        raise TLKerasError(f"{folder}/config.json says model_type {kind or 'missing'!r}; hf: takes BERT-architecture checkpoints "
                           f"(model_type bert: BERT, MiniLM, ...)")
    config: dict[str, Any] = {}
    for name, limit in LIMITS.items():
        value = raw.get(name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise TLKerasError(f"{folder}/config.json: {name} is {value!r}, not a positive integer; restore the checkpoint's config.json")
        if value > limit:
            raise TLKerasError(f"{folder}/config.json: {name} {value} is above {limit}; this is not a BERT-size model (damaged config.json?)")
        config[name] = value
    if config["hidden_size"] % config["num_attention_heads"]:
        raise TLKerasError(f"{folder}/config.json: hidden_size {config['hidden_size']} is not a multiple of num_attention_heads {config['num_attention_heads']}")
    act = str(raw.get("hidden_act", "gelu"))
    if act not in _ACTIVATIONS:
        raise TLKerasError(f"{folder}/config.json: hidden_act {act!r} is not supported ({', '.join(_ACTIVATIONS)})")
    position = str(raw.get("position_embedding_type", "absolute"))
    if position != "absolute":
        raise TLKerasError(f"{folder}/config.json: position_embedding_type {position!r} is not supported (absolute)")
    config["hidden_act"] = act
    config["layer_norm_eps"] = float(raw.get("layer_norm_eps", 1e-12))
    for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
        value = float(raw.get(name, 0.1))
        if not 0.0 <= value < 1.0:
            raise TLKerasError(f"{folder}/config.json: {name} {value} is not in [0, 1)")
        config[name] = value
    return config


def expected_shapes(config: dict[str, Any], pooler: bool) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape of a BertModel with ``config`` (HF names and layout)."""
    h, i = config["hidden_size"], config["intermediate_size"]
    shapes = {
        "embeddings.word_embeddings.weight": (config["vocab_size"], h),
        "embeddings.position_embeddings.weight": (config["max_position_embeddings"], h),
        "embeddings.token_type_embeddings.weight": (config["type_vocab_size"], h),
        "embeddings.LayerNorm.weight": (h,), "embeddings.LayerNorm.bias": (h,),
    }
    for n in range(config["num_hidden_layers"]):
        p = f"encoder.layer.{n}."
        for part in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"):
            shapes[p + part + ".weight"], shapes[p + part + ".bias"] = (h, h), (h,)
        shapes[p + "intermediate.dense.weight"], shapes[p + "intermediate.dense.bias"] = (i, h), (i,)
        shapes[p + "output.dense.weight"], shapes[p + "output.dense.bias"] = (h, i), (h,)
        for part in ("attention.output.LayerNorm", "output.LayerNorm"):
            shapes[p + part + ".weight"], shapes[p + part + ".bias"] = (h,), (h,)
    if pooler:
        shapes["pooler.dense.weight"], shapes["pooler.dense.bias"] = (h, h), (h,)
    return shapes


_OLD_NAMES = ((".gamma", ".weight"), (".beta", ".bias"))


def _weights(folder: Path, config: dict[str, Any]) -> tuple[dict[str, np.ndarray], bool]:
    path = _inside(folder, "model.safetensors", "file")
    if not path.is_file():
        raise TLKerasError(f"{folder} has no model.safetensors; save the checkpoint with safetensors (model.save_pretrained(..., safe_serialization=True))")
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        raw = load_file(str(path))
    except (SafetensorError, OSError, ValueError, TypeError) as exc:
        first = " ".join(str(exc).split())[:160]
        raise TLKerasError(f"{path} cannot be read as safetensors ({first}); the file is damaged or truncated: restore it") from None
    weights: dict[str, np.ndarray] = {}
    for name, value in raw.items():
        key = name[5:] if name.startswith("bert.") else name
        for old, new in _OLD_NAMES:
            if "LayerNorm" in key and key.endswith(old):
                key = key[: -len(old)] + new
        weights[key] = value
    pooler = "pooler.dense.weight" in weights
    for name, shape in expected_shapes(config, pooler).items():
        if name not in weights:
            raise TLKerasError(f"{path} lacks the tensor {name}; it is not a BertModel checkpoint of this config.json (or it is damaged)")
        value = weights[name]
        if tuple(value.shape) != shape:
            raise TLKerasError(f"{path}: tensor {name} has shape {tuple(value.shape)}, config.json implies {shape}; the weights and config.json do not match")
        if value.dtype.kind != "f":
            raise TLKerasError(f"{path}: tensor {name} is {value.dtype}, not floating point; restore the checkpoint")
        value = value.astype(np.float32, copy=False)
        if not np.all(np.isfinite(value)):
            raise TLKerasError(f"{path}: tensor {name} holds NaN or infinite values; the file is damaged: restore it")
        weights[name] = value
    keep = expected_shapes(config, pooler)
    return {k: weights[k] for k in keep}, pooler


def _vocabulary(folder: Path) -> tuple[list[str], str]:
    vocab_txt = _inside(folder, "vocab.txt", "file")
    if vocab_txt.is_file():
        if vocab_txt.stat().st_size > _MAX_SMALL_FILE:
            raise TLKerasError(f"{vocab_txt} is larger than {_MAX_SMALL_FILE >> 20} MB; it is not a WordPiece vocabulary")
        try:
            text = vocab_txt.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise TLKerasError(f"{vocab_txt} is not UTF-8; restore the checkpoint's vocab.txt") from None
        return [line.rstrip("\r") for line in text.split("\n")[:-1 if text.endswith("\n") else None]], "vocab.txt"
    data = _read_json(folder, "tokenizer.json", required=False)
    if data is None:
        raise TLKerasError(f"{folder} has neither vocab.txt nor tokenizer.json; add the checkpoint's tokenizer files")
    model = data.get("model") if isinstance(data, dict) else None
    table = model.get("vocab") if isinstance(model, dict) else None
    if not isinstance(model, dict) or model.get("type") != "WordPiece" or not isinstance(table, dict):
        raise TLKerasError(f"{folder}/tokenizer.json does not hold a WordPiece vocabulary (model.type {model.get('type') if isinstance(model, dict) else None!r}); "
                           "hf: takes BERT WordPiece tokenizers")
    ids = sorted(table.values()) if all(isinstance(v, int) for v in table.values()) else None
    if ids != list(range(len(table))):
        raise TLKerasError(f"{folder}/tokenizer.json: the vocabulary ids are not 0..{len(table) - 1} each once; restore tokenizer.json")
    vocab = [""] * len(table)
    for token, i in table.items():
        vocab[i] = token
    return vocab, "tokenizer.json"


def _lower_case(folder: Path) -> bool:
    """The tokenizer's lower-casing: tokenizer_config.json, else tokenizer.json's normalizer, else True (BERT's default)."""
    cfg = _read_json(folder, "tokenizer_config.json", required=False)
    if isinstance(cfg, dict) and isinstance(cfg.get("do_lower_case"), bool):
        return cfg["do_lower_case"]
    tok = _read_json(folder, "tokenizer.json", required=False) if _inside(folder, "tokenizer.json", "file").is_file() else None
    normalizer = tok.get("normalizer") if isinstance(tok, dict) else None
    if isinstance(normalizer, dict) and isinstance(normalizer.get("lowercase"), bool):
        return normalizer["lowercase"]
    return True


def _pooling(folder: Path, has_pooler: bool) -> tuple[str, str]:
    modules = _read_json(folder, "modules.json", required=False)
    pooling_dir = None
    if isinstance(modules, list):
        for module in modules:
            if isinstance(module, dict) and str(module.get("type", "")).endswith("Pooling"):
                pooling_dir = str(module.get("path", "1_Pooling"))
    elif _inside(folder, "1_Pooling", "folder").is_dir():
        pooling_dir = "1_Pooling"
    if pooling_dir is not None:
        _inside(folder, pooling_dir, "modules.json path")
        cfg = _read_json(folder, f"{pooling_dir}/config.json", required=False)
        if isinstance(cfg, dict):
            source = f"{pooling_dir}/config.json (sentence-transformers)"
            if cfg.get("pooling_mode_mean_tokens"):
                return "mean", source
            if cfg.get("pooling_mode_cls_token"):
                return "cls", source
            raise TLKerasError(f"{folder}/{pooling_dir}/config.json asks for a pooling mode other than mean or cls tokens; not supported")
    if has_pooler:
        return "pooler", "the checkpoint's pooler (no sentence-transformers pooling config)"
    return "mean", "no pooler in the checkpoint"


def load_hf_checkpoint(spec: str | os.PathLike) -> HFCheckpoint:
    """Reads and checks a BERT-layout checkpoint (see the module docstring).

    Raises:
        TLKerasError: one line naming the first problem: a missing file or tensor, a wrong shape,
            a non-BERT or oversize config, a vocabulary that does not fit the embedding, a path
            leading out of the folder, a damaged file.
    """
    folder = hf_folder(str(spec))
    config = _architecture(folder)
    weights, has_pooler = _weights(folder, config)
    vocab, vocab_file = _vocabulary(folder)
    if len(vocab) != config["vocab_size"]:
        raise TLKerasError(f"{folder}/{vocab_file} has {len(vocab)} tokens but the model's vocab_size is {config['vocab_size']}; "
                           "the vocabulary and the weights are from different checkpoints")
    if len(set(vocab)) != len(vocab):
        raise TLKerasError(f"{folder}/{vocab_file} lists a token twice; restore the checkpoint's vocabulary")
    missing = [t for t in _SPECIAL if t not in vocab]
    if missing:
        raise TLKerasError(f"{folder}/{vocab_file} lacks {', '.join(missing)}; a BERT WordPiece vocabulary has [CLS], [SEP] and [UNK]")
    if any(not t or "\n" in t or "\r" in t for t in vocab):
        raise TLKerasError(f"{folder}/{vocab_file} has an empty token or one with a line break; restore the checkpoint's vocabulary")
    pooling, source = _pooling(folder, has_pooler)
    return HFCheckpoint(folder, config, weights, vocab, _lower_case(folder), pooling, source)


# --------------------------------------------------------------------------- NumPy forward pass


def _gelu(x: np.ndarray, kind: str) -> np.ndarray:
    if kind == "relu":
        return np.maximum(x, 0.0)
    if kind == "gelu":
        try:
            from scipy.special import erf
        except ImportError:  # scipy comes with scikit-learn; this keeps the check without it
            import math

            erf = np.vectorize(math.erf, otypes=[np.float64])
        return 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x ** 3)))


def _layer_norm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def numpy_forward(checkpoint: HFCheckpoint, ids: np.ndarray, mask: np.ndarray, types: np.ndarray, pooling: str | None = None) -> np.ndarray:
    """The pooled sentence vectors ``[B, hidden]`` of ``checkpoint`` for packed inputs ``[B, L]``,
    in float64 NumPy straight from HF's tensors (no shared code with the Keras encoder)."""
    w = {k: v.astype(np.float64) for k, v in checkpoint.weights.items()}
    c = checkpoint.config
    eps, heads = c["layer_norm_eps"], c["num_attention_heads"]
    b, length = ids.shape
    size = c["hidden_size"] // heads
    x = w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][np.arange(length)][None] \
        + w["embeddings.token_type_embeddings.weight"][types]
    x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], eps)
    bias = np.where(mask[:, None, None, :] > 0, 0.0, -1e9)

    def dense(v, name):
        return v @ w[name + ".weight"].T + w[name + ".bias"]

    def split(v):
        return v.reshape(b, length, heads, size).transpose(0, 2, 1, 3)

    for n in range(c["num_hidden_layers"]):
        p = f"encoder.layer.{n}."
        q, k, v = (split(dense(x, p + f"attention.self.{part}")) for part in ("query", "key", "value"))
        scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(size) + bias
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        probs = scores / scores.sum(-1, keepdims=True)
        context = (probs @ v).transpose(0, 2, 1, 3).reshape(b, length, -1)
        x = _layer_norm(x + dense(context, p + "attention.output.dense"), w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"], eps)
        hidden = _gelu(dense(x, p + "intermediate.dense"), c["hidden_act"])
        x = _layer_norm(x + dense(hidden, p + "output.dense"), w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"], eps)
    pooling = pooling or checkpoint.pooling
    if pooling == "mean":
        m = mask[:, :, None].astype(np.float64)
        return (x * m).sum(1) / np.maximum(m.sum(1), 1e-9)
    if pooling == "cls":
        return x[:, 0]
    return np.tanh(dense(x[:, 0], "pooler.dense"))
