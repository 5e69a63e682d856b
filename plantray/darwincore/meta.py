"""Term URIs and the archive descriptor (``meta.xml``) of an exported Darwin Core Archive.

Every column of the archive's text files is declared by a term URI exactly as its standard publishes it:

- Darwin Core: ``http://rs.tdwg.org/dwc/terms/<term>`` (https://dwc.tdwg.org/terms/);
- Dublin Core terms ``http://purl.org/dc/terms/<term>`` and elements ``http://purl.org/dc/elements/1.1/<term>``;
- Audubon (Audiovisual) Core: ``http://rs.tdwg.org/ac/terms/<term>``, with the Adobe XMP rights terms it
  borrows (``http://ns.adobe.com/xap/1.0/rights/Owner``), as GBIF's Audiovisual Media Description extension
  (``rs.gbif.org/extension/ac/audiovisual_2024_11_07.xml``) declares them;
- GBIF's terms for its own identifiers: ``http://rs.gbif.org/terms/1.0/gbifID`` and ``.../datasetKey``.

Camtrap DP's ``classificationMethod`` and ``classificationProbability`` have no term URI: Camtrap DP's table
schema maps only ``classifiedBy`` and ``classificationTimestamp`` to Darwin Core, and its Darwin Core conversion
(the camtrapdp package's ``write_dwc``, which GBIF uses) folds method and probability into
``dwc:identificationRemarks`` ("classified by a machine with 89% certainty"). plantray keeps them as columns,
declared under its one documented namespace :data:`PLANTRAY` (docs/terms.md defines each term there).

The descriptor is built with :mod:`xml.etree.ElementTree`, so every value is escaped by the XML library.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

DWC = "http://rs.tdwg.org/dwc/terms/"
DCTERMS = "http://purl.org/dc/terms/"
DC = "http://purl.org/dc/elements/1.1/"
AC = "http://rs.tdwg.org/ac/terms/"
XMP_RIGHTS = "http://ns.adobe.com/xap/1.0/rights/"
GBIF = "http://rs.gbif.org/terms/1.0/"
# The one namespace of terms plantray defines itself; each is documented under its anchor in docs/terms.md.
PLANTRAY = "https://github.com/plantray/plantray/blob/main/docs/terms.md#"
DWC_TEXT = "http://rs.tdwg.org/dwc/text/"

OCCURRENCE_ROW_TYPE = DWC + "Occurrence"
IDENTIFICATION_ROW_TYPE = DWC + "Identification"
MULTIMEDIA_ROW_TYPE = AC + "Multimedia"

# Column of an exported file -> its term URI. Occurrence core: the occurrence's own terms.
OCCURRENCE_TERMS = {"gbifID": GBIF + "gbifID", "occurrenceID": DWC + "occurrenceID", "datasetKey": GBIF + "datasetKey",
                    "basisOfRecord": DWC + "basisOfRecord", "countryCode": DWC + "countryCode"}
# Identification terms (GBIF's Identification History extension and, for the current one, the core).
IDENTIFICATION_TERMS = {t: DWC + t for t in (
    "identificationID", "verbatimIdentification", "scientificName", "taxonRank", "kingdom", "family", "genus",
    "taxonID", "scientificNameID",
    "nameAccordingTo", "nameAccordingToID", "identifiedBy", "identifiedByID", "dateIdentified",
    "identificationRemarks", "identificationVerificationStatus", "identificationReferences")}
IDENTIFICATION_TERMS.update({"classificationMethod": PLANTRAY + "classificationMethod",
                             "classificationProbability": PLANTRAY + "classificationProbability"})
# Audubon Core multimedia: the image an identification was made from, and its rights (columns as in the
# predictions, which carry a GBIF download's Simple Multimedia terms).
MULTIMEDIA_TERMS = {"identifier": DCTERMS + "identifier", "type": DC + "type", "accessURI": AC + "accessURI",
                    "format": DC + "format", "subjectPart": AC + "subjectPart", "license": DCTERMS + "rights",
                    "rightsHolder": XMP_RIGHTS + "Owner", "creator": DC + "creator"}


@dataclass
class TextFile:
    """One text file of the archive: its rowType, the key column and its columns (name -> term URI), in order."""

    location: str
    row_type: str
    key: str  # column 0: the core's id, or an extension's coreid
    columns: dict[str, str]
    core: bool = False


def _file_element(parent: ET.Element, spec: TextFile) -> None:
    # The Darwin Core text guide's dialect: tab-separated, no quoting, one header line (values never hold a
    # tab or line break: the writer replaces them).
    el = ET.SubElement(parent, "core" if spec.core else "extension", {
        "encoding": "UTF-8", "fieldsTerminatedBy": "\\t", "linesTerminatedBy": "\\n", "fieldsEnclosedBy": "",
        "ignoreHeaderLines": "1", "rowType": spec.row_type})
    ET.SubElement(ET.SubElement(el, "files"), "location").text = spec.location
    ET.SubElement(el, "id" if spec.core else "coreid", {"index": "0"})
    if spec.core:  # the core's id column is also a term of its own
        ET.SubElement(el, "field", {"index": "0", "term": OCCURRENCE_TERMS.get(spec.key, DWC + spec.key)})
    for i, term in enumerate(spec.columns.values(), start=1):
        ET.SubElement(el, "field", {"index": str(i), "term": term})


def meta_xml(files: list[TextFile], metadata: str = "eml.xml") -> bytes:
    """The archive descriptor for ``files`` (the core first), as UTF-8 XML bytes.

    Args:
        files: the core, then its extensions; each file's column 0 is the occurrence key.
        metadata: the EML document's name in the archive.
    """
    ET.register_namespace("", DWC_TEXT)
    root = ET.Element(f"{{{DWC_TEXT}}}archive", {"metadata": metadata})
    for spec in files:
        _file_element(root, spec)
    _qualify(root)
    ET.indent(root)
    return ET.tostring(root, encoding="UTF-8", xml_declaration=True)


def _qualify(root: ET.Element) -> None:
    """Puts every element in the Darwin Core text namespace (the descriptor's default namespace)."""
    for el in root.iter():
        if not el.tag.startswith("{"):
            el.tag = f"{{{DWC_TEXT}}}{el.tag}"
