"""Logs larger than memory: partitioned features, memory caps, customer samples."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from churnlens import ConfigError, InputError, Settings
from churnlens.cli import app
from churnlens.config import settings_from_dict
from churnlens.events import load_events, staged
from churnlens.features import build_features
from churnlens.features.batched import write_features
from churnlens.sampling import sample_customers

runner = CliRunner()
AS_OF = "2025-01-31"


@pytest.fixture(scope="module")
def dataset(sample_events: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample log as a partitioned Parquet dataset (a folder of files)."""
    folder = tmp_path_factory.mktemp("dataset") / "events"
    folder.mkdir()
    for i, chunk in enumerate(
        sample_events.groupby(sample_events["timestamp"].dt.month, sort=True)
    ):
        chunk[1].to_parquet(folder / f"part-{i:02d}.parquet")
    return folder


@pytest.mark.parametrize("partitions", [1, 3, 7])
def test_partitioned_features_equal_the_whole_log(
    dataset: Path, sample_events: pd.DataFrame, tmp_path: Path, partitions: int
) -> None:
    out = tmp_path / "features.parquet"
    result = write_features(dataset, AS_OF, out, partitions=partitions)
    got = pd.read_parquet(out).sort_index()  # customer_id is the index
    expected = build_features(sample_events, AS_OF)
    assert result.customers == len(expected) and result.partitions == partitions
    pd.testing.assert_frame_equal(got, expected, check_exact=False, rtol=1e-12, atol=1e-12)
    assert result.summary.loc["rfm_frequency", "max"] == expected["rfm_frequency"].max()


def test_duplicates_are_dropped_in_the_partition_that_holds_them(
    sample_events: pd.DataFrame, tmp_path: Path
) -> None:
    repeated = sample_events.iloc[[3, 50, 51, 900]]  # whole rows, several customers
    noisy = pd.concat([sample_events, repeated, repeated.iloc[:1]], ignore_index=True)
    out = tmp_path / "features.parquet"
    result = write_features(noisy, AS_OF, out, partitions=3)
    assert result.duplicates_dropped == 5
    pd.testing.assert_frame_equal(
        pd.read_parquet(out).sort_index(),
        build_features(sample_events, AS_OF),
        check_exact=False, rtol=1e-12, atol=1e-12,
    )  # fmt: skip


def test_a_bad_row_in_a_late_partition_fails_the_whole_run(
    sample_events: pd.DataFrame, tmp_path: Path
) -> None:
    broken = sample_events.copy()
    broken["amount"] = broken["amount"].astype(object)
    late = broken.index[broken["timestamp"] > pd.Timestamp(AS_OF)][:2]  # after the as-of day
    broken.loc[late, "amount"] = "12$"
    broken.loc[broken.index[7], "channel"] = None
    out = tmp_path / "features.parquet"
    out.write_bytes(b"earlier output")
    with pytest.raises(InputError) as caught:
        write_features(broken, AS_OF, out, partitions=4)
    problems = {(p.column, p.rows) for p in caught.value.problems}
    assert problems == {("amount", 2), ("channel", 1)}  # counted over the whole log
    assert out.read_bytes() == b"earlier output"
    assert not list(tmp_path.glob(".*"))  # no temporary file left


@pytest.mark.parametrize("missing", [None, ""])
def test_missing_ids_in_a_parquet_dataset_fail_the_whole_run(
    sample_events: pd.DataFrame, tmp_path: Path, missing: str | None
) -> None:
    # the id map of a Parquet source is read from the files' dictionaries, which never
    # hold a null: a missing id must still be found, and an empty one, even after the
    # as-of day
    folder = tmp_path / "events"
    folder.mkdir()
    broken = sample_events.copy()
    late = broken.index[broken["timestamp"] > pd.Timestamp(AS_OF)][:3]
    broken.loc[late, "customer_id"] = missing
    for i, rows in enumerate(np.array_split(np.arange(len(broken)), 3)):
        broken.iloc[rows].to_parquet(folder / f"part-{i}.parquet")
    with pytest.raises(InputError) as caught:
        write_features(folder, AS_OF, tmp_path / "features.parquet", partitions=2)
    assert {(p.column, p.rows) for p in caught.value.problems} == {("customer_id", 3)}
    assert not (tmp_path / "features.parquet").exists()


def test_colliding_id_hashes_fall_back_to_the_ids(
    dataset: Path, sample_events: pd.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a 64-bit hash collision is too rare to meet in a test: make the key collide on purpose
    monkeypatch.setattr(staged, "ID_KEY", "hash(customer_id) % 5")
    out = tmp_path / "features.parquet"
    write_features(dataset, AS_OF, out, partitions=2)
    pd.testing.assert_frame_equal(
        pd.read_parquet(out).sort_index(),
        build_features(sample_events, AS_OF),
        check_exact=False, rtol=1e-12, atol=1e-12,
    )  # fmt: skip


def test_cli_features_under_a_memory_cap_with_a_spill_folder(dataset: Path, tmp_path) -> None:
    out, spill = tmp_path / "f.csv", tmp_path / "spill"
    result = runner.invoke(
        app,
        ["features", str(dataset), "--as-of", AS_OF, "--out", str(out),
         "--memory-limit", "200MB", "--temp-dir", str(spill), "--partitions", "2"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "2 partition(s)" in " ".join(result.output.split())
    assert len(pd.read_csv(out)) == len(build_features(dataset, AS_OF))
    # a mistyped spill folder does not build a tree of folders: its parent must exist
    typo = tmp_path / "scrach" / "spill"
    result = runner.invoke(
        app,
        ["features", str(dataset), "--as-of", AS_OF, "--out", str(out), "--temp-dir", str(typo)],
    )
    flat = " ".join(result.output.split())
    assert result.exit_code == 1 and f"parent folder {typo.parent} does not exist" in flat, flat
    assert not typo.parent.exists()


def test_a_memory_cap_too_small_says_to_raise_it(dataset: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["features", str(dataset), "--as-of", AS_OF, "--out",
                                 str(tmp_path / "f.csv"), "--memory-limit", "1KB"])  # fmt: skip
    text = " ".join(result.output.split())
    assert result.exit_code == 1 and "Out of Memory" in text, text
    assert "Fix: raise --memory-limit" in text and "Traceback" not in text


def test_memory_limit_must_be_a_size() -> None:
    with pytest.raises(ConfigError, match=r"engine\.memory_limit"):
        settings_from_dict({"engine": {"memory_limit": "lots"}})
    result = runner.invoke(app, ["features", "x.parquet", "--as-of", AS_OF, "--out", "f.csv",
                                 "--memory-limit", "4 parsecs"])  # fmt: skip
    assert result.exit_code == 1 and "4GB" in result.output


def test_customer_sample_is_stratified_seeded_and_keeps_whole_histories(
    sample_events: pd.DataFrame,
) -> None:
    table = load_events(sample_events)
    sampled, info = sample_customers(table, 100, seed=7)
    assert info is not None and info.of == sample_events["customer_id"].nunique()
    assert 100 <= info.customers <= 100 + len(info.strata)
    ids = sampled.to_pandas()["customer_id"].unique()
    assert len(ids) == info.customers
    whole = sample_events[sample_events["customer_id"].isin(ids)]
    assert len(sampled.to_pandas()) == len(whole)  # every event of a sampled customer
    for stratum, (n, k) in info.strata.items():  # each stratum at the same rate
        assert abs(k - n * info.rate) <= 1, stratum
    again = sample_customers(load_events(sample_events.sample(frac=1, random_state=1)), 100, 7)
    assert set(again[0].to_pandas()["customer_id"]) == set(ids)
    other = sample_customers(table, 100, seed=8)[0]
    assert set(other.to_pandas()["customer_id"]) != set(ids)
    assert sample_customers(table, 10_000, seed=7) == (table, None)
    left = table.con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE table_name LIKE '%purchase_counts%'"
    ).fetchone()
    assert left == (0,)  # the per-customer counts are dropped, sampled or not


def test_training_on_a_sample_is_recorded(sample_events: pd.DataFrame, tmp_path: Path) -> None:
    from churnlens.config import ModelSettings, TrainingSettings
    from churnlens.training import train

    settings = Settings(
        training=TrainingSettings(
            horizon_days=60, snapshot_step_days=60, min_history_days=60, max_customers=150
        ),
        model=ModelSettings(n_estimators=40, min_child_samples=20),
    )
    result = train(sample_events, "2024-11-30", settings, tmp_path, track=True)
    assert result.sample is not None and result.sample.customers <= 155
    assert result.manifest["sample"]["of"] == sample_events["customer_id"].nunique()
    import mlflow

    run = mlflow.get_run(result.run_id)
    assert int(run.data.params["sample_customers"]) == result.sample.customers
    assert run.data.params["sample_seed"] == "7"
