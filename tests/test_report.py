"""The analysts' HTML report: self-contained, escaped, complete, written atomically."""

from __future__ import annotations

import base64
import io
import re
from datetime import date
from html import escape
from pathlib import Path

import pandas as pd
import pytest

from churnlens import InputError, load_events
from churnlens.report import build_report, reasons_list, write_report
from churnlens.retention import cohort_matrix, monthly_kpis

AS_OF = date(2024, 11, 15)
EVIL = "<script>alert('x')</script>"

# stage counts: new 1, active 2, silent 3, sleeping 0, lost 2
# value at risk = p x value if retained, 0 for lost customers (their win-back value: WINBACK)
ROWS = [
    # id, p, band, stage, segment, value at risk, action, channel, priority
    ("c1", 0.10, "low", "new", 0, 5.0, "onboarding_guide", "email", 1),
    ("c2", 0.20, "low", "active", 1, 8.0, "vip_care", "app", 1),
    ("c3", 0.40, "medium", "active", 1, 40.0, "nurture", "web", 1),
    ("c4", 0.50, "medium", "silent", 0, 25.0, "nurture", "web", 2),
    ("c5", 0.70, "high", "silent", 2, 70.0, "vip_winback_offer", "phone", 1),
    (EVIL, 0.90, "high", "silent", 2, 900.0, "vip_winback_offer", "email", 2),
    ("c7", 0.95, "high", "lost", 2, 0.0, "let_go", None, 1),
    ("c8", 0.80, "high", "lost", 0, 0.0, "seasonal_winback", None, 1),
]
WINBACK = {"c7": 30.0, "c8": 400.0}
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
    lost = frame["lifecycle_stage"] == "lost"
    retained = frame["value_at_risk"] / frame["churn_probability"]
    frame["value_if_retained"] = retained.where(~lost, frame["customer_id"].map(WINBACK))
    frame["winback_value"] = frame["value_if_retained"].where(lost)
    frame["expected_value"] = frame["value_if_retained"] * (1 - frame["churn_probability"])
    frame["clv"] = frame["value_if_retained"] * 2.5
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
    # 1,048: the lost customers' value at risk is now 0 (it was 1,050 with 1.5 + 0.5)
    assert '<div class="v">1,048</div><div class="k">total value at risk' in header
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


# ------------------------------------------------------------------ what to spend on first

LOST = {"c7", "c8"}
MONEY = {"value at risk", "winback value", "expected value", "value if retained", "clv", "revenue"}


def tables(html: str) -> list[tuple[list[str], list[list[str]]]]:
    """Every table of ``html``: its column titles and its rows of cell texts."""
    out = []
    for body in re.findall(r"<table>(.*?)</table>", html, re.DOTALL):
        head = re.findall(r"<th>(.*?)</th>", body)
        rows = [
            re.findall(r"<td[^>]*>(.*?)</td>", row)
            for row in re.findall(r"<tr>(.*?)</tr>", body.split("</thead>", 1)[1])
        ]
        out.append((head, rows))
    return out


def ids_under(html: str, title: str) -> list[str]:
    """The customer ids of the table after the heading that starts with ``title``."""
    start = html.index(title)
    head, rows = tables(html[start:])[0]
    return [row[head.index("customer id")] for row in rows]


def cards_of(html: str) -> list[tuple[str, str]]:
    header = html[: html.index("<h2>")]
    return re.findall(r'<div class="v">([^<]*)</div><div class="k">([^<]*)</div>', header)


def test_header_leads_with_customers_to_contact(scores) -> None:
    scores.loc[scores["customer_id"] == "c3", "action_channel"] = None  # c3: not contacted
    found = cards_of(build_report(scores))
    assert found[0] == ("5", "customers to contact (control group kept apart)")
    assert found[1] == ("1,008", "value at risk among them")  # 1,048 - c3's 40
    assert found[2] == ("1,048", "total value at risk")
    assert found[3] == ("1", "win-back pool (lost customers, seasonal_winback)")
    assert found[4] == ("400", "win-back value of the pool")
    assert [k for _, k in found[5:]] == [
        "mean churn prob.",
        "high-risk customers",
        "customers scored",
    ]


def test_customers_to_contact_section(page: str) -> None:
    titles = re.findall(r"<h2>([^<]+)</h2>", page)
    assert titles[:3] == ["Customers to contact", "Win-back pool", "Churn probability"]
    contact = section(page, "Customers to contact")
    head, rows = tables(contact)[0]
    assert head == ["action", "customers", "value at risk", "mean churn probability", "channels"]
    assert [r[0] for r in rows] == ["vip_winback_offer", "nurture", "vip_care", "onboarding_guide"]
    assert rows[0] == ["vip_winback_offer", "2", "970.00", "80.0%", "email (1), phone (1)"]
    # per action, by priority (then value at risk): c5 (priority 1) before the 900 one
    assert ids_under(contact, "<h3>vip_winback_offer") == ["c5", escape(EVIL, quote=True)]
    assert ids_under(contact, "<h3>nurture") == ["c3", "c4"]
    assert "long silence; reason 4" in contact


def test_top_lists_hold_no_lost_customer(scores) -> None:
    # a lost customer given a contact action (an older policy): still never in a top list
    lost_contact = scores["customer_id"] == "c7"
    scores.loc[lost_contact, ["action", "action_channel", "priority"]] = ["nurture", "email", 0]
    page = build_report(scores)
    contact = section(page, "Customers to contact")
    assert "<h3>nurture: top 2 of 2, by priority (1 lost: in the win-back pool)" in contact
    for title in re.findall(r"<h3>([^<]+)</h3>", contact):
        assert not LOST & set(ids_under(contact, f"<h3>{title}"))
    top = ids_under(section(page, "Top 20"), "<h2>Top 20")
    assert len(top) == len(scores) - len(LOST) and not LOST & set(top)


def test_top_per_action_is_capped_at_ten(scores) -> None:
    many = pd.concat(
        [scores.iloc[[2]].assign(customer_id=f"n{i:02d}", priority=i) for i in range(1, 16)]
    )
    contact = section(build_report(pd.concat([scores, many])), "Customers to contact")
    assert ids_under(contact, "<h3>nurture: top 10 of 17") == [
        *("c3", "n01", "n02", "c4"),
        *(f"n{i:02d}" for i in range(3, 9)),
    ]


def test_winback_pool_lists_exactly_the_lost_customers(page: str, scores) -> None:
    pool = section(page, "Win-back pool")
    lost = scores[scores["lifecycle_stage"] == "lost"].sort_values("winback_value", ascending=False)
    assert ids_under(pool, "<h3>Top") == list(lost["customer_id"]) == ["c8", "c7"]
    assert "2 lost customers, win-back value <b>430</b>" in pool
    head, rows = tables(pool)[1]
    assert [r[head.index("action")] for r in rows] == ["seasonal_winback", "let_go"]
    assert [r[head.index("winback value")] for r in rows] == ["400.00", "30.00"]
    assert "long silence; reason 7" in pool


def test_risk_colours(page: str) -> None:
    assert '<td class="risk-high">high</td>' in page
    assert '<td class="risk-medium">medium</td>' in page and '<td class="risk-low">low</td>' in page
    assert "<td>high</td>" not in page
    css = page[page.index("<style>") : page.index("</style>")]

    def colours(rule: str) -> list[tuple[int, ...]]:
        body = re.search(rf"td\.{rule}\{{([^}}]*)\}}", css).group(1)
        found = [
            tuple(int(h[i : i + 2], 16) for i in (0, 2, 4)) for h in re.findall(r"#(\w{6})", body)
        ]
        assert found, rule
        return found

    assert all(r > max(g, b) + 20 for r, g, b in colours("risk-high"))  # red, never green
    assert all(r >= g > b for r, g, b in colours("risk-medium"))  # amber
    assert all(max(c) - min(c) < 8 for c in colours("risk-low"))  # grey


def test_histogram_paints_high_risk_red_never_green(scores) -> None:
    from matplotlib.image import imread

    page = build_report(scores)
    src = re.findall(
        r'<img src="data:image/png;base64,([^"]+)"', section(page, "Churn probability")
    )
    pixels = (imread(io.BytesIO(base64.b64decode(src[0])))[..., :3] * 255).round()
    r, g, b = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    assert ((r > 150) & (g < 80) & (b < 80)).sum() > 100  # high risk: red bars
    assert ((r > 200) & (g > 120) & (g < 200) & (b < 60)).sum() > 100  # medium: amber
    assert not ((g > r + 40) & (g > b + 40)).any()  # no green anywhere


def test_money_carries_the_currency_and_counts_do_not(scores, retention) -> None:
    kpis, cohorts = retention
    page = build_report(scores, kpis, cohorts, manifest=MANIFEST, currency="$")
    found = dict((k, v) for v, k in cards_of(page))
    assert found["value at risk among them"] == "$1,048"
    assert (
        found["total value at risk"] == "$1,048" and found["win-back value of the pool"] == "$400"
    )
    assert found["customers to contact (control group kept apart)"] == "6"
    assert found["customers scored"] == "8" and found["high-risk customers"] == "4"
    seen = set()
    for head, rows in tables(page):
        for row in rows:
            for column, text in zip(head, row, strict=True):
                if column in MONEY and text != "–":
                    assert text.startswith(("$", "-$")), (column, text)
                    seen.add(column)
                elif column != "customer id":
                    assert "$" not in text, (column, text)
    assert seen == MONEY - {"expected value"}  # expected value is not in a table
    assert "$995.00" in section(page, "Lifecycle stages")
    escaped = build_report(scores, currency="<b>€</b>")
    assert "<b>€" not in escaped and "&lt;b&gt;€&lt;/b&gt;1,048" in escaped


def test_scores_without_winback_value_still_render(scores) -> None:
    page = build_report(scores.drop(columns=["winback_value"]))
    assert dict((k, v) for v, k in cards_of(page))["win-back value of the pool"] == "400"
    pool = section(page, "Win-back pool")
    assert ids_under(pool, "<h3>Top") == ["c8", "c7"] and "value if retained" in pool
    bare = build_report(scores.drop(columns=["winback_value", "value_if_retained", "clv"]))
    assert dict((k, v) for v, k in cards_of(bare))["win-back value of the pool"] == "–"
    pool = section(bare, "Win-back pool")
    assert "no win-back value" in pool and set(ids_under(pool, "<h3>Top")) == LOST
