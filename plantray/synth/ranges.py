"""Species ranges for the synthetic dataset: countries per species, ``countryCode`` per image, a checklist.

With ``plantray synth --countries N``, each species occurs in a few of N European countries (deterministic
from the seed), every manifest row gets a ``countryCode`` drawn from its species' range, and the range is
written as a checklist, both as ``checklist.csv`` (scientificName, countryCode) and as a checklist Darwin
Core Archive ``checklist-dwca.zip`` (Taxon core + GBIF Distribution extension, as a GBIF species-list
download), so ``plantray evaluate --checklist ... --prior restrict`` can show accuracy with and without it.
"""

from __future__ import annotations

import csv
import io
import zipfile
import zlib

import numpy as np

from plantray import storage

# European ISO 3166-1 alpha-2 codes, in the order ranges draw from.
COUNTRIES = ("FR", "DE", "ES", "IT", "GB", "PT", "NL", "BE", "CH", "AT", "PL", "SE", "NO", "DK", "IE", "CZ",
             "HU", "GR", "RO", "FI")
CHECKLIST_CSV, CHECKLIST_DWCA = "checklist.csv", "checklist-dwca.zip"
_META_XML = """<?xml version="1.0" encoding="UTF-8"?>
<archive xmlns="http://rs.tdwg.org/dwc/text/" metadata="eml.xml">
  <core encoding="UTF-8" fieldsTerminatedBy="\\t" linesTerminatedBy="\\n" fieldsEnclosedBy="" ignoreHeaderLines="1"
        rowType="http://rs.tdwg.org/dwc/terms/Taxon">
    <files><location>taxon.txt</location></files>
    <id index="0"/>
    <field index="0" term="http://rs.tdwg.org/dwc/terms/taxonID"/>
    <field index="1" term="http://rs.tdwg.org/dwc/terms/scientificName"/>
    <field index="2" term="http://rs.tdwg.org/dwc/terms/taxonRank"/>
  </core>
  <extension encoding="UTF-8" fieldsTerminatedBy="\\t" linesTerminatedBy="\\n" fieldsEnclosedBy=""
             ignoreHeaderLines="1" rowType="http://rs.gbif.org/terms/1.0/Distribution">
    <files><location>distribution.txt</location></files>
    <coreid index="0"/>
    <field index="1" term="http://rs.tdwg.org/dwc/terms/locationID"/>
    <field index="2" term="http://rs.tdwg.org/dwc/terms/countryCode"/>
    <field index="3" term="http://rs.tdwg.org/dwc/terms/occurrenceStatus"/>
    <field index="4" term="http://rs.tdwg.org/dwc/terms/establishmentMeans"/>
  </extension>
</archive>
"""


def species_ranges(names: list[str], countries: int, seed: int) -> dict[str, list[str]]:
    """Each species' countries: 1 to ceil(countries/3) of the first ``countries`` codes, from the seed.

    Args:
        names: scientific names, in label order.
        countries: how many countries the dataset spans (1..len(COUNTRIES)).
        seed: the dataset's seed.
    Returns:
        scientificName -> sorted country codes.
    """
    rng = np.random.default_rng([seed, 11])
    pool = COUNTRIES[:countries]
    most = max(1, -(-countries // 3))
    return {name: sorted(str(c) for c in rng.choice(pool, size=int(rng.integers(1, most + 1)), replace=False))
            for name in names}


def add_countries(rows: list[dict], ranges: dict[str, list[str]], seed: int) -> list[dict]:
    """Gives each manifest row a ``countryCode`` from its species' range, drawn per image (by its URI)."""
    for row in rows:
        rng = np.random.default_rng([seed, 13, zlib.crc32(row["image_uri"].encode())])
        row["countryCode"] = str(rng.choice(ranges[row["scientificName"]]))
    return rows


def checklist_csv(ranges: dict[str, list[str]]) -> bytes:
    """``scientificName,countryCode`` one row per (species, country)."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["scientificName", "countryCode"])
    writer.writerows([name, c] for name, codes in ranges.items() for c in codes)
    return text.getvalue().encode()


def checklist_dwca(ranges: dict[str, list[str]], taxon_ids: dict[str, str]) -> bytes:
    """A checklist Darwin Core Archive (zip): Taxon core + Distribution extension (tab-separated)."""
    taxa = ["taxonID\tscientificName\ttaxonRank"] + [f"{taxon_ids[n]}\t{n}\tspecies" for n in ranges]
    dist = ["taxonID\tlocationID\tcountryCode\toccurrenceStatus\testablishmentMeans"]
    dist += [f"{taxon_ids[n]}\tISO3166-1:{c}\t{c}\tpresent\tnative" for n, codes in ranges.items() for c in codes]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, text in (("meta.xml", _META_XML), ("taxon.txt", "\n".join(taxa) + "\n"),
                           ("distribution.txt", "\n".join(dist) + "\n")):
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))  # fixed: byte-identical output
            zf.writestr(info, text, zipfile.ZIP_DEFLATED)
    return buf.getvalue()


def write_checklists(root: str, ranges: dict[str, list[str]], taxon_ids: dict[str, str]) -> dict[str, str]:
    """Writes ``checklist.csv`` and ``checklist-dwca.zip`` under ``root``; returns their relative paths."""
    storage.write_bytes(storage.join(root, CHECKLIST_CSV), checklist_csv(ranges))
    storage.write_bytes(storage.join(root, CHECKLIST_DWCA), checklist_dwca(ranges, taxon_ids))
    return {"csv": CHECKLIST_CSV, "dwca": CHECKLIST_DWCA}
