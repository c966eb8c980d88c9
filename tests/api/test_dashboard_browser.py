"""The dashboard in a real browser: headless Chromium (Debian's ``chromium``) driven by Playwright,
against the service on 127.0.0.1 over a copy of the curated workspace.

One walk through the five pages as a user makes it: the key prompt (nothing fetched before a key),
the overview, an explorer filter (the grid shows as many thumbnails as the tables say), a sample's
detail, a concept search that opens the concept's page, a text and an image search, a manifest
request that completes. Every page must load without a console error, a page error or a request
leaving 127.0.0.1 (the page must need nothing from the network). Screenshots of each page go to a
temporary folder (printed), and with ZCURATE_UPDATE_SCREENSHOTS=1 the overview and explorer ones
also to docs/screenshots/ for the README and the docs.
"""

from __future__ import annotations

import os
import shutil

import pytest

from engine.workspace import Workspace
from tests.api.conftest import KEYS
from tests.api.test_dashboard_routes import dash_url, dash_ws, matching, rows, subtree_ids  # noqa: F401

playwright = pytest.importorskip("playwright.sync_api")

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1280, "height": 800}  # a laptop screen; the docs' screenshots have this size
WAIT_MS = 90_000  # a page's slowest step here: the first text search loads the embedder (~10 s on 2 cores)
DOCS = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "screenshots")

pytestmark = [
    pytest.mark.slow,  # ~30 s: a browser, ~150 thumbnails made, the embedder loaded, a manifest built
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian's chromium (scripts/setup.sh)"),
]


class Walk:
    """A browser page on the service, recording what would make the walk fail."""

    def __init__(self, page, base_url: str, shots: str):
        self.page, self.base_url, self.shots = page, base_url, shots
        self.errors: list[str] = []  # console errors and uncaught exceptions
        self.outside: list[str] = []  # requests to anywhere but the service
        self.api_calls: list[str] = []
        page.on("console", lambda m: self.errors.append(f"console: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))
        page.route("**/*", self.only_local)

    def only_local(self, route):
        url = route.request.url
        if url.startswith(self.base_url) or url.startswith(("data:", "blob:")):
            if "/v1/" in url:
                self.api_calls.append(url)
            route.continue_()
        else:
            self.outside.append(url)
            route.abort()

    def open(self, hash_: str, name: str) -> None:
        """Go to a page by its hash and wait until it is drawn and its thumbnails are in."""
        self.page.evaluate(f"delete document.querySelector('#page').dataset.ready; location.hash = {hash_!r}")
        self.ready(name)

    def click(self, selector: str, name: str) -> None:
        """Click what navigates (a form's button, a link) and wait for the page it opens."""
        self.page.evaluate("delete document.querySelector('#page').dataset.ready")
        self.page.click(selector)
        self.ready(name)

    def ready(self, name: str) -> None:
        expect = playwright.expect
        expect(self.page.locator(f"#page[data-ready='{name}']")).to_have_count(1, timeout=WAIT_MS)
        self.thumbnails_loaded()
        assert not self.page.locator("#page-error").count(), self.page.locator("#page-error").inner_text()
        self.check(name)

    def thumbnails_loaded(self) -> None:
        pending = self.page.locator("img.thumb:not([data-loaded])")
        playwright.expect(pending).to_have_count(0, timeout=WAIT_MS)

    def check(self, name: str) -> None:
        assert not self.errors, (name, self.errors)
        assert not self.outside, (name, self.outside)

    def shot(self, name: str, docs: bool = False) -> None:
        path = os.path.join(self.shots, f"{name}.png")
        self.page.screenshot(path=path)
        if docs and os.environ.get("ZCURATE_UPDATE_SCREENSHOTS") == "1":
            os.makedirs(DOCS, exist_ok=True)
            shutil.copyfile(path, os.path.join(DOCS, f"{name}.png"))


@pytest.fixture(scope="module")
def walk(dash_url, tmp_path_factory):  # noqa: F811
    shots = str(tmp_path_factory.mktemp("screenshots"))
    print(f"\ndashboard screenshots: {shots}")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        try:
            context = browser.new_context(viewport=VIEWPORT)
            yield Walk(context.new_page(), dash_url, shots)
            context.close()
        finally:
            browser.close()


def test_the_dashboard_in_a_browser(walk: Walk, dash_ws: Workspace, rows):  # noqa: F811
    page, expect = walk.page, playwright.expect

    # No key: the prompt, and not one data request.
    page.goto(f"{walk.base_url}/")
    expect(page.locator("#login")).to_be_visible()
    page.wait_for_timeout(300)
    assert walk.api_calls == [] and not page.locator("#page *").count()
    walk.check("login")
    page.fill("#key", KEYS["writer"])
    page.click("#key-form button[type=submit]")
    walk.ready("overview")
    assert page.evaluate("sessionStorage.getItem('zcurate.key')") == KEYS["writer"]
    totals = page.locator("#totals").inner_text()
    assert str(len(rows)) in totals and page.locator("svg.histogram").count() >= 6
    walk.shot("overview", docs=True)

    # Explorer: a filter typed into the form; the grid holds as many thumbnails as the tables say.
    clip = sorted(r["clip_score"] for r in rows.values())
    threshold = clip[len(clip) // 3]
    walk.open("#explorer", "explorer")
    page.fill("input[name=clip_score_min]", repr(threshold))
    page.select_option("select[name=sort]", "-clip_score")
    walk.click("#filters button[type=submit]", "explorer")
    assert page.evaluate("location.hash") == f"#explorer?clip_score_min={threshold!r}&sort=-clip_score"
    expected = matching(rows, dash_ws, {"clip_score_min": threshold})
    assert page.locator("#explorer-total").get_attribute("data-total") == str(len(expected))
    assert page.locator("#grid .cell").count() == min(len(expected), 60)
    assert page.locator("#grid img.thumb[data-loaded]").count() == min(len(expected), 60)
    walk.shot("explorer", docs=True)

    with_text = {sid for sid, r in rows.items() if r["ocr_text"]}
    walk.open("#explorer?has_text=true", "explorer")
    assert (
        page.locator("#grid .cell").count()
        == len(with_text)
        == int(page.locator("#explorer-total").get_attribute("data-total"))
    )
    # A sample's detail: caption and OCR text on click.
    sid = sorted(with_text)[0]
    page.click(f"#grid .cell[data-sample-id='{sid}']")
    expect(page.locator("#detail-ocr")).to_have_text(rows[sid]["ocr_text"].strip(), timeout=WAIT_MS)
    assert page.locator("#detail-caption").inner_text() == rows[sid]["caption"]
    walk.thumbnails_loaded()
    walk.shot("explorer-detail")
    walk.check("explorer")

    # Concepts: a search by lemma opens the concept's page with its subtree's samples.
    walk.open("#concepts", "concepts")
    page.fill("#concept-search input[name=q]", "dog")
    walk.click("#concept-search button", "concepts")
    walk.click("#concept-results a:text-is('dog.n.01')", "concepts")
    expect(page.locator("#concept-title")).to_have_text("dog.n.01")
    assert page.locator("#concept-grid .cell").count() == min(
        24, len(subtree_ids(dash_ws, "dog.n.01") & set(rows))
    )
    walk.shot("concepts")

    # Search: text -> image, then an uploaded image -> image (the sample itself comes back first).
    walk.open("#search", "search")
    page.fill("#text-search input[name=text]", "a red apple")
    walk.click("#text-search button", "search")
    assert page.locator("#search-grid .cell").count() == min(24, len(rows))
    assert page.locator("#search-model").inner_text().startswith("embedding model: EffLite0-MiniLM-L6@")
    walk.shot("search")
    page.set_input_files("#image-query", rows_uri(dash_ws, sid))
    expect(page.locator("#search-results .status")).to_have_text("24 results", timeout=WAIT_MS)
    walk.thumbnails_loaded()
    assert page.locator("#search-grid .cell").first.get_attribute("data-sample-id") in near(rows, sid)
    walk.check("search")

    # Manifests: request one for a stage; the page follows the build to its detail.
    walk.open("#manifests", "manifests")
    page.select_option("#manifest-request select[name=stage]", "lowres")
    walk.click("#manifest-request button[type=submit]", "manifests")
    expect(page.locator("#manifest-detail")).to_have_count(1, timeout=WAIT_MS)  # the page follows the build
    walk.ready("manifests")
    manifest_id = page.evaluate("new URLSearchParams(location.hash.split('?')[1]).get('id')")
    assert os.path.isfile(dash_ws.path("manifests", "lowres", f"{manifest_id}.parquet"))
    assert page.locator("#bucket-table tr").count() > 1 and page.locator("#manifest-list code").count() >= 1
    walk.shot("manifests")
    walk.check("manifests")


def rows_uri(ws: Workspace, sample_id: str) -> str:
    return next(
        r["uri"]
        for r in ws.read_table("samples", ["sample_id", "uri"]).to_pylist()
        if r["sample_id"] == sample_id
    )


def near(by_id: dict[str, dict], sample_id: str) -> set[str]:
    """The sample and the members of its near-duplicate community (an equal image may rank first)."""
    community = by_id[sample_id]["community_id"]
    return {sample_id} | {s for s, r in by_id.items() if community and r["community_id"] == community}
