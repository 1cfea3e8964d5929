"""Quality gates, attached to the stage they guard. Names are constants; the logic is plain functions
over counts and files, so tests can feed them crafted bad data directly.

Blocking (ERROR) checks stop the run before anything flows on: row accounting at ingestion, the format
of every outbound cell, the privacy floor. Warnings (WARN) flag what a person should look at: a match
rate below the partner's floor, Meta rejecting too many entries, Meta's count moving against the sync.
"""

from __future__ import annotations

import dagster as dg

from audience_assets.core.ingestion import IngestReport

ROW_ACCOUNTING = "row_accounting"
HASHED_CELLS = "hashed_cells"
MATCH_RATE = "match_rate_floor"
PRIVACY_FLOOR = "privacy_floor"
INVALID_ENTRY_RATE = "invalid_entry_rate"
COUNT_DIRECTION = "count_direction"


def spec(name: str, asset: str | dg.AssetKey, description: str, blocking: bool = False) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(name, asset=asset, blocking=blocking, description=description)


def row_accounting(report: IngestReport) -> dg.AssetCheckResult:
    """Every file: rows read = rows accepted + rows quarantined (nothing lost, nothing invented)."""
    broken = [f.file for f in report.files if f.rows_read != f.rows_accepted + f.rows_quarantined]
    return dg.AssetCheckResult(
        check_name=ROW_ACCOUNTING, passed=not broken, severity=dg.AssetCheckSeverity.ERROR,
        metadata={"rows_read": report.rows_read, "rows_accepted": report.rows_accepted,
                  "rows_quarantined": report.rows_quarantined, "files_out_of_balance": len(broken)},
        description=f"rows do not add up in {', '.join(broken)}" if broken else None)


def hashed_cells(problems: dict[str, int], cells: int) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name=HASHED_CELLS, passed=not problems, severity=dg.AssetCheckSeverity.ERROR,
        metadata={"cells_checked": cells, **{f"bad_{k}": n for k, n in problems.items()}},
        description=("cells that must not leave: " + ", ".join(f"{k} {n}" for k, n in problems.items())) if problems else None)


def privacy_floor(members: int, min_size: int, *, removal_list: bool) -> dg.AssetCheckResult:
    """The audience has at least its floor of members. A removal list (mode remove) is not an audience:
    its floor applies to what stays on Meta, which audience_chunks enforces."""
    passed = removal_list or members >= min_size
    return dg.AssetCheckResult(check_name=PRIVACY_FLOOR, passed=passed, severity=dg.AssetCheckSeverity.ERROR,
                               metadata={"members": members, "min_size": min_size},
                               description=None if passed else f"{members} members is below the floor of {min_size}")


def match_rate(rate: float, floor: float) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(check_name=MATCH_RATE, passed=rate >= floor, severity=dg.AssetCheckSeverity.WARN,
                               metadata={"match_rate": rate, "min_match_rate": floor},
                               description=None if rate >= floor else f"match rate {rate:.2%} is below {floor:.2%}")


def invalid_entry_rate(invalid: int, received: int, ceiling: float) -> dg.AssetCheckResult:
    rate = invalid / received if received else 0.0
    return dg.AssetCheckResult(check_name=INVALID_ENTRY_RATE, passed=rate <= ceiling, severity=dg.AssetCheckSeverity.WARN,
                               metadata={"invalid_rate": rate, "max_invalid_rate": ceiling, "num_invalid_entries": invalid},
                               description=None if rate <= ceiling else f"Meta rejected {rate:.2%} of the entries")


def count_direction(before: int | None, after: int, net_change: int) -> dg.AssetCheckResult:
    """Meta's approximate count should move the way the sync did (-1 means Meta does not say yet)."""
    if before is None or before < 0 or after < 0 or net_change == 0:
        passed, why = True, None
    elif net_change > 0:
        passed, why = after >= before, f"added {net_change} rows but Meta's count fell from {before} to {after}"
    else:
        passed, why = after <= before, f"removed {-net_change} rows but Meta's count rose from {before} to {after}"
    return dg.AssetCheckResult(check_name=COUNT_DIRECTION, passed=passed, severity=dg.AssetCheckSeverity.WARN,
                               metadata={"count_before": before if before is not None else -1, "count_after": after,
                                         "net_rows_sent": net_change}, description=None if passed else why)
