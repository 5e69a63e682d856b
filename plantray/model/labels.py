"""The ordered label set of a model (``labels.csv``)."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field

from plantray import storage
from plantray.config import ConfigError

# Older label files have a prefix of these columns (or only scientificName); every column but the name is optional.
LABEL_COLUMNS = ("scientificName", "genus", "family", "taxonID", "train_images", "scientificNameID",
                 "acceptedNameUsage", "nameAccordingTo", "nameAccordingToID")


@dataclass
class Labels:
    """The ordered label set of a model; index i is output logit i."""

    names: list[str]
    genus: list[str | None] = field(default_factory=list)
    family: list[str | None] = field(default_factory=list)
    taxon_id: list[str | None] = field(default_factory=list)
    train_images: list[int | None] = field(default_factory=list)
    scientific_name_id: list[str | None] = field(default_factory=list)
    accepted_name: list[str | None] = field(default_factory=list)
    # The checklist each taxonID comes from (labels match): e.g. "Catalogue of Life, version 25.10 XR" and its DOI
    name_according_to: list[str | None] = field(default_factory=list)
    name_according_to_id: list[str | None] = field(default_factory=list)

    def __post_init__(self):
        n = len(self.names)
        for name in ("genus", "family", "taxon_id", "train_images", "scientific_name_id", "accepted_name",
                     "name_according_to", "name_according_to_id"):
            if not getattr(self, name):
                setattr(self, name, [None] * n)

    def __len__(self) -> int:
        return len(self.names)

    @property
    def has_genus(self) -> bool:
        return any(self.genus)

    @property
    def has_family(self) -> bool:
        return any(self.family)

    @property
    def has_taxon_ids(self) -> bool:
        return any(self.taxon_id)

    def taxonomy(self) -> dict | None:
        """The checklists the labels' taxonIDs come from (the model card's ``taxonomy``), None when unknown:
        ``{"nameAccordingTo": [...], "nameAccordingToID": [...], "labels_with_taxonID": n}``."""
        sources = sorted({s for s in self.name_according_to if s})
        if not sources:
            return None
        return {"nameAccordingTo": sources, "nameAccordingToID": sorted({s for s in self.name_according_to_id if s}),
                "labels_with_taxonID": sum(1 for t in self.taxon_id if t)}

    @property
    def has_counts(self) -> bool:
        return all(c is not None for c in self.train_images)

    def to_csv(self) -> str:
        """CSV text with the standard columns."""
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(LABEL_COLUMNS)
        for row in zip(self.names, self.genus, self.family, self.taxon_id, self.train_images,
                       self.scientific_name_id, self.accepted_name, self.name_according_to,
                       self.name_according_to_id):
            writer.writerow(["" if v is None else v for v in row])
        return buf.getvalue()


def _none(value: str | None) -> str | None:
    return value.strip() or None if value is not None else None


def _delimiter(header: str) -> str | None:
    """The labels table's delimiter from its header line: tab, comma, or None for a plain list of names."""
    if "\t" in header:
        return "\t"
    if "," in header or header.strip() == "scientificName":
        return ","
    return None


def parse_labels(text: str, source: str = "labels") -> Labels:
    """Parses a labels table (``scientificName`` column, optional genus/family/taxonID/train_images/
    scientificNameID/acceptedNameUsage), comma- or tab-separated (told by the header line), or a plain text
    file with one scientific name per line.

    Raises:
        ConfigError: no labels, duplicates, or a table without ``scientificName``.
    """
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise ConfigError(f"{source}: no labels found; give a CSV with a scientificName column or one name per line")
    delimiter = _delimiter(lines[0])
    if delimiter:
        reader = csv.DictReader(io.StringIO(text.lstrip("\r\n")), delimiter=delimiter)
        if "scientificName" not in (reader.fieldnames or []):
            kind = "tab-separated table" if delimiter == "\t" else "CSV"
            raise ConfigError(f"{source}: {kind} has no 'scientificName' column (header: {lines[0]!r})")
        rows = [r for r in reader if any((v or "").strip() for v in r.values() if isinstance(v, str))]
        names = [(r["scientificName"] or "").strip() for r in rows]
        counts = [int(r["train_images"]) if _none(r.get("train_images")) else None for r in rows]
        text_col = {c: [_none(r.get(c)) for r in rows] for c in LABEL_COLUMNS if c != "train_images"}
        labels = Labels(names, text_col["genus"], text_col["family"], text_col["taxonID"], counts,
                        text_col["scientificNameID"], text_col["acceptedNameUsage"], text_col["nameAccordingTo"],
                        text_col["nameAccordingToID"])
    else:
        labels = Labels([ln.strip() for ln in lines])
    dupes = {n for n in labels.names if labels.names.count(n) > 1}
    if dupes:
        raise ConfigError(f"{source}: duplicate labels {sorted(dupes)[:5]}; each scientificName must appear once")
    if any(not n for n in labels.names):
        raise ConfigError(f"{source}: empty scientificName in labels")
    return labels


def read_labels(uri: str) -> Labels:
    """Reads labels from a local path or object-storage URI (see :func:`parse_labels`)."""
    try:
        text = storage.read_bytes(uri).decode("utf-8-sig")
    except FileNotFoundError:
        raise ConfigError(f"labels {uri!r} not found; pass --labels with a CSV or text file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"labels {uri!r} is not UTF-8 text; save it as UTF-8 CSV") from None
    return parse_labels(text, uri)
