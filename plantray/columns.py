"""Column names and Parquet metadata keys: the one home of every name plantray reads or writes."""

from __future__ import annotations

# Columns plantray adds while a row is in flight; never written to outputs.
SOURCE_COLUMN = "_source"
IMAGE_URI = "image_uri"
PIXELS, ERROR = "_pixels", "error"
# Output columns an input column must not shadow: such input columns are renamed ``input_<name>``.
RESERVED_COLUMNS = frozenset({
    "scientificName", "confidence", "topk_scientificName", "topk_confidence", "genus", "family",
    "identifiedBy", "dateIdentified", "identificationVerificationStatus", "model_name", "model_version",
    "model_sha256", ERROR, "taxonRank", "identificationID", "identificationRemarks", "identificationType",
    "kingdom"})
CARD_METADATA_KEY = b"plantray.model_card"
PRECISION_METADATA_KEY = b"plantray.precision"  # what --precision auto resolved to on the actor's node
DWC_TERMS = ("identificationID", "identifiedBy", "dateIdentified", "identificationRemarks",
             "identificationVerificationStatus", "identificationType", "kingdom", "taxonRank")
