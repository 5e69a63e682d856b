"""The dataset description (``eml.xml``) of an exported archive, in GBIF's EML profile.

Follows the GBIF Metadata Profile 1.3 (EML 2.2.0; github.com/gbif/eml-profile, ``eml-gbif-profile.xsd``): in
``dataset``, in the profile's order, ``alternateIdentifier``, ``title``, ``creator`` (one or more),
``metadataProvider``, ``pubDate``, ``language``, ``abstract``, ``intellectualRights`` (the licence as GBIF's IPT
writes it: a sentence with a ``ulink`` to the licence's legal code, which GBIF reads the licence from),
``licensed`` (SPDX name, URL and identifier), ``contact``, ``methods``; then
``additionalMetadata/metadata/gbif`` with ``dateStamp``, ``hierarchyLevel`` and the ``citation``. GBIF accepts
three licences for data: CC0 1.0, CC BY 4.0 and CC BY-NC 4.0.

People are given as ``"Given Family"`` or ``"Family, Given"``, optionally followed by an e-mail address in
angle brackets (``"Jane Doe <jane@example.org>"``). Built with :mod:`xml.etree.ElementTree`: titles and names
from the user come out escaped (``&amp;``, ``&lt;``) whatever they hold.
"""

from __future__ import annotations

import datetime as dt
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from plantray.config import ConfigError

EML_NS = "https://eml.ecoinformatics.org/eml-2.2.0"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
SCHEMA_LOCATION = f"{EML_NS} https://rs.gbif.org/schema/eml-gbif-profile/1.3/eml.xsd"
DEFAULT_TITLE = "Machine identifications by plantray"
# SPDX identifier -> (name, legal code URL as GBIF's IPT links it, the IPT's wording of the rights statement)
LICENSES = {
    "CC0-1.0": ("Creative Commons Zero v1.0 Universal", "http://creativecommons.org/publicdomain/zero/1.0/legalcode",
                "Public Domain (CC0 1.0)"),
    "CC-BY-4.0": ("Creative Commons Attribution 4.0 International",
                  "http://creativecommons.org/licenses/by/4.0/legalcode",
                  "Creative Commons Attribution (CC-BY) 4.0 License"),
    "CC-BY-NC-4.0": ("Creative Commons Attribution Non Commercial 4.0 International",
                     "http://creativecommons.org/licenses/by-nc/4.0/legalcode",
                     "Creative Commons Attribution Non Commercial (CC-BY-NC) 4.0 License"),
}
_EMAIL = re.compile(r"^(?P<name>.*?)\s*<(?P<email>[^<>@\s]+@[^<>@\s]+\.[^<>@\s]+)>\s*$")


@dataclass
class Person:
    """A creator or contact: a person (given and family name), optionally with an organisation and e-mail."""

    family: str | None = None
    given: str | None = None
    email: str | None = None
    organization: str | None = None


def parse_person(text: str, flag: str, organization: str | None = None) -> Person:
    """A person from ``"Given Family <email>"`` or ``"Family, Given <email>"``.

    Raises:
        ConfigError: an empty name, or angle brackets that hold no e-mail address.
    """
    text = (text or "").strip()
    email = None
    if "<" in text or ">" in text:
        match = _EMAIL.match(text)
        if match is None:
            raise ConfigError(f"{flag} {text!r}: write a person as 'Given Family' or 'Family, Given', optionally "
                              "with an e-mail address in angle brackets: 'Jane Doe <jane@example.org>'")
        text, email = match.group("name").strip(), match.group("email")
    if not text:
        raise ConfigError(f"{flag} needs a name, e.g. {flag} 'Jane Doe <jane@example.org>'")
    if "," in text:
        family, given = (p.strip() for p in text.split(",", 1))
    else:
        *first, family = text.split()
        given = " ".join(first)
    if not family:
        raise ConfigError(f"{flag} {text!r} has no family name; write 'Given Family' or 'Family, Given'")
    return Person(family, given or None, email, organization)


@dataclass
class DatasetMetadata:
    """What the user says about the exported dataset (``export dwca`` flags)."""

    title: str = DEFAULT_TITLE
    creators: list[Person] = field(default_factory=list)
    contact: Person | None = None
    license: str = "CC-BY-4.0"
    citation: str | None = None
    organization: str | None = None  # when no person is named: the organisation creates and answers

    def __post_init__(self) -> None:
        if self.license not in LICENSES:
            raise ConfigError(f"--license {self.license!r} is not one GBIF accepts; use one of "
                              f"{', '.join(LICENSES)}")
        if not (self.title or "").strip():
            raise ConfigError("--title must not be empty")


def _agent(parent: ET.Element, tag: str, person: Person | None, organization: str | None) -> None:
    el = ET.SubElement(parent, tag)
    org = (person.organization if person else None) or organization
    if person is not None:
        name = ET.SubElement(el, "individualName")
        if person.given:
            ET.SubElement(name, "givenName").text = person.given
        ET.SubElement(name, "surName").text = person.family
    if org or person is None:
        ET.SubElement(el, "organizationName").text = org or "plantray"
    if person is not None and person.email:
        ET.SubElement(el, "electronicMailAddress").text = person.email


def _para(parent: ET.Element, tag: str, text: str) -> ET.Element:
    el = ET.SubElement(parent, tag)
    ET.SubElement(el, "para").text = text
    return el


def _rights(dataset: ET.Element, license_id: str) -> None:
    name, url, title = LICENSES[license_id]
    para = ET.SubElement(ET.SubElement(dataset, "intellectualRights"), "para")
    if license_id == "CC0-1.0":
        para.text = "To the extent possible under law, the publisher has waived all rights to these data and has " \
                    "dedicated them to the "
        tail = ". Users may copy, modify, distribute and use the work, including for commercial purposes, " \
               "without restriction."
    else:
        para.text, tail = "This work is licensed under a ", "."
    link = ET.SubElement(para, "ulink", {"url": url})
    ET.SubElement(link, "citetitle").text = title
    link.tail = tail
    licensed = ET.SubElement(dataset, "licensed")
    ET.SubElement(licensed, "licenseName").text = name
    ET.SubElement(licensed, "url").text = f"https://spdx.org/licenses/{license_id}.html"
    ET.SubElement(licensed, "identifier").text = license_id


def eml_xml(meta: DatasetMetadata, abstract: str, method: str, package_id: str,
            now: dt.datetime | None = None) -> bytes:
    """The EML document of an export, as UTF-8 XML bytes.

    Args:
        meta: title, creators, contact, licence and citation.
        abstract: what the archive holds (models, counts).
        method: how the identifications were made (machine, and people's review).
        package_id: the document's ``packageId`` (also its ``alternateIdentifier``).
        now: the export's time (``pubDate`` and the GBIF ``dateStamp``).
    """
    now = now or dt.datetime.now(dt.timezone.utc)
    ET.register_namespace("eml", EML_NS)
    ET.register_namespace("xsi", XSI_NS)
    root = ET.Element(f"{{{EML_NS}}}eml", {f"{{{XSI_NS}}}schemaLocation": SCHEMA_LOCATION, "packageId": package_id,
                                          "system": "http://gbif.org", "scope": "system", XML_LANG: "en"})
    dataset = ET.SubElement(root, "dataset")
    ET.SubElement(dataset, "alternateIdentifier").text = package_id
    ET.SubElement(dataset, "title", {XML_LANG: "en"}).text = meta.title
    for person in meta.creators or [None]:
        _agent(dataset, "creator", person, meta.organization)
    _agent(dataset, "metadataProvider", meta.contact or (meta.creators or [None])[0], meta.organization)
    ET.SubElement(dataset, "pubDate").text = now.date().isoformat()
    ET.SubElement(dataset, "language").text = "en"
    _para(dataset, "abstract", abstract)
    _rights(dataset, meta.license)
    _agent(dataset, "contact", meta.contact or (meta.creators or [None])[0], meta.organization)
    methods = ET.SubElement(dataset, "methods")
    _para(ET.SubElement(methods, "methodStep"), "description", method)
    gbif = ET.SubElement(ET.SubElement(ET.SubElement(root, "additionalMetadata"), "metadata"), "gbif")
    ET.SubElement(gbif, "dateStamp").text = now.replace(microsecond=0).isoformat()
    ET.SubElement(gbif, "hierarchyLevel").text = "dataset"
    if meta.citation:
        ET.SubElement(gbif, "citation").text = meta.citation
    ET.indent(root)
    for link in root.iter("ulink"):  # mixed content: indenting would put line breaks into the licence sentence
        link.text = None
        for child in link:
            child.tail = None
    return ET.tostring(root, encoding="UTF-8", xml_declaration=True)
