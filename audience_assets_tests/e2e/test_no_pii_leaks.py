"""No plaintext PII anywhere but the landing zone and the staged first-party data.

Distinctive PII is planted in the CRM export and in a partner file (a row that matches, and a malformed
row), the whole pipeline runs with DEBUG logging, and then the event log, compute logs, console output,
metadata, ledger, dead letters, audit records, sandbox state and every output file (Parquet decoded, not
grepped compressed) are scanned for the planted values: there must be no hit.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from audience_assets_tests.conftest import REPO, clean_env, make_dagster_home
from audience_assets_tests.world import copy_landing, world_config

pytestmark = pytest.mark.slow
PLANTED = {
    "email": "Quinn.Canary-Planted@canarymail.example",
    "first_name": "Zebulon",
    "last_name": "Canarywright",
    "city": "Plantedville",
    "phone": "+1 (415) 555-0142",
    "dob": "1984-02-29",
}
# (digit-only needles are long enough that no SHA-256 hex digest contains them by chance)
NEEDLES = [
    "quinn.canary-planted",
    "canarymail",
    "zebulon",
    "canarywright",
    "plantedville",
    "555-0142",
    "4155550142",
    "1984-02-29",
]


def plant(data: Path) -> None:
    crm = next((data / "landing" / "first_party").glob("*.csv"))
    with crm.open("a", encoding="utf-8") as handle:
        handle.write(
            f"C9999990,{PLANTED['email']},{PLANTED['phone']},{PLANTED['first_name']},{PLANTED['last_name']},"
            f"{PLANTED['city']},CA,94110,US,{PLANTED['dob']},M,250.00\n"
        )
    acme = next((data / "landing" / "partners" / "acme_data").glob("*.csv"))
    with acme.open("a", encoding="utf-8") as handle:
        handle.write(f"{PLANTED['email'].upper()};{PLANTED['phone']};ZEBULON;Canarywright;94110;travel;25-34\n")
        handle.write(f"{PLANTED['email']};{PLANTED['phone']};Zebulon;Canarywright;94110;travel;25-34;extra;columns\n")


def texts(path: Path) -> str:
    """A file's content as text: Parquet decoded row by row, anything else as bytes."""
    if path.suffix == ".parquet":
        con = duckdb.connect()
        try:
            rows = con.execute(f"SELECT * FROM read_parquet('{path}')").fetchall()
        finally:
            con.close()
        return "\n".join(" ".join(str(v) for v in row) for row in rows)
    return path.read_bytes().decode("utf-8", errors="replace")


def headless_run(data: Path, config_dir: Path, home: Path, scratch: Path) -> subprocess.CompletedProcess:
    """The README's headless command on `data`, recorded in `home`, staging under `scratch` (all scanned)."""
    return subprocess.run(
        [sys.executable, "-m", "audience_assets", "run"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=clean_env(
            AUDIENCE_DATA_DIR=str(data),
            AUDIENCE_CONFIG_DIR=str(config_dir),
            DAGSTER_HOME=str(home),
            AUDIENCE_SCRATCH_DIR=str(scratch),
        ),
        timeout=600,
    )


def test_planted_pii_appears_nowhere_it_must_not(landing: Path, tmp_path: Path):
    data, config_dir = copy_landing(landing, tmp_path / "data"), world_config(tmp_path / "config")
    home = make_dagster_home(tmp_path / "dagster_home")
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\npython_logs:\n  python_log_level: DEBUG\n")
    plant(data)
    scratch = tmp_path / "scratch"
    done = headless_run(data, config_dir, home, scratch)
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]

    # the planted customer really went through: matched, selected and uploaded (hashed)
    members = duckdb.execute(
        f"SELECT count(*) FROM read_parquet('{data}/audiences/travel_enthusiasts/members.parquet') "
        "WHERE customer_id = 'C9999990'"
    ).fetchall()[0][0]
    assert members == 1

    assert_no_leaks(done, home, data, scratch)

    # Then the failing paths: a partner snapshot delivered without its header row (its first row, the planted
    # person, would be the "column names") and an opt-out file that is not valid UTF-8.
    acme = next((data / "landing" / "partners" / "acme_data").glob("*.csv"))
    planted_row = f"{PLANTED['email']};{PLANTED['phone']};Zebulon;Canarywright;94110;travel;25-34\n"
    data_rows = acme.read_text(encoding="utf-8").splitlines(keepends=True)[1:50]
    (acme.with_name("z_headerless.csv")).write_text(planted_row + "".join(data_rows), encoding="utf-8")
    (data / "landing" / "suppression" / "optouts_bad.csv").write_bytes(
        f"email\n{PLANTED['email']}\n{PLANTED['first_name']}\xe9@example.com\n".encode("latin-1")
    )
    failed = headless_run(data, config_dir, home, scratch)
    assert failed.returncode == 1
    assert (
        "z_headerless.csv does not satisfy" in failed.stdout and "optouts_bad.csv is not valid UTF-8" in failed.stdout
    )
    assert_no_leaks(failed, home, data, scratch)


def assert_no_leaks(done: subprocess.CompletedProcess, home: Path, data: Path, scratch: Path) -> None:
    scanned = {"console": done.stdout + done.stderr}
    for root, skip in ((home, ()), (data, ("landing", "staging/first_party")), (scratch, ())):
        for path in root.rglob("*"):
            relative = path.relative_to(root).as_posix()
            if path.is_file() and not relative.startswith(skip):
                scanned[f"{root.name}/{relative}"] = texts(path)
    assert any(name.endswith(".db") or "sqlite" in name for name in scanned), "the event log was scanned"
    assert any("audit/" in name for name in scanned) and any("quarantine" in name for name in scanned)
    leaks = {(name, needle) for name, text in scanned.items() for needle in NEEDLES if needle in text.lower()}
    assert leaks == set(), sorted(leaks)[:10]
