"""The analysts' HTML report: self-contained, escaped, complete, written atomically."""

from __future__ import annotations

import base64
import re
from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from churnlens import InputError, load_events
from churnlens.report import build_report, reasons_list, write_report
from churnlens.retention import cohort_matrix, monthly_kpis

AS_OF = date(2024, 11, 15)
EVIL = "<script>alert('x')</script>"

# stage counts: new 1, active 2, silent 3, sleeping 0, lost 2
ROWS = [
    # id, p, band, stage, segment, value at risk, action, channel, priority
    ("c1", 0.10, "low", "new", 0, 5.0, "onboarding_guide", "email", 1),
    ("c2", 0.20, "low", "active", 1, 8.0, "vip_care", "app", 1),
    ("c3", 0.40, "medium", "active", 1, 40.0, "nurture", "web", 1),
    ("c4", 0.50, "medium", "silent", 0, 25.0, "nurture", "web", 2),
    ("c5", 0.70, "high", "silent", 2, 70.0, "vip_winback_offer", "phone", 1),
    (EVIL, 0.90, "high", "silent", 2, 900.0, "vip_winback_offer", "email", 2),
    ("c7", 0.95, "high", "lost", 2, 1.5, "let_go", None, 1),
    ("c8", 0.80, "high", "lost", 0, 0.5, "do_not_disturb", None, 1),
]
NAMES = {0: "steady buyers", 1: "big spenders", 2: "drifting"}


def make_scores() -> pd.DataFrame:
    frame = pd.DataFrame(
        ROWS,
        columns=[
            "customer_id",
            "churn_probability",
            "risk_band",
            "lifecycle_stage",
            "segment_id",
            "value_at_risk",
            "action",
            "action_channel",
            "priority",
        ],
    )
    frame["as_of"] = AS_OF
    frame["segment_name"] = frame["segment_id"].map(NAMES)
    frame["reasons"] = [["long silence", f"reason {i}"] for i in range(len(frame))]
    frame["model_version"] = "churnlens-churn/7"
    frame["expected_value"] = frame["value_at_risk"] / frame["churn_probability"]
    return frame


MANIFEST = {"as_of": "2024-11-15", "model_version": "v9", "data_fingerprint": "f00dfeed"}


@pytest.fixture
def scores() -> pd.DataFrame:
    return make_scores()


@pytest.fixture(scope="module")
def retention(sample_events: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    table = load_events(sample_events)
    return monthly_kpis(table, AS_OF), cohort_matrix(table, AS_OF)


@pytest.fixture(scope="module")
def page(retention: tuple[pd.DataFrame, pd.DataFrame]) -> str:
    """The full report, built once: every section, with a manifest."""
    kpis, cohorts = retention
    return build_report(make_scores(), kpis, cohorts, manifest=MANIFEST)


def section(page: str, title: str) -> str:
    """The HTML from the <h2> titled ``title`` up to the next <h2>."""
    start = page.index(f"<h2>{title}")
    end = page.find("<h2>", start + 1)
    return page[start : end if end > 0 else len(page)]


def test_page_is_self_contained(page: str) -> None:
    assert page.startswith("<!DOCTYPE html>")
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.IGNORECASE)
    assert "<script" not in page.lower() and "<link" not in page.lower()
    sources = re.findall(r'<img src="([^"]+)"', page)
    # histogram, stages, actions, retention, cohorts
    assert len(sources) == 5
    for src in sources:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"


def test_header_shows_manifest_and_headline_numbers(page: str) -> None:
    header = page[: page.index("<h2>")]
    assert "2024-11-15" in header and "v9" in header and "f00dfeed" in header
    assert '<div class="v">8</div><div class="k">customers scored' in header
    assert '<div class="v">1,050</div><div class="k">total value at risk' in header
    assert '<div class="v">6</div><div class="k">customers to contact' in header


def test_per_stage_counts_in_stage_order(page: str) -> None:
    stages = section(page, "Lifecycle stages")
    counts = dict(re.findall(r'<tr><td>(\w+)</td><td class="n">([\d,]+)</td>', stages))
    assert counts == {"new": "1", "active": "2", "silent": "3", "sleeping": "0", "lost": "2"}
    assert list(counts) == ["new", "active", "silent", "sleeping", "lost"]
    assert "995.00" in stages  # silent: 25 + 70 + 900


def test_actions_table(page: str) -> None:
    actions = section(page, "Actions")
    found = re.findall(r'<tr><td>(\w+)</td><td class="n">([\d,]+)</td>', actions)
    assert found[0] == ("vip_winback_offer", "2")  # largest value at risk first
    assert dict(found)["nurture"] == "2"
    assert len(found) == 6


def test_segment_profiles(scores) -> None:
    profile = pd.DataFrame(
        {"name": ["steady buyers", "big spenders", "drifting"], "share": [0.4, 0.2, 0.4]},
        index=pd.Index([0, 1, 2], name="segment_id"),
    )
    segments = section(build_report(scores, segments=profile), "Segments")
    assert '<td class="n">2</td><td>drifting</td><td class="n">3</td>' in segments
    assert "Segment profiles" in segments and "40.0%" in segments


def test_customer_text_is_escaped(scores) -> None:
    scores.loc[0, "reasons"] = ["<b>bold</b> & co"]
    page = build_report(scores)
    assert EVIL not in page and "<b>bold" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "&lt;b&gt;bold&lt;/b&gt; &amp; co" in page


def test_top_customers_by_value_at_risk(page: str) -> None:
    top = section(page, "Top 20")
    ids = re.findall(r"<tr><td>([^<]+)</td>", top)
    assert ids[:3] == ["&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;", "c5", "c3"]
    assert "long silence; reason 5" in top


def test_null_segments_still_render(scores) -> None:
    scores["segment_id"] = pd.Series([None] * len(scores), dtype="Int64")
    scores["segment_name"] = None
    page = build_report(scores)
    assert "no segment assignments" in section(page, "Segments")
    header = page.split("<h2>")[0]  # no manifest: as-of date and version from the scores
    assert "2024-11-15" in header and "churnlens-churn/7" in header
    without = build_report(scores.drop(columns=["segment_id", "segment_name"]))
    assert "no segment assignments" in without


def test_reasons_from_a_csv_render_the_same(scores, tmp_path: Path) -> None:
    csv = scores.assign(reasons=scores["reasons"].map("; ".join))
    csv.to_csv(tmp_path / "scores.csv", index=False)
    read = pd.read_csv(tmp_path / "scores.csv")
    a, b = build_report(scores), build_report(read)
    assert section(a, "Top 20") == section(b, "Top 20")
    assert reasons_list("a; b;") == ["a", "b"]
    assert reasons_list(float("nan")) == [] and reasons_list(None) == []


def test_retention_sections(page: str, retention) -> None:
    kpis, _ = retention
    kpi = section(page, "Retention")
    assert "2024-11 (partial)" in kpi and "2024-01" in kpi
    assert kpi.count("<tr>") == len(kpis) + 1
    assert "<h2>Cohorts</h2>" in page
    assert "<h2>Retention" not in build_report(make_scores().head(2))


def test_missing_columns_are_reported(scores) -> None:
    with pytest.raises(InputError, match="value_at_risk"):
        build_report(scores.drop(columns=["value_at_risk", "action"]))


def test_write_report(page: str, tmp_path: Path) -> None:
    path = write_report(page, tmp_path / "out" / "report.html")
    assert path == tmp_path / "out" / "report.html"
    assert path.read_text(encoding="utf-8") == page


def test_failing_writes_keep_the_old_report(tmp_path: Path) -> None:
    path = tmp_path / "report.html"
    path.write_text("old", encoding="utf-8")
    with pytest.raises(InputError, match=r"\.html"):
        write_report("<html></html>", tmp_path / "report.txt")
    with pytest.raises(UnicodeEncodeError):
        write_report("<html>\ud800</html>", path)  # a lone surrogate fails mid-write
    assert path.read_text(encoding="utf-8") == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]


def test_no_scores_still_render() -> None:
    page = build_report(make_scores().iloc[:0])
    assert '<div class="v">0</div><div class="k">customers scored' in page
