"""``plantray review serve``'s HTTP side on 127.0.0.1: what it writes, what it refuses, what it serves."""

from __future__ import annotations

import asyncio

from aiohttp.test_utils import TestClient, TestServer

from plantray.review.serve import make_app

HEADER = "identificationID,decision,scientificName,identifiedBy,dateIdentified,identificationRemarks"


def run(site, decisions, steps):
    async def main():
        async with TestClient(TestServer(make_app(str(site), str(decisions)))) as client:
            return [await step(client) for step in steps]

    return asyncio.run(main())


def test_writes_the_decisions_file_and_refuses_anything_else(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("<p>page</p>")
    (tmp_path / "secret.txt").write_text("not served")
    decisions = site / "decisions.csv"
    body = (HEADER + '\r\nid-1,corrected,"Rosa canina, L.",Ada,2025-05-01T10:00:00Z,"a ""b""\nc"\r\n').encode()

    async def put(client, data, headers):
        r = await client.put("/_plantray/decisions", data=data, headers=headers)
        return r.status

    async def get(client, path):
        r = await client.get(path)
        return r.status, await r.text()

    token = {"X-Plantray-Review": "1"}
    results = run(site, decisions, [
        lambda c: put(c, body, {}),  # no token: another page's request
        lambda c: put(c, b"id,decision\r\n", token),  # not a decisions file
        lambda c: put(c, b"\xff\xfe" + body, token),  # not UTF-8
        lambda c: put(c, body, token),
        lambda c: get(c, "/"),
        lambda c: get(c, "/_plantray/serve"),
        lambda c: get(c, "/../secret.txt"),
    ])
    assert results[:4] == [403, 400, 400, 200]
    assert decisions.read_bytes() == body
    assert results[4] == (200, "<p>page</p>")
    assert results[5][0] == 200 and str(decisions) in results[5][1]
    assert results[6][0] == 404
