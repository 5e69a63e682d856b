"""The review page in a real browser, for the tests: helpers that open a site and read what the page shows.

The browser itself (Debian's headless Chromium driven by Playwright, one per test module) is the ``browser``
fixture of ``tests/e2e/conftest.py``.
"""

from __future__ import annotations

import os
from urllib.parse import quote


def url(site: str) -> str:
    return "file://" + quote(os.path.join(site, "index.html"))


def open_site(context_or_browser, site: str, cards: int):
    """A page with the site open and all its cards loaded; collects dialogs and page errors on it."""
    page = context_or_browser.new_page()
    page.dialogs, page.errors = [], []
    page.on("dialog", lambda d: (page.dialogs.append(d.message), d.dismiss()))
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.goto(url(site))
    wait_loaded(page, cards)
    return page


def wait_loaded(page, cards: int) -> None:
    """Waits until the page has loaded all its ``cards`` (and shows them all, no filter set)."""
    page.wait_for_function("n => document.getElementById('matching').textContent.startsWith(n + ' of ' + n)",
                           arg=str(cards))


def dom_cards(page) -> list[dict]:
    """What each card on the page shows, read from the DOM."""
    return page.evaluate("""() => Array.from(document.querySelectorAll('#cards article.card')).map(a => ({
        key: a.dataset.key, cls: a.className,
        name: a.querySelector('.name').textContent, conf: a.querySelector('.conf').textContent,
        topk: Array.from(a.querySelectorAll('.topk-name')).map(x => x.textContent),
        publisher: (a.querySelector('.publisher-name') || {}).textContent || null,
        agreement: (a.querySelector('.agree') || {}).textContent || null,
        meta: a.querySelector('.meta').textContent,
        rights: Array.from(a.querySelectorAll('figcaption.rights')).map(x => x.textContent),
        noPicture: (a.querySelector('.no-picture') || {}).textContent || null,
        links: Array.from(a.querySelectorAll('.images a')).map(x => x.getAttribute('href')),
        resolved: Array.from(a.querySelectorAll('.images a')).map(x => x.href),
        thumbs: Array.from(a.querySelectorAll('.images img')).map(i => [i.naturalWidth, i.naturalHeight]),
        state: a.querySelector('.decision-state').textContent}))""")
