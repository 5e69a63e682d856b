"""The review site's files: page data as ASCII JavaScript, thumbnails beside it, the site key, DIR claims."""

from __future__ import annotations

import json
import os
import re

import pyarrow as pa
import pytest

from plantray.config import ConfigError
from plantray.review.site import SiteWriter, prepare, site_key, write_assets

ODD = "Quercus \u2028robur \u2029</script><!-- \"x\" \\ \U0001F331 é"


def batch(n: int, start: int = 0) -> pa.Table:
    cards = [json.dumps({"key": f"k{i}", "kind": "species", "name": ODD, "topk": [[ODD, 0.5]],
                         "images": [{"uri": f"{i}.jpg", "source": f"/x/{i}.jpg"}]}) for i in range(start, start + n)]
    thumbs = [[b"\xff\xd8jpeg" if i % 2 == 0 else None] for i in range(start, start + n)]
    errors = [[None if i % 2 == 0 else "not found"] for i in range(start, start + n)]
    return pa.table({"card": cards, "_thumbs": pa.array(thumbs, pa.list_(pa.binary())),
                     "_thumb_errors": pa.array(errors, pa.list_(pa.string()))})


def test_pages_are_ascii_javascript_holding_the_cards_exactly(tmp_path):
    writer = SiteWriter(str(tmp_path), page_rows=3)
    writer.add(batch(3))
    writer.add(batch(2, start=3))
    counts = writer.finish({"title": ODD}, labels=[ODD, "Rosa canina"])
    assert counts["cards"] == 5 and counts["pages"] == 2 and counts["thumbnails"] == 3
    assert counts["thumbnails_failed"] == {"not found": 2}
    cards = []
    for n in range(2):
        raw = (tmp_path / "data" / f"page-{n:06d}.js").read_bytes()
        assert raw.isascii() and not set(b"<>&") & set(raw)  # every odd character escaped
        match = re.fullmatch(r"PlantrayReview\.page\((\d+),(.*)\);\n", raw.decode("ascii"), re.S)
        assert int(match.group(1)) == n
        cards += json.loads(match.group(2))
    assert [c["n"] for c in cards] == list(range(5)) and all(c["name"] == ODD for c in cards)
    assert all("source" not in c["images"][0] for c in cards)  # the resolved path is not shown
    assert cards[0]["images"][0]["thumb"] == "thumbs/000000/000000-0.jpg"
    assert (tmp_path / "thumbs" / "000000" / "000000-0.jpg").read_bytes() == b"\xff\xd8jpeg"
    assert cards[1]["images"][0]["thumbError"] == "not found"
    site = (tmp_path / "data" / "site.js").read_text("ascii")
    info = json.loads(re.fullmatch(r"PlantrayReview\.site\((.*)\);\n", site, re.S).group(1))
    assert info["title"] == ODD and info["cards"] == 5 and info["species"] == [[ODD, 5]]


def test_assets_are_copied(tmp_path):
    write_assets(str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ["decisions.js", "index.html", "review.css", "review.js"]
    html = (tmp_path / "index.html").read_text()
    assert 'src="data/site.js"' in html and "Content-Security-Policy" in html and "http" not in html.split(
        "Content-Security-Policy")[1].split(">")[0]  # nothing from the network


def test_site_key_is_one_per_predictions_and_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert site_key("preds", "review") == site_key(str(tmp_path / "preds"), str(tmp_path / "review") + "/")
    assert site_key("preds", "review") != site_key("preds", "review2")
    assert re.fullmatch(r"[0-9a-f]{16}", site_key("s3://b/preds", "s3://b/site"))


def test_dir_is_claimed_only_when_empty_or_an_earlier_site(tmp_path):
    out = tmp_path / "site"
    prepare(str(out), False, "preds", "2025-01-01T00:00:00Z")
    assert os.listdir(out) == ["_plantray_review.json"]
    (out / "data").mkdir()
    (out / "data" / "site.js").write_text("x")
    with pytest.raises(ConfigError, match="--overwrite"):
        prepare(str(out), False, "preds", "2025-01-01T00:00:00Z")
    (out / "mine.txt").write_text("not the site's")
    prepare(str(out), True, "preds", "2025-01-01T00:00:00Z")
    assert sorted(os.listdir(out)) == ["_plantray_review.json", "mine.txt"]  # only its own files went
    other = tmp_path / "other"
    other.mkdir()
    (other / "x").write_text("x")
    with pytest.raises(ConfigError, match="not a plantray review site"):
        prepare(str(other), True, "preds", "2025-01-01T00:00:00Z")
