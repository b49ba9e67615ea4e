"""The model protocol: what every kind of model churnlens fits, saves, loads and scores with.

A model kind is one module under ``churnlens/models/`` whose estimator class derives from
:class:`ChurnlensModel` and sets ``kind``. The protocol:

- ``fit(X, y)`` (scikit-learn's contract: ``__init__`` stores parameters, learned state
  ends in ``_``) and the estimator's own ``predict`` / ``predict_proba``;
- :meth:`~ChurnlensModel.predict_columns`: the columns of the scores contract it gives
  for a feature frame (the churn model: ``churn_probability`` and ``reasons``; segments:
  ``segment_id`` and ``segment_name``), and :meth:`~ChurnlensModel.empty_columns`, what a
  scoring run without that model writes instead;
- :meth:`~ChurnlensModel.explain`: plain-words reasons, where the kind has them;
- :meth:`~ChurnlensModel.save` / :meth:`~ChurnlensModel.load`: the model's files in a
  bundle folder (see :mod:`churnlens.bundle`);
- :meth:`~ChurnlensModel.metadata`: what a manifest and an MLflow run record about it;
- :meth:`~ChurnlensModel.validation_score`: its score on labelled data (higher is better),
  which the registry's champion rule compares;
- ``score_inputs``: the scores columns of other kinds it takes beside the features (the
  uplift model: ``churn_probability``, ``value_if_retained``).

Training and scoring go through the protocol and the registry :func:`model_class` (by the
``kind`` a manifest or a registered version records): no ``isinstance`` branches.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from churnlens.errors import ModelError

_KINDS: dict[str, type[ChurnlensModel]] = {}
PICKLED = "model.joblib"  # the pickle format of churnlens 0.1, no longer loaded


class ChurnlensModel(ABC):
    """Base of every model kind (see the module docstring)."""

    kind: ClassVar[str] = ""
    # columns of other kinds' predictions this kind takes beside the features (scoring
    # runs it after the kinds that give them, and passes them joined to the features)
    score_inputs: ClassVar[tuple[str, ...]] = ()
    feature_names_in_: np.ndarray

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.kind:
            if cls.kind in _KINDS and _KINDS[cls.kind].__qualname__ != cls.__qualname__:
                raise TypeError(f"two model kinds named {cls.kind!r}")
            _KINDS[cls.kind] = cls

    @abstractmethod
    def predict_columns(self, X: pd.DataFrame, num_threads: int = 1) -> pd.DataFrame:
        """The scores contract's columns this model gives, indexed like ``X``."""

    @classmethod
    def empty_columns(cls, index: pd.Index) -> pd.DataFrame:
        """What a scoring run without a model of this kind writes in its columns."""
        return pd.DataFrame(index=index)

    def explain(self, X: pd.DataFrame) -> pd.Series | None:
        """Plain-words reasons per row, where the kind has them."""
        return None

    def metadata(self) -> dict[str, Any]:
        """What a bundle's manifest and an MLflow run record about the fitted model."""
        names = getattr(self, "feature_names_in_", None)
        return {"kind": self.kind, "features": [] if names is None else list(names)}

    def validation_score(self, X: pd.DataFrame, y: pd.Series | None = None) -> float | None:
        """Its score on labelled data (higher is better), or None when it cannot be
        compared there (say, the data lacks its features)."""
        return None

    def save(self, folder: Path) -> list[str]:
        """Write the fitted model into ``folder`` (no pickle: see
        :mod:`churnlens.models.state`); returns the files written."""
        from churnlens.models.state import save_state

        return save_state(self, folder)

    @classmethod
    def load(cls, files: Mapping[str, bytes], metadata: dict[str, Any]) -> ChurnlensModel:
        """The model :meth:`save` wrote, from its files' bytes (verified by the caller)."""
        from churnlens.models.state import load_state

        model = load_state(files)
        if not isinstance(model, cls):
            found = getattr(model, "kind", type(model).__name__)
            raise ModelError(f"the bundle holds a {found} model, not a {cls.kind} model")
        names = getattr(model, "feature_names_in_", None)
        if (
            not isinstance(names, np.ndarray)
            or names.ndim != 1
            or not all(isinstance(n, str) for n in names)
        ):
            raise ModelError(f"unreadable model file: the {cls.kind} model's feature names")
        return model


def model_class(kind: str) -> type[ChurnlensModel]:
    """The class of a model kind (importing the model modules on first use)."""
    import churnlens.models.churn
    import churnlens.models.segments
    import churnlens.models.uplift
    import churnlens.models.value  # noqa: F401 (they register their kinds)

    if kind not in _KINDS:
        raise ModelError(f"unknown model kind {kind!r}; known: {sorted(_KINDS)}")
    return _KINDS[kind]


def model_kinds() -> list[str]:
    """Every registered kind in scoring order: churn first, kinds that take other kinds'
    predictions (``score_inputs``) last."""
    model_class("churn")
    return sorted(_KINDS, key=lambda k: (k != "churn", bool(_KINDS[k].score_inputs), k))
