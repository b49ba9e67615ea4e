"""The feature-family seam: a family is one declaration, checked when it is imported."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from churnlens import Settings, feature_names
from churnlens.features.base import FeatureFamily
from churnlens.features.families import FAMILIES, discover
from churnlens.reasons import phrase

DOCS = Path(__file__).resolve().parents[1] / "docs" / "features.md"


def _family(**changes: object) -> FeatureFamily:
    fields = {
        "name": "demo",
        "order": 99,
        "doc": "demo_*: a demonstration",
        "names": lambda settings: ["demo_x"],
        "finish": lambda raw, ctx: raw,
        "aggregates": {"purchase_days": lambda settings, channels: ["count(*) AS demo_x"]},
    }
    return FeatureFamily(**{**fields, **changes})  # type: ignore[arg-type]


def test_a_hook_on_a_misnamed_relation_fails_when_declared() -> None:
    with pytest.raises(TypeError, match=r"unknown relation\(s\) \['purchase_day'\]"):
        _family(aggregates={"purchase_day": lambda settings, channels: []})
    assert _family().expressions("purchase_days", Settings(), ()) == ["count(*) AS demo_x"]


def test_a_family_module_without_a_declaration_fails_at_import(tmp_path: Path) -> None:
    package = tmp_path / "extra_families"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "good.py").write_text(
        "from churnlens.features.base import FeatureFamily\n"
        "FAMILY = FeatureFamily(name='good', order=1, doc='good_*: fine', "
        "names=lambda s: [], finish=lambda r, c: r, aggregates={})\n"
    )
    sys.path.insert(0, str(tmp_path))
    try:
        assert [f.name for f in discover([str(package)], "extra_families")] == ["good"]
        (package / "forgot.py").write_text("def finish(raw, ctx):\n    return raw\n")
        with pytest.raises(TypeError, match=r"extra_families\.forgot defines no FAMILY"):
            discover([str(package)], "extra_families")
    finally:
        sys.path.remove(str(tmp_path))
        for name in [m for m in sys.modules if m.startswith("extra_families")]:
            del sys.modules[name]


def test_the_families_give_the_feature_columns_in_their_order() -> None:
    assert [f.name for f in FAMILIES] == ["freq", "chan", "gap", "rfm", "cycle", "fatigue"]
    names = feature_names(Settings())
    assert names == [n for f in FAMILIES for n in f.names(Settings())]
    for family in FAMILIES:
        assert all(n.startswith(f"{family.name}_") for n in family.names(Settings()))


def _documented(text: str) -> list[re.Pattern[str]]:
    """Each documented column name (`freq_contacts_{w}d`) as a pattern of real names."""
    names = re.findall(r"^\| `([a-z_{}A-Z]+)`", text, flags=re.M)
    names += re.findall(r", `([a-z_]+)`", text)
    return [
        re.compile("^" + re.sub(r"\\\{\w+\\\}", r"[a-z0-9]+", re.escape(n)) + "$") for n in names
    ]


def test_every_family_has_its_docs_section_and_every_column_is_documented() -> None:
    text = DOCS.read_text(encoding="utf-8")
    patterns = _documented(text)
    for family in FAMILIES:
        assert re.search(rf"^## {re.escape(family.doc)}", text, flags=re.M), family.doc
        for name in family.names(Settings()):
            assert any(p.match(name) for p in patterns), f"{name} is not in docs/features.md"


def test_every_column_has_a_reason_phrase_of_its_own() -> None:
    for name in feature_names(Settings()):
        assert "=" not in phrase(name, 3.0), name  # the generic "name = value" fallback
        assert phrase(name, float("nan")), name
