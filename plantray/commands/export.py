"""``plantray export dwca``: predictions as a Darwin Core Archive (Identification History)."""

from __future__ import annotations

import datetime as dt
import json
import os
import zipfile
from dataclasses import dataclass

from plantray import storage
from plantray.config import field, to_json
from plantray.darwincore.archive import (
    OCCURRENCE_TERMS,
    _columns,
    _write_core,
    _write_identifications,
    eml_xml,
    meta_xml,
)


@dataclass
class ExportConfig:
    """Settings of ``plantray export dwca``."""

    predictions: str = field("", positional=True, help="predictions Parquet dataset (plantray classify OUTPUT)")
    out: str = field("", positional=True, help="Darwin Core Archive to write (.zip; local or s3://...)")
    overwrite: bool = field(False, help="replace OUT if it exists")


def export_dwca(cfg: ExportConfig) -> dict:
    """Writes the Darwin Core Archive; returns a summary (also written to ``OUT.json``).

    Args:
        cfg: predictions dataset and output archive.

    Returns:
        ``{"out", "occurrences", "identifications", "skipped_errors"}``.

    Raises:
        ConfigError: OUT exists (without ``overwrite``) or is not a .zip; predictions missing or lacking
            the columns an archive needs.
    """
    dataset, key = _columns(cfg)
    core_terms = [t for t in OCCURRENCE_TERMS if t != key and t in dataset.schema.names]
    fs, path = storage.get_fs(cfg.out)
    if storage.scheme(cfg.out) == "file":
        os.makedirs(os.path.dirname(path), exist_ok=True)
    with fs.open(path, "wb") as raw, zipfile.ZipFile(raw, "w", zipfile.ZIP_DEFLATED) as zf:
        occurrences, failed = _write_core(zf, dataset, key, core_terms)
        identifications, models = _write_identifications(zf, dataset, key)
        summary = {"out": cfg.out, "occurrences": occurrences, "identifications": identifications,
                   "skipped_errors": failed}
        zf.writestr("meta.xml", meta_xml(key, core_terms))
        zf.writestr("eml.xml", eml_xml(models, summary, dt.date.today().isoformat()))
    storage.write_bytes(cfg.out + ".json", json.dumps({"config": json.loads(to_json(cfg)), "summary": summary},
                                                  indent=2).encode())
    return summary


CONFIG = ExportConfig
run = export_dwca
