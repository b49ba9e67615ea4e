"""Model files without pickle: every kind round-trips bit for bit, nothing in a bundle runs
code, old pickled bundles are refused (and convert only on request), signatures verify."""

from __future__ import annotations

import hashlib
import json
import shutil
from datetime import date
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest

from churnlens import build_features
from churnlens.bundle import (
    MANIFEST,
    SIGNATURE,
    check_files,
    convert_pickled,
    load_bundle,
    read_manifest,
    write_bundle,
)
from churnlens.errors import ModelError
from churnlens.events import load_events
from churnlens.models.churn import ChurnModel
from churnlens.models.segments import SegmentModel
from churnlens.models.state import load_state, save_state
from churnlens.valuing import fit_value
from tests.conftest import AS_OF, SETTINGS
from tests.test_uplift_model import _customers, _fit

KEY = "a-test-signing-key-0123456789"


def _snapshots(events: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
    from churnlens.training import make_snapshots

    snaps = make_snapshots(events, [date(2024, 7, 1), date(2024, 8, 30)], SETTINGS)
    return snaps.X, snaps.y


# one worker builds the module's fixture once (with --dist loadgroup)
pytestmark = pytest.mark.xdist_group("model-files")


@pytest.fixture(scope="module")
def fitted(sample_events: pd.DataFrame, sample_log_path: Path) -> dict[str, tuple]:
    """One fitted model of every kind (both calibrations of churn, both uplift learners,
    the value model's supervised blend), with a frame to predict on."""
    X, y = _snapshots(sample_events)
    churn = ChurnModel(n_estimators=40, calibration="sigmoid").fit(X, y)
    isotonic = ChurnModel(n_estimators=40, calibration="isotonic").fit(X, y)
    today = build_features(sample_events, AS_OF, SETTINGS)
    segments = SegmentModel(k=3).fit(today)
    settings = SETTINGS.with_overrides(value={"horizon_days": 60})
    value = fit_value(load_events(sample_log_path, settings), date(2025, 2, 3), settings).model
    assert value.method_ == "blend", value.reason_  # the learners are part of what is saved
    uplift_X = _customers(400, 11)[0]
    return {
        "churn": (churn, today),
        "churn-isotonic": (isotonic, today),
        "segments": (segments, today),
        "value": (value, today),
        "uplift-dr": (_fit("dr"), uplift_X),
        "uplift-t": (_fit("t"), uplift_X),
    }


KINDS = ["churn", "churn-isotonic", "segments", "value", "uplift-dr", "uplift-t"]


@pytest.mark.parametrize("name", KINDS)
def test_every_model_kind_round_trips_bit_for_bit(fitted, name: str, tmp_path: Path) -> None:
    model, X = fitted[name]
    bundle = write_bundle(tmp_path / "b", model, {"settings": SETTINGS.model_dump(mode="json")})
    assert not any(p.suffix in (".joblib", ".pkl", ".pickle") for p in bundle.iterdir())
    loaded, manifest = load_bundle(bundle, model.kind)
    assert type(loaded) is type(model) and manifest["format"] == "churnlens-state/1"
    before, after = model.predict_columns(X), loaded.predict_columns(X)
    pd.testing.assert_frame_equal(after, before, check_exact=False, rtol=0, atol=1e-12)
    numeric = before.select_dtypes("number")
    assert np.array_equal(after[numeric.columns].to_numpy(), numeric.to_numpy(), equal_nan=True)


def test_isotonic_calibration_is_rebuilt_from_its_thresholds(fitted, tmp_path: Path) -> None:
    model = fitted["churn-isotonic"][0]
    save_state(model, tmp_path)
    loaded = load_state({p.name: p.read_bytes() for p in tmp_path.iterdir()})
    assert type(loaded.calibrator_).__name__ == "IsotonicRegression"
    grid = np.linspace(-0.5, 1.5, 101)
    assert np.array_equal(loaded.calibrator_.predict(grid), model.calibrator_.predict(grid))


def _rewrite_hashes(bundle: Path, drop_format: bool = False) -> None:
    """What an attacker with write access does: make the manifest match the files."""
    manifest = json.loads((bundle / MANIFEST).read_text())
    manifest["files"] = {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in bundle.iterdir()
        if p.name not in (MANIFEST, SIGNATURE)
    }
    if drop_format:
        manifest.pop("format", None)
    (bundle / MANIFEST).write_text(json.dumps(manifest))


class Payload:
    """Unpickling this touches a marker file: the planted code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_planted_pickle_with_a_matching_manifest_is_refused_unrun(fitted, tmp_path: Path) -> None:
    bundle = write_bundle(tmp_path / "b", fitted["churn"][0], {"settings": {}})
    marker = tmp_path / "payload-ran"
    for p in list(bundle.iterdir()):
        if p.name != MANIFEST:
            p.unlink()
    joblib.dump(Payload(marker), bundle / "model.joblib")
    _rewrite_hashes(bundle, drop_format=True)
    with pytest.raises(ModelError, match=r"old pickle format.*models convert --trust-pickle"):
        load_bundle(bundle)
    assert not marker.exists()


@pytest.mark.parametrize(
    "node",
    [
        {"function": "os.system"},
        {"object": "subprocess.Popen", "state": {"items": []}},
        {"object": "builtins.eval", "state": {"items": []}},
        {"function": "builtins.exec"},
    ],
)
def test_a_model_file_naming_anything_outside_the_allow_list_is_refused(
    fitted, tmp_path: Path, node: dict
) -> None:
    bundle = write_bundle(tmp_path / "b", fitted["segments"][0], {"settings": {}})
    tree = json.loads((bundle / "model.json").read_text())
    tree["model"]["state"]["items"].append(["extra_", node])
    (bundle / "model.json").write_text(json.dumps(tree))
    _rewrite_hashes(bundle)
    with pytest.raises(ModelError, match="does not load"):
        load_bundle(bundle)


def test_a_pickled_bundle_converts_only_on_request_and_then_scores_the_same(
    fitted, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from churnlens.cli import app

    model, X = fitted["churn"]
    bundle = write_bundle(tmp_path / "b", model, {"settings": {}, "as_of": AS_OF})
    for p in list(bundle.iterdir()):
        if p.name != MANIFEST:
            p.unlink()
    joblib.dump(model, bundle / "model.joblib")
    _rewrite_hashes(bundle, drop_format=True)
    runner = CliRunner()
    refused = runner.invoke(app, ["models", "convert", str(bundle)])
    assert refused.exit_code != 0 and "--trust-pickle" in refused.output
    assert (bundle / "model.joblib").exists()
    done = runner.invoke(app, ["models", "convert", "--trust-pickle", str(bundle)])
    assert done.exit_code == 0, done.output
    loaded, manifest = load_bundle(bundle, "churn")
    assert manifest["converted_from"] == "pickle" and manifest["as_of"] == AS_OF
    assert not (bundle / "model.joblib").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no leftovers
    pd.testing.assert_frame_equal(loaded.predict_columns(X), model.predict_columns(X))
    with pytest.raises(ModelError, match="nothing to do"):
        convert_pickled(bundle)


def test_signed_bundles_load_and_tampered_or_unsigned_ones_are_refused(
    fitted, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = fitted["segments"][0]
    unsigned = write_bundle(tmp_path / "unsigned", model, {"settings": {}})
    assert read_manifest(unsigned)["signed"] is False and not (unsigned / SIGNATURE).exists()
    monkeypatch.setenv("CHURNLENS_SIGNING_KEY", KEY)
    signed = write_bundle(tmp_path / "signed", model, {"settings": {}})
    assert read_manifest(signed)["signed"] is True
    load_bundle(signed, "segments")
    with pytest.raises(ModelError, match="not signed"):
        load_bundle(unsigned)
    tampered = shutil.copytree(signed, tmp_path / "tampered")
    text = (tampered / "model.json").read_text()
    assert '["k_",3]' in text
    (tampered / "model.json").write_text(text.replace('["k_",3]', '["k_",4]'))
    _rewrite_hashes(tampered)
    with pytest.raises(ModelError, match="signature does not verify"):
        load_bundle(tampered)
    monkeypatch.setenv("CHURNLENS_SIGNING_KEY", KEY[::-1])
    with pytest.raises(ModelError, match="signature does not verify"):
        load_bundle(signed)
    monkeypatch.setenv("CHURNLENS_SIGNING_KEY", "short")
    with pytest.raises(ModelError, match="at least 16"):
        load_bundle(signed)
    monkeypatch.delenv("CHURNLENS_SIGNING_KEY")
    load_bundle(signed)  # no key: read unsigned (the scoring run says so)


def test_a_changed_file_is_still_refused_by_its_hash(fitted, tmp_path: Path) -> None:
    bundle = write_bundle(tmp_path / "b", fitted["churn"][0], {"settings": {}})
    with (bundle / "booster-0.txt").open("a") as fh:
        fh.write("\n")
    with pytest.raises(ModelError, match="does not match the SHA-256"):
        load_bundle(bundle)


@pytest.mark.parametrize(
    "change",
    [
        lambda text: text.replace('"format":"churnlens-state/1"', '"format":"other"'),
        lambda text: "[" * 100_000 + "]" * 100_000,  # nesting deeper than any parser stack
        lambda text: text.replace('{"lightgbm_booster":"booster-0.txt"}', '{"array":"zz"}'),
    ],
)
def test_a_broken_model_file_gives_one_clear_error(fitted, tmp_path: Path, change) -> None:
    bundle = write_bundle(tmp_path / "b", fitted["churn"][0], {"settings": {}})
    text = (bundle / "model.json").read_text()
    (bundle / "model.json").write_text(change(text))
    _rewrite_hashes(bundle)
    with pytest.raises(ModelError, match="model file"):
        load_bundle(bundle)
    (bundle / "model.json").write_text(text)
    (bundle / "booster-0.txt").write_text("tree\nnot a model\n")
    _rewrite_hashes(bundle)
    with pytest.raises(ModelError, match="unreadable model file"):
        load_bundle(bundle)


def test_the_model_is_parsed_from_the_bytes_that_were_hashed(fitted, tmp_path: Path) -> None:
    """A file swapped after its hash was checked changes nothing (no check-then-read race)."""
    model, X = fitted["churn"]
    bundle = write_bundle(tmp_path / "b", model, {"settings": {}})
    manifest = read_manifest(bundle)
    contents = check_files(bundle, manifest)
    (bundle / "booster-0.txt").write_text("swapped after the check")
    loaded = ChurnModel.load(contents, manifest["model"])
    pd.testing.assert_frame_equal(loaded.predict_columns(X), model.predict_columns(X))


def _tree_line(text: str, tree: int, key: str, value: str) -> str:
    start = text.index(f"Tree={tree}\n")
    line_start = text.index(f"\n{key}=", start) + 1
    line_end = text.index("\n", line_start)
    return text[:line_start] + f"{key}={value}" + text[line_end:]


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("split_feature", "100000000", "a split on feature"),
        ("left_child", "1000000", "not a later internal node"),
        ("left_child", "0", "not a later internal node"),
        ("right_child", "-100", "beyond num_leaves"),
        ("num_leaves", "99999999", "leaves"),
        ("num_cat", "1", "categorical"),
    ],
)
def test_a_crafted_booster_is_refused_before_lightgbm_reads_it(
    fitted, tmp_path: Path, key: str, value: str, message: str
) -> None:
    """LightGBM trusts its trees' indices (a crafted one made prediction segfault)."""
    bundle = write_bundle(tmp_path / "b", fitted["churn"][0], {"settings": {}})
    text = (bundle / "booster-0.txt").read_text()
    if key in ("split_feature", "left_child", "right_child"):  # the first of several values
        start = text.index(f"\n{key}=", text.index("Tree=1\n")) + len(key) + 2
        rest = text[start : text.index("\n", start)].split()
        changed = _tree_line(text, 1, key, " ".join([value, *rest[1:]]))
    else:
        changed = _tree_line(text, 1, key, value)
    (bundle / "booster-0.txt").write_text(changed)
    _rewrite_hashes(bundle)
    with pytest.raises(ModelError, match=message):
        load_bundle(bundle)


@pytest.mark.parametrize(
    "change",
    [
        ("model.json", lambda t: t.replace('{"range":[', '{"range":[1' + "0" * 30 + ",", 1)),
        ("arrays.npz", lambda t: "PK\x03\x04 not a zip"),
        ("manifest.json", lambda t: "[" * 100_000 + "]" * 100_000),
        ("manifest.json", lambda t: t.replace('"files": {', '"files": [{', 1)),
    ],
)
def test_hostile_files_give_a_model_error_never_a_traceback(fitted, tmp_path: Path, change) -> None:
    bundle = write_bundle(tmp_path / "b", fitted["value"][0], {"settings": {}})
    name, edit = change
    target = bundle / name
    target.write_bytes(edit(target.read_bytes().decode("latin-1")).encode("latin-1"))
    if name != "manifest.json":
        _rewrite_hashes(bundle)
    with pytest.raises(ModelError):
        load_bundle(bundle)


def _rewrite_arrays(bundle: Path, members: dict[str, bytes], compression: int) -> None:
    import zipfile

    with zipfile.ZipFile(bundle / "arrays.npz", "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    _rewrite_hashes(bundle)


def test_compressed_or_oversized_arrays_are_refused(fitted, tmp_path: Path) -> None:
    """A zip bomb, or a .npy header claiming more than it holds, is never inflated."""
    import zipfile

    bundle = write_bundle(tmp_path / "b", fitted["segments"][0], {"settings": {}})
    with zipfile.ZipFile(bundle / "arrays.npz") as archive:
        members = {i.filename: archive.read(i) for i in archive.infolist()}
    _rewrite_arrays(bundle, members, zipfile.ZIP_DEFLATED)
    with pytest.raises(ModelError, match="compressed"):
        load_bundle(bundle)
    first = sorted(members)[0]
    header_end = members[first].index(b"\n") + 1
    header = members[first][:header_end].decode("latin-1")
    shape = header[header.index("'shape': (") : header.index(")", header.index("'shape'")) + 1]
    big = header.replace(shape, "'shape': (1000000000000,)".ljust(len(shape)))
    members[first] = big.encode("latin-1") + members[first][header_end:]
    _rewrite_arrays(bundle, members, zipfile.ZIP_STORED)
    with pytest.raises(ModelError, match="not the size it says"):
        load_bundle(bundle)


def test_with_a_key_an_unsigned_bundle_planted_beside_is_passed_over_and_never_signed(
    fitted, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from churnlens.model_source import load_models

    monkeypatch.setenv("CHURNLENS_SIGNING_KEY", KEY)
    churn, _ = fitted["churn"]
    settings = SETTINGS.model_dump(mode="json")
    versions = {"churnlens": __import__("churnlens").__version__}
    folder = tmp_path / "models"
    bundle = write_bundle(folder / "churn-1", churn, {"settings": settings, "versions": versions})
    write_bundle(folder / "segments-1", fitted["segments"][0],
                 {"settings": settings, "versions": versions, "created": "2000"})  # fmt: skip
    planted = folder / "segments-zzz"
    planted.mkdir()
    (planted / MANIFEST).write_text('{"kind": "segments", "created": "9999"}')
    loaded = load_models(bundle, value=None, uplift=None)
    assert loaded.segments_version == "bundle:segments-1" and loaded.signed
    # an old pickled bundle converts under a key only when the operator vouches for it
    old = write_bundle(tmp_path / "old", churn, {"settings": {}})
    for p in list(old.iterdir()):
        if p.name != MANIFEST:
            p.unlink()
    joblib.dump(churn, old / "model.joblib")
    _rewrite_hashes(old, drop_format=True)
    with pytest.raises(ModelError, match="not signed"):
        convert_pickled(old)
    convert_pickled(old, sign=True)
    assert read_manifest(old)["signed"] is True


def test_a_one_leaf_booster_passes_the_checks() -> None:
    """LightGBM writes empty leaf weights and counts for a tree that never split."""
    import lightgbm as lgb

    from churnlens.models.booster_text import checked_booster

    rng = np.random.default_rng(0)
    X, y = rng.random((50, 3)), (np.arange(50) < 2).astype(float)
    params = {"objective": "binary", "verbose": -1, "min_data_in_leaf": 40}
    booster = lgb.train(params, lgb.Dataset(X, y), 3)
    text = booster.model_to_string()
    assert "num_leaves=1" in text
    np.testing.assert_array_equal(checked_booster(text).predict(X), booster.predict(X))
