"""What identifies a pandapower net for the AC engines: its structure and element labels.

:func:`net_fingerprint` hashes what a converted power-grid-model input depends on (load
and sgen powers excluded: they are updated per run), so converted inputs and labels are
cached while it holds. :func:`net_labels` gives lines and transformers their unique
non-empty ``name``, else ``line<index>``/``trafo<index>`` (pandapower table order).
Invariant: a cache entry is used only for the very net object (weak reference) with the
same fingerprint.
"""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["net_fingerprint", "net_labels"]


def net_fingerprint(net: Any) -> int:
    """Hash of the net's structure, as :func:`run_timeseries` takes it (``fingerprint``)."""
    return _structure_hash(net)


def _structure_hash(net: Any) -> int:
    """Hash of what the converted input depends on (load/sgen powers are updated anyway)."""
    parts: list[object] = []
    for name in ("bus", "line", "trafo", "trafo3w", "switch", "ext_grid", "shunt", "load", "sgen"):
        table = net[name]
        if name in ("load", "sgen"):
            table = table[["bus", "in_service", *[c for c in table if "const_" in c]]]
        parts.append(table.index.to_numpy().tobytes())
        kinds = [(c, d.kind) for c, d in table.dtypes.items()]  # select_dtypes is slow
        numeric = [c for c, k in kinds if k in "biuf"]
        parts.append(table[numeric].to_numpy(float).tobytes() if numeric else b"")
        if name.startswith("trafo"):  # vector group, tap side and changer type matter
            text = [c for c, k in kinds if k == "O"]
            parts.append(tuple(map(str, table[text].to_numpy().flat)) if text else ())
    return hash(tuple(parts))


_LABEL_CACHE: dict[int, tuple[weakref.ref[Any], int, tuple[tuple[str, ...], ...]]] = {}


def net_labels(net: Any, sig: int) -> tuple[tuple[str, ...], ...]:
    """Line and trafo labels of ``net``, cached while its fingerprint ``sig`` holds."""
    hit = _LABEL_CACHE.get(id(net))
    if hit is not None and hit[0]() is net and hit[1] == sig:
        return hit[2]
    for k in [k for k, (ref, *_) in _LABEL_CACHE.items() if ref() is None]:
        del _LABEL_CACHE[k]
    labels = (_labels(net.line, "line"), _labels(net.trafo, "trafo"))
    _LABEL_CACHE[id(net)] = (weakref.ref(net), sig, labels)
    return labels


def _labels(table: Any, prefix: str) -> tuple[str, ...]:
    """``name`` where it is a unique non-empty string, else ``<prefix><index>``."""
    names = table["name"] if "name" in table.columns else pd.Series(None, index=table.index)
    own = names.map(lambda n: isinstance(n, str) and n != "").astype(bool)
    own &= ~names.where(own).duplicated(keep=False)
    fallback = prefix + table.index.astype(str)
    return tuple(str(v) for v in np.where(own.to_numpy(), names.to_numpy(), fallback))
