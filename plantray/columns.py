"""Column names and Parquet metadata keys: the one home of every name plantray reads or writes.

README's "Output" table describes each output column.
"""

from __future__ import annotations

# Input columns plantray reads
IMAGE_URI = "image_uri"  # the image's path or URL, as the user gave it (also the output's row key)
SCIENTIFIC_NAME = "scientificName"  # the label (training, evaluation) or the prediction (output)
TAG = "tag"  # organ tag: habit, flower, leaf, bark, fruit, ...
GENUS, FAMILY, TAXON_ID = "genus", "family", "taxonID"
SCIENTIFIC_NAME_ID = "scientificNameID"  # an identifier of the name (e.g. an IPNI LSID), from the labels
ACCEPTED_NAME = "acceptedNameUsage"  # labels: the accepted name when the label's name is a synonym
# Which checklist a taxonID comes from (labels match: e.g. "GBIF Backbone Taxonomy (2023-08-28)" or "Catalogue
# of Life, version 25.10 XR"), and that checklist's DOI/URL: a database tells Backbone keys from COL XR IDs by it.
NAME_ACCORDING_TO, NAME_ACCORDING_TO_ID = "nameAccordingTo", "nameAccordingToID"
GBIF_ID = "gbifID"  # the occurrence key of GBIF downloads (also any archive's core id)
OCCURRENCE_ID = "occurrenceID"

# The image's absolute URI (file://, s3://, https://): image_uri resolved against the manifest's location, so
# a reader anywhere can open it (image_uri stays as given: it is the user's key)
IMAGE_URI_ABSOLUTE = "image_uri_absolute"

# Columns that exist only while a row is in flight; never written to outputs
SOURCE_COLUMN = "_source"  # the resolved URI to read
PIXELS = "_pixels"  # the loader's decoded view, uint8 bytes

# Prediction columns
ERROR = "error"  # null when classified, else a reason from plantray.reasons
CONFIDENCE = "confidence"
TOPK_NAMES, TOPK_CONFIDENCE = "topk_scientificName", "topk_confidence"
TAXON_RANK = "taxonRank"
# The publisher's own name of the occurrence, compared with the prediction: a Darwin Core Archive's core
# scientificName (sources.dwcameta) or a manifest's scientificName renamed as an input column.
PUBLISHER_NAMES = ("publisherScientificName", "input_scientificName")
PUBLISHER_AGREEMENT = "publisher_agreement"
SAME_SPECIES, SAME_GENUS, DIFFERENT, NO_PUBLISHER_NAME = "same species", "same genus", "different", \
    "no publisher name"
INPUT_TAXON_ID = "input_" + TAXON_ID  # the publisher's taxonID, kept apart from the predicted one
MODEL_NAME, MODEL_VERSION, MODEL_SHA256 = "model_name", "model_version", "model_sha256"
PREDICTION_COLUMNS = (SCIENTIFIC_NAME, CONFIDENCE, TOPK_NAMES, TOPK_CONFIDENCE, TAXON_RANK, GENUS, FAMILY,
                      TAXON_ID, SCIENTIFIC_NAME_ID, NAME_ACCORDING_TO, NAME_ACCORDING_TO_ID, PUBLISHER_AGREEMENT,
                      MODEL_NAME, MODEL_VERSION, MODEL_SHA256)
# Darwin Core identification terms added to every prediction (plantray.darwincore.terms)
DWC_TERMS = ("identificationID", "identifiedBy", "dateIdentified", "identificationRemarks",
             "identificationVerificationStatus", "identificationType", "kingdom", TAXON_RANK)
# Machine-identification metadata (plantray.darwincore.terms): identifiedByID and identificationReferences
# are Darwin Core terms; the method and probability are Camtrap DP's observation fields.
IDENTIFIED_BY_ID, IDENTIFICATION_REFERENCES = "identifiedByID", "identificationReferences"
CLASSIFICATION_METHOD, CLASSIFICATION_PROBABILITY = "classificationMethod", "classificationProbability"
MACHINE_TERMS = (IDENTIFIED_BY_ID, IDENTIFICATION_REFERENCES, CLASSIFICATION_METHOD, CLASSIFICATION_PROBABILITY)
# Human review (plantray review apply): after the decisions are applied, the identification columns above hold
# the record's current identification (the person's, for accepted/corrected/rejected/not-a-plant rows) and
# ``machine_<column>`` the machine's, never overwritten. ``review_*`` record the decision as the decisions file
# gave it. All are null on rows nobody reviewed (their identification columns are the machine's).
KINGDOM, IDENTIFICATION_ID, IDENTIFIED_BY, DATE_IDENTIFIED = "kingdom", "identificationID", "identifiedBy", \
    "dateIdentified"
IDENTIFICATION_REMARKS, VERIFICATION_STATUS = "identificationRemarks", "identificationVerificationStatus"
VERBATIM_IDENTIFICATION = "verbatimIdentification"  # the reviewer's name exactly as the decisions file wrote it
IDENTIFICATION_TYPE = "identificationType"
REVIEW_DECISION = "review_decision"  # one of REVIEW_DECISIONS
REVIEW_IDENTIFIED_BY, REVIEW_DATE_IDENTIFIED = "review_identifiedBy", "review_dateIdentified"
REVIEW_REMARKS = "review_identificationRemarks"
REVIEW_COLUMNS = (REVIEW_DECISION, REVIEW_IDENTIFIED_BY, REVIEW_DATE_IDENTIFIED, REVIEW_REMARKS)
ACCEPTED, CORRECTED, REJECTED, NOT_A_PLANT, UNSURE = "accepted", "corrected", "rejected", "not a plant", "unsure"
REVIEW_DECISIONS = (ACCEPTED, CORRECTED, REJECTED, NOT_A_PLANT, UNSURE)
PERSON_DECISIONS = (ACCEPTED, CORRECTED, REJECTED, NOT_A_PLANT)  # the person's identification becomes current
MACHINE_PREFIX = "machine_"
# The identification columns kept as the machine's (``machine_<column>``) on reviewed rows.
IDENTIFICATION_COLUMNS = (SCIENTIFIC_NAME, TAXON_RANK, TAXON_ID, GENUS, FAMILY, KINGDOM, SCIENTIFIC_NAME_ID,
                          NAME_ACCORDING_TO, NAME_ACCORDING_TO_ID, IDENTIFICATION_ID, IDENTIFIED_BY, IDENTIFIED_BY_ID,
                          DATE_IDENTIFIED, IDENTIFICATION_REMARKS, VERIFICATION_STATUS, IDENTIFICATION_REFERENCES,
                          CLASSIFICATION_METHOD, CLASSIFICATION_PROBABILITY)
MACHINE_COLUMNS = tuple(MACHINE_PREFIX + c for c in IDENTIFICATION_COLUMNS)
# Values (Camtrap DP's classificationMethod; its Darwin Core conversion's status of a person's classification)
HUMAN, MACHINE = "human", "machine"
VERIFIED, UNVERIFIED = "verified using recorded media", "unverified"

# Output columns an input column must not shadow: such input columns are renamed ``input_<name>``.
RESERVED_COLUMNS = frozenset({*PREDICTION_COLUMNS, *DWC_TERMS, *MACHINE_TERMS, ERROR, IMAGE_URI_ABSOLUTE,
                              *REVIEW_COLUMNS, *MACHINE_COLUMNS, VERBATIM_IDENTIFICATION})

# The embeddings dataset (--embeddings): keyed like the predictions, one row per decoded image
EMBEDDING = "embedding"  # fixed_size_list<float16>[feature size]: the input of the classifier head

# Calibration columns of evaluate's per-image rows (the calibrated top-1 is topk_confidence[0]); the
# ``uncalibrated_`` ones are the same from the raw softmax (temperature 1), so one run reports both.
TRUE_PROBABILITY = "true_probability"  # the probability given to the image's true species
BRIER = "brier"  # sum over classes of (p_c - 1[c = true])^2
UNCALIBRATED_CONFIDENCE = "uncalibrated_confidence"
UNCALIBRATED_TRUE_PROBABILITY, UNCALIBRATED_BRIER = "uncalibrated_true_probability", "uncalibrated_brier"
# Columns of calibrate's rows (never written: streamed to the driver's temperature fit)
LABEL_INDEX, LOGITS = "label_index", "logits"
# Nightly table columns: the run and the chunk of it whose commit holds the row (plantray.storage.table)
RUN_ID, RUN_CHUNK = "run_id", "run_chunk"

# Parquet file metadata keys
CARD_METADATA_KEY = b"plantray.model_card"
PRECISION_METADATA_KEY = b"plantray.precision"  # what --precision auto resolved to on the actor's node
CALIBRATION_METADATA_KEY = b"plantray.calibration"  # the card's calibration, or {"method": "none"}

# Location priors (plantray.inference.prior): the input's region, and which prior each prediction got
COUNTRY_CODE, STATE_PROVINCE = "countryCode", "stateProvince"  # ISO 3166-1 alpha-2; optional refinement
PRIOR = "prior"  # restrict / reweight (applied), "no location", "region not covered"; null without --prior
PRIOR_TOPK_NAMES = "prior_" + TOPK_NAMES  # evaluate: the ranking with the prior, beside the one without
PRIOR_METADATA_KEY = b"plantray.prior"  # JSON: mode, floor, checklist, region column, countries, matches
RESERVED_COLUMNS = RESERVED_COLUMNS | {PRIOR}
MIN_CONFIDENCE_METADATA_KEY = b"plantray.min_confidence"  # --min-confidence of the run (0.0 = off)
REVIEW_MANIFEST_METADATA_KEY = b"plantray.review_manifest"  # a training manifest written by review apply
