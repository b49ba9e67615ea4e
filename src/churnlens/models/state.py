"""Pickle-free model files: a fitted model as JSON, plain arrays and LightGBM's text format.

Loading a bundle never unpickles. :func:`save_state` walks a fitted model's attributes and
writes them as

- ``model.json``: the object tree (numbers, strings, lists, dicts, and a tagged node for
  everything else: ``{"object": CLASS, "state": {...}}``, ``{"array": KEY}``, ...);
- ``arrays.npz``: every numeric, boolean or datetime array (``numpy.load`` with
  ``allow_pickle=False``, so no object arrays);
- ``booster-N.txt``: each LightGBM booster in LightGBM's own text format.

:func:`load_state` rebuilds the tree with code in this module. A tagged object is rebuilt
only when its class is in :data:`ALLOWED` (churnlens's model classes and the few
scikit-learn and LightGBM estimators they hold), by creating the instance without calling
its constructor and restoring its attributes (through scikit-learn's ``__setstate__``,
which rebuilds derived state such as an isotonic fit's interpolator); a function (the
``FunctionTransformer`` steps) only when it is in the same allow-list. Anything else in a
file is refused, so a changed file can give wrong numbers at worst (the manifest's
hashes and signature are there for that), never run code.
"""

from __future__ import annotations

import collections
import io
import json
import math
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.calibration import _SigmoidCalibration
from sklearn.cluster import KMeans
from sklearn.impute import SimpleImputer
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, LabelEncoder, StandardScaler

from churnlens.errors import ModelError
from churnlens.models.booster_text import checked_booster

TREE = "model.json"
ARRAYS = "arrays.npz"
FORMAT = "churnlens-state/1"
TRANSIENT = frozenset({"explainer_"})  # caches rebuilt on first use


def _name(thing: Any) -> str:
    return f"{thing.__module__}.{thing.__qualname__}"


def _allowed() -> dict[str, Any]:
    """The classes and functions a model file may name: nothing else is rebuilt."""
    from churnlens.models import btyd, churn, pareto_nbd, segments, spend, uplift, value

    things: list[Any] = [
        churn.ChurnModel, churn.BoostedFromBaseline, churn.RecencyBaseline,
        segments.SegmentModel, value.ValueModel, value.Lifetimes, value.Purchases,
        btyd.BGNBD, pareto_nbd.ParetoNBD, spend.GammaGamma, uplift.UpliftModel,
        lgb.LGBMClassifier, lgb.LGBMRegressor, LogisticRegression, StandardScaler,
        SimpleImputer, Pipeline, FunctionTransformer, KMeans, IsotonicRegression,
        _SigmoidCalibration, LabelEncoder,
        churn.rfm_matrix, segments.segment_matrix,  # the FunctionTransformer steps
    ]  # fmt: skip
    return {_name(t): t for t in things}


_ALLOWED: dict[str, Any] = {}


def allowed(name: str) -> Any:
    """The class or function ``name`` if a model file may name it; ModelError otherwise."""
    if not _ALLOWED:
        _ALLOWED.update(_allowed())
    if name not in _ALLOWED:
        raise ModelError(f"the model file names {name!r}, which churnlens does not load")
    return _ALLOWED[name]


_FACTORIES = {"dict": dict, "list": list, "int": int, "float": float, "OrderedDict": dict}
_COLUMN_DTYPES = (
    r"(u?int|float)(8|16|32|64)|bool|object|str|string|(datetime|timedelta)64\[(s|ms|us|ns)\]"
)
_TYPES = {t.__name__: t for t in (float, int, bool, str, np.float64, np.float32, np.int64)}


class _Writer:
    def __init__(self, folder: Path) -> None:
        self.folder, self.arrays, self.files = folder, {}, []  # type: ignore[var-annotated]

    def array(self, values: np.ndarray) -> dict[str, Any]:
        if values.dtype.kind in "biufcmM":
            key = f"a{len(self.arrays)}"
            self.arrays[key] = values
            return {"array": key}
        if values.dtype.kind in "OUST":
            items = [self.encode(v) for v in values.ravel().tolist()]
            return {"objects": items, "shape": list(values.shape)}
        raise ModelError(f"cannot save an array of dtype {values.dtype} without pickle")

    def booster(self, booster: lgb.Booster) -> dict[str, Any]:
        name = f"booster-{sum(f.startswith('booster-') for f in self.files)}.txt"
        (self.folder / name).write_text(booster.model_to_string(), encoding="utf-8")
        self.files.append(name)
        return {"lightgbm_booster": name}

    def index(self, index: pd.Index) -> dict[str, Any]:
        if isinstance(index, pd.RangeIndex):
            return {"range": [index.start, index.stop, index.step], "name": index.name}
        if isinstance(index, pd.MultiIndex):
            levels = [self.index(level) for level in index.levels]
            codes = [self.array(np.asarray(c)) for c in index.codes]
            return {"multi": levels, "codes": codes, "names": list(index.names)}
        return {"values": self.column(index), "name": self.encode(index.name)}

    def column(self, values: pd.Index | pd.Series) -> dict[str, Any]:
        dtype = values.dtype
        if isinstance(dtype, pd.CategoricalDtype):
            raise ModelError("cannot save a categorical column without pickle")
        array = values.to_numpy() if dtype.kind in "biufcmM" else values.to_numpy(dtype=object)
        return {"data": self.array(array), "dtype": str(dtype)}

    def encode(self, value: Any) -> Any:
        if value is None or isinstance(value, (bool, str)):
            return value
        if isinstance(value, int) and not isinstance(value, np.integer):
            return value
        if isinstance(value, float) and not isinstance(value, np.floating):
            return value if math.isfinite(value) else {"float": repr(value)}
        if isinstance(value, np.generic):
            return {"scalar": self.array(np.asarray(value))}
        if isinstance(value, np.ndarray):
            return self.array(value)
        if isinstance(value, np.dtype):
            return {"dtype": value.str}
        if isinstance(value, tuple):
            return {"tuple": [self.encode(v) for v in value]}
        if isinstance(value, list):
            return [self.encode(v) for v in value]
        if isinstance(value, dict):
            return self.mapping(value)
        if isinstance(value, pd.DataFrame):
            columns = [self.column(value.iloc[:, j]) for j in range(value.shape[1])]
            return {"frame": columns, "columns": self.index(value.columns),
                    "index": self.index(value.index)}  # fmt: skip
        if isinstance(value, pd.Series):
            return {"series": self.column(value), "index": self.index(value.index),
                    "name": self.encode(value.name)}  # fmt: skip
        if isinstance(value, pd.Index):
            return {"pandas_index": self.index(value)}
        if isinstance(value, pd.Timestamp):
            return {"timestamp": value.isoformat()}
        if isinstance(value, lgb.Booster):
            return self.booster(value)
        if isinstance(value, type) and value in _TYPES.values():
            return {"type": value.__name__}
        return self.instance(value)

    def mapping(self, value: dict[Any, Any]) -> dict[str, Any]:
        items = [[self.encode(k), self.encode(v)] for k, v in value.items()]
        node: dict[str, Any] = {"items": items}
        if isinstance(value, collections.defaultdict):
            factory = getattr(value.default_factory, "__name__", "")
            if factory not in _FACTORIES:
                raise ModelError(f"cannot save a defaultdict of {factory!r} without pickle")
            node["default"] = factory
        return node

    def instance(self, value: Any) -> dict[str, Any]:
        if _is_function(value):
            allowed(name := _name(value))
            return {"function": name}
        allowed(name := _name(type(value)))
        state = value.__getstate__() if hasattr(value, "__getstate__") else vars(value)
        if not isinstance(state, dict):
            raise ModelError(f"cannot save {name} without pickle (its state is not a dict)")
        state = {k: v for k, v in state.items() if k not in TRANSIENT}
        return {"object": name, "state": self.mapping(state)}


def _is_function(value: Any) -> bool:
    import types

    return isinstance(value, (types.FunctionType, types.BuiltinFunctionType, np.ufunc))


def save_state(model: Any, folder: Path) -> list[str]:
    """Write ``model`` into ``folder`` without pickle; returns the files written."""
    writer = _Writer(folder)
    tree = {"format": FORMAT, "model": writer.encode(model)}
    text = json.dumps(tree, allow_nan=False, separators=(",", ":"))
    (folder / TREE).write_text(text, encoding="utf-8")
    with open(folder / ARRAYS, "wb") as handle:
        np.savez(handle, allow_pickle=False, **writer.arrays)
    return [TREE, ARRAYS, *writer.files]


class _Reader:
    def __init__(self, files: Mapping[str, bytes]) -> None:
        self.files = files
        self.members = _npz_members(files.get(ARRAYS, b""))
        self.arrays: dict[str, np.ndarray] = {}

    def decode(self, node: Any) -> Any:
        if node is None or isinstance(node, (bool, int, float, str)):
            return node
        if isinstance(node, list):
            return [self.decode(v) for v in node]
        if not isinstance(node, dict) or len(node) == 0:
            raise ModelError(f"unreadable model file: unexpected node {str(node)[:80]}")
        tag = next(iter(node))
        handler = getattr(self, f"read_{tag}", None)
        if handler is None:
            raise ModelError(f"unreadable model file: unknown node {tag!r}")
        return handler(node)

    def read_array(self, node: dict[str, Any]) -> np.ndarray:
        key = node["array"]
        if not isinstance(key, str) or f"{key}.npy" not in self.members:
            raise ModelError(f"unreadable model file: no array {str(key)[:40]!r}")
        if key not in self.arrays:
            self.arrays[key] = _npy(self.members[f"{key}.npy"], key)
        return self.arrays[key]

    def read_objects(self, node: dict[str, Any]) -> np.ndarray:
        items = [self.decode(v) for v in node["objects"]]
        out = np.empty(len(items), dtype=object)
        out[:] = items
        return out.reshape([int(n) for n in node["shape"]])

    def read_float(self, node: dict[str, Any]) -> float:
        if node["float"] not in ("nan", "inf", "-inf"):
            raise ModelError(f"unreadable model file: float {str(node['float'])[:20]!r}")
        return float(node["float"])

    def read_scalar(self, node: dict[str, Any]) -> Any:
        return self.read_array(node["scalar"])[()]

    def read_dtype(self, node: dict[str, Any]) -> np.dtype:
        dtype = np.dtype(str(node["dtype"]))
        if dtype.kind not in "biufcmMOUS":
            raise ModelError(f"unreadable model file: dtype {dtype}")
        return dtype

    def read_tuple(self, node: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(self.decode(v) for v in node["tuple"])

    def read_items(self, node: dict[str, Any]) -> dict[Any, Any]:
        pairs = [(self.decode(k), self.decode(v)) for k, v in node["items"]]
        if "default" in node:
            factory = _FACTORIES.get(node["default"])
            if factory is None:
                raise ModelError(f"unreadable model file: defaultdict {node['default']!r}")
            return collections.defaultdict(factory, pairs)
        return dict(pairs)

    def read_index(self, node: dict[str, Any]) -> pd.Index:
        if "range" in node:
            start, stop, step = (int(v) for v in node["range"])
            return pd.RangeIndex(start, stop, step, name=node["name"])
        if "multi" in node:
            levels = [self.read_index(level) for level in node["multi"]]
            codes = [self.read_array(c) for c in node["codes"]]
            return pd.MultiIndex(levels=levels, codes=codes, names=node["names"])
        return pd.Index(self.read_column(node["values"]), name=self.decode(node["name"]))

    def read_column(self, node: dict[str, Any]) -> Any:
        data = self.decode(node["data"])
        dtype = str(node["dtype"])
        if not re.fullmatch(_COLUMN_DTYPES, dtype):  # e.g. no time zones read from files
            raise ModelError(f"unreadable model file: column dtype {dtype[:40]!r}")
        return pd.array(data, dtype=pd.api.types.pandas_dtype(dtype))

    def read_frame(self, node: dict[str, Any]) -> pd.DataFrame:
        columns = self.read_index(node["columns"])
        index = self.read_index(node["index"])
        data = {j: pd.Series(self.read_column(c), index=index) for j, c in enumerate(node["frame"])}
        frame = pd.DataFrame(data, index=index)
        frame.columns = columns
        return frame

    def read_series(self, node: dict[str, Any]) -> pd.Series:
        index = self.read_index(node["index"])
        return pd.Series(
            self.read_column(node["series"]), index=index, name=self.decode(node["name"])
        )

    def read_pandas_index(self, node: dict[str, Any]) -> pd.Index:
        return self.read_index(node["pandas_index"])

    def read_timestamp(self, node: dict[str, Any]) -> pd.Timestamp:
        return pd.Timestamp(str(node["timestamp"]))

    def read_lightgbm_booster(self, node: dict[str, Any]) -> lgb.Booster:
        name = str(node["lightgbm_booster"])
        if name not in self.files or not re.fullmatch(r"booster-\d+\.txt", name):
            raise ModelError(f"unreadable model file: booster file {name[:40]!r}")
        return checked_booster(self.files[name].decode("utf-8"), name)

    def read_type(self, node: dict[str, Any]) -> type:
        if node["type"] not in _TYPES:
            raise ModelError(f"unreadable model file: type {str(node['type'])[:40]!r}")
        return _TYPES[node["type"]]

    def read_function(self, node: dict[str, Any]) -> Any:
        return allowed(str(node["function"]))

    def read_object(self, node: dict[str, Any]) -> Any:
        cls = allowed(str(node["object"]))
        if not isinstance(cls, type):
            raise ModelError(f"unreadable model file: {node['object']!r} is not a class")
        state = self.read_items(node["state"])
        if any(not isinstance(k, str) for k in state):
            raise ModelError(f"unreadable model file: attributes of {cls.__name__}")
        instance = cls.__new__(cls)
        if hasattr(cls, "__setstate__"):
            instance.__setstate__(state)
        else:
            instance.__dict__.update(state)
        return instance


def _npz_members(data: bytes) -> dict[str, bytes]:
    """The members of an ``.npz`` written by :func:`save_state`: stored, not compressed
    (no zip bomb), read only when the tree names them."""
    if not data:
        return {}
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        infos = archive.infolist()
        if any(i.compress_type != zipfile.ZIP_STORED for i in infos):
            raise ModelError("unreadable model file: arrays.npz holds compressed members")
        return {i.filename: archive.read(i) for i in infos}


def _npy(data: bytes, key: str) -> np.ndarray:
    """One ``.npy`` member, after checking that its header's size is its data's."""
    stream = io.BytesIO(data)
    version = np.lib.format.read_magic(stream)
    read = {
        (1, 0): np.lib.format.read_array_header_1_0,
        (2, 0): np.lib.format.read_array_header_2_0,
    }
    if version not in read:
        raise ModelError(f"unreadable model file: array {key!r} in .npy format {version}")
    shape, _, dtype = read[version](stream)
    if dtype.hasobject or dtype.kind not in "biufcmM" or dtype.fields is not None:
        raise ModelError(f"unreadable model file: array {key!r} of dtype {dtype}")
    if math.prod(shape) * dtype.itemsize != len(data) - stream.tell():
        raise ModelError(f"unreadable model file: array {key!r} is not the size it says")
    return np.load(io.BytesIO(data), allow_pickle=False)


def load_state(files: Mapping[str, bytes]) -> Any:
    """The model :func:`save_state` wrote, from its files' bytes (already checked against
    the manifest by the caller: the same bytes are hashed and parsed, so nothing can be
    swapped in between)."""
    try:
        tree = json.loads(files[TREE].decode("utf-8"))
        if not isinstance(tree, dict) or tree.get("format") != FORMAT:
            raise ModelError(f"{TREE}: not a {FORMAT} model file")
        return _Reader(files).decode(tree["model"])
    except ModelError:
        raise
    except Exception as exc:  # anything else a changed file can provoke
        raise ModelError(
            f"unreadable model files ({type(exc).__name__}: {str(exc)[:200]})"
        ) from None
