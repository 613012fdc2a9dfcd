"""Sharded safetensors checkpoints: a directory with model.safetensors.index.json, or several *.safetensors files.

Index layout (transformers `save_pretrained`): {"metadata": {...}, "weight_map": {tensor name: shard file name}}.
Validation: every shard the index names exists in the same directory (plain file names, no paths), every tensor
is in the shard the index names, no tensor is in two shards; tensors in a shard that the index does not list are
reported (GapWarning) and not loaded. Each shard is itself validated by SafetensorsFile.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from ..errors import FormatError
from .jsonfile import read_json_file
from .safetensors import GapWarning, SafetensorsFile, TensorInfo

INDEX_NAME = "model.safetensors.index.json"


class SafetensorsCheckpoint:
    """The tensors of one or more .safetensors files, by name (names are unique across the files)."""

    def __init__(self, where: dict[str, SafetensorsFile], files: list[SafetensorsFile]):
        self.files = files
        self._where = where
        self.infos: dict[str, TensorInfo] = {name: f.infos[name] for name, f in where.items()}
        self.metadata: dict[str, str] = {}
        for f in files:
            self.metadata.update(f.metadata)

    def __contains__(self, name) -> bool:
        return name in self._where

    def file_of(self, name: str) -> Path:
        return self._where[name].path

    def tensor(self, name: str) -> np.ndarray:
        return self._where[name].tensor(name)


def _plain_filename(index_path, name) -> bool:
    return (isinstance(name, str) and name.endswith(".safetensors") and name == os.path.basename(name)
            and name not in (".", "..") and "\\" not in name)


def _from_index(index_path: Path) -> SafetensorsCheckpoint:
    """Validate model.safetensors.index.json: its files exist, and each tensor is in the file it names."""
    index = read_json_file(index_path, "safetensors index")
    weight_map = index.get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise FormatError(f"safetensors index {index_path}: 'weight_map' must be a non-empty object")
    by_file: dict[str, SafetensorsFile] = {}
    for name, fname in weight_map.items():
        if not _plain_filename(index_path, fname):
            raise FormatError(f"safetensors index {index_path}: tensor {name!r} maps to {str(fname)[:80]!r}, "
                              f"not a .safetensors file name in this directory")
        if fname not in by_file:
            shard = index_path.parent / fname
            if not shard.is_file():
                raise FormatError(f"safetensors index {index_path}: shard {fname!r} (tensor {name!r}) is missing")
            by_file[fname] = SafetensorsFile(shard)
        if name not in by_file[fname]:
            raise FormatError(f"safetensors index {index_path}: tensor {name!r} is not in {fname!r} "
                              f"where the index says it is")
    stray = []
    for fname, shard in by_file.items():
        for n in shard.keys():
            if n not in weight_map:
                stray.append(n)
            elif weight_map[n] != fname:
                raise FormatError(f"safetensors index {index_path}: tensor {n!r} is in {fname!r} as well as in "
                                  f"{weight_map[n]!r} where the index puts it")
    if stray:
        warnings.warn(f"safetensors index {index_path}: {len(stray)} tensor(s) in the shards are not in the index "
                      f"and are not loaded, e.g. {stray[:5]}", GapWarning, stacklevel=3)
    where = {name: by_file[fname] for name, fname in weight_map.items()}
    return SafetensorsCheckpoint(where, list(by_file.values()))


def _from_files(paths: list[Path]) -> SafetensorsCheckpoint:
    files = [SafetensorsFile(p) for p in paths]
    where: dict[str, SafetensorsFile] = {}
    for f in files:
        for name in f.keys():
            if name in where:
                raise FormatError(f"safetensors: tensor {name!r} is in both {where[name].path} and {f.path} "
                                  f"(and there is no {INDEX_NAME} to say which one counts)")
            where[name] = f
    return SafetensorsCheckpoint(where, files)


def open_safetensors(path) -> SafetensorsCheckpoint:
    """A .safetensors file, or a directory: through model.safetensors.index.json if present, else all its
    *.safetensors files (names must then be unique across them)."""
    path = Path(path)
    if path.is_file():
        return _from_files([path])
    if not path.is_dir():
        raise FormatError(f"safetensors: {path} is neither a file nor a directory")
    if (path / INDEX_NAME).is_file():
        return _from_index(path / INDEX_NAME)
    shards = sorted(p for p in path.glob("*.safetensors") if p.is_file())
    if not shards:
        raise FormatError(f"safetensors: no *.safetensors files and no {INDEX_NAME} in {path}")
    return _from_files(shards)
