"""Darwin Core terms: rank roll-up, deterministic IDs, identification columns, per-occurrence aggregation."""

from __future__ import annotations

import uuid

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from plantray.darwincore.occurrences import aggregate_occurrences
from plantray.darwincore.terms import dwc_columns, identification_id, identification_remarks
from plantray.inference.ranking import rollup

SPECIES = ["Quercus robur", "Quercus petraea", "Acer campestre", "Acer platanoides", "Rosa canina",
           "Fagus sylvatica"]
GENUS = ["Quercus", "Quercus", "Acer", "Acer", None, "Fagus"]  # Rosa's genus deliberately missing
FAMILY = ["Fagaceae", "Fagaceae", "Sapindaceae", "Sapindaceae", "Rosaceae", "Fagaceae"]
# identificationID: a UUIDv5 of "<weights sha256>\n<image_uri>" in plantray's fixed namespace (as test_export.py).
NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/plantray/plantray/identification")


def _uuid5(sha256: str, image_uri: str) -> str:
    return str(uuid.uuid5(NAMESPACE, f"{sha256}\n{image_uri}"))


def test_rollup_worked_by_hand():
    probs = np.array([
        [0.70, 0.10, 0.10, 0.05, 0.05, 0.00],  # species clears: Quercus robur 0.70
        [0.35, 0.35, 0.10, 0.10, 0.10, 0.00],  # genus clears: Quercus 0.35 + 0.35 = 0.70
        [0.25, 0.10, 0.10, 0.00, 0.15, 0.40],  # genera 0.35/0.40/0.10; family Fagaceae 0.25+0.10+0.40 = 0.75
        [0.20, 0.10, 0.25, 0.20, 0.25, 0.00],  # nothing clears; best family Sapindaceae 0.45
    ])
    names, ranks, conf = rollup(probs, GENUS, FAMILY, 0.6, species=SPECIES)
    assert names == ["Quercus robur", "Quercus", "Fagaceae", "Sapindaceae"]
    assert ranks == ["species", "genus", "family", "family"]
    np.testing.assert_allclose(conf, [0.70, 0.70, 0.75, 0.45])


def test_rollup_skips_labels_without_genus():
    # Rosa canina (0.55) has no genus, so at genus level only Fagus (0.45) exists; with no families at all,
    # the fallback is the best genus, never a made-up group for Rosa.
    probs = np.array([[0.0, 0.0, 0.0, 0.0, 0.55, 0.45]])
    names, ranks, conf = rollup(probs, GENUS, FAMILY, 0.5, species=SPECIES)
    assert (names, ranks) == (["Rosa canina"], ["species"])  # 0.55 clears 0.5 at species level
    names, ranks, conf = rollup(probs, GENUS, [None] * 6, 0.6, species=SPECIES)
    assert (names, ranks) == (["Fagus"], ["genus"])  # no families at all: coarsest available is genus
    np.testing.assert_allclose(conf, [0.45])


def test_rollup_without_groups_and_bad_args():
    probs = np.array([[0.2, 0.3, 0.1, 0.1, 0.1, 0.2]])
    names, ranks, conf = rollup(probs, [None] * 6, [None] * 6, 0.9, species=SPECIES)
    assert (names, ranks) == (["Quercus petraea"], ["species"])
    with pytest.raises(ValueError, match="threshold"):
        rollup(probs, GENUS, FAMILY, 1.5, species=SPECIES)
    with pytest.raises(ValueError, match="genus"):
        rollup(probs, GENUS[:3], FAMILY, 0.5, species=SPECIES)


def test_identification_id_is_deterministic():
    a = identification_id("ab" * 32, "s3://b/img1.jpg")
    assert a == _uuid5("ab" * 32, "s3://b/img1.jpg")  # the same on every run, machine and plantray version
    assert a == identification_id("ab" * 32, "s3://b/img1.jpg")
    assert a != identification_id("ab" * 32, "s3://b/img2.jpg")
    assert a != identification_id("cd" * 32, "s3://b/img1.jpg")
    assert uuid.UUID(a).version == 5


def test_identification_remarks():
    assert identification_remarks(0.8731, "genus", "resnet50", "v3") == \
        "machine identification by plantray resnet50 v3 (confidence 0.873, rank genus)"


def test_dwc_columns_with_an_error_row():
    card = {"name": "plantray-resnet50", "version": "v3", "weights": {"sha256": "ab" * 32}}
    batch = {"image_uri": np.array(["s3://b/1.jpg", "s3://b/2.jpg"], dtype=object),
             "scientificName": np.array(["Quercus", None], dtype=object),
             "confidence": np.array([0.873, np.nan]),
             "taxonRank": np.array(["genus", None], dtype=object),
             "error": np.array([None, "http 404"], dtype=object)}
    out = dwc_columns(batch, card, "2026-11-27T10:00:00Z")
    assert list(out["identificationID"]) == [_uuid5("ab" * 32, "s3://b/1.jpg"), _uuid5("ab" * 32, "s3://b/2.jpg")]
    assert list(out["identifiedBy"]) == ["plantray-resnet50 v3 (sha256:abababababab)"] * 2
    assert list(out["dateIdentified"]) == ["2026-11-27T10:00:00Z", None]
    assert list(out["identificationRemarks"]) == [
        "machine identification by plantray-resnet50 v3 (confidence 0.873, rank genus)", None]
    assert list(out["identificationVerificationStatus"]) == ["unverified", None]
    assert list(out["identificationType"]) == ["media", None]
    assert list(out["kingdom"]) == ["Plantae", None]
    assert list(out["taxonRank"]) == ["genus", None]
    assert list(out["scientificName"]) == ["Quercus", None]
    assert "basisOfRecord" not in out
    with pytest.raises(ValueError, match="sha256"):
        dwc_columns(batch, {"name": "m", "version": "1"}, "2026-11-27T10:00:00Z")


def _predictions(rows: list[tuple]) -> pa.Table:
    keys, names, confs, errors = zip(*rows)
    return pa.table({"gbifID": pa.array(keys, pa.int64()),
                     "topk_scientificName": pa.array(names, pa.list_(pa.string())),
                     "topk_confidence": pa.array(confs, pa.list_(pa.float32())),
                     "error": pa.array(errors, pa.string())})


def test_aggregate_occurrences(ray_session, tmp_path):
    src = tmp_path / "predictions"
    src.mkdir()
    # Occurrence 1 is split across both files, so the groupby really has to shuffle.
    pq.write_table(_predictions([(1, ["A", "B"], [0.5, 0.25], None),
                                 (2, ["C", "A"], [0.75, 0.125], None),
                                 (3, None, None, "http 404")]), src / "part-0.parquet")
    pq.write_table(_predictions([(1, ["B", "C"], [0.5, 0.25], None),
                                 (1, None, None, "timeout")]), src / "part-1.parquet")
    counts = aggregate_occurrences(str(src), str(tmp_path / "occ"), top_k=2)
    assert counts == {"occurrences": 3, "images_used": 3, "images_failed": 2}

    got = {r["gbifID"]: r for r in pq.read_table(tmp_path / "occ").to_pylist()}
    # Occurrence 1, 2 images used: A (0.5 + 0) / 2 = 0.25, B (0.25 + 0.5) / 2 = 0.375, C (0 + 0.25) / 2.
    assert got[1]["topk_scientificName"] == ["B", "A"]
    assert got[1]["topk_confidence"] == pytest.approx([0.375, 0.25])
    assert (got[1]["scientificName"], got[1]["images_used"], got[1]["images_failed"]) == ("B", 2, 1)
    assert got[1]["confidence"] == pytest.approx(0.375)
    assert got[2]["topk_scientificName"] == ["C", "A"]
    assert got[2]["topk_confidence"] == pytest.approx([0.75, 0.125])
    assert got[3] == {"gbifID": 3, "topk_scientificName": [], "topk_confidence": [], "scientificName": None,
                      "confidence": None, "images_used": 0, "images_failed": 1}


def test_aggregate_rejects_missing_key(ray_session, tmp_path):
    pq.write_table(_predictions([(1, ["A"], [0.5], None)]), tmp_path / "p.parquet")
    with pytest.raises(ValueError, match="occurrenceID"):
        aggregate_occurrences(str(tmp_path / "p.parquet"), str(tmp_path / "o"), key="occurrenceID")


def test_aggregate_empty_predictions(ray_session, tmp_path):
    pq.write_table(_predictions([(1, ["A"], [0.5], None)]).slice(0, 0), tmp_path / "p.parquet")
    counts = aggregate_occurrences(str(tmp_path / "p.parquet"), str(tmp_path / "o"))
    assert counts == {"occurrences": 0, "images_used": 0, "images_failed": 0}
    assert pq.read_table(tmp_path / "o").num_rows == 0


def test_aggregate_occurrences_on_s3(ray_session, s3):
    prefix = f"plantray-test/occ-{uuid.uuid4().hex[:8]}"
    with s3.open(f"{prefix}/predictions/part-0.parquet", "wb") as f:
        pq.write_table(_predictions([(1, ["A", "B"], [0.5, 0.25], None), (1, ["B"], [0.75], None),
                                     (2, None, None, "timeout")]), f)
    counts = aggregate_occurrences(f"s3://{prefix}/predictions", f"s3://{prefix}/occ", top_k=2)
    assert counts == {"occurrences": 2, "images_used": 2, "images_failed": 1}
    s3.invalidate_cache()
    parts = [p for p in s3.find(f"{prefix}/occ") if p.endswith(".parquet")]
    rows = {r["gbifID"]: r for p in parts for r in pq.read_table(s3.open(p, "rb")).to_pylist()}
    # Occurrence 1: B (0.25 + 0.75) / 2 = 0.5, A (0.5 + 0) / 2 = 0.25.
    assert rows[1]["topk_scientificName"] == ["B", "A"]
    assert rows[1]["topk_confidence"] == pytest.approx([0.5, 0.25])
    assert (rows[2]["images_used"], rows[2]["images_failed"]) == (0, 1)


def test_aggregate_empty_predictions_on_s3(ray_session, s3):
    prefix = f"plantray-test/occ-empty-{uuid.uuid4().hex[:8]}"
    with s3.open(f"{prefix}/p.parquet", "wb") as f:
        pq.write_table(_predictions([(1, ["A"], [0.5], None)]).slice(0, 0), f)
    counts = aggregate_occurrences(f"s3://{prefix}/p.parquet", f"s3://{prefix}/o")
    assert counts == {"occurrences": 0, "images_used": 0, "images_failed": 0}
    s3.invalidate_cache()
    empty = pq.read_table(s3.open(f"{prefix}/o/part-empty.parquet", "rb"))
    assert empty.num_rows == 0 and "scientificName" in empty.schema.names
