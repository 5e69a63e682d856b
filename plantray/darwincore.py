"""Darwin Core terms for machine identifications, and per-occurrence aggregation of image predictions.

Predictions become Darwin Core Identification-class terms (``identificationID``, ``identifiedBy``,
``dateIdentified``, ``identificationRemarks``, ``identificationVerificationStatus``, ``taxonRank``, ...).
Darwin Core has no confidence term, so the model's confidence travels in ``identificationRemarks`` (and in
the plain ``confidence`` column). ``basisOfRecord`` is never set: it describes the occurrence, not ours.
"""

from __future__ import annotations

import math
import uuid

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

# Fixed namespace so identification IDs are stable across runs, machines and versions of this code.
ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/plantray/plantray/identification")


def _group_sums(probs: np.ndarray, groups: list[str | None]) -> tuple[np.ndarray, list[str]]:
    """Sums class probabilities per group (genus or family); labels without a group are skipped.

    Returns (sums [B, G], group names [G]); G is 0 when no label has a group.
    """
    names = sorted({g for g in groups if g})
    if not names:
        return np.zeros((probs.shape[0], 0), probs.dtype), []
    index = {g: i for i, g in enumerate(names)}
    cols = np.array([c for c, g in enumerate(groups) if g])
    gid = np.array([index[groups[c]] for c in cols])
    order = np.argsort(gid, kind="stable")
    # reduceat over contiguous runs of each group: O(B*C), no dense C x G matrix for 10k-class models.
    starts = np.flatnonzero(np.r_[True, np.diff(gid[order]) != 0])
    return np.add.reduceat(probs[:, cols[order]], starts, axis=1), names


def _best(probs: np.ndarray, names: list[str]) -> tuple[list[str], np.ndarray]:
    best = probs.argmax(axis=1)
    return [names[i] for i in best], probs[np.arange(len(best)), best]


def _check_rollup_args(probs: np.ndarray, species, genus, family, threshold: float) -> None:
    if probs.ndim != 2:
        raise ValueError(f"probs has shape {probs.shape}: expected [batch, classes]")
    for name, labels in (("species", species), ("genus", genus), ("family", family)):
        if len(labels) != probs.shape[1]:
            raise ValueError(f"{name} has {len(labels)} labels but probs has {probs.shape[1]} classes: "
                             "pass one entry (or None) per class")
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold={threshold!r} is invalid: use a probability in [0, 1]")


def rollup(probs: np.ndarray, genus: list[str | None], family: list[str | None], threshold: float, *,
           species: list[str]) -> tuple[list[str], list[str], np.ndarray]:
    """Reports each image at the most specific rank whose probability clears ``threshold``.

    Rule, per image:

    1. the top species if its probability >= threshold (rank "species");
    2. else the genus with the largest summed probability of its species, if that sum >= threshold ("genus");
    3. else likewise the family ("family");
    4. else nothing clears it: the best-supported name at the coarsest rank available (family, or genus when
       no label has a family, or species), with its below-threshold confidence so readers can filter.
       The coarsest rank is the one most likely to be right when the model is unsure.

    Labels whose genus/family is None are skipped at that level (they still count as species).

    Args:
        probs: [B, C] class probabilities (softmax output).
        genus: genus name per class, or None.
        family: family name per class, or None.
        threshold: probability a name must reach, in [0, 1].
        species: scientific name per class.

    Returns:
        (names, ranks, confidence): reported name, its taxonRank and its (summed) probability, per image.
    """
    probs = np.asarray(probs)
    _check_rollup_args(probs, species, genus, family, threshold)
    names, conf = _best(probs, list(species))
    conf = conf.astype(np.float64)
    ranks = ["species"] * len(names)
    levels = []  # (rank, best name per image, its summed probability), finer ranks first
    for rank, groups in (("genus", genus), ("family", family)):
        sums, group_names = _group_sums(probs, groups)
        if group_names:
            levels.append((rank, *_best(sums, group_names)))
    for row in np.flatnonzero(conf < threshold):
        cleared = [lv for lv in levels if lv[2][row] >= threshold]
        choice = cleared[0] if cleared else (levels[-1] if levels else None)
        if choice is not None:
            rank, level_names, level_conf = choice
            names[row], ranks[row], conf[row] = level_names[row], rank, float(level_conf[row])
    return names, ranks, conf


def identification_id(model_sha256: str, image_uri: str) -> str:
    """A deterministic identificationID for one model's identification of one image.

    Args:
        model_sha256: hex digest of the model weights.
        image_uri: the image's URI.

    Returns:
        A UUIDv5 string; the same inputs always give the same ID, so reruns update rather than duplicate.
    """
    return str(uuid.uuid5(ID_NAMESPACE, f"{model_sha256}\n{image_uri}"))


def identification_remarks(confidence: float, rank: str, model_name: str, model_version: str) -> str:
    """Human-readable remarks carrying what Darwin Core has no term for (the confidence).

    Args:
        confidence: probability of the reported name.
        rank: reported taxonRank.
        model_name: e.g. "resnet50".
        model_version: e.g. "v3".

    Returns:
        e.g. ``"machine identification by plantray resnet50 v3 (confidence 0.873, rank genus)"``.
    """
    return (f"machine identification by {_display_name(model_name)} {model_version} "
            f"(confidence {confidence:.3f}, rank {rank})")


def _display_name(model_name: str) -> str:
    # Cards name models "plantray-resnet50"; bare names ("resnet50") get the project prefix.
    return model_name if model_name.startswith("plantray") else f"plantray {model_name}"


def _failed(error) -> bool:
    if error is None:
        return False
    if isinstance(error, float) and math.isnan(error):
        return False
    return bool(error)


def _model_terms(model_card: dict) -> tuple[str, str, str]:
    """(name, version, weights SHA-256) from a card: ``weights.sha256`` (model.py's cards) or ``sha256``."""
    sha = model_card.get("sha256") or (model_card.get("weights") or {}).get("sha256")
    missing = [k for k, v in (("name", model_card.get("name")), ("version", model_card.get("version")),
                              ("weights.sha256", sha)) if not v]
    if missing:
        raise ValueError(f"model_card lacks {missing}: it needs 'name', 'version' and 'weights.sha256'")
    return str(model_card["name"]), str(model_card["version"]), str(sha)


def dwc_columns(batch: dict[str, np.ndarray], model_card: dict, now_iso: str) -> dict[str, np.ndarray]:
    """Adds Darwin Core identification terms to a predictions batch.

    Rows with an ``error`` keep ``identificationID`` and ``identifiedBy`` (the attempt is identifiable) and
    get None for the other added terms. ``taxonRank`` is taken from the batch when the classifier already
    rolled predictions up (see :func:`rollup`), else "species".

    Args:
        batch: columns ``image_uri``, ``scientificName``, ``confidence``, ``error`` (None/"" when fine),
            optionally ``taxonRank``.
        model_card: the model card (``name``, ``version``, ``weights.sha256``; see :mod:`plantray.model`).
        now_iso: ISO 8601 timestamp for ``dateIdentified`` (one per job, so a run is consistent).

    Returns:
        The batch with the added columns (object arrays with None for nulls).
    """
    name, version, sha = _model_terms(model_card)
    uris = batch["image_uri"]
    failed = np.array([_failed(e) for e in batch["error"]], dtype=bool)
    ranks = batch.get("taxonRank", np.full(len(uris), "species", dtype=object))
    by = f"{_display_name(name)} {version} (sha256:{sha[:12]})"  # same form as model.Artifact.identified_by

    def per_row(value_fn) -> np.ndarray:
        return np.array([None if failed[i] else value_fn(i) for i in range(len(uris))], dtype=object)

    out = dict(batch)
    out["identificationID"] = np.array([identification_id(sha, str(u)) for u in uris], dtype=object)
    out["identifiedBy"] = np.full(len(uris), by, dtype=object)
    out["dateIdentified"] = per_row(lambda i: now_iso)
    out["identificationRemarks"] = per_row(
        lambda i: identification_remarks(float(batch["confidence"][i]), str(ranks[i]), name, version))
    out["identificationVerificationStatus"] = per_row(lambda i: "unverified")
    out["identificationType"] = per_row(lambda i: "media")
    out["kingdom"] = per_row(lambda i: "Plantae")
    out["taxonRank"] = per_row(lambda i: str(ranks[i]))
    return out


def _occurrence_schema(key_type: pa.DataType, key: str) -> pa.Schema:
    return pa.schema([(key, key_type), ("topk_scientificName", pa.list_(pa.string())),
                      ("topk_confidence", pa.list_(pa.float64())), ("scientificName", pa.string()),
                      ("confidence", pa.float64()), ("images_used", pa.int64()),
                      ("images_failed", pa.int64())])


def mean_topk(names_per_image: list[list[str]], confs_per_image: list[list[float]], top_k: int
              ) -> tuple[list[str], list[float]]:
    """Top-k of the mean class probability over images, from each image's top-k.

    A class missing from an image's top-k counts as probability 0 for that image: an approximation that
    slightly underestimates every class (by at most the image's k-th probability).

    Args:
        names_per_image: each image's top-k names.
        confs_per_image: each image's top-k probabilities.
        top_k: how many classes to keep.

    Returns:
        (names, mean probabilities), best first; ties broken by name for determinism.
    """
    totals: dict[str, float] = {}
    for names, confs in zip(names_per_image, confs_per_image):
        for n, c in zip(names, confs):
            totals[n] = totals.get(n, 0.0) + float(c)
    count = len(names_per_image)
    ranked = sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))[:top_k]
    return [n for n, _ in ranked], [t / count for _, t in ranked]


def _aggregate_group(group: pa.Table, key: str, top_k: int, schema: pa.Schema) -> pa.Table:
    """map_groups function: one occurrence's image predictions -> one occurrence row."""
    errors = group.column("error").to_pylist()
    ok = [i for i, e in enumerate(errors) if not _failed(e)]
    names_col = group.column("topk_scientificName").to_pylist()
    confs_col = group.column("topk_confidence").to_pylist()
    names, confs = mean_topk([names_col[i] or [] for i in ok], [confs_col[i] or [] for i in ok], top_k)
    row = {key: [group.column(key)[0].as_py()], "topk_scientificName": [names], "topk_confidence": [confs],
           "scientificName": [names[0] if names else None], "confidence": [confs[0] if confs else None],
           "images_used": [len(ok)], "images_failed": [len(errors) - len(ok)]}
    return pa.Table.from_pydict(row, schema=schema)


def _has_files(uri: str) -> bool:
    fs, path = fsspec.core.url_to_fs(uri)
    return fs.exists(path) and bool(fs.ls(path))


def _write_empty(uri: str, schema: pa.Schema) -> None:
    fs, path = fsspec.core.url_to_fs(uri)
    fs.makedirs(path, exist_ok=True)
    with fs.open(f"{path.rstrip('/')}/part-empty.parquet", "wb") as f:
        pq.write_table(schema.empty_table(), f)


def aggregate_occurrences(predictions_path: str, out_path: str, top_k: int = 5, key: str = "gbifID") -> dict:
    """Combines per-image predictions into one identification per occurrence, with Ray Data.

    Each occurrence's probabilities are the mean over its successfully classified images, computed from
    their top-k (see :func:`mean_topk`). Runs as a distributed groupby, so it scales past driver memory
    (each single occurrence's images must fit in a worker, which they always do).

    Args:
        predictions_path: Parquet dataset with columns ``key``, ``topk_scientificName``,
            ``topk_confidence`` and ``error``.
        out_path: where to write the occurrence Parquet dataset.
        top_k: classes kept per occurrence.
        key: occurrence key column.

    Returns:
        ``{"occurrences": ..., "images_used": ..., "images_failed": ...}``.
    """
    import ray

    if top_k < 1:
        raise ValueError(f"top_k={top_k!r} is invalid: use 1 or more")
    columns = [key, "topk_scientificName", "topk_confidence", "error"]
    ds = ray.data.read_parquet(predictions_path)
    schema_in = ds.schema()
    missing = [c for c in columns if c not in schema_in.names]
    if missing:
        raise ValueError(f"{predictions_path} lacks columns {missing}: aggregation needs {columns} "
                         "(pass key= to name the occurrence key column)")
    key_type = schema_in.types[schema_in.names.index(key)]
    ds = ds.select_columns(columns)
    schema = _occurrence_schema(key_type, key)
    kwargs = {"key": key, "top_k": top_k, "schema": schema}
    grouped = ds.groupby(key).map_groups(_aggregate_group, batch_format="pyarrow", fn_kwargs=kwargs)
    grouped.write_parquet(out_path)
    if not _has_files(out_path):  # no predictions: still leave a readable, empty table with the schema
        _write_empty(out_path, schema)
        return {"occurrences": 0, "images_used": 0, "images_failed": 0}
    # Counting re-reads two small columns of the output rather than holding anything on the driver.
    written = ray.data.read_parquet(out_path, columns=["images_used", "images_failed"])
    occurrences = written.count()
    totals = written.sum(["images_used", "images_failed"]) if occurrences else {}
    return {"occurrences": occurrences, "images_used": int(totals.get("sum(images_used)") or 0),
            "images_failed": int(totals.get("sum(images_failed)") or 0)}
