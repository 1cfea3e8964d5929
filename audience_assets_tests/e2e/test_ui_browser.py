"""The Dagster UI in a real headless Chromium: the graph, "Materialize all", and Meta's counts on the audience.

Chromium is Debian's package (`.ci/run` installs it), driven by Playwright's Python driver with
`executable_path`; nothing is downloaded at test time. Screenshots go to `test-artifacts/ui/`. Without a
Chromium on the machine the test is skipped, except where `AUDIENCE_REQUIRE_BROWSER=1` (CI) makes that a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from audience_assets_tests.conftest import REPO
from audience_assets_tests.harness import dagster_dev, graphql

pytestmark = pytest.mark.slow
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(os.environ.get("AUDIENCE_TEST_ARTIFACTS", REPO / "test-artifacts")) / "ui"


def chromium_path() -> str:
    path = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        if os.environ.get("AUDIENCE_REQUIRE_BROWSER") == "1":
            pytest.fail("AUDIENCE_REQUIRE_BROWSER=1 but no chromium is installed (apt-get install chromium)")
        pytest.skip("no chromium on this machine (apt-get install chromium)")
    return path


def wait_for_backfill(url: str, timeout: float = 600) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        data = graphql(url, "{ partitionBackfillsOrError { ... on PartitionBackfills { results { id status } } } }")
        results = data["partitionBackfillsOrError"]["results"]
        if results and results[0]["status"] != "REQUESTED":
            return results[0]["status"]
        time.sleep(3)
    raise TimeoutError("the backfill did not finish")


def test_materialize_all_in_the_browser_fills_the_meta_audience(tmp_path: Path):
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import expect, sync_playwright

    executable = chromium_path()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with dagster_dev(tmp_path) as url, sync_playwright() as playwright:
        landing = tmp_path / "data" / "landing"  # seeded by landing_zone_sensor's first tick, as on a fresh clone
        deadline = time.monotonic() + 120
        while not (landing.is_dir() and len([p for p in landing.rglob("*") if p.is_file()]) >= 4):
            assert time.monotonic() < deadline, "the landing zone was not seeded within 2 minutes"
            time.sleep(1)
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        try:
            page.goto(f"{url}/asset-groups", wait_until="networkidle")
            skip = page.get_by_role("button", name="Skip").first  # the community sign-up dialog of a fresh instance
            try:
                skip.wait_for(timeout=5_000)
                skip.click()
            except PlaywrightTimeout:  # not shown once dismissed on this instance
                pass
            for group in ("ingest", "clean_room", "activation", "reporting"):
                expect(page.get_by_text(group, exact=True).first).to_be_visible()
            page.screenshot(path=ARTIFACTS / "1-graph.png")

            page.get_by_role("button", name="Materialize all…").click()
            expect(page.get_by_text("Launch runs to materialize 12 assets")).to_be_visible()
            page.get_by_role("button", name="All", exact=True).click()
            page.screenshot(path=ARTIFACTS / "2-materialize-all.png")
            page.get_by_role("button", name="Launch backfill").click()
            assert wait_for_backfill(url) == "COMPLETED_SUCCESS"

            page.goto(f"{url}/runs", wait_until="networkidle")
            expect(page.get_by_text("Success").first).to_be_visible()
            page.screenshot(path=ARTIFACTS / "3-runs.png")

            page.goto(f"{url}/assets/meta_custom_audience", wait_until="networkidle")
            for label in ("audience_id", "num_received", "num_invalid_entries", "sandbox_member_count"):
                expect(page.get_by_text(label, exact=True).first).to_be_visible(timeout=30_000)
            page.screenshot(path=ARTIFACTS / "4-meta-audience.png", full_page=True)

            page.goto(f"{url}/assets/tenant_costs", wait_until="networkidle")
            expect(page.get_by_text("costs", exact=True).first).to_be_visible(timeout=30_000)
            page.screenshot(path=ARTIFACTS / "5-tenant-costs.png", full_page=True)
        finally:
            browser.close()
        latest = graphql(url, LATEST_META_COUNTS)["assetNodeOrError"]["assetMaterializations"]
        counts = {m["partition"]: {e["label"]: e.get("intValue") for e in m["metadataEntries"]} for m in latest}
        assert sorted(counts) == ["new_parents", "travel_enthusiasts", "young_gamers"]
        for partition, entries in counts.items():
            assert entries["sandbox_member_count"] >= 100 and entries["num_invalid_entries"] == 0, partition
            assert entries["num_received"] == entries["rows_sent"], partition
        made = graphql(url, LATEST_LOOKALIKE)["assetNodeOrError"]["assetMaterializations"][0]
        entries = {e["label"]: e.get("text") for e in made["metadataEntries"]}
        assert made["partition"] == "new_parents.US-1" and entries["event"] in ("created", "held"), entries
        costs = graphql(url, LATEST_COSTS)["assetNodeOrError"]["assetMaterializations"][0]["metadataEntries"]
        records = [json.loads(r) for e in costs if e["label"] == "costs" for r in e["table"]["records"]]
        assert [r["tenant"] for r in records] == ["default"] and records[0]["runs"] >= 1
        assert (
            records[0]["meta_requests"] > 0 and records[0]["rows_processed"] > 0 and records[0]["compute_seconds"] > 0
        )


LATEST_COSTS = """{ assetNodeOrError(assetKey: {path: ["tenant_costs"]}) { ... on AssetNode {
  assetMaterializations(limit: 1) { metadataEntries { label ... on TableMetadataEntry { table { records } } } } } } }"""
LATEST_LOOKALIKE = """{ assetNodeOrError(assetKey: {path: ["meta_lookalike_audience"]}) { ... on AssetNode {
  assetMaterializations(limit: 1) { partition metadataEntries { label ... on TextMetadataEntry { text } } } } } }"""
LATEST_META_COUNTS = """{ assetNodeOrError(assetKey: {path: ["meta_custom_audience"]}) { ... on AssetNode {
  assetMaterializations(limit: 3) { partition metadataEntries { label ... on IntMetadataEntry { intValue } } } } } }"""
