"""The feature families, one module each; the registry is built when this package loads.

Every module here must define ``FAMILY``, a
:class:`~churnlens.features.base.FeatureFamily`; the families are ordered by their
``order``, which fixes the order of the feature columns (and so the models' signature).
"""

from __future__ import annotations

import importlib
import pkgutil

from churnlens.features.base import FeatureFamily


def discover(paths: list[str], package: str) -> tuple[FeatureFamily, ...]:
    """The families declared by the modules of a package, in their order; raises
    ``TypeError`` for a module without ``FAMILY`` and for a name or order used twice."""
    found: list[FeatureFamily] = []
    for info in sorted(pkgutil.iter_modules(paths), key=lambda m: m.name):
        module = importlib.import_module(f"{package}.{info.name}")
        family = getattr(module, "FAMILY", None)
        if not isinstance(family, FeatureFamily):
            raise TypeError(
                f"{module.__name__} defines no FAMILY: every module of "
                "churnlens/features/families/ declares its family as FAMILY = FeatureFamily(...)"
            )
        found.append(family)
    for attribute in ("name", "order"):
        values = [getattr(f, attribute) for f in found]
        twice = sorted({v for v in values if values.count(v) > 1})
        if twice:
            raise TypeError(f"two feature families share the {attribute} {twice}")
    return tuple(sorted(found, key=lambda f: f.order))


FAMILIES: tuple[FeatureFamily, ...] = discover(__path__, __name__)
