"""Darwin Core Archive builders for tests: a GBIF download layout, a publisher (IPT-like) layout, and an
iNaturalist-like layout whose core carries the image URLs in ``dwc:associatedMedia``.

Each builder takes plain row lists (:class:`Occ`, :class:`Media`) so a test can compute its expectations
from the same lists, independently of plantray's reader.
"""

from __future__ import annotations

import os
import tarfile
import zipfile
from dataclasses import dataclass

DWC = "http://rs.tdwg.org/dwc/terms/"
GBIF = "http://rs.gbif.org/terms/1.0/"
DC = "http://purl.org/dc/elements/1.1/"
DCT = "http://purl.org/dc/terms/"
AC = "http://rs.tdwg.org/ac/terms/"
XMP = "http://ns.adobe.com/xap/1.0/rights/"


@dataclass
class Occ:
    """One occurrence (core row)."""

    id: str
    occurrenceID: str
    scientificName: str
    datasetKey: str = "ds-1"
    basisOfRecord: str = "HUMAN_OBSERVATION"
    countryCode: str = "FR"


@dataclass
class Media:
    """One multimedia row. ``kind`` is the ground truth: image, sound, video or text."""

    coreid: str
    url: str
    kind: str = "image"
    license: str = "CC BY 4.0"
    rightsHolder: str = "Jane Doe"
    creator: str = "J. Doe"
    references: str = ""
    declare: str = "type"  # how the kind is declared: "type", "format" or "none" (neither given)


def sample_rows(base_url: str = "http://img.example.org") -> tuple[list[Occ], list[Media]]:
    """Occurrences and media covering every case: quotes, duplicates, sound, video, text, no URL, orphans."""
    occs = [Occ("101", "urn:occ:1", 'Rosa "canina" L.'), Occ("102", "urn:occ:2", "Quercus robur L.",
                                                                 basisOfRecord="PRESERVED_SPECIMEN"),
            Occ("103", "urn:occ:3", "Bellis perennis", countryCode="DE"), Occ("104", "urn:occ:4", "Acer sp.")]
    u = base_url.rstrip("/")
    media = [
        Media("101", f"{u}/a.jpg", license='CC BY "4.0"'), Media("101", f"{u}/b.jpg"),
        Media("101", f"{u}/a.jpg", license='CC BY "4.0"'),  # duplicate in the same occurrence
        Media("102", f"{u}/a.jpg", declare="format"),  # same URL, other occurrence: kept
        Media("102", f"{u}/c.jpg", declare="none"),  # neither type nor format; image suffix
        Media("102", "", references="http://page.example.org/102"),  # GBIF empties HTML pages' identifier
        Media("103", f"{u}/song.mp3", kind="sound"), Media("103", f"{u}/clip.mp4", kind="video"),
        Media("103", f"{u}/label.pdf", kind="text"), Media("103", f"{u}/d.jpg", kind="sound", declare="format"),
        Media("104", f"{u}/e.jpg", rightsHolder="Herbarium, Paris"), Media("104", f"{u}/e.jpg", declare="format",
                                                                         rightsHolder="Herbarium, Paris"),
        Media("999", f"{u}/orphan.jpg"),  # no matching occurrence
    ]
    return occs, media


_TYPES = {"image": "StillImage", "sound": "Sound", "video": "MovingImage", "text": "Text"}
_FORMATS = {"image": "image/jpeg", "sound": "audio/mpeg", "video": "video/mp4", "text": "application/pdf"}


def _type_format(m: Media, purl: bool) -> tuple[str, str]:
    if m.declare == "none":
        return "", ""
    if m.declare == "format":
        return "", _FORMATS[m.kind]
    t = _TYPES[m.kind]
    return (f"http://purl.org/dc/dcmitype/{t}" if purl else t), ""


def _fields(spec: list[tuple[int, str]]) -> str:
    return "\n".join(f'    <field index="{i}" term="{t}"/>' for i, t in spec)


def write_gbif(root: str, occs: list[Occ], media: list[Media]) -> str:
    """A GBIF DWCA download: tab-separated, no enclosure (quotes are data), header line. Returns ``root``."""
    os.makedirs(root, exist_ok=True)
    core_terms = [f"{GBIF}gbifID", f"{DWC}occurrenceID", f"{GBIF}datasetKey", f"{DWC}basisOfRecord",
                  f"{DWC}countryCode", f"{DWC}scientificName", f"{GBIF}verbatimScientificName", f"{DWC}recordedBy"]
    mm = ["gbifID", "type", "format", "identifier", "references", "title", "description", "source",
          "audience", "created", "creator", "contributor", "publisher", "license", "rightsHolder"]
    mm_terms = [f"{GBIF}gbifID"] + [f"{DCT}{t}" for t in mm[1:]]
    with open(f"{root}/occurrence.txt", "w", encoding="utf-8") as f:
        f.write("\t".join(t.rsplit("/", 1)[1] for t in core_terms) + "\n")
        for o in occs:
            f.write("\t".join([o.id, o.occurrenceID, o.datasetKey, o.basisOfRecord, o.countryCode,
                               o.scientificName, o.scientificName.upper(), 'Smith, "J."']) + "\n")
    with open(f"{root}/multimedia.txt", "w", encoding="utf-8") as f:
        f.write("\t".join(mm) + "\n")
        for m in media:
            t, fmt = _type_format(m, purl=False)
            values = {"gbifID": m.coreid, "type": t, "format": fmt, "identifier": m.url, "references": m.references,
                      "title": 'a "quoted" title', "creator": m.creator, "license": m.license,
                      "rightsHolder": m.rightsHolder}
            f.write("\t".join(values.get(c, "") for c in mm) + "\n")
    meta = f"""<?xml version="1.0" encoding="utf-8"?>
<archive xmlns="http://rs.tdwg.org/dwc/text/" metadata="metadata.xml">
  <core encoding="UTF-8" fieldsTerminatedBy="\\t" linesTerminatedBy="\\n" fieldsEnclosedBy=""
        ignoreHeaderLines="1" rowType="{DWC}Occurrence">
    <files><location>occurrence.txt</location></files>
    <id index="0"/>
{_fields(list(enumerate(core_terms)))}
  </core>
  <extension encoding="UTF-8" fieldsTerminatedBy="\\t" linesTerminatedBy="\\n" fieldsEnclosedBy=""
        ignoreHeaderLines="1" rowType="{GBIF}Multimedia">
    <files><location>multimedia.txt</location></files>
    <coreid index="0"/>
{_fields(list(enumerate(mm_terms)))}
  </extension>
</archive>
"""
    with open(f"{root}/meta.xml", "w", encoding="utf-8") as f:
        f.write(meta)
    return root


def _csv(values: list[str]) -> str:
    return ",".join('"' + v.replace('"', '""') + '"' for v in values)


def write_publisher(root: str, occs: list[Occ], media: list[Media]) -> str:
    """An IPT-like archive: quoted CSV with CRLF, core id = occurrenceID at column 2, Audubon Core media,
    a default-valued ``basisOfRecord``. Returns ``root``."""
    os.makedirs(root, exist_ok=True)
    with open(f"{root}/occ.csv", "w", encoding="utf-8", newline="") as f:
        f.write(_csv(["sciname", "country", "id", "remarks"]) + "\r\n")
        for o in occs:
            f.write(_csv([o.scientificName, o.countryCode, o.occurrenceID, "seen, then \"collected\""]) + "\r\n")
    with open(f"{root}/media.csv", "w", encoding="utf-8", newline="") as f:
        f.write(_csv(["format", "occ", "rights", "url", "type", "owner", "creator"]) + "\r\n")
        by_id = {o.id: o.occurrenceID for o in occs}
        for m in media:
            t, fmt = _type_format(m, purl=True)
            f.write(_csv([fmt, by_id.get(m.coreid, f"urn:missing:{m.coreid}"), m.license, m.url, t,
                          m.rightsHolder, m.creator]) + "\r\n")
    meta = f"""<?xml version="1.0" encoding="UTF-8"?>
<archive xmlns="http://rs.tdwg.org/dwc/text/">
  <core encoding="UTF-8" fieldsTerminatedBy="," linesTerminatedBy="\\r\\n" fieldsEnclosedBy='"'
        ignoreHeaderLines="1" rowType="{DWC}Occurrence">
    <files><location>occ.csv</location></files>
    <id index="2"/>
    <field index="2" term="{DWC}occurrenceID"/>
    <field index="0" term="{DWC}scientificName"/>
    <field index="1" term="{DWC}countryCode"/>
    <field term="{DWC}basisOfRecord" default="PreservedSpecimen"/>
  </core>
  <extension encoding="UTF-8" fieldsTerminatedBy="," linesTerminatedBy="\\r\\n" fieldsEnclosedBy="&quot;"
        ignoreHeaderLines="1" rowType="{AC}Multimedia">
    <files><location>media.csv</location></files>
    <coreid index="1"/>
    <field index="0" term="{DC}format"/>
    <field index="2" term="{DCT}rights"/>
    <field index="3" term="{AC}accessURI"/>
    <field index="4" term="{DC}type"/>
    <field index="5" term="{XMP}Owner"/>
    <field index="6" term="{DC}creator"/>
  </extension>
</archive>
"""
    with open(f"{root}/meta.xml", "w", encoding="utf-8") as f:
        f.write(meta)
    return root


def zip_dir(root: str, out: str, folder: str = "") -> str:
    """Zips every file of ``root`` into ``out`` (under ``folder/`` when given). Returns ``out``."""
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in sorted(os.listdir(root)):
            zf.write(os.path.join(root, name), f"{folder}/{name}" if folder else name)
    return out


def _write_csv(path: str, rows: list[list[str]]) -> None:
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.writelines(_csv(r) + "\n" for r in rows)


def _csv_element(tag: str, row_type: str, location: str, fields: list[tuple[int, str]]) -> str:
    """A <core>/<extension> of quoted, comma-separated, one-header-line UTF-8 text; key at column 0."""
    key = "id" if tag == "core" else "coreid"
    return f"""  <{tag} encoding="UTF-8" fieldsTerminatedBy="," linesTerminatedBy="\\n" fieldsEnclosedBy='"'
        ignoreHeaderLines="1" rowType="{row_type}">
    <files><location>{location}</location></files>
    <{key} index="0"/>
{_fields(fields)}
  </{tag}>
"""


def write_associated(root: str, occs: list[Occ], media: dict[str, str], extension: list[Media] | None = None) -> str:
    """An iNaturalist/IPT-like archive: quoted CSV core whose ``dwc:associatedMedia`` holds ``media[occ.id]``
    (the raw text, separators and all); with ``extension``, also a GBIF Simple Multimedia extension.
    Returns ``root``."""
    os.makedirs(root, exist_ok=True)
    _write_csv(f"{root}/observations.csv", [["id", "occurrenceID", "scientificName", "countryCode", "associatedMedia"]]
               + [[o.id, o.occurrenceID, o.scientificName, o.countryCode, media.get(o.id, "")] for o in occs])
    elements = _csv_element("core", f"{DWC}Occurrence", "observations.csv", [
        (0, f"{GBIF}gbifID"), (1, f"{DWC}occurrenceID"), (2, f"{DWC}scientificName"), (3, f"{DWC}countryCode"),
        (4, f"{DWC}associatedMedia")])
    if extension is not None:
        _write_csv(f"{root}/media.csv", [["id", "identifier", "type", "license", "rightsHolder", "creator"]]
                   + [[m.coreid, m.url, _TYPES[m.kind], m.license, m.rightsHolder, m.creator] for m in extension])
        elements += _csv_element("extension", f"{GBIF}Multimedia", "media.csv", [
            (1, f"{DC}identifier"), (2, f"{DC}type"), (3, f"{DC}license"), (4, f"{DCT}rightsHolder"),
            (5, f"{DC}creator")])
    with open(f"{root}/meta.xml", "w", encoding="utf-8") as f:
        f.write(f'<?xml version="1.0" encoding="UTF-8"?>\n<archive xmlns="http://rs.tdwg.org/dwc/text/">\n'
                f"{elements}</archive>\n")
    return root


def tar_dir(root: str, out: str, folder: str = "") -> str:
    """Packs every file of ``root`` into a gzip'd tar ``out`` (under ``folder/`` when given). Returns ``out``."""
    with tarfile.open(out, "w:gz") as tf:
        for name in sorted(os.listdir(root)):
            tf.add(os.path.join(root, name), f"{folder}/{name}" if folder else name)
    return out


def expected_images(occs: list[Occ], media: list[Media], key: str = "id") -> dict[tuple[str, str], Media]:
    """(core id, URL) -> first media row, for still images with a URL; ``key`` picks the core id field."""
    ids = {o.id: getattr(o, key) for o in occs}
    out: dict[tuple[str, str], Media] = {}
    for m in media:
        if m.kind == "image" and m.url:
            out.setdefault((ids.get(m.coreid, m.coreid if key == "id" else f"urn:missing:{m.coreid}"), m.url), m)
    return out


def expected_skips(media: list[Media]) -> dict[str, int]:
    """Skip counts by reason, from the ground-truth kinds."""
    counts: dict[str, int] = {}
    seen = set()
    for m in media:
        reason = {"sound": "sound", "video": "video", "text": "not an image"}.get(m.kind)
        if reason is None and not m.url:
            reason = "no url"
        elif reason is None and (m.coreid, m.url) in seen:
            reason = "duplicate url in occurrence"
        seen.add((m.coreid, m.url))
        if reason:
            counts[reason] = counts.get(reason, 0) + 1
    return counts
