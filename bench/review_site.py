"""How long ``plantray review build`` takes, how much driver memory it needs, and how soon the page shows.

Synthesises classify-shaped predictions (every output column, realistic mixes of confident, rolled-up,
withheld and failed rows, publisher names that agree or not) pointing, with repeats, at a few hundred
synthetic plant photographs (``plantray synth``), builds the review site with the CLI under
``/usr/bin/time -v`` (wall time and the driver's peak RSS), then opens it in headless Chromium (Debian's
``chromium``, driven by Playwright) and times the first card's appearance.

    python bench/review_site.py --rows 10000 --images 300 --out bench/results
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]


def synth_images(root: str, images: int) -> tuple[list[str], list[str], list[tuple[str, str, str]]]:
    """``plantray synth`` photographs: (image paths, their species, the labels (name, genus, family))."""
    species = max(4, min(40, images // 10))
    subprocess.run([sys.executable, "-m", "plantray", "synth", root, "--species", str(species),
                    "--images-per-species", str(max(1, images // species)), "--test-per-species", "1",
                    "--unseen-per-species", "1", "--min-pixels", "60000", "--max-pixels", "250000"],
                   check=True, capture_output=True)
    train = pq.read_table(os.path.join(root, "train.parquet")).to_pylist()
    with open(os.path.join(root, "labels.csv")) as f:
        labels = [(r["scientificName"], r["genus"], r["family"]) for r in csv.DictReader(f)]
    paths = [os.path.join(root, r["image_uri"]) for r in train][:images]
    return paths, [r["scientificName"] for r in train][:images], labels


def prediction_rows(n: int, paths: list[str], truth: list[str], labels: list[tuple[str, str, str]], seed: int = 0):
    """``n`` classify-shaped prediction rows, yielded in batches of 5,000 (the bench never holds them all)."""
    rng = np.random.default_rng(seed)
    names = [lab[0] for lab in labels]
    genus = {lab[0]: lab[1] for lab in labels}
    family = {lab[0]: lab[2] for lab in labels}
    batch = []
    for i in range(n):
        j = i % len(paths)
        true = truth[j]
        probs = rng.dirichlet(np.full(len(names), 0.3))
        if rng.random() < 0.7:
            probs[names.index(true)] += 1.5
        probs = probs / probs.sum()
        order = np.argsort(-probs)[:5]
        top = [names[k] for k in order]
        conf = [float(probs[k]) for k in order]
        publisher = rng.choice([true, true, true, top[0], None, "Plantago major L."])
        name, rank, error = top[0], "species", None
        if conf[0] < 0.25:
            name, rank = None, None
        elif conf[0] < 0.4:
            name, rank = genus[top[0]], "genus"
        uri = paths[j]
        if i % 97 == 0:
            uri, error, name, rank, conf, top = f"{paths[j]}.missing", "not found", None, None, [], []
        agreement = None if error else ("no publisher name" if publisher is None else
                                         "same species" if name and publisher.startswith(name) and rank == "species"
                                         else "same genus" if name and publisher.split()[0] == name.split()[0]
                                         else "different")
        batch.append({
            "image_uri": uri, "gbifID": str(100000 + i // 2), "input_scientificName": publisher,
            "license": "CC-BY-4.0", "rightsHolder": f"Observer {i % 50}",
            "scientificName": name, "confidence": conf[0] if conf else None, "topk_scientificName": top or None,
            "topk_confidence": conf or None, "taxonRank": rank, "genus": genus.get(name), "family": family.get(name),
            "publisher_agreement": agreement, "prior": None,
            "identificationID": str(uuid.uuid5(uuid.NAMESPACE_URL, f"bench\n{uri}\n{i}")),
            "identifiedBy": "plantray-resnet50 bench (sha256:000000000000)", "dateIdentified": "2025-01-01T00:00:00Z",
            "identificationRemarks": None if error else f"machine identification (confidence {conf[0]:.3f})",
            "error": error})
        if len(batch) == 5000:
            yield batch
            batch = []
    if batch:
        yield batch


def write_predictions(out: str, rows) -> None:
    """A classify-like Parquet dataset (several files) from batches of rows."""
    os.makedirs(out, exist_ok=True)
    for k, batch in enumerate(rows):
        pq.write_table(pa.Table.from_pylist(batch), os.path.join(out, f"part-{k:05d}.parquet"))


def _anon_kib(pid: int) -> int:
    """The process's private (anonymous) resident memory in KiB: its heap, without the mapped shared object
    store and libraries that RSS also counts."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("RssAnon"))
    except (FileNotFoundError, StopIteration):
        return 0


def build(predictions: str, site: str, labels: str) -> dict:
    """Runs the CLI under /usr/bin/time -v: wall seconds, the driver's peak RSS and peak anonymous RSS (MiB)."""
    env = {**os.environ, "RAY_DATA_DISABLE_PROGRESS_BARS": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(["/usr/bin/time", "-v", sys.executable, "-m", "plantray", "review", "build",
                                 predictions, "--out", site, "--labels", labels], stdout=subprocess.PIPE, stderr=err,
                                text=True, env=env)
        anon = 0
        while proc.poll() is None:
            children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
            anon = max([anon, *(_anon_kib(int(c)) for c in children)])
            time.sleep(0.5)
        err.seek(0)
        stderr, stdout = err.read(), proc.stdout.read()
    if proc.returncode:
        raise SystemExit(stderr[-3000:])
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", stderr).group(1)
    seconds = sum(float(p) * 60 ** k for k, p in enumerate(reversed(wall.split(":"))))
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", stderr).group(1))
    return {"seconds": round(seconds, 1), "driver_peak_rss_mib": round(rss / 1024),
            "driver_peak_anon_mib": round(anon / 1024), "summary": stdout.strip()}


def first_page(site: str, runs: int = 5) -> dict:
    """Seconds from navigation to the first card with its picture, and to every card loaded, in headless
    Chromium (a fresh page each run), beside the same browser's time to show a one-line page."""
    from playwright.sync_api import sync_playwright

    blank = os.path.join(os.path.abspath(site), "_blank.html")
    with open(blank, "w") as f:
        f.write("<!DOCTYPE html><p id=x>x</p>")
    out = {"first_card_seconds": [], "all_cards_seconds": [], "one_line_page_seconds": []}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        for _ in range(runs):
            page = browser.new_page()
            start = time.perf_counter()
            page.goto("file://" + blank, wait_until="commit")
            page.wait_for_selector("#x")
            out["one_line_page_seconds"].append(round(time.perf_counter() - start, 3))
            start = time.perf_counter()
            page.goto("file://" + os.path.join(os.path.abspath(site), "index.html"), wait_until="commit")
            page.wait_for_selector("#cards article.card img")
            out["first_card_seconds"].append(round(time.perf_counter() - start, 3))
            page.wait_for_function("() => document.getElementById('status').textContent === ''", timeout=600_000)
            out["all_cards_seconds"].append(round(time.perf_counter() - start, 3))
            page.close()
        browser.close()
    os.remove(blank)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--out", default="bench/results")
    parser.add_argument("--work", default=None, help="working directory (default: a temporary one)")
    args = parser.parse_args()
    work = args.work or tempfile.mkdtemp(prefix="review-bench-")
    paths, truth, labels = synth_images(os.path.join(work, "images"), args.images)
    predictions = os.path.join(work, "predictions")
    write_predictions(predictions, prediction_rows(args.rows, paths, truth, labels))
    site = os.path.join(work, "site")
    result = {"rows": args.rows, "images": len(paths),
              **build(predictions, site, os.path.join(work, "images", "labels.csv"))}
    result.update(first_page(site))
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, f"review_site_{args.rows}.json"), "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
