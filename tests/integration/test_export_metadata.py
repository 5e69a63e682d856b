"""``plantray export dwca`` metadata: title, creators, contact, licence and citation in a GBIF-profile EML, and
every term URI of meta.xml as its standard publishes it. Hostile user strings come out escaped; bad flags are
refused before anything is written."""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
import zipfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from dwca.read import DwCAReader

from plantray.cli import main
from plantray.commands.export import ExportConfig
from plantray.config import ConfigError

TITLE = 'Plants & "weeds" <of> Europe\'s herbaria'
CITATION = 'Doe J. & Roe R. (2026) <Machine> identifications, "v1". https://doi.org/10.1234/x?a=1&b=2'
ORGANIZATION = 'Herbarium "Alpha" & <Co>'
PLANTRAY_NS = "https://github.com/plantray/plantray/blob/main/docs/terms.md#"
# Term URIs written out by hand from the standards (dwc.tdwg.org/terms, dublincore.org, ac.tdwg.org, GBIF's
# extensions at rs.gbif.org), per file column.
PUBLISHED = {
    "gbifID": "http://rs.gbif.org/terms/1.0/gbifID",
    "occurrenceID": "http://rs.tdwg.org/dwc/terms/occurrenceID",
    "basisOfRecord": "http://rs.tdwg.org/dwc/terms/basisOfRecord",
    "countryCode": "http://rs.tdwg.org/dwc/terms/countryCode",
    **{t: "http://rs.tdwg.org/dwc/terms/" + t for t in (
        "identificationID", "verbatimIdentification", "scientificName", "taxonRank", "kingdom", "family", "genus",
        "taxonID",
        "scientificNameID", "nameAccordingTo", "nameAccordingToID", "identifiedBy", "identifiedByID",
        "dateIdentified", "identificationRemarks", "identificationVerificationStatus", "identificationReferences")},
    "identifier": "http://purl.org/dc/terms/identifier",
    "type": "http://purl.org/dc/elements/1.1/type",
    "accessURI": "http://rs.tdwg.org/ac/terms/accessURI",
    "format": "http://purl.org/dc/elements/1.1/format",
    "subjectPart": "http://rs.tdwg.org/ac/terms/subjectPart",
    "license": "http://purl.org/dc/terms/rights",
    "rightsHolder": "http://ns.adobe.com/xap/1.0/rights/Owner",
    "creator": "http://purl.org/dc/elements/1.1/creator",
}
INVENTED = {"classificationMethod", "classificationProbability"}  # no published URI: plantray's namespace
# The GBIF Metadata Profile's dataset sequence (eml-gbif-profile.xsd, github.com/gbif/eml-profile).
PROFILE_ORDER = ["alternateIdentifier", "shortName", "title", "creator", "metadataProvider", "associatedParty",
                 "pubDate", "language", "abstract", "keywordSet", "additionalInfo", "intellectualRights", "licensed",
                 "distribution", "coverage", "purpose", "introduction", "gettingStarted", "acknowledgements",
                 "maintenance", "contact", "publisher", "methods", "project"]


def predictions(root) -> str:
    os.makedirs(root)
    rows = [{"image_uri": f"http://x/{i}.jpg", "gbifID": str(i // 2), "occurrenceID": f"urn:o:{i // 2}",
             "basisOfRecord": "HUMAN_OBSERVATION", "countryCode": "FR", "license": "CC BY 4.0",
             "rightsHolder": "Jane & <Doe>", "creator": "J. Doe", "tag": "leaf", "format": "image/jpeg",
             "scientificName": "Rosa canina", "confidence": 0.8, "model_name": "plantray-resnet18",
             "model_version": "t1", "model_sha256": "ab" * 32, "error": None} for i in range(4)]
    pq.write_table(pa.Table.from_pylist(rows), f"{root}/part-0.parquet")
    return str(root)


def test_metadata_flags_become_an_escaped_valid_eml(tmp_path):
    out = str(tmp_path / "a.zip")
    assert main(["export", "dwca", predictions(tmp_path / "p"), out, "--title", TITLE,
                 "--creator", "Dupont & Fils, Jean-Pierre", "--creator", "Mary O'Neil <mary@example.org>",
                 "--contact", "Ana Lopez <ana@example.org>", "--organization", ORGANIZATION,
                 "--license", "CC-BY-NC-4.0", "--citation", CITATION]) == 0
    with zipfile.ZipFile(out) as zf:
        raw = zf.read("eml.xml")
    # escaped by the XML library, parsed back whole
    assert b"&amp;" in raw and b"&lt;" in raw and TITLE.encode() not in raw
    root = ET.fromstring(raw)
    assert root.tag == "{https://eml.ecoinformatics.org/eml-2.2.0}eml"
    assert root.get("packageId") and root.get("system") and root.get("scope") == "system"
    dataset = root.find("dataset")
    tags = [c.tag for c in dataset]
    assert [t for t in PROFILE_ORDER if t in tags] == list(dict.fromkeys(tags))  # the profile's order
    for required in ("title", "creator", "pubDate", "abstract", "contact", "intellectualRights"):
        assert dataset.find(required) is not None, required
    assert dataset.findtext("title") == TITLE
    creators = [(c.findtext("individualName/givenName"), c.findtext("individualName/surName"),
                 c.findtext("organizationName"), c.findtext("electronicMailAddress"))
                for c in dataset.findall("creator")]
    assert creators == [("Jean-Pierre", "Dupont & Fils", ORGANIZATION, None),
                        ("Mary", "O'Neil", ORGANIZATION, "mary@example.org")]
    contact = dataset.find("contact")
    assert (contact.findtext("individualName/surName"), contact.findtext("electronicMailAddress")) == (
        "Lopez", "ana@example.org")
    link = dataset.find("intellectualRights/para/ulink")
    assert link.get("url") == "http://creativecommons.org/licenses/by-nc/4.0/legalcode"
    assert dataset.findtext("licensed/identifier") == "CC-BY-NC-4.0"
    assert root.findtext("additionalMetadata/metadata/gbif/citation") == CITATION
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", dataset.findtext("pubDate"))
    with DwCAReader(out) as archive:  # an independent reader finds the same metadata
        assert archive.metadata.find("dataset/title").text == TITLE


def test_meta_xml_declares_published_term_uris(tmp_path):
    out = str(tmp_path / "a.zip")
    assert main(["export", "dwca", predictions(tmp_path / "p"), out]) == 0
    with zipfile.ZipFile(out) as zf:
        meta = ET.fromstring(zf.read("meta.xml"))
        headers = {name: zf.read(name).decode().split("\n", 1)[0].split("\t")
                   for name in ("occurrence.txt", "identification.txt", "multimedia.txt")}
    ns = "{http://rs.tdwg.org/dwc/text/}"
    assert meta.get("metadata") == "eml.xml"
    files = [meta.find(ns + "core"), *meta.findall(ns + "extension")]
    assert [f.get("rowType") for f in files] == ["http://rs.tdwg.org/dwc/terms/Occurrence",
                                                 "http://rs.tdwg.org/dwc/terms/Identification",
                                                 "http://rs.tdwg.org/ac/terms/Multimedia"]
    with open(os.path.join(os.path.dirname(__file__), "..", "..", "docs", "terms.md"), encoding="utf-8") as f:
        documented = set(re.findall(r"^## (\w+)$", f.read(), re.MULTILINE))
    for f in files:
        header = headers[f.find(f"{ns}files/{ns}location").text]
        fields = {int(x.get("index")): x.get("term") for x in f.findall(ns + "field")}
        for i, column in enumerate(header):
            if i == 0 and f.tag != ns + "core":
                assert column == "gbifID" and i not in fields  # an extension's coreid
                continue
            if column in INVENTED:
                assert fields[i] == PLANTRAY_NS + column and column in documented
            else:
                assert fields[i] == PUBLISHED[column], column


def test_unaccepted_license_and_bad_people_are_refused_before_writing(tmp_path, capsys):
    preds = predictions(tmp_path / "p")
    out = str(tmp_path / "a.zip")
    with pytest.raises(SystemExit) as e:  # argparse's choices
        main(["export", "dwca", preds, out, "--license", "CC-BY-SA-4.0"])
    assert e.value.code == 2
    with pytest.raises(ConfigError, match="CC0-1.0, CC-BY-4.0, CC-BY-NC-4.0"):
        ExportConfig(preds, out, license="CC-BY-SA-4.0")
    assert main(["export", "dwca", preds, out, "--creator", "Jane Doe <not an address>"]) == 2
    assert main(["export", "dwca", preds, out, "--contact", " "]) == 2
    assert main(["export", "dwca", preds, out, "--title", "  "]) == 2
    err = capsys.readouterr().err
    assert "e-mail address in angle brackets" in err and "--title" in err
    assert not os.path.exists(out)
