"""The benchmark history: every run stored in an embedded SQLite database.

Two tables: ``runs`` (one line per run: id, time, model, suite, comparison key, config and environment as
JSON) and ``rows`` (one line per matrix row: the headline figures as columns for SQL queries, plus the whole
row as JSON so that a run reads back exactly as it was written). The default location is
``$EDGESEG_BENCH_DB``, else ``$XDG_DATA_HOME/edgeseg/bench.sqlite``, else
``~/.local/share/edgeseg/bench.sqlite``. Torch-free.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from edgeseg.benchmarks.results import Row, RunResult

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    created TEXT NOT NULL,
    model TEXT,
    suite TEXT,
    key TEXT,
    config_json TEXT NOT NULL,
    environment_json TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS rows (
    run_id TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
    idx INTEGER NOT NULL,
    target TEXT NOT NULL,
    precision TEXT NOT NULL,
    runtime TEXT NOT NULL,
    device TEXT NOT NULL,
    status TEXT NOT NULL,
    reason TEXT,
    p50_ms REAL, p90_ms REAL, p99_ms REAL, mean_ms REAL, std_ms REAL, fps REAL,
    dice REAL, iou REAL, agreement REAL, max_abs_diff REAL, psnr_db REAL,
    size_bytes INTEGER, threads INTEGER, peak_rss_mb REAL,
    row_json TEXT NOT NULL,
    PRIMARY KEY (run_id, idx)
);
CREATE INDEX IF NOT EXISTS runs_key ON runs(key, created);
"""


def default_db_path() -> Path:
    """``$EDGESEG_BENCH_DB``, else ``$XDG_DATA_HOME/edgeseg/bench.sqlite``, else ``~/.local/share/...``."""
    if os.environ.get("EDGESEG_BENCH_DB"):
        return Path(os.environ["EDGESEG_BENCH_DB"]).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base).expanduser() / "edgeseg" / "bench.sqlite"


def comparison_key(config: dict[str, Any]) -> str:
    """What must match for two runs' latencies to be comparable: model, weights, data, size, threads."""
    parts = [config.get("model"), config.get("weights_sha256") or config.get("weights"), config.get("data"),
             config.get("split"), config.get("img_size"), config.get("threads")]
    return "|".join("" if p is None else str(p) for p in parts)


class History:
    """A benchmark history database.

    Args:
        path: the SQLite file (created with its folder on first write); default :func:`default_db_path`.

    Examples:
        >>> db = History("/tmp/bench.sqlite")
        >>> db.save(run)
        >>> db.load(run.run_id).rows[0].p50
    """

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path is not None else default_db_path()

    @contextmanager
    def _connect(self, create: bool = True) -> Iterator[sqlite3.Connection]:
        if self.path.is_dir():
            raise ValueError(f"--db {self.path} is a folder; give a file path such as {self.path / 'bench.sqlite'}")
        if not create and not self.path.is_file():
            raise FileNotFoundError(f"no benchmark history at {self.path}; run `edgeseg bench --model ...` "
                                    "first or pass --db PATH")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            con = sqlite3.connect(self.path, timeout=30)
        except sqlite3.Error as exc:
            raise ValueError(f"cannot open the benchmark database {self.path}: {exc}") from None
        try:
            con.execute("PRAGMA foreign_keys = ON")
            con.executescript(_SCHEMA)
            con.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)",
                        (str(SCHEMA_VERSION),))
            yield con
            con.commit()
        except sqlite3.IntegrityError as exc:
            con.rollback()
            raise ValueError(f"{self.path}: {exc} (a run with this id is already stored)") from None
        except sqlite3.DatabaseError as exc:
            con.rollback()
            raise ValueError(f"{self.path} is not a usable benchmark database ({exc}); pass another --db") from None
        finally:
            con.close()

    def check(self) -> None:
        """Open (creating it if needed) and write-test the database, so that a run that cannot be stored is
        refused before it starts, not thrown away after it finished.

        Raises:
            ValueError: the path is a folder, read-only, not a database, or the disk is full.
        """
        try:
            with self._connect() as con:
                con.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('last_check', datetime('now'))")
        except sqlite3.Error as exc:
            raise ValueError(f"cannot write the benchmark database {self.path}: {exc}; pass another --db "
                             "or --no-db") from None

    def save(self, run: RunResult) -> str:
        """Store a run (all rows in one transaction); returns its id."""
        d = run.to_dict()
        with self._connect() as con:
            con.execute(
                "INSERT INTO runs(run_id, created, model, suite, key, config_json, environment_json) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (run.run_id, run.created, run.config.get("model"), run.config.get("suite"),
                 comparison_key(run.config), json.dumps(d["config"]), json.dumps(d["environment"])),
            )
            for i, row in enumerate(d["rows"]):
                lat = row.get("latency_ms") or {}
                con.execute(
                    "INSERT INTO rows VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (run.run_id, i, row["target"], row["precision"], row["runtime"], row["device"],
                     row["status"], row["reason"], lat.get("p50"), lat.get("p90"), lat.get("p99"),
                     lat.get("mean"), lat.get("std"), row.get("fps"), row.get("dice"), row.get("iou"),
                     row.get("agreement"), row.get("max_abs_diff"), row.get("psnr_db"), row.get("size_bytes"),
                     row.get("threads"), row.get("peak_rss_mb"), json.dumps(row)),
                )
        return run.run_id

    def resolve(self, ref: str) -> str:
        """A full run id from an id, a unique prefix of one, or ``latest`` / ``latest~N``.

        Raises:
            ValueError: no run or several runs match.
        """
        with self._connect(create=False) as con:
            if ref == "latest" or ref.startswith("latest~"):
                back = int(ref.split("~", 1)[1]) if "~" in ref else 0
                got = con.execute("SELECT run_id FROM runs ORDER BY created DESC, rowid DESC LIMIT 1 OFFSET ?",
                                  (back,)).fetchone()
                if got is None:
                    raise ValueError(f"there is no run {ref!r} in {self.path}")
                return got[0]
            hits = [r[0] for r in con.execute("SELECT run_id FROM runs WHERE run_id LIKE ? ORDER BY created",
                                              (ref.replace("%", "") + "%",))]
        if len(hits) == 1:
            return hits[0]
        if not hits:
            raise ValueError(f"no run {ref!r} in {self.path}; see `edgeseg bench history`")
        raise ValueError(f"run id prefix {ref!r} is ambiguous ({len(hits)} runs); give more characters")

    def load(self, ref: str) -> RunResult:
        """Read a run back (by id, prefix or ``latest``)."""
        run_id = self.resolve(ref)
        with self._connect(create=False) as con:
            created, config, env = con.execute(
                "SELECT created, config_json, environment_json FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            rows = [Row.from_dict(json.loads(r[0])) for r in
                    con.execute("SELECT row_json FROM rows WHERE run_id = ? ORDER BY idx", (run_id,))]
        return RunResult(run_id=run_id, created=created, config=json.loads(config),
                         environment=json.loads(env), rows=rows)

    def runs(self, model: str | None = None, limit: int | None = 20) -> list[dict[str, Any]]:
        """Newest first: id, time, model, suite, row counts per status, best p50 and its row ([] when the file
        does not exist yet).

        Raises:
            ValueError: the path is a folder or not a benchmark database.
        """
        if self.path.is_dir():
            raise ValueError(f"--db {self.path} is a folder; give a file path such as {self.path / 'bench.sqlite'}")
        if not self.path.is_file():
            return []
        q = "SELECT run_id, created, model, suite, key, environment_json FROM runs"
        args: list[Any] = []
        if model:
            q += " WHERE model = ?"
            args.append(model)
        q += " ORDER BY created DESC, rowid DESC"
        if limit:
            q += " LIMIT ?"
            args.append(int(limit))
        out = []
        with self._connect(create=False) as con:
            for run_id, created, mdl, suite, key, env_json in con.execute(q, args).fetchall():
                counts = dict(con.execute("SELECT status, COUNT(*) FROM rows WHERE run_id = ? GROUP BY status",
                                          (run_id,)).fetchall())
                best = con.execute(
                    "SELECT target, precision, runtime, device, p50_ms FROM rows WHERE run_id = ? AND "
                    "status = 'ok' AND p50_ms IS NOT NULL ORDER BY p50_ms LIMIT 1", (run_id,)).fetchone()
                env = json.loads(env_json)
                out.append({
                    "run_id": run_id, "created": created, "model": mdl, "suite": suite, "key": key,
                    "rows": sum(counts.values()), "status": counts,
                    "best": None if best is None else {"row": f"{best[0]}/{best[1]} ({best[2]}, {best[3]})",
                                                       "p50_ms": best[4]},
                    "load_average": env.get("load_average"),
                })
        return out

    def previous(self, run: RunResult) -> RunResult | None:
        """The newest earlier run with the same comparison key (the baseline of a regression gate)."""
        if not self.path.is_file():
            return None
        with self._connect(create=False) as con:
            got = con.execute(
                "SELECT run_id FROM runs WHERE key = ? AND run_id != ? AND created <= ? "
                "ORDER BY created DESC, rowid DESC LIMIT 1",
                (comparison_key(run.config), run.run_id, run.created)).fetchone()
        return None if got is None else self.load(got[0])
