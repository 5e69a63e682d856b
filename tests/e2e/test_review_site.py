"""The review site in a real browser: Debian's headless Chromium driven by Playwright, pages opened over file://.

A site is built with the CLI from real classify output; the tests check the cards against the Parquet rows, make
decisions with the keyboard, reload, restart the browser, export the decisions file and check every row against
what they did. The hostile-data test builds a site from rows full of markup and script URLs and checks that
nothing runs and every string shows as text.
"""

from __future__ import annotations

import csv
import datetime as dt
import functools
import http.server
import io
import os
import subprocess
import sys
import threading
import time
from urllib.parse import quote

import pytest
import requests

from plantray.cli import main
from tests.conftest import free_port
from tests.helpers import SPECIES, jpeg_bytes, write
from tests.review_browser import dom_cards, open_site
from tests.review_data import CHROMIUM, CHROMIUM_ARGS, classified, prediction_row, read_rows, write_predictions

pytestmark = pytest.mark.browser
HEADER = ["identificationID", "decision", "scientificName", "identifiedBy", "dateIdentified",
          "identificationRemarks"]


@pytest.fixture(scope="module")
def predictions(ray_session, tmp_path_factory):
    return classified(str(tmp_path_factory.mktemp("review")))


@pytest.fixture(scope="module")
def site(predictions, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("site") / "review")
    # --page-rows 4: three data files, so the page shows the first while the others load behind it
    assert main(["review", "build", predictions["predictions"], "--out", out, "--order", "confidence",
                 "--page-rows", "4"]) == 0
    return out


def test_cards_show_the_predictions_in_order(browser, site, predictions):
    rows = read_rows(predictions["predictions"])
    # --order confidence: least confident first, failed rows last
    expected = sorted(rows, key=lambda r: (r["error"] is not None, r["confidence"] if r["error"] is None else 0,
                                           r["identificationID"]))
    page = open_site(browser, site, len(rows))
    page.wait_for_function("() => Array.from(document.images).every(i => i.complete)")
    shown = dom_cards(page)
    assert [c["key"] for c in shown] == [r["identificationID"] for r in expected]
    images = {os.path.relpath(p, os.path.dirname(predictions["images"][0])): p for p in predictions["images"]}
    for card, row in zip(shown, expected):
        assert card["meta"].count(f"gbifID {row['gbifID']}") == 1
        if row["error"]:  # the missing image: a card with the reason, linking where the image should be
            assert card["noPicture"] == f"No picture: {row['error']}" and row["error"] in card["meta"]
            missing = os.path.join(os.path.dirname(predictions["images"][0]), "missing.jpg")
            assert card["resolved"] == ["file://" + quote(missing)]
            continue
        assert card["name"] == row["scientificName"] and card["topk"] == row["topk_scientificName"]
        assert abs(float(card["conf"].rstrip("%")) - 100 * row["confidence"]) <= 0.5 + 1e-9  # whole percents
        assert card["publisher"] == row["input_scientificName"] and card["agreement"] == row["publisher_agreement"]
        assert card["rights"] == [f"{row['license']} · © {row['rightsHolder']}"]
        # The full image: a relative link from the site to the original file
        image = images[os.path.basename(row["image_uri"])]
        assert card["links"][0].startswith("../") and card["resolved"] == ["file://" + quote(image)]
        width, height = card["thumbs"][0]
        assert 0 < max(width, height) <= 256
        if image == predictions["images"][0]:  # stored 80 x 40 with EXIF orientation 6: upright it stands
            assert (width, height) == (40, 80)
    assert page.dialogs == [] and page.errors == []


def _card(page, key: str) -> dict:
    return next(c for c in dom_cards(page) if c["key"] == key)


def test_keyboard_decisions_survive_reload_restart_and_export(playwright, site, predictions, tmp_path):
    rows = read_rows(predictions["predictions"])
    by_id = {r["identificationID"]: r for r in rows}
    profile = str(tmp_path / "profile")
    context = playwright.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                                            accept_downloads=True)
    page = open_site(context, site, len(rows))
    keys = [c["key"] for c in dom_cards(page)]
    assert all(by_id[k]["error"] is None for k in keys[:7])
    # No reviewer yet: a decision is refused with a message, and nothing is recorded
    page.keyboard.press("a")
    assert "Type your name" in page.text_content("#alerts") and _card(page, keys[0])["state"] == ""
    page.fill("#reviewer", "Ada Lovelace")
    page.press("#reviewer", "Enter")
    started = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)

    wanted = {}
    page.keyboard.press("a")  # accept the machine's name
    wanted[keys[0]] = ("accepted", by_id[keys[0]]["scientificName"], "")
    page.keyboard.press("2")  # the second of the top names
    wanted[keys[1]] = ("corrected", by_id[keys[1]]["topk_scientificName"][1], "")
    typed = next(s for s in SPECIES if s != by_id[keys[2]]["scientificName"])
    page.keyboard.press("c")  # type a name
    page.keyboard.type(typed)
    page.keyboard.press("Enter")
    wanted[keys[2]] = ("corrected", typed, "")
    page.keyboard.press("r")
    wanted[keys[3]] = ("rejected", "", "")
    page.keyboard.press("n")
    wanted[keys[4]] = ("not a plant", "", "")
    page.keyboard.press("e")  # a remark with a comma and quotes, then unsure
    page.keyboard.type('leaf only, "juvenile"?')
    page.keyboard.press("Enter")
    page.keyboard.press("u")
    wanted[keys[5]] = ("unsure", "", 'leaf only, "juvenile"?')
    page.keyboard.press("a")  # then undone: no decision
    page.keyboard.press("z")

    def check(page):
        for key in keys:
            card = _card(page, key)
            if key in wanted:
                decision, name, _ = wanted[key]
                assert "decided-" + decision.replace(" ", "-") in card["cls"].split()
                assert card["state"].startswith(decision.capitalize()) and card["state"].endswith("by Ada Lovelace")
                assert name in card["state"]
            else:
                assert "decided-" not in card["cls"] and card["state"] == ""
        assert page.text_content("#progress-text") == f"Reviewed {len(wanted)} / {len(rows)}"

    check(page)
    page.reload()
    page.wait_for_function("n => document.getElementById('matching').textContent.startsWith(n + ' of ')",
                           arg=str(len(rows)))
    check(page)
    context.close()  # the browser restarts with the same profile
    context = playwright.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                                            accept_downloads=True)
    page = open_site(context, site, len(rows))
    check(page)
    assert page.input_value("#reviewer") == "Ada Lovelace"

    with page.expect_download() as download:
        page.click("#export")
    data = open(download.value.path(), "rb").read()
    context.close()
    text = data.decode("utf-8")
    assert text.startswith(",".join(HEADER) + "\r\n")
    assert '"leaf only, ""juvenile""?"' in text  # RFC 4180 quoting
    table = list(csv.reader(io.StringIO(text, newline="")))
    assert table[0] == HEADER and len(table) == 1 + len(wanted)
    got = {r[0]: r for r in table[1:]}
    assert set(got) == set(wanted)
    now = dt.datetime.now(dt.timezone.utc)
    for key, (decision, name, remark) in wanted.items():
        _, d, sci, by, when, remarks = got[key]
        assert (d, sci, by, remarks) == (decision, name, "Ada Lovelace", remark)
        assert started <= dt.datetime.fromisoformat(when.replace("Z", "+00:00")) <= now


def test_occurrence_cards_show_each_occurrence_with_its_images(browser, predictions, tmp_path):
    out = str(tmp_path / "occ")
    assert main(["review", "build", predictions["occurrences"], "--out", out]) == 0
    images = read_rows(predictions["predictions"])
    occurrences = read_rows(predictions["occurrences"])
    page = open_site(browser, out, len(occurrences))
    shown = {c["key"]: c for c in dom_cards(page)}
    assert set(shown) == {o["gbifID"] for o in occurrences}
    for occ in occurrences:
        card = shown[occ["gbifID"]]
        mine = sorted((r for r in images if r["gbifID"] == occ["gbifID"]), key=lambda r: r["image_uri"])
        assert len(card["thumbs"]) == sum(r["error"] is None for r in mine)
        assert card["topk"] == occ["topk_scientificName"]
        assert f"{occ['images_used']} classified, {occ['images_failed']} failed" in card["meta"]


# ---------------------------------------------------------------------------------------------------- hostile data

PWN = "window.__pwned = 1"
HOSTILE = {
    "name": f'<img src=x onerror="{PWN}">',
    "script": f"<script>{PWN}</script>",
    "attr": f'" onerror="{PWN}" x="',
    "close": f"</script><script>{PWN}</script>",
    "link": f'<a href="javascript:{PWN}">CC-BY</a>',
    "svg": f'"><svg onload="{PWN}">',
    "long": "Abies " + "x" * 20000 + "<i>",
}


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def http_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("http")
    write(str(root / "photo.jpg"), jpeg_bytes(70, 50, seed=3))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_hostile_strings_stay_text_and_only_safe_links_open(browser, tmp_path, http_root, s3):
    s3.pipe("plantray-test/review/photo.jpg", jpeg_bytes(50, 70, seed=4))
    odd_file = "imgs/javascript:" + "window.__pwned=1.jpg"  # a real file name: becomes a relative link
    write(str(tmp_path / odd_file), jpeg_bytes(40, 40, seed=5))
    rows = [
        prediction_row(0, image_uri=odd_file, scientificName=HOSTILE["name"],
                       topk_scientificName=[HOSTILE["name"], HOSTILE["script"]], input_scientificName=HOSTILE["attr"],
                       publisher_agreement="different", rightsHolder=HOSTILE["close"], license=HOSTILE["link"],
                       gbifID=HOSTILE["svg"], identificationRemarks=HOSTILE["script"], confidence=0.1),
        prediction_row(1, image_uri=f"javascript:{PWN}", error="unsupported scheme javascript", scientificName=None,
                       confidence=None, topk_scientificName=None, topk_confidence=None),
        prediction_row(2, image_uri=f" JavaScript:{PWN}", error="unsupported scheme javascript", scientificName=None,
                       confidence=None, topk_scientificName=None, topk_confidence=None),
        prediction_row(3, image_uri=f"data:text/html,<script>{PWN}</script>", confidence=0.2),
        prediction_row(4, image_uri=f"{http_root}/photo.jpg", confidence=0.3, rightsHolder=HOSTILE["long"]),
        prediction_row(5, image_uri="s3://plantray-test/review/photo.jpg", confidence=0.4,
                       scientificName=HOSTILE["long"], topk_scientificName=[HOSTILE["long"]], topk_confidence=[0.4]),
    ]
    preds = write_predictions(str(tmp_path / "preds"), rows)
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join([*SPECIES, HOSTILE["script"]]) + "\n")
    out = str(tmp_path / "site")
    assert main(["review", "build", preds, "--out", out, "--order", "confidence", "--image-base", str(tmp_path),
                 "--labels", str(labels), "--title", HOSTILE["attr"]]) == 0
    page = open_site(browser, out, len(rows))
    page.wait_for_function("() => Array.from(document.images).every(i => i.complete)")
    page.click("summary")  # open the remarks, the help, the correction field with its completions
    page.keyboard.press("?")
    page.fill("#reviewer", "Eve")
    page.keyboard.press("Escape")
    page.evaluate("document.querySelector('#cards article').focus()")
    page.keyboard.press("c")
    page.keyboard.type("<")
    page.keyboard.press("Escape")

    assert page.evaluate("() => window.__pwned") is None and page.dialogs == [] and page.errors == []
    text = page.evaluate("() => document.getElementById('cards').textContent")
    for value in HOSTILE.values():
        assert value in text  # shown as the characters they are, never parsed
    assert page.title() == HOSTILE["attr"] and page.text_content("#title") == HOSTILE["attr"]
    first = dom_cards(page)[0]
    assert first["name"] == HOSTILE["name"] and first["publisher"] == HOSTILE["attr"]
    assert first["rights"] == [f"{HOSTILE['link']} · © {HOSTILE['close']}"]
    # Only our own scripts and thumbnails; links only to http(s), s3 and relative paths
    scripts = page.evaluate("() => Array.from(document.scripts).map(s => s.getAttribute('src'))")
    assert all(s in ("decisions.js", "review.js") or s.startswith("data/") for s in scripts)
    sources = page.evaluate("() => Array.from(document.images).map(i => i.getAttribute('src'))")
    assert sources and all(s.startswith("thumbs/") for s in sources)
    links = page.evaluate("() => Array.from(document.querySelectorAll('a[href]')).map(a => a.getAttribute('href'))")
    assert sorted(links) == sorted(["../" + quote(odd_file), f"{http_root}/photo.jpg",
                                    "s3://plantray-test/review/photo.jpg"])
    shown = {c["key"]: c for c in dom_cards(page)}
    for row in rows[1:3]:  # no picture (the path does not exist), the classify error said, no link
        card = shown[row["identificationID"]]
        assert card["noPicture"] == "No picture: not found" and "unsupported scheme javascript" in card["meta"]
        assert card["links"] == []
    assert shown[rows[3]["identificationID"]]["links"] == []
    assert len(shown[rows[4]["identificationID"]]["thumbs"]) == 1  # fetched over HTTP
    assert len(shown[rows[5]["identificationID"]]["thumbs"]) == 1  # read from S3

    # A hostile name goes into the decisions file exactly, quoted as CSV quotes it
    page.evaluate("document.querySelector('#cards article').focus()")
    page.keyboard.press("a")
    with page.expect_download() as download:
        page.click("#export")
    table = list(csv.reader(io.StringIO(open(download.value.path(), encoding="utf-8").read(), newline="")))
    assert table[1][:4] == [rows[0]["identificationID"], "accepted", HOSTILE["name"], "Eve"]
    assert page.evaluate("() => window.__pwned") is None and page.dialogs == []


def test_a_decisions_file_imports_and_exports_unchanged(browser, tmp_path):
    rows = [prediction_row(i) for i in range(3)]
    preds = write_predictions(str(tmp_path / "preds"), rows)
    for i in range(3):
        write(str(tmp_path / f"imgs/{i}.jpg"), jpeg_bytes(30, 30, seed=i))
    out = str(tmp_path / "site")
    assert main(["review", "build", preds, "--out", out, "--image-base", str(tmp_path)]) == 0
    decisions = [HEADER,
                 [rows[0]["identificationID"], "corrected", "Rosa canina", "Doe, Jane", "2025-05-01T10:00:00Z",
                  'two lines,\nand "quotes"'],
                 [rows[2]["identificationID"], "not a plant", "", "Ü. Ñandú", "2025-05-01T10:01:00Z", ""]]
    buf = io.StringIO()
    csv.writer(buf).writerows(decisions)
    path = tmp_path / "in.csv"
    path.write_text(buf.getvalue(), encoding="utf-8")
    page = open_site(browser, out, 3)
    page.set_input_files("#import", str(path))
    page.wait_for_function("() => document.getElementById('progress-text').textContent === 'Reviewed 2 / 3'")
    with page.expect_download() as download:
        page.click("#export")
    table = list(csv.reader(io.StringIO(open(download.value.path(), encoding="utf-8").read(), newline="")))
    assert table[0] == HEADER and sorted(table[1:]) == sorted(decisions[1:])


def test_review_serve_writes_the_decisions_file_as_the_reviewer_works(browser, site, predictions):
    port = free_port()
    decisions = os.path.join(site, "decisions.csv")
    server = subprocess.Popen([sys.executable, "-m", "plantray", "review", "serve", site, "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:  # bounded wait until the server answers
            try:
                requests.get(f"http://127.0.0.1:{port}/_plantray/serve", timeout=1)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline and server.poll() is None, server.stderr.read()
                time.sleep(0.2)
        # Another page cannot write the file: no custom header without a CORS preflight it never gets
        refused = requests.put(f"http://127.0.0.1:{port}/_plantray/decisions", data=",".join(HEADER) + "\n")
        assert refused.status_code == 403 and not os.path.exists(decisions)
        rows = read_rows(predictions["predictions"])
        page = browser.new_page()
        page.goto(f"http://127.0.0.1:{port}/")
        page.wait_for_function("n => document.getElementById('matching').textContent.startsWith(n + ' of ' + n)",
                               arg=str(len(rows)))
        page.wait_for_function("() => document.getElementById('server-state').textContent.includes('decisions.csv')")
        page.fill("#reviewer", "Grace")
        page.press("#reviewer", "Enter")
        keys = [c["key"] for c in dom_cards(page)]
        page.keyboard.press("r")
        page.keyboard.press("n")

        def written() -> list[list[str]]:
            if not os.path.exists(decisions):
                return []
            return list(csv.reader(io.StringIO(open(decisions, encoding="utf-8").read(), newline="")))

        deadline = time.monotonic() + 30
        while len(written()) < 3 and time.monotonic() < deadline:
            time.sleep(0.2)
        table = written()
        assert table[0] == HEADER
        assert sorted((r[0], r[1], r[3]) for r in table[1:]) == sorted(
            [(keys[0], "rejected", "Grace"), (keys[1], "not a plant", "Grace")])
        page.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
