"""Self-describing model directories: `config.json` names every size, weights are safetensors.

    config.json             {"format": "phenaki", "version": 1, "tokenizer": {...}, ...}
    tokenizer.safetensors   one file per section that has weights

Loading checks the config against the weights and says exactly what does not match,
instead of failing deep inside torch (or, on GPUs, with a device-side assert).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from phenaki_cli.config import TokenizerConfig, from_dict, to_dict, tokens_hash
from phenaki_cli.errors import UserError
from phenaki_cli.files import atomic_path

FORMAT = "phenaki"
VERSION = 1


def read_config(model_dir: str | os.PathLike) -> dict:
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise UserError(f"{model_dir}: model directory not found")
    path = model_dir / "config.json"
    if not path.is_file():
        raise UserError(f"{path}: missing (a model directory holds config.json and *.safetensors)")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise UserError(f"{path}: not a phenaki model config (\"format\" should be \"{FORMAT}\")")
    if data.get("version") != VERSION:
        raise UserError(f"{path}: config version {data.get('version')!r} is not supported (expected {VERSION})")
    return data


def section(data: dict, name: str, model_dir: str | os.PathLike) -> dict:
    if name not in data:
        raise UserError(f"{Path(model_dir) / 'config.json'}: has no \"{name}\" section")
    return data[name]


def load_weights(module: nn.Module, path: Path, new_prefixes: tuple[str, ...] = (),
                 new_rows: tuple[str, ...] = ()) -> None:
    """Load safetensors into `module`, naming every missing, unexpected or mis-shaped tensor.

    Weights whose names start with `new_prefixes` may be missing (parts added for fine-tuning:
    they keep their initialisation); the tensors named in `new_rows` may hold fewer rows than the
    module's (a table grown for fine-tuning: the rows after the stored ones keep theirs)."""
    if not path.is_file():
        raise UserError(f"{path}: weights file missing")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise UserError(f"{path}: cannot read weights ({e})") from None
    expected = module.state_dict()
    for key in set(new_rows) & set(state) & set(expected):
        stored, own = state[key], expected[key]
        if stored.shape[1:] == own.shape[1:] and len(stored) < len(own):
            state[key] = torch.cat([stored.to(own.dtype), own[len(stored):]])
    problems = []
    missing = sorted(k for k in set(expected) - set(state) if not k.startswith(new_prefixes))
    unexpected = sorted(set(state) - set(expected))
    if missing:
        problems.append(f"missing {_names(missing)}")
    if unexpected:
        problems.append(f"unexpected {_names(unexpected)}")
    for key in sorted(set(expected) & set(state)):
        if expected[key].shape != state[key].shape:
            problems.append(f"{key} has shape {tuple(state[key].shape)} but config.json implies "
                            f"{tuple(expected[key].shape)}")
    if problems:
        raise UserError(f"{path}: weights do not match config.json: " + "; ".join(problems[:4]) +
                        (f"; and {len(problems) - 4} more" if len(problems) > 4 else ""))
    module.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, strict=not new_prefixes)


def _names(keys: list[str]) -> str:
    return ", ".join(keys[:3]) + (f" (+{len(keys) - 3} more)" if len(keys) > 3 else "")


def save_model_dir(model_dir: str | os.PathLike, sections: dict[str, tuple[Any, nn.Module | dict | None]],
                   extra: dict | None = None, dtype: torch.dtype | None = None,
                   write_files: Callable[[Path], None] | None = None) -> None:
    """Write a whole model directory atomically.

    `sections` maps a name to (config dataclass, module or state dict or None); `dtype` optionally
    stores float weights smaller (e.g. fp16 for shipped models; loading casts back).
    `write_files` may add more files (a text encoder, a model card) before the rename.
    """
    with atomic_path(model_dir, directory=True) as tmp:
        config = {"format": FORMAT, "version": VERSION, **(extra or {})}
        for name, (cfg, module) in sections.items():
            config[name] = to_dict(cfg)
            if module is not None:
                weights = module if isinstance(module, dict) else module.state_dict()
                state = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).cpu().contiguous()
                         for k, v in weights.items()}
                save_file(state, str(tmp / f"{name}.safetensors"))
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        if write_files is not None:
            write_files(tmp)


def load_tokenizer(model_dir: str | os.PathLike):
    """A model directory (or one holding a tokenizer section) → CViViT in eval mode, and the hash
    its token files carry (config.tokens_hash)."""
    from phenaki_cli.tokenizer import CViViT

    data = read_config(model_dir)
    raw = section(data, "tokenizer", model_dir)
    config = from_dict(TokenizerConfig, raw, f"{Path(model_dir) / 'config.json'} [tokenizer]")
    model = CViViT(config)
    load_weights(model, Path(model_dir) / "tokenizer.safetensors")
    return model.eval(), tokens_hash(raw)
