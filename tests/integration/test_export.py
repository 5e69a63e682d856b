"""``plantray export dwca``: the archive read back with an independent reader (python-dwca-reader)."""

from __future__ import annotations

import json
import os
import uuid
import zipfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from dwca.read import DwCAReader

from plantray.cli import main
from plantray.commands.export import ExportConfig, export_dwca
from plantray.config import ConfigError

DWC = "http://rs.tdwg.org/dwc/terms/"
DCT = "http://purl.org/dc/terms/"
GBIF = "http://rs.gbif.org/terms/1.0/"
SHA = "ab" * 32
NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/plantray/plantray/identification")


def prediction_rows() -> list[dict]:
    """Three occurrences; occurrence 3 has only a failed image; one value holds a tab and a newline."""
    rows = []
    images = [("1", "http://x/a.jpg", None), ("1", "http://x/b.jpg", None), ("2", "http://x/c.jpg", None),
              ("2", "http://x/d.jpg", "http 404"), ("3", "http://x/e.jpg", "not an image")]
    for i, (gbif_id, uri, error) in enumerate(images):
        ok = error is None
        rows.append({
            "image_uri": uri, "gbifID": gbif_id, "occurrenceID": f"urn:o:{gbif_id}",
            "basisOfRecord": "HUMAN_OBSERVATION", "countryCode": "FR", "license": "CC BY 4.0",
            "rightsHolder": "Jane\tDoe" if i == 0 else "Jane Doe",
            "creator": "J.\nDoe" if i == 1 else "J. Doe",
            "scientificName": f"Rosa sp{i}" if ok else None, "confidence": 0.5 + i / 10 if ok else None,
            "genus": "Rosa" if ok else None, "family": "Rosaceae" if ok else None,
            "identifiedBy": "plantray-resnet18 t1 (sha256:abababababab)",
            "dateIdentified": "2026-01-02T03:04:05Z" if ok else None,
            "identificationVerificationStatus": "unverified" if ok else None,
            "model_name": "plantray-resnet18", "model_version": "t1", "model_sha256": SHA, "error": error})
    return rows


def write_predictions(root: str, rows: list[dict]) -> str:
    os.makedirs(root, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows[:2]), f"{root}/part-0.parquet")
    pq.write_table(pa.Table.from_pylist(rows[2:]), f"{root}/part-1.parquet")
    return root


def check_archive(path: str, rows: list[dict]) -> None:
    ok = [r for r in rows if r["error"] is None]
    occurrences = sorted({r["gbifID"] for r in ok})
    with DwCAReader(path) as archive:
        assert archive.descriptor.core.type == DWC + "Occurrence"
        assert [e.type for e in archive.descriptor.extensions] == [DWC + "Identification",
                                                                   "http://rs.tdwg.org/ac/terms/Multimedia"]
        core = list(archive)
        assert sorted(c.id for c in core) == occurrences
        idents, media = {}, {}
        for c in core:
            assert c.data[DWC + "occurrenceID"] == f"urn:o:{c.id}"
            assert c.data[DWC + "basisOfRecord"] == "HUMAN_OBSERVATION"
            for e in c.extensions:
                if e.rowtype == DWC + "Identification":
                    idents[e.data[DWC + "identificationReferences"]] = (c.id, e.data)
                else:  # the image and its rights, in Audubon Core
                    media[e.data["http://rs.tdwg.org/ac/terms/accessURI"]] = e.data
        assert "Machine identifications" in archive.metadata.find("dataset/title").text
    assert sorted(idents) == sorted(r["image_uri"] for r in ok)
    for r in ok:
        core_id, data = idents[r["image_uri"]]
        assert core_id == r["gbifID"]
        assert data[DWC + "identificationID"] == str(uuid.uuid5(NAMESPACE, f"{SHA}\n{r['image_uri']}"))
        assert data[DWC + "scientificName"] == r["scientificName"]
        assert data[DWC + "taxonRank"] == "species"
        assert (data[DWC + "genus"], data[DWC + "family"]) == ("Rosa", "Rosaceae")
        assert data[DWC + "identifiedBy"] == r["identifiedBy"]
        assert data[DWC + "dateIdentified"] == r["dateIdentified"]
        assert data[DWC + "identificationVerificationStatus"] == "unverified"
        assert data[DWC + "identificationRemarks"] == (
            f"machine identification by plantray-resnet18 t1 (confidence {r['confidence']:.3f}, rank species)")
        image = media[r["image_uri"]]
        assert image[DCT + "rights"] == r["license"]
        assert image["http://ns.adobe.com/xap/1.0/rights/Owner"] == r["rightsHolder"].replace("\t", " ")
        assert image["http://purl.org/dc/elements/1.1/creator"] == r["creator"].replace("\n", " ")


def test_export_round_trip(tmp_path):
    rows = prediction_rows()
    preds = write_predictions(str(tmp_path / "preds"), rows)
    out = str(tmp_path / "out" / "ids.zip")
    summary = export_dwca(ExportConfig(preds, out))
    assert summary == {"out": out, "occurrences": 2, "identifications": 3, "identifications_by_person": 0,
                       "media": 3, "skipped_errors": 2}
    check_archive(out, rows)
    with zipfile.ZipFile(out) as zf:  # the run record travels inside the archive
        assert json.loads(zf.read("_plantray_run.json"))["summary"] == summary


def test_export_cli_and_overwrite(tmp_path, capsys):
    rows = prediction_rows()
    preds = write_predictions(str(tmp_path / "preds"), rows)
    out = str(tmp_path / "ids.zip")
    assert main(["export", "dwca", preds, out]) == 0
    assert main(["export", "dwca", preds, out]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["export", "dwca", preds, out, "--overwrite"]) == 0
    check_archive(out, rows)


def test_export_config_errors(tmp_path):
    preds = write_predictions(str(tmp_path / "preds"), prediction_rows())
    with pytest.raises(ConfigError, match=r"\.zip"):
        export_dwca(ExportConfig(preds, str(tmp_path / "x.tar")))
    with pytest.raises(ConfigError, match="does not exist"):
        export_dwca(ExportConfig(str(tmp_path / "nothing"), str(tmp_path / "x.zip")))
    bare = str(tmp_path / "bare")
    os.makedirs(bare)
    pq.write_table(pa.table({"image_uri": ["a"], "scientificName": ["b"], "error": [None]}), f"{bare}/p.parquet")
    with pytest.raises(ConfigError, match="gbifID or occurrenceID"):
        export_dwca(ExportConfig(bare, str(tmp_path / "x.zip")))


def test_export_to_s3(s3, tmp_path):
    rows = prediction_rows()
    preds = write_predictions(str(tmp_path / "preds"), rows)
    s3.put(preds, "plantray-test/export/preds", recursive=True)
    summary = export_dwca(ExportConfig("s3://plantray-test/export/preds", "s3://plantray-test/export/ids.zip"))
    assert summary["identifications"] == 3
    s3.get("plantray-test/export/ids.zip", str(tmp_path / "ids.zip"))
    check_archive(str(tmp_path / "ids.zip"), rows)
