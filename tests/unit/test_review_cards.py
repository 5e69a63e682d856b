"""Cards of predictions a person already decided (``review apply``'s OUTPUT): the machine's prediction, keyed by
its identificationID, with the person's decision beside it."""

from __future__ import annotations

import json

import pyarrow as pa

from plantray.review.cards import CardOptions, image_cards


def applied_rows() -> list[dict]:
    """Three rows as review apply writes them: corrected, rejected, and one nobody decided."""
    base = {"image_uri": "imgs/x.jpg", "confidence": 0.8, "topk_scientificName": ["Rosa canina", "Rosa arvensis"],
            "topk_confidence": [0.8, 0.1], "error": None}
    return [
        {**base, "identificationID": "person-1", "machine_identificationID": "m-1",
         "scientificName": "Rosa arvensis", "machine_scientificName": "Rosa canina",
         "taxonRank": "species", "machine_taxonRank": "species", "identifiedBy": "Ana", "machine_identifiedBy": "model",
         "review_decision": "corrected", "review_identifiedBy": "Ana", "review_dateIdentified": "2026-05-01",
         "review_identificationRemarks": "hips, not leaves"},
        {**base, "identificationID": "person-2", "machine_identificationID": "m-2",
         "scientificName": None, "machine_scientificName": "Rosa canina",
         "taxonRank": None, "machine_taxonRank": "species", "identifiedBy": "Bo", "machine_identifiedBy": "model",
         "review_decision": "rejected", "review_identifiedBy": "Bo", "review_dateIdentified": "2026-05-02T10:00:00Z",
         "review_identificationRemarks": None},
        {**base, "identificationID": "m-3", "machine_identificationID": None,
         "scientificName": "Rosa canina", "machine_scientificName": None,
         "taxonRank": "species", "machine_taxonRank": None, "identifiedBy": "model", "machine_identifiedBy": None,
         "review_decision": None, "review_identifiedBy": None, "review_dateIdentified": None,
         "review_identificationRemarks": None},
    ]


def test_decided_rows_show_the_machine_and_the_person():
    cards = image_cards(pa.Table.from_pylist(applied_rows()), CardOptions(order="input"))
    shown = [json.loads(c) for c in cards.column("card").to_pylist()]
    # keyed by the machine's identification, so new decisions apply to classify's OUTPUT and the applied one
    assert cards.column("key").to_pylist() == ["m-1", "m-2", "m-3"]
    assert cards.column("ids").to_pylist() == [["m-1"], ["m-2"], ["m-3"]]
    # the model's name beside its top names (a rejected row is not shown as a withheld one)
    assert [c.get("name") for c in shown] == ["Rosa canina"] * 3
    assert cards.column("kind").to_pylist() == ["species"] * 3
    assert shown[0]["reviewed"] == {"decision": "corrected", "scientificName": "Rosa arvensis", "identifiedBy": "Ana",
                                    "dateIdentified": "2026-05-01", "remarks": "hips, not leaves"}
    assert shown[1]["reviewed"] == {"decision": "rejected", "scientificName": "", "identifiedBy": "Bo",
                                    "dateIdentified": "2026-05-02T10:00:00Z", "remarks": ""}
    assert "reviewed" not in shown[2]


def test_predictions_nobody_reviewed_have_no_review():
    rows = [{k: v for k, v in r.items() if not k.startswith(("machine_", "review_"))} for r in applied_rows()]
    cards = image_cards(pa.Table.from_pylist(rows), CardOptions(order="input"))
    shown = [json.loads(c) for c in cards.column("card").to_pylist()]
    assert cards.column("key").to_pylist() == ["person-1", "person-2", "m-3"]
    assert all("reviewed" not in c for c in shown)
