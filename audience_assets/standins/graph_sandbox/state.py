"""What the sandbox holds, in SQLite (in memory, or a file every process of a local deployment shares):
audiences, their members (one canonical key per row), upload sessions and their batches, the rows of replace
sessions in progress, and counters for tests. The request handlers (`server`) call these; nothing here
validates a request."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPLACE_WINDOW_SECONDS = 90 * 60

SCHEMA = """
CREATE TABLE IF NOT EXISTS audiences (
  id TEXT PRIMARY KEY, account TEXT NOT NULL, name TEXT NOT NULL, subtype TEXT NOT NULL, description TEXT,
  customer_file_source TEXT, retention_days INTEGER, is_value_based INTEGER NOT NULL DEFAULT 0,
  status_code INTEGER NOT NULL DEFAULT 200, status_text TEXT NOT NULL DEFAULT 'Normal',
  flagged INTEGER NOT NULL DEFAULT 0, deleted INTEGER NOT NULL DEFAULT 0, created REAL NOT NULL,
  updated REAL NOT NULL, data_source TEXT, delivery_code INTEGER NOT NULL DEFAULT 200,
  delivery_text TEXT NOT NULL DEFAULT 'This audience is ready for use.', populating_reads INTEGER NOT NULL DEFAULT 0,
  origin_audience_id TEXT, lookalike_spec TEXT);
CREATE TABLE IF NOT EXISTS members (audience TEXT NOT NULL, row_key TEXT NOT NULL, PRIMARY KEY (audience, row_key))
WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sessions (
  audience TEXT NOT NULL, session_id TEXT NOT NULL, kind TEXT NOT NULL, started REAL NOT NULL,
  finished INTEGER NOT NULL DEFAULT 0, num_received INTEGER NOT NULL DEFAULT 0, num_invalid INTEGER NOT NULL DEFAULT 0,
  num_matched INTEGER NOT NULL DEFAULT 0, batches INTEGER NOT NULL DEFAULT 0, last_seq INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (audience, session_id));
CREATE TABLE IF NOT EXISTS batches (audience TEXT NOT NULL, session_id TEXT NOT NULL, batch_seq INTEGER NOT NULL,
  times INTEGER NOT NULL DEFAULT 1, PRIMARY KEY (audience, session_id, batch_seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS replace_rows (audience TEXT NOT NULL, session_id TEXT NOT NULL, row_key TEXT NOT NULL,
  PRIMARY KEY (audience, session_id, row_key)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS member_values (audience TEXT NOT NULL, row_key TEXT NOT NULL, value REAL NOT NULL,
  PRIMARY KEY (audience, row_key)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS replace_values (audience TEXT NOT NULL, session_id TEXT NOT NULL, row_key TEXT NOT NULL,
  value REAL NOT NULL, PRIMARY KEY (audience, session_id, row_key)) WITHOUT ROWID;
"""


HEALTH_COLUMNS = {
    "delivery_code": "INTEGER NOT NULL DEFAULT 200",
    "delivery_text": "TEXT NOT NULL DEFAULT 'This audience is ready for use.'",
    "populating_reads": "INTEGER NOT NULL DEFAULT 0",
}
LOOKALIKE_COLUMNS = {"origin_audience_id": "TEXT", "lookalike_spec": "TEXT"}


class SandboxState:
    def __init__(self, path: Path | str | None, clock: Callable[[], float]):
        self.clock = clock
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(
            str(path) if path else ":memory:", check_same_thread=False, isolation_level=None, timeout=30
        )
        self.db.execute("PRAGMA journal_mode=WAL" if path else "PRAGMA journal_mode=MEMORY")
        # A stand-in's state need not survive a power cut, and members are keyed by random digests, so every
        # upload touches pages all over the table: no fsync per commit, and a cache that holds the table.
        self.db.execute("PRAGMA synchronous=OFF")
        self.db.execute("PRAGMA cache_size=-262144")
        self.db.executescript(SCHEMA)
        columns = {row[1] for row in self.db.execute("PRAGMA table_info(audiences)")}
        # a state file from before audience health, or lookalikes, were modelled
        for column, kind in {**HEALTH_COLUMNS, **LOOKALIKE_COLUMNS}.items():
            if column not in columns:
                self.db.execute(f"ALTER TABLE audiences ADD COLUMN {column} {kind}")

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def _row(self, query: str, params: tuple) -> dict[str, Any] | None:
        cur = self.db.execute(query, params)
        row = cur.fetchone()
        return dict(zip([d[0] for d in cur.description], row)) if row else None

    # ------------------------------------------------------------------ counters
    def bump(self, name: str) -> int:
        self.db.execute(
            "INSERT INTO counters (name, value) VALUES (?, 1) ON CONFLICT DO UPDATE SET value = value + 1", (name,)
        )
        return self.db.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()[0]

    def counter(self, name: str) -> int:
        row = self.db.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
        return row[0] if row else 0

    def counters(self) -> dict[str, int]:
        return dict(self.db.execute("SELECT name, value FROM counters").fetchall())

    # ------------------------------------------------------------------ audiences
    def audience(self, audience_id: str) -> dict[str, Any] | None:
        return self._row("SELECT * FROM audiences WHERE id = ? AND deleted = 0", (audience_id,))

    def audience_ids(self, account: str, after: str, limit: int) -> list[str]:
        return [
            r[0]
            for r in self.db.execute(
                "SELECT id FROM audiences WHERE account = ? AND deleted = 0 AND id > ? ORDER BY id LIMIT ?",
                (account, after, limit),
            ).fetchall()
        ]

    def count_audiences(self, account: str) -> int:
        return self.db.execute(
            "SELECT count(*) FROM audiences WHERE account = ? AND deleted = 0", (account,)
        ).fetchone()[0]

    def create_audience(
        self,
        account: str,
        name: str,
        subtype: str,
        description: str,
        source: str | None,
        retention_days: int | None,
        value_based: bool,
    ) -> str:
        audience_id = str(23850000000000000 + self.bump("audience_ids"))
        now = self.clock()
        self.db.execute(
            "INSERT INTO audiences (id, account, name, subtype, description, customer_file_source, "
            "retention_days, is_value_based, created, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (audience_id, account, name, subtype, description, source, retention_days, int(value_based), now, now),
        )
        return audience_id

    def create_lookalike(self, account: str, name: str, description: str, origin: str, spec: dict[str, Any]) -> str:
        """A LOOKALIKE audience of `origin`, with its normalized spec (country, ratio, starting_ratio, type)."""
        audience_id = self.create_audience(account, name, "LOOKALIKE", description, None, None, False)
        self.db.execute(
            "UPDATE audiences SET origin_audience_id = ?, lookalike_spec = ? WHERE id = ?",
            (origin, json.dumps(spec), audience_id),
        )
        return audience_id

    def lookalikes(self, origin: str, account: str | None = None) -> list[dict[str, Any]]:
        """The live lookalikes of `origin` (of one ad account, or of any), oldest first, each its id and spec."""
        rows = self.db.execute(
            "SELECT id, lookalike_spec FROM audiences WHERE origin_audience_id = ? AND subtype = 'LOOKALIKE' "
            "AND deleted = 0 AND (? IS NULL OR account = ?) ORDER BY id",
            (origin, account, account),
        ).fetchall()
        return [{"id": r[0], **json.loads(r[1])} for r in rows]

    def audience_name(self, audience_id: str) -> str | None:
        """An audience's name, deleted or not (a lookalike still names its origin after the origin is gone)."""
        row = self.db.execute("SELECT name FROM audiences WHERE id = ?", (audience_id,)).fetchone()
        return row[0] if row else None

    def update_audience(self, audience_id: str, **fields: str) -> None:
        for column in ("name", "description"):
            if column in fields:
                self.db.execute(
                    f"UPDATE audiences SET {column} = ?, updated = ? WHERE id = ?",
                    (fields[column], self.clock(), audience_id),
                )

    def delete_audience(self, audience_id: str) -> None:
        self.db.execute("UPDATE audiences SET deleted = 1 WHERE id = ?", (audience_id,))

    def set_data_source(self, audience_id: str, source: str) -> None:
        self.db.execute("UPDATE audiences SET data_source = ? WHERE id = ?", (source, audience_id))

    def set_status(self, audience_id: str, code: int, text: str) -> None:
        self.db.execute("UPDATE audiences SET status_code = ?, status_text = ? WHERE id = ?", (code, text, audience_id))

    def set_delivery(self, audience_id: str, code: int, text: str) -> None:
        self.db.execute(
            "UPDATE audiences SET delivery_code = ?, delivery_text = ? WHERE id = ?", (code, text, audience_id)
        )

    def set_populating(self, audience_id: str, reads: int) -> None:
        """The next `reads` reads of the audience report operation_status 441 (still populating)."""
        self.db.execute("UPDATE audiences SET populating_reads = ? WHERE id = ?", (reads, audience_id))

    def read_once(self, audience_id: str) -> None:
        self.db.execute(
            "UPDATE audiences SET populating_reads = populating_reads - 1 WHERE id = ? AND populating_reads > 0",
            (audience_id,),
        )

    def flag(self, audience_id: str, flagged: bool) -> None:
        code, text = (471, "Flagged") if flagged else (200, "Normal")
        self.db.execute(
            "UPDATE audiences SET flagged = ?, status_code = ?, status_text = ? WHERE id = ?",
            (int(flagged), code, text, audience_id),
        )

    def audience_id(self, name: str, account: str | None = None) -> str | None:
        row = self.db.execute(
            "SELECT id FROM audiences WHERE name = ? AND deleted = 0 AND (? IS NULL OR account = ?)",
            (name, account, account),
        ).fetchone()
        return row[0] if row else None

    def listing(self) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT a.id, a.name, a.account, (SELECT count(*) FROM members m WHERE m.audience = a.id) "
            "FROM audiences a WHERE deleted = 0 ORDER BY id"
        ).fetchall()
        return [{"id": r[0], "name": r[1], "account": r[2], "members": r[3]} for r in rows]

    # ------------------------------------------------------------------ members
    def member_count(self, audience_id: str) -> int:
        return self.db.execute("SELECT count(*) FROM members WHERE audience = ?", (audience_id,)).fetchone()[0]

    def member_keys(self, audience_id: str) -> set[str]:
        return {r[0] for r in self.db.execute("SELECT row_key FROM members WHERE audience = ?", (audience_id,))}

    def change_members(self, audience_id: str, keys: list[str], *, remove: bool) -> None:
        # One statement over a JSON array of the keys, in key order (each B-tree page visited once): one call
        # into SQLite rather than one per row, each of which would hand the GIL to other requests' threads.
        array = json.dumps(sorted(keys))
        if remove:
            self.db.execute(
                "DELETE FROM members WHERE audience = ? AND row_key IN (SELECT value FROM json_each(?))",
                (audience_id, array),
            )
        else:
            self.db.execute(
                "INSERT OR IGNORE INTO members (audience, row_key) SELECT ?, value FROM json_each(?)",
                (audience_id, array),
            )

    # ------------------------------------------------------------------ values of a value-based audience
    def set_values(self, audience_id: str, keys: list[str], values: list[float], session_id: str | None = None) -> None:
        """Each row's LOOKALIKE_VALUE, for its members (or, with `session_id`, for the replace session's rows):
        the latest value of a row wins, in a request (a stable sort keeps the rows' order) and across requests."""
        pairs = json.dumps(sorted(zip(keys, map(float, values)), key=lambda pair: pair[0]))
        table, scope = ("replace_values", "?, ") if session_id else ("member_values", "")
        self.db.execute(
            f"INSERT INTO {table} SELECT ?, {scope}json_extract(value, '$[0]'), json_extract(value, '$[1]') "
            "FROM json_each(?) WHERE true ON CONFLICT DO UPDATE SET value = excluded.value",
            (audience_id, *([session_id] if session_id else []), pairs),
        )

    def drop_values(self, audience_id: str, keys: list[str]) -> None:
        """The values of members removed."""
        self.db.execute(
            "DELETE FROM member_values WHERE audience = ? AND row_key IN (SELECT value FROM json_each(?))",
            (audience_id, json.dumps(sorted(keys))),
        )

    def member_values(self, audience_id: str) -> dict[str, float]:
        return dict(self.db.execute("SELECT row_key, value FROM member_values WHERE audience = ?", (audience_id,)))

    # ------------------------------------------------------------------ sessions
    def session(self, audience_id: str, session_id: str) -> dict[str, Any] | None:
        return self._row("SELECT * FROM sessions WHERE audience = ? AND session_id = ?", (audience_id, session_id))

    def sessions(self, audience_id: str, wanted: str) -> list[dict[str, Any]]:
        cur = self.db.execute(
            "SELECT * FROM sessions WHERE audience = ? AND (? = '' OR session_id = ?) ORDER BY started DESC",
            (audience_id, wanted, wanted),
        )
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, row)) for row in cur.fetchall()]

    def record_batch(
        self, audience_id: str, session: dict[str, Any], kind: str, received: int, invalid: int
    ) -> dict[str, Any]:
        """Count a batch into its session (created on its first batch); returns the session after it."""
        now = self.clock()
        sid = session["session_id"]
        self.db.execute(
            "INSERT OR IGNORE INTO sessions (audience, session_id, kind, started) VALUES (?, ?, ?, ?)",
            (audience_id, sid, kind, now),
        )
        self.db.execute(
            "UPDATE sessions SET num_received = num_received + ?, num_invalid = num_invalid + ?, "
            "num_matched = num_matched + ?, batches = batches + 1, last_seq = max(last_seq, ?), "
            "finished = max(finished, ?) WHERE audience = ? AND session_id = ?",
            (received, invalid, received - invalid, session["batch_seq"] or 0, int(session["last"]), audience_id, sid),
        )
        if session["batch_seq"]:
            self.db.execute(
                "INSERT INTO batches (audience, session_id, batch_seq) VALUES (?, ?, ?) "
                "ON CONFLICT DO UPDATE SET times = times + 1",
                (audience_id, sid, session["batch_seq"]),
            )
        self.db.execute("UPDATE audiences SET updated = ? WHERE id = ?", (now, audience_id))
        state = self.session(audience_id, sid)
        assert state is not None
        return state

    # ------------------------------------------------------------------ replace sessions
    def active_replace(self, audience_id: str) -> dict[str, Any] | None:
        return self._row(
            "SELECT * FROM sessions WHERE audience = ? AND kind = 'replace' AND finished = 0", (audience_id,)
        )

    def expire_replace(self, audience_id: str) -> bool:
        """A replace session older than 90 minutes ends with what it received so far."""
        active = self.active_replace(audience_id)
        if active and self.clock() - active["started"] > REPLACE_WINDOW_SECONDS:
            self.finish_replace(audience_id, active["session_id"], timed_out=True)
            return True
        return False

    def persist_expiry(self, audience_ids: list[str]) -> None:
        """Apply replace timeouts found by a request that then failed (its transaction was rolled back)."""
        with self.transaction():
            for audience_id in audience_ids:
                if self.audience(audience_id) is not None:
                    self.expire_replace(audience_id)

    def restart_replace(self, audience_id: str, session_id: str) -> None:
        """Batch 1 again: Meta starts the replace over, dropping what the session sent."""
        self.bump("replace_restarts")
        for table in ("replace_rows", "replace_values"):
            self.db.execute(f"DELETE FROM {table} WHERE audience = ? AND session_id = ?", (audience_id, session_id))
        self.db.execute(
            "UPDATE sessions SET started = ?, num_received = 0, num_invalid = 0 WHERE audience = ? AND session_id = ?",
            (self.clock(), audience_id, session_id),
        )

    def add_replace_rows(self, audience_id: str, session_id: str, keys: list[str]) -> None:
        self.db.execute(
            "INSERT OR IGNORE INTO replace_rows (audience, session_id, row_key) SELECT ?, ?, value FROM json_each(?)",
            (audience_id, session_id, json.dumps(sorted(keys))),
        )

    def finish_replace(self, audience_id: str, session_id: str, timed_out: bool = False) -> None:
        self.db.execute("DELETE FROM members WHERE audience = ?", (audience_id,))
        self.db.execute(
            "INSERT INTO members (audience, row_key) SELECT audience, row_key FROM replace_rows "
            "WHERE audience = ? AND session_id = ?",
            (audience_id, session_id),
        )
        self.db.execute("DELETE FROM replace_rows WHERE audience = ? AND session_id = ?", (audience_id, session_id))
        # the values held become the session's (none for an audience that is not value-based)
        self.db.execute("DELETE FROM member_values WHERE audience = ?", (audience_id,))
        self.db.execute(
            "INSERT INTO member_values (audience, row_key, value) SELECT audience, row_key, value FROM replace_values "
            "WHERE audience = ? AND session_id = ?",
            (audience_id, session_id),
        )
        self.db.execute("DELETE FROM replace_values WHERE audience = ? AND session_id = ?", (audience_id, session_id))
        self.db.execute(
            "UPDATE sessions SET finished = ? WHERE audience = ? AND session_id = ?",
            (2 if timed_out else 1, audience_id, session_id),
        )
        self.set_status(audience_id, 200, "Normal")

    def resent_replace_batches(self) -> int:
        """How many replace batches arrived more than once (a correct client keeps this at 0)."""
        row = self.db.execute(
            "SELECT coalesce(sum(b.times - 1), 0) FROM batches b JOIN sessions s USING (audience, session_id) "
            "WHERE s.kind = 'replace'"
        ).fetchone()
        return int(row[0]) + self.counter("replace_restarts")

    def close(self) -> None:
        self.db.close()
