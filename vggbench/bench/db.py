"""The results database: every `run`, `loadgen`, `verify` (and `tune`, through `record`) is also recorded in an
SQL database, so that a team can query runs across commits, dates and machines (`vggbench history`) and the HTML
report can draw each case's history.

Where: `--db URL|PATH`, else $VGGBENCH_DB, else $XDG_DATA_HOME/vggbench/results.db (default
~/.local/share/vggbench/results.db), an embedded SQLite file. Any SQLAlchemy URL works the same way (a team's
PostgreSQL: postgresql+psycopg://user@host/db, with the `postgres` extra).

Tables (normalized): `environment` (one row per distinct machine and software, shared by the runs made there),
`runs` (one per run, verify or tuning), `cases` (one per result row), `samples` (a case's timed calls), `scenarios`
(a LoadGen row's block) and `layers` (a `verify --layers` profile's stages). A run is written in one transaction:
a killed writer leaves no part of a run behind, and SQLite runs in WAL mode with a busy timeout, its writers
taking the write lock as they begin (BEGIN IMMEDIATE), so that two processes can write at once and lose nothing.
The JSON results files stay the record: a database that cannot be written costs a warning, never the run.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..core.arguments import PATH, expect
from ..core.errors import ArgumentError, ConfigError, ResultsError, VggbenchError
from ..core.extras import install_hint, require
from ..core.settings import Settings, setting

SCHEMA_VERSION = 1
KINDS = ("run", "loadgen", "verify", "verify-layers", "tune")
DB_ENV = "VGGBENCH_DB"
BUSY_TIMEOUT_S = 60.0  # how long a writer waits for another's transaction before it gives up
CASE_KEYS = ("model", "image_size", "batch_size", "backend", "variant", "device", "precision", "memory_format",
             "threads")
CASE_NUMBERS = ("median_ms", "median_ci_low_ms", "median_ci_high_ms", "mean_ms", "p90_ms", "p99_ms",
                "images_per_s", "gflops_per_s", "peak_pct", "theoretical_pct", "parity_max_abs")
SCENARIO_NUMBERS = ("samples_per_s", "target_qps", "latency_bound_ms", "p50_ms", "p90_ms", "p99_ms", "mean_ms")


class DatabaseError(VggbenchError):
    """The results database cannot be opened, read or written (exit 2)."""


@dataclass(frozen=True, kw_only=True)
class DbSettings(Settings):
    """Where a command records its results."""

    db: str | None = setting(None, "The results database: a file (SQLite) or an SQLAlchemy URL such as "
                                   f"postgresql+psycopg://host/db [default: ${DB_ENV}, else "
                                   "~/.local/share/vggbench/results.db].")
    record_db: bool = setting(True, "Also record the results in the results database (--no-db: only the files).",
                              option="--record-db/--no-db")


def default_path() -> Path:
    """$XDG_DATA_HOME/vggbench/results.db, or ~/.local/share/vggbench/results.db."""
    root = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(root) / "vggbench" / "results.db"


def database_url(db: str | os.PathLike | None = None) -> str:
    """The SQLAlchemy URL of `db` (a URL as it is, a path as an SQLite file), else of $VGGBENCH_DB, else of the
    default file."""
    value = str(db) if db is not None else os.environ.get(DB_ENV) or str(default_path())
    if "://" in value:
        return value
    return f"sqlite:///{Path(value).expanduser().absolute()}"


def check_url(db: str | os.PathLike | None) -> str:
    """The URL of `db` once it is known to be a path or a URL SQLAlchemy reads (a ConfigError otherwise): checked
    before a run starts, so that a typo does not wait for the end of it. Whether the database can be reached is
    known only when the run is recorded (a warning then, never a lost run)."""
    url = database_url(db)
    try:
        from sqlalchemy.engine import make_url
    except ImportError:
        return url  # record() says what is missing, once
    try:
        make_url(url).get_dialect()  # a scheme no dialect has (bogus://) fails here, not at the end of a run
    except ImportError:
        return url  # a known dialect whose driver is missing: Database says which, once
    except Exception as e:  # noqa: BLE001  (ArgumentError, NoSuchModuleError, or ValueError for a bad port)
        raise ConfigError(f"--db {db if db is not None else url}: not a path or an SQLAlchemy URL ({e})") from None
    return url


def _shown(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001  (a URL SQLAlchemy cannot parse is shown as typed)
        return url


# --- the schema ----------------------------------------------------------------------------------------------

def _tables():
    from sqlalchemy import (
        Boolean,
        Column,
        Float,
        ForeignKey,
        Index,
        Integer,
        MetaData,
        String,
        Table,
        Text,
        UniqueConstraint,
    )

    md = MetaData()
    Table("vggbench_meta", md, Column("key", String(64), primary_key=True), Column("value", Text))
    Table("environment", md,
          Column("id", Integer, primary_key=True),
          Column("fingerprint", String(64), nullable=False, unique=True),  # sha256 of `data`
          Column("machine", Text),  # the hardware, as the comparisons judge it: CPU, cores, GPUs
          Column("cpu", Text), Column("logical_cores", Integer), Column("gpus", Text),
          Column("python", String(32)), Column("torch", String(64)), Column("onnxruntime", String(64)),
          Column("platform", Text), Column("data", Text, nullable=False))
    Table("runs", md,
          Column("id", Integer, primary_key=True),
          Column("uid", String(64), nullable=False, unique=True),  # sha256 of the run's content: imports once
          Column("kind", String(16), nullable=False),
          Column("created", String(32), nullable=False),  # ISO 8601, UTC: sorts as it reads
          Column("recorded", String(32), nullable=False),
          Column("wall_s", Float), Column("command", Text), Column("vggbench", String(32)),
          Column("git_commit", String(64)),
          Column("environment_id", Integer, ForeignKey("environment.id"), nullable=False),
          Column("source", Text),  # the file it was imported from or written to
          Column("cases", Integer, nullable=False),  # how many case rows belong to it: a check of completeness
          Column("interrupted", Boolean, nullable=False, default=False),
          Column("settings", Text))
    Table("cases", md,
          Column("id", Integer, primary_key=True),
          Column("run_id", Integer, ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
          Column("ordinal", Integer, nullable=False),
          Column("model", String(128)), Column("image_size", Integer), Column("batch_size", Integer),
          Column("backend", String(64)), Column("variant", String(128)), Column("device", String(32)),
          Column("precision", String(16)), Column("memory_format", String(32)), Column("threads", Integer),
          Column("status", String(32), nullable=False), Column("reason", Text),
          *(Column(name, Float) for name in CASE_NUMBERS),
          Column("noisy", Boolean), Column("under_load", Boolean),
          Column("samples", Integer, nullable=False),  # how many samples rows belong to it
          Column("data", Text, nullable=False),  # the whole row, less its samples and scenario block
          UniqueConstraint("run_id", "ordinal"))
    Index("cases_by_key", md.tables["cases"].c.model, md.tables["cases"].c.backend, md.tables["cases"].c.batch_size)
    Table("samples", md,
          Column("case_id", Integer, ForeignKey("cases.id", ondelete="CASCADE"), primary_key=True),
          Column("idx", Integer, primary_key=True),
          Column("ms", Float, nullable=False), Column("round", Integer))
    Table("scenarios", md,
          Column("case_id", Integer, ForeignKey("cases.id", ondelete="CASCADE"), primary_key=True),
          Column("name", String(32), nullable=False), Column("mode", String(32)), Column("result", String(16)),
          Column("metric", String(32)), *(Column(name, Float) for name in SCENARIO_NUMBERS),
          Column("data", Text, nullable=False))
    Table("layers", md,
          Column("case_id", Integer, ForeignKey("cases.id", ondelete="CASCADE"), primary_key=True),
          Column("idx", Integer, primary_key=True),
          Column("stage", String(128)), Column("max_abs", Float), Column("rel_error", Float),
          Column("min_cosine", Float), Column("growth", Float), Column("within", Boolean),
          Column("time_ms", Float),  # where the profile timed its stages
          Column("data", Text, nullable=False))
    return md


_METADATA = None


def metadata():
    global _METADATA
    if _METADATA is None:
        _METADATA = _tables()
    return _METADATA


class Database:
    """An open results database (see the module's text). `record_*` write one run per transaction."""

    def __init__(self, db: str | os.PathLike | None = None) -> None:
        expect("Database", "db", db, (*PATH, type(None)), "a path, an SQLAlchemy URL (str) or None")
        try:
            import sqlalchemy as sa
        except ImportError:
            raise DatabaseError("the results database needs SQLAlchemy: pip install sqlalchemy "
                                "(or record nothing with --no-db)") from None
        self.url = database_url(db)
        self.sa = sa
        try:
            url = sa.engine.make_url(self.url)
        except sa.exc.ArgumentError as e:
            raise ConfigError(f"--db {db}: not a path or an SQLAlchemy URL ({e})") from None
        self.sqlite = url.get_backend_name() == "sqlite"
        try:
            if self.sqlite:
                path = url.database
                if path and path != ":memory:":
                    _check_ours(path, self.url)
                    Path(path).parent.mkdir(parents=True, exist_ok=True)
                self.engine = sa.create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_S})
                _sqlite_events(self.engine)
            else:
                self.engine = sa.create_engine(url, pool_pre_ping=True)
        except ImportError as e:  # the URL's driver
            raise DatabaseError(f"results database {_shown(self.url)}: its driver is not installed ({e}); for "
                                f"PostgreSQL: {install_hint('postgres')}") from None
        except sa.exc.ArgumentError as e:  # NoSuchModuleError: a scheme no dialect has
            raise ConfigError(f"--db {_shown(self.url)}: not a path or an SQLAlchemy URL ({e})") from None
        except OSError as e:
            raise DatabaseError(f"results database {_shown(self.url)}: {e.strerror or e}") from None
        self.tables = metadata().tables
        self._create()

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _write(self):
        """A connection whose transaction takes the write lock as it begins (SQLite: BEGIN IMMEDIATE)."""
        return self.engine.connect().execution_options(vggbench_write=True)

    def _create(self) -> None:
        """The tables and the schema version, made once (each process that opens the database checks them). Two
        processes opening a new SQLite file at once can be told "database is locked" at once rather than after the
        busy timeout (its journal switching to WAL, or the WAL's index being set up, takes a lock SQLite does not
        wait for): that answer is tried again, with a growing pause, until BUSY_TIMEOUT_S is spent."""
        deadline, pause = time.monotonic() + BUSY_TIMEOUT_S, 0.02
        while True:
            try:
                return self._create_once()
            except DatabaseError as e:
                if not (self.sqlite and str(e).endswith("database is locked")) or time.monotonic() + pause > deadline:
                    raise
                self.engine.dispose()  # a fresh connection: its pragmas are run again
                time.sleep(pause)
                pause = min(pause * 2, 1.0)

    def _create_once(self) -> None:
        sa = self.sa
        try:
            with self._write() as conn, conn.begin():
                metadata().create_all(conn)
                meta = self.tables["vggbench_meta"]
                found = conn.execute(sa.select(meta.c.value).where(meta.c.key == "schema_version")).scalar()
                if found is None:
                    conn.execute(meta.insert().values(key="schema_version", value=str(SCHEMA_VERSION)))
                elif int(found) > SCHEMA_VERSION:
                    raise DatabaseError(f"results database {_shown(self.url)} has schema version {found}; this "
                                        f"vggbench knows {SCHEMA_VERSION}: upgrade vggbench")
        except sa.exc.SQLAlchemyError as e:
            raise DatabaseError(f"results database {_shown(self.url)}: {_reason(e)}") from None

    # --- writing -------------------------------------------------------------------------------------------

    def record_results(self, data: dict, kind: str = "run", source: str | os.PathLike | None = None) -> int | None:
        """Record a results envelope (as `read_run` returns it) in one transaction. Returns the run's id, or None
        when the same run (same content) is recorded already."""
        results = data.get("results") or []
        settings = data.get("settings") or {}
        run = {"kind": kind, "created": data.get("created"), "wall_s": data.get("wall_s"),
               "command": settings.get("command"), "vggbench": data.get("vggbench"),
               "interrupted": "interrupted" in settings, "settings": settings}
        return self._record(run, data.get("environment") or {}, [_case_of(r) for r in results], source,
                            uid=content_id(data))

    def record_verify(self, report: dict, environment: dict, kind: str = "verify") -> int | None:
        """Record a `verify` report (VerifyReport.to_dict()) or, with kind "verify-layers", a `verify --layers`
        report (LayersReport.to_dict()): one case per comparison or per profile, a profile's stages in `layers`."""
        created = environment.get("created") or _now()
        cases = []
        if kind == "verify-layers":
            for p in report.get("profiles", []):
                rows = p.get("rows") or []
                cases.append(({"model": report.get("model"), **{k: p.get(k) for k in
                                                                ("backend", "device", "precision", "memory_format")},
                               "status": "parity_failed" if p.get("first_exceeding") else "ok",
                               "reason": f"first stage over budget: {p['first_exceeding']}"
                               if p.get("first_exceeding") else "",
                               "data": {k: v for k, v in p.items() if k != "rows"}}, [], None, rows))
        else:
            for r in report.get("results", []):
                cases.append(({"model": report.get("model"), **{k: r.get(k) for k in
                                                                ("backend", "device", "precision", "memory_format")},
                               "batch_size": r.get("images"), "status": "ok" if r.get("passed") else "parity_failed",
                               "reason": r.get("reason") or "", "parity_max_abs": r.get("max_abs"), "data": r},
                              [], None, []))
        run = {"kind": kind, "created": created, "wall_s": None, "command": report.get("command"),
               "vggbench": environment.get("vggbench"), "interrupted": False,
               "settings": {"export_dir": report.get("export_dir"), "skipped": report.get("skipped", [])}}
        return self._record(run, environment, cases, report.get("export_dir"),
                            uid=content_id({"report": report, "environment": environment, "kind": kind}))

    def _record(self, run: dict, environment: dict, cases: list, source, uid: str) -> int | None:
        sa = self.sa
        t = self.tables
        try:
            with self._write() as conn, conn.begin():
                if conn.execute(sa.select(t["runs"].c.id).where(t["runs"].c.uid == uid)).first():
                    return None
                env_id = self._environment(conn, environment)
                run_id = conn.execute(t["runs"].insert().values(
                    uid=uid, kind=run["kind"], created=_utc(run["created"]), recorded=_now(), wall_s=run["wall_s"],
                    command=run["command"], vggbench=run["vggbench"], git_commit=environment.get("git_commit"),
                    environment_id=env_id, source=str(Path(source).absolute()) if source else None,
                    cases=len(cases), interrupted=run["interrupted"], settings=_json(run["settings"]),
                )).inserted_primary_key[0]
                timed = []  # every case's samples, inserted at once: one statement instead of one per case
                for ordinal, (case, samples, scenario, layers) in enumerate(cases):
                    case_id = conn.execute(t["cases"].insert().values(
                        run_id=run_id, ordinal=ordinal, samples=len(samples), **_case_columns(case),
                    )).inserted_primary_key[0]
                    timed += [(case_id, i, ms, rnd) for i, (ms, rnd) in enumerate(samples)]
                    if scenario:
                        conn.execute(t["scenarios"].insert().values(
                            case_id=case_id, name=scenario.get("name"), mode=scenario.get("mode"),
                            result=scenario.get("result"), metric=scenario.get("metric"),
                            **{k: _number(scenario.get(k)) for k in SCENARIO_NUMBERS}, data=_json(scenario)))
                    if layers:
                        conn.execute(t["layers"].insert(), [_layer_columns(case_id, i, row)
                                                            for i, row in enumerate(layers)])
                if timed:
                    self._insert_samples(conn, timed)
                return run_id
        except sa.exc.IntegrityError:
            # another writer recorded the same run (or environment) between our check and our insert: try once more
            # now that theirs is committed
            if getattr(self, "_retrying", False):
                raise
            self._retrying = True
            try:
                return self._record(run, environment, cases, source, uid)
            finally:
                self._retrying = False

    def _insert_samples(self, conn, rows: list[tuple]) -> None:
        """(case_id, idx, ms, round) rows in one executemany of the driver: a run holds up to hundreds of thousands
        of samples, and SQLAlchemy's insert builds a dict and binds each (20x slower on SQLite)."""
        marker = {"qmark": "?", "format": "%s", "pyformat": "%s"}.get(self.engine.dialect.paramstyle)
        if marker is None:  # a driver with named or numbered parameters: SQLAlchemy's own insert
            conn.execute(self.tables["samples"].insert(),
                         [dict(zip(("case_id", "idx", "ms", "round"), r, strict=True)) for r in rows])
            return
        conn.exec_driver_sql(f'INSERT INTO samples (case_id, idx, ms, "round") VALUES ({", ".join([marker] * 4)})',
                             rows)

    def _environment(self, conn, env: dict) -> int:
        sa = self.sa
        table = self.tables["environment"]
        # created and the commit change with every run and are the run's, not the machine's
        data = {k: v for k, v in env.items() if k not in ("created", "git_commit", "gemm_peaks", "ceilings")}
        text = _json(data)
        fingerprint = hashlib.sha256(text.encode()).hexdigest()
        found = conn.execute(sa.select(table.c.id).where(table.c.fingerprint == fingerprint)).scalar()
        if found is not None:
            return found
        cpu = env.get("cpu") or {}
        gpus = ", ".join(d.get("name", "?") for d in (env.get("cuda") or {}).get("devices", [])) or None
        return conn.execute(table.insert().values(
            fingerprint=fingerprint, machine=machine_label(env), cpu=cpu.get("model"),
            logical_cores=cpu.get("logical_cores"), gpus=gpus, python=env.get("python"),
            torch=(env.get("versions") or {}).get("torch"), onnxruntime=(env.get("onnxruntime") or {}).get("version"),
            platform=env.get("platform"), data=text)).inserted_primary_key[0]

    # --- reading -------------------------------------------------------------------------------------------

    def _query(self, statement) -> list[dict]:
        sa = self.sa
        try:
            with self.engine.connect() as conn:
                return [dict(row._mapping) for row in conn.execute(statement)]
        except sa.exc.SQLAlchemyError as e:
            raise DatabaseError(f"results database {_shown(self.url)}: {_reason(e)}") from None

    def _filtered(self, statement, filters: HistoryFilter):
        t = self.tables
        runs, cases, env = t["runs"], t["cases"], t["environment"]
        f, sa = filters, self.sa
        conditions = []
        if f.kind:
            conditions.append(runs.c.kind.in_(f.kind))
        if f.model:
            conditions.append(cases.c.model.in_(f.model))
        if f.backend:
            conditions.append(cases.c.backend.in_(f.backend))
        if f.machine:
            conditions.append(sa.func.lower(env.c.machine).contains(f.machine.lower(), autoescape=True))
        if f.commit:
            conditions.append(runs.c.git_commit.startswith(f.commit, autoescape=True))
        if f.since:
            conditions.append(runs.c.created >= _day(f.since, "--since"))
        if f.until:  # the whole day named
            conditions.append(runs.c.created < _day(f.until, "--until", next_day=True))
        return statement.where(*conditions)

    def runs(self, filters: HistoryFilter | None = None) -> list[dict]:
        """One row per run that has a case matching `filters` (all runs without), newest last."""
        sa, t = self.sa, self.tables
        runs, cases, env = t["runs"], t["cases"], t["environment"]
        f = filters or HistoryFilter()
        joined = runs.join(env, runs.c.environment_id == env.c.id).outerjoin(cases, cases.c.run_id == runs.c.id)
        statement = sa.select(
            runs.c.id.label("run"), runs.c.kind, runs.c.created, runs.c.git_commit.label("commit"), env.c.machine,
            runs.c.cases, sa.func.count(cases.c.id).label("matching"),
            sa.func.min(cases.c.model).label("model"), sa.func.count(sa.distinct(cases.c.model)).label("models"),
            sa.func.count(sa.distinct(cases.c.backend)).label("backends"), runs.c.interrupted, runs.c.command,
        ).select_from(joined).group_by(runs.c.id, env.c.machine).order_by(runs.c.created, runs.c.id)
        return self._query(self._filtered(statement, f))

    def cases(self, filters: HistoryFilter | None = None) -> list[dict]:
        """One row per case matching `filters`, with its run's date, commit and machine, oldest first."""
        sa, t = self.sa, self.tables
        runs, cases, env = t["runs"], t["cases"], t["environment"]
        joined = cases.join(runs, cases.c.run_id == runs.c.id).join(env, runs.c.environment_id == env.c.id)
        statement = sa.select(
            runs.c.id.label("run"), runs.c.kind, runs.c.created, runs.c.git_commit.label("commit"), env.c.machine,
            *(cases.c[k] for k in CASE_KEYS), cases.c.status, *(cases.c[k] for k in CASE_NUMBERS), cases.c.noisy,
            cases.c.under_load, cases.c.samples,
        ).select_from(joined).order_by(runs.c.created, runs.c.id, cases.c.ordinal)
        return self._query(self._filtered(statement, filters or HistoryFilter()))

    def case_history(self, row: dict, machine: str | None) -> list[dict]:
        """Every recorded row of the case `row` (matched on CASE_KEYS) on `machine`, oldest first, each a result
        row as the comparisons read it (with samples_ms), plus run, created, commit and uid."""
        sa, t = self.sa, self.tables
        runs, cases, env, samples = t["runs"], t["cases"], t["environment"], t["samples"]
        joined = cases.join(runs, cases.c.run_id == runs.c.id).join(env, runs.c.environment_id == env.c.id)
        conditions = [cases.c[k] == row.get(k) if row.get(k) is not None else cases.c[k].is_(None)
                      for k in CASE_KEYS if k != "variant"]
        conditions.append(sa.func.coalesce(cases.c.variant, "") == (row.get("variant") or ""))
        conditions.append(runs.c.kind.in_(("run", "tune")))
        if machine is not None:
            conditions.append(env.c.machine == machine)
        found = self._query(sa.select(cases.c.id, cases.c.data, cases.c.status, runs.c.id.label("run"),
                                      runs.c.created, runs.c.git_commit.label("commit"), runs.c.uid)
                            .select_from(joined).where(*conditions).order_by(runs.c.created, runs.c.id))
        if not found:
            return []
        timed = self._query(sa.select(samples.c.case_id, samples.c.ms)
                            .where(samples.c.case_id.in_([c["id"] for c in found]))
                            .order_by(samples.c.case_id, samples.c.idx))
        by_case: dict[int, list[float]] = {}
        for s in timed:
            by_case.setdefault(s["case_id"], []).append(s["ms"])
        return [{**json.loads(c["data"]), "status": c["status"], "samples_ms": by_case.get(c["id"], []),
                 "run": c["run"], "created": c["created"], "commit": c["commit"], "uid": c["uid"]} for c in found]

    def layer_profiles(self, models: Iterable[str]) -> list[dict]:
        """The stages of the newest `verify --layers` profiles of `models`: one dict per profile (its case's
        backend, device, precision, memory format, run, created) with `rows`."""
        sa, t = self.sa, self.tables
        runs, cases, layers = t["runs"], t["cases"], t["layers"]
        newest = self._query(sa.select(sa.func.max(runs.c.id).label("run"), cases.c.model)
                             .select_from(cases.join(runs, cases.c.run_id == runs.c.id))
                             .where(runs.c.kind == "verify-layers", cases.c.model.in_(list(models)))
                             .group_by(cases.c.model))
        profiles = []
        for n in newest:
            found = self._query(sa.select(cases.c.id, *(cases.c[k] for k in ("model", "backend", "device",
                                                                              "precision", "memory_format")),
                                          runs.c.created)
                                .select_from(cases.join(runs, cases.c.run_id == runs.c.id))
                                .where(cases.c.run_id == n["run"], cases.c.model == n["model"])
                                .order_by(cases.c.ordinal))
            for case in found:
                rows = self._query(sa.select(layers.c.data).where(layers.c.case_id == case.pop("id"))
                                   .order_by(layers.c.idx))
                profiles.append({**case, "rows": [json.loads(r["data"]) for r in rows]})
        return profiles

    def check(self) -> list[str]:
        """What is inconsistent: a run whose case rows, or a case whose samples, are not all there (a write that
        was cut short), and SQLite's integrity check. Empty when the database is whole."""
        sa, t = self.sa, self.tables
        problems = []
        if self.sqlite:
            found = self._query(sa.text("PRAGMA integrity_check"))
            verdict = [next(iter(r.values())) for r in found]
            if verdict != ["ok"]:
                problems += [f"integrity_check: {v}" for v in verdict]
        runs, cases, samples = t["runs"], t["cases"], t["samples"]
        counted = sa.select(cases.c.run_id, sa.func.count().label("n")).group_by(cases.c.run_id).subquery()
        for r in self._query(sa.select(runs.c.id, runs.c.cases, counted.c.n)
                             .outerjoin(counted, counted.c.run_id == runs.c.id)):
            if (r["n"] or 0) != r["cases"]:
                problems.append(f"run {r['id']} has {r['n'] or 0} of its {r['cases']} cases")
        timed = sa.select(samples.c.case_id, sa.func.count().label("n")).group_by(samples.c.case_id).subquery()
        for c in self._query(sa.select(cases.c.id, cases.c.samples, timed.c.n)
                             .outerjoin(timed, timed.c.case_id == cases.c.id)):
            if (c["n"] or 0) != c["samples"]:
                problems.append(f"case {c['id']} has {c['n'] or 0} of its {c['samples']} samples")
        orphans = self._query(sa.select(sa.func.count()).select_from(cases)
                              .where(~cases.c.run_id.in_(sa.select(runs.c.id))))
        if next(iter(orphans[0].values())):
            problems.append("cases without their run")
        return problems


@dataclass(frozen=True)
class HistoryFilter:
    """Which runs `vggbench history` lists: every field given must match (a tuple: any of its values)."""

    model: tuple[str, ...] = ()
    backend: tuple[str, ...] = ()
    kind: tuple[str, ...] = ()
    machine: str | None = None  # a part of the machine's description (CPU model, GPUs), any case
    commit: str | None = None  # a prefix of the commit
    since: str | None = None  # YYYY-MM-DD (or a full ISO time)
    until: str | None = None  # the whole day included


def _check_ours(path: str, url: str) -> None:
    """A DatabaseError unless the SQLite file `path` is new, empty or holds vggbench's tables: its tables (and WAL
    mode, which rewrites the file's header) are never added to a database of the user's own that --db names by
    mistake. Read through a read-only connection, before any connection of the engine's. (A server's database is
    shared by design.)"""
    import sqlite3
    from urllib.parse import quote

    if os.path.islink(path) and not os.path.exists(path):  # SQLite would create the file wherever the link points
        raise DatabaseError(f"results database {_shown(url)} is a symbolic link to nothing "
                            f"({os.readlink(path)}); name the database file itself")
    if not os.path.isfile(path) or os.path.getsize(path) == 0:
        return
    try:
        with contextlib.closing(sqlite3.connect(f"file:{quote(path)}?mode=ro", uri=True)) as conn:
            tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.Error:
        return  # not a database, or locked: the engine's connection says so, as it did
    if tables and "vggbench_meta" not in tables:
        shown = ", ".join(sorted(tables)[:5]) + (" ..." if len(tables) > 5 else "")
        raise DatabaseError(f"results database {_shown(url)} is an SQLite database vggbench did not make (it holds "
                            f"the tables {shown}); vggbench adds its tables only to an empty one or one it made: "
                            f"choose another --db")


def _sqlite_events(engine) -> None:
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def connect(dbapi_connection, record):
        # SQLAlchemy begins the transactions itself (below): pysqlite's own would begin them late and deferred
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        cursor.execute("PRAGMA journal_mode = WAL")  # readers never wait for the writer, the writer for no reader
        cursor.execute("PRAGMA synchronous = NORMAL")  # WAL stays consistent at a power cut; a kill loses nothing
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def begin(conn):
        # a writer takes the lock as it begins: two that begin deferred and then both write cannot both go on,
        # and one would fail at once with "database is locked" instead of waiting its turn
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("vggbench_write") else "BEGIN")


def _reason(e: Exception) -> str:
    orig = getattr(e, "orig", None)
    return " ".join(str(orig if orig is not None else e).split())[:300]


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _utc(text: str | None) -> str:
    """An ISO time as UTC ISO text (times without a zone are taken as UTC); now when there is none."""
    if not text:
        return _now()
    try:
        when = dt.datetime.fromisoformat(str(text))
    except ValueError:
        return _now()
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return when.astimezone(dt.timezone.utc).isoformat(timespec="seconds")


def _day(text: str, option: str, next_day: bool = False) -> str:
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"{option} must be a date such as 2026-12-01, got {text!r}") from None
    if next_day and len(text) <= 10:
        when += dt.timedelta(days=1)
    return _utc(when.isoformat())


def _json(value) -> str:
    return json.dumps(value, sort_keys=True, default=str, allow_nan=False)


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def content_id(data) -> str:
    """The sha256 of a run's content: the same run recorded twice (by the command, then imported from its
    file) is one run."""
    return hashlib.sha256(_json(data).encode()).hexdigest()


def machine_label(env: dict) -> str:
    """The hardware as comparisons judge it (compare._hardware): CPU model and cores, and the GPUs."""
    cpu = env.get("cpu") or {}
    text = f"{cpu.get('model') or 'unknown CPU'} ({cpu.get('logical_cores') or '?'} cores)"
    gpus = [d.get("name", "?") for d in (env.get("cuda") or {}).get("devices", [])]
    return text + (f" + {', '.join(gpus)}" if gpus else "")


def _case_of(row: dict) -> tuple[dict, list, dict | None, list]:
    """(case columns and data, [(ms, round)], scenario block, layer rows: none) of a result row."""
    samples = list(row.get("samples_ms") or ())
    rounds = list(row.get("sample_rounds") or ())
    paired = [(ms, rounds[i] if i < len(rounds) else None) for i, ms in enumerate(samples)]
    data = {k: v for k, v in row.items() if k not in ("samples_ms", "sample_rounds", "scenario")}
    return {**row, "data": data}, paired, row.get("scenario"), []


def _case_columns(case: dict) -> dict:
    out = {k: case.get(k) for k in CASE_KEYS}
    out["variant"] = out["variant"] or ""
    out.update({k: _number(case.get(k)) for k in CASE_NUMBERS})
    out.update(status=case.get("status") or "ok", reason=case.get("reason") or "",
               noisy=case.get("noisy") if isinstance(case.get("noisy"), bool) else None,
               under_load=case.get("under_load") if isinstance(case.get("under_load"), bool) else None,
               data=_json(case.get("data", {})))
    return out


def _layer_columns(case_id: int, index: int, row: dict) -> dict:
    time_ms = next((row[k] for k in ("time_ms", "median_ms", "ms") if _number(row.get(k)) is not None), None)
    return {"case_id": case_id, "idx": index, "stage": row.get("stage"), "max_abs": _number(row.get("max_abs")),
            "rel_error": _number(row.get("rel_error")), "min_cosine": _number(row.get("min_cosine")),
            "growth": _number(row.get("growth")),
            "within": row.get("within") if isinstance(row.get("within"), bool) else None,
            "time_ms": _number(time_ms), "data": _json(row)}


# --- what the commands call ----------------------------------------------------------------------------------

def warn(message: str) -> None:
    print(f"warning: {' '.join(message.split())}", file=sys.stderr)


def record(run_or_results, kind: str = "run", *, db: str | os.PathLike | None = None,
           source: str | os.PathLike | None = None, environment: dict | None = None) -> int | None:
    """Record a run in the results database and return its id (None when it was recorded already, or when the
    database failed: then one warning line on stderr, and nothing else happens; the results files are the record).

    run_or_results: a BenchRun, a results envelope (dict, as written or as `read_run` returns it), a results file
    or journal path, or a VerifyReport/LayersReport (kind "verify" / "verify-layers"; `environment` defaults to
    this machine's). kind: one of KINDS ("tune" for tuning runs)."""
    if kind not in KINDS:
        raise ConfigError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    # a wrong argument is the caller's bug, raised here; only the database's own failures become a warning
    if run_or_results is None or isinstance(run_or_results, (int, float, bool, list, tuple, bytes)):
        raise ArgumentError(f"record: run_or_results must be a BenchRun, a results envelope (dict), a results file "
                            f"or a report, got {type(run_or_results).__name__}")
    expect("record", "db", db, (*PATH, type(None)), "a path, an SQLAlchemy URL (str) or None")
    try:
        with Database(db) as database:
            return _record_into(database, run_or_results, kind, source, environment)
    except DatabaseError as e:
        warn(f"{e}; the results files are kept, the database has no record of this {kind}")
    except Exception as e:  # noqa: BLE001  (a driver's own errors: the run has succeeded and must stay so)
        warn(f"results database {_shown(database_url(db))}: {type(e).__name__}: {_reason(e)}; the results files are "
             f"kept, the database has no record of this {kind}")
    return None


def _record_into(database: Database, obj, kind: str, source, environment: dict | None) -> int | None:
    sa = database.sa
    try:
        if isinstance(obj, (str, os.PathLike)):
            from .results import read_run

            source = source or obj
            obj = read_run(obj)
        if kind in ("verify", "verify-layers") and not (isinstance(obj, dict) and "results" in obj
                                                         and "kind" in obj):
            from ..core.env import capture

            report = obj.to_dict() if hasattr(obj, "to_dict") else obj
            return database.record_verify(report, environment or capture(), kind)
        if hasattr(obj, "to_dict"):  # a BenchRun
            obj = obj.to_dict()
        if not isinstance(obj, dict) or not isinstance(obj.get("results"), list):
            raise ConfigError(f"record() takes a BenchRun, a results envelope or a results file, got "
                              f"{type(obj).__name__}")
        if environment is not None:
            obj = {**obj, "environment": environment}
        return database.record_results(obj, kind, source)
    except sa.exc.SQLAlchemyError as e:
        raise DatabaseError(f"results database {_shown(database.url)}: {_reason(e)}") from None


def import_files(paths: Sequence[str | os.PathLike], db: str | os.PathLike | None = None) -> list[tuple[Path, str]]:
    """`vggbench db import`: each results file or journal as a run (LoadGen's as a loadgen run), each layer profile
    (`verify --layers --out`, or a benchmarks/ script's file holding one under "profile") as a verify-layers run,
    each in its own transaction. Returns (path, what happened) per file: a file that is neither is skipped, with
    why; a ResultsError when no file could be read, before anything is written."""
    if isinstance(paths, (str, os.PathLike)):  # one path is not a sequence of its characters
        raise ArgumentError(f"import_files: paths must be a list of paths, got one path {str(paths)!r}: pass "
                            f"[{str(paths)!r}]")
    expect("import_files", "paths", paths, (list, tuple), "a list of paths")
    for path in paths:
        expect("import_files", "paths[]", path, PATH, "a path (str or os.PathLike)")
    read, skipped = [], {}
    for path in map(Path, paths):
        try:
            read.append((path, *_importable(path)))
        except ResultsError as e:
            skipped[path] = f"skipped: {e}"
    if not read:
        raise ResultsError("nothing to import: " + "; ".join(skipped.values()) if skipped else
                           "nothing to import: give results files, journals or layer profiles")
    done = {}
    with Database(db) as database:
        for path, kind, data in read:
            try:
                if kind == "verify-layers":
                    run_id = database.record_verify(data["profile"], data["environment"], kind)
                    count = len(data["profile"].get("profiles", []))
                else:
                    run_id = database.record_results(data, kind, path)
                    count = len(data["results"])
            except database.sa.exc.SQLAlchemyError as e:
                raise DatabaseError(f"results database {_shown(database.url)}: importing {path}: {_reason(e)}") \
                    from None
            done[path] = f"run {run_id} ({kind}, {count} cases)" if run_id is not None else "recorded already"
    return [(path, done.get(path) or skipped[path]) for path in map(Path, paths)]


def _importable(path: Path) -> tuple[str, dict]:
    """(kind, data) of a file `db import` takes, or a ResultsError saying why not."""
    from ..core.documents import loads_json
    from .results import KIND, read_run

    if path.suffix.lower() == ".json" and path.is_file():
        try:
            data = loads_json(path.read_text(encoding="utf-8"), str(path), ResultsError)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ResultsError(f"{path} is not valid JSON ({e})") from None
        profile = data.get("profile", data) if isinstance(data, dict) else None
        if isinstance(data, dict) and data.get("kind") != KIND and isinstance(profile, dict) \
                and isinstance(profile.get("profiles"), list):
            environment = data.get("environment") if isinstance(data.get("environment"), dict) else {}
            return "verify-layers", {"profile": profile, "environment": environment}
    data = read_run(path)
    command = str((data.get("settings") or {}).get("command") or "")
    scenarios = any(r.get("scenario") for r in data["results"])
    return ("loadgen" if scenarios or command.startswith("vggbench loadgen") else "run"), data


HISTORY_FORMATS = ("table", "github", "csv", "json", "parquet")


def export_rows(rows: list[dict], fmt: str, out: str | os.PathLike | None) -> str | None:
    """`vggbench history`'s rows as text (table, github, csv, json: returned, or written to `out`) or as a
    parquet file (`out` required; pandas and pyarrow needed)."""
    from ..core.fileio import atomic_file, check_replaceable, write_text
    from .report import render

    if out is not None:  # an export has no mark of vggbench's: an existing file may be the user's, so none is replaced
        check_replaceable(out, force=False, what="file",
                          hint="history writes only a new file: choose another --out, or move it away")
    if fmt == "parquet":
        if out is None:
            raise ConfigError("--format parquet writes a file: give --out FILE.parquet")
        pd = require("pandas", "history --format parquet")
        require("pyarrow", "history --format parquet")
        with atomic_file(out) as tmp:
            pd.DataFrame(rows).to_parquet(tmp, index=False)
        return None
    # json keeps each value's type (render would make a table's text of them); an empty table is no text
    text = json.dumps(rows, indent=2, default=str) if fmt == "json" else render(rows, fmt) if rows else ""
    if out is not None:
        write_text(out, text + "\n")
        return None
    return text
