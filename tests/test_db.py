"""The results database (issue 30): run records into a real SQLite file by default, `db import` takes every schema
version, journals and layer profiles once, `history` filters and exports; a writer killed mid-run leaves the file
whole, two writers at once lose nothing; a database that fails costs a warning, never the results; and the same
through a real PostgreSQL server where Debian's binaries and psycopg are there."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.test_compare import noisy_samples, sampled
from tests.test_report import ENV, cli, results_file
from vggbench.bench.db import Database, DatabaseError, HistoryFilter, database_url, import_files, record
from vggbench.bench.results import claim_results

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
TINY_RUN = ["--models", "vgg11", "--width", "0.0625", "--hidden", "32", "--head", "compact", "--num-classes", "10",
            "--image-size", "32", "--backends", "eager", "--batch-sizes", "1", "--memory-format", "contiguous",
            "--min-time", "0", "--warmup-time", "0", "--warmup", "0", "--min-iters", "6", "--max-iters", "6",
            "--no-progress"]


def writer(db: str, tag: str, count: int, cases: int, samples: int, pause_at: int = 0) -> subprocess.Popen:
    """tests/db_writer.py in a process of its own (see there)."""
    return subprocess.Popen([sys.executable, "-m", "tests.db_writer", db, tag, str(count), str(cases), str(samples),
                             str(pause_at)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_run_is_recorded_in_a_real_sqlite_file_and_history_lists_it(tmp_path):
    db = Path(os.environ["VGGBENCH_DB"])
    result = cli("run", *TINY_RUN, "--out", tmp_path / "a.json")
    assert result.exit_code == 0, result.output
    assert db.is_file() and db.read_bytes()[:15] == b"SQLite format 3"
    written = json.loads((tmp_path / "a.json").read_text())
    listed = cli("history", "--format", "json")
    assert listed.exit_code == 0, listed.output
    runs = json.loads(listed.stdout)
    assert [(r["kind"], r["cases"], r["commit"]) for r in runs] == \
        [("run", len(written["results"]), written["environment"]["git_commit"])]
    cases = json.loads(cli("history", "--cases", "--format", "json").stdout)
    assert [(c["model"], c["batch_size"], c["samples"]) for c in cases] == \
        [(r["model"], r["batch_size"], len(r["samples_ms"])) for r in written["results"]]
    with Database() as database:
        assert database.check() == []


@pytest.mark.slow  # a second tiny run: seconds
def test_no_db_writes_the_files_only(tmp_path):
    assert cli("run", *TINY_RUN, "--out", tmp_path / "b.json", "--no-db").exit_code == 0
    assert (tmp_path / "b.json").is_file() and not Path(os.environ["VGGBENCH_DB"]).exists()


def test_a_database_that_cannot_be_written_costs_one_warning_not_the_run(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = cli("run", *TINY_RUN, "--out", tmp_path / "r.json", "--db", blocker / "results.db")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "r.json").is_file() and (tmp_path / "r.csv").is_file()
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "results database" in warnings[0] and "files are kept" in warnings[0]
    # a --db that is no path or URL fails before the run, in one line
    typo = cli("run", *TINY_RUN, "--out", tmp_path / "t.json", "--db", "postgresql://host:port/db")
    assert typo.exit_code == 2 and typo.stderr.startswith("error: --db") and not (tmp_path / "t.json").exists()
    # a read that fails is an error line, exit 2
    listed = cli("history", "--db", blocker / "results.db")
    assert listed.exit_code == 2 and listed.stderr.startswith("error: results database")


TEST_ENV = {**ENV, "cpu": {**ENV["cpu"], "model": "Test CPU 9000"}}


def two_runs(tmp_path):
    """Two runs on one made-up machine, a day apart, the second of another commit."""
    old = results_file(tmp_path, [sampled("eager", 1, noisy_samples(10.0, seed=1)),
                                  sampled("onnxruntime", 1, noisy_samples(8.0, seed=2))], "old", env=TEST_ENV)
    env = {**TEST_ENV, "git_commit": "abcdef1234", "created": "2026-01-02T00:00:00+00:00"}
    new = results_file(tmp_path, [sampled("eager", 1, noisy_samples(12.0, seed=3))], "new", env=env)
    data = json.loads(new.read_text())
    data["created"] = "2026-01-02T10:00:00+00:00"
    new.write_text(json.dumps(data))
    return old, new


def test_db_import_takes_every_schema_version_journals_and_profiles_once(tmp_path):
    old, new = two_runs(tmp_path)
    journal = claim_results(tmp_path / "cut.json", command="vggbench run --models vgg16")
    journal.start({"name": "cut"}, ENV, "2026-01-03T00:00:00+00:00")
    journal.append(sampled("eager", 2, noisy_samples(20.0, seed=4)))
    journal.close()  # a run killed after one case: its journal stays
    v1 = RESULTS / "run-20261123-022546.json"  # schema_version 1
    loadgen = RESULTS / "epyc2-vgg16-loadgen-ort-ss-offline-20261126.json"
    layers = RESULTS / "epyc2-vgg16-layers-20261126.json"
    foreign = tmp_path / "foreign.json"
    foreign.write_text('{"kind": "something else"}')
    files = [old, new, journal.path, v1, loadgen, layers, foreign]
    result = cli("db", "import", *files)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == len(files) and lines[-1].startswith(f"{foreign}: skipped")
    assert "(loadgen, 2 cases)" in lines[4] and "(verify-layers, 2 cases)" in lines[5]
    again = cli("db", "import", old, v1)
    assert again.stdout.splitlines() == [f"{old}: recorded already", f"{v1}: recorded already"]
    assert cli("db", "import", foreign).exit_code == 2  # nothing at all to import is an error
    with Database() as database:
        runs = database.runs()
        assert sorted(r["kind"] for r in runs) == ["loadgen", "run", "run", "run", "run", "verify-layers"]
        assert next(r for r in runs if r["cases"] == 1 and r["interrupted"])  # the journal: marked interrupted
        v1_cases = database.cases(HistoryFilter(commit="0bc2c8dd"))
        assert len(v1_cases) == len(json.loads(v1.read_text())["results"])
        assert {c["variant"] for c in v1_cases} >= {""}  # version 1 rows read as version 2
        assert database.check() == []
        assert database.layer_profiles(["vgg16"])[0]["rows"][0]["stage"] == "block1"


def test_history_filters_and_exports(tmp_path):
    old, new = two_runs(tmp_path)
    import_files([old, new, RESULTS / "run-20261123-022546.json"])

    def runs(*args):
        result = cli("history", "--format", "json", *args)
        assert result.exit_code == 0, result.output
        return [r["created"][:10] for r in json.loads(result.stdout)]

    assert runs() == ["2026-01-01", "2026-01-02", "2026-11-23"]
    assert runs("--backend", "onnxruntime") == ["2026-01-01", "2026-11-23"]
    assert runs("--model", "vgg16", "--since", "2026-01-02", "--until", "2026-01-02") == ["2026-01-02"]
    assert runs("--commit", "abcdef") == ["2026-01-02"]
    assert runs("--machine", "epyc") == ["2026-11-23"] and runs("--machine", "no such cpu") == []
    assert cli("history", "--since", "yesterday").exit_code == 2
    csv_out = tmp_path / "h.csv"
    assert cli("history", "--cases", "--format", "csv", "--out", csv_out).exit_code == 0
    assert csv_out.read_text().splitlines()[0].startswith("run,kind,created,commit,machine,model")
    parquet = tmp_path / "h.parquet"
    assert cli("history", "--cases", "--format", "parquet", "--out", parquet).exit_code == 0
    import pandas as pd

    assert len(pd.read_parquet(parquet)) == 3 + 20
    assert cli("history", "--format", "parquet").exit_code == 2  # a binary format needs --out


def test_parquet_without_pyarrow_is_one_error_line(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow raises ImportError
    result = cli("history", "--format", "parquet", "--out", tmp_path / "h.parquet")
    assert result.exit_code == 2 and result.stderr.strip().count("\n") == 0
    assert 'pip install "vggbench[pandas]"' in result.stderr


def test_record_is_the_one_call_for_any_run_and_refuses_unknown_kinds(tmp_path):
    old, _ = two_runs(tmp_path)
    assert record(old, "tune") is not None
    assert record(old, "tune") is None  # the same run twice is one run
    from vggbench.core.errors import ConfigError

    with pytest.raises(ConfigError, match="kind must be one of"):
        record(old, "nonsense")


def test_a_writer_killed_mid_run_leaves_the_database_whole(tmp_path):
    db = str(tmp_path / "kill.db")
    proc = writer(db, "killed", 10, 40, 400, pause_at=4)  # 3 runs committed, the 4th killed with 20 cases written
    try:
        lines = []
        while not lines or not lines[-1].startswith("inside"):
            line = proc.stdout.readline()
            assert line, proc.stderr.read()
            lines.append(line.strip())
        assert lines == ["recorded 1", "recorded 2", "recorded 3", "inside 4"]
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert Path(db + "-wal").is_file()  # the killed transaction's pages may be in the log: reading must ignore them
    with Database(db) as database:
        assert database.check() == []  # SQLite's integrity check, every run with all its cases and samples
        runs = database.runs()
        cases = database.cases()
    assert [r["cases"] for r in runs] == [40, 40, 40] and len(cases) == 120
    # and the file takes the next writer as if nothing happened
    again = writer(db, "after", 1, 5, 5)
    assert again.communicate(timeout=120)[0].splitlines() == ["recorded 1"]
    with Database(db) as database:
        assert len(database.runs()) == 4 and database.check() == []


def test_a_new_sqlite_file_locked_for_a_moment_is_opened_when_the_lock_goes(tmp_path, monkeypatch):
    """What test_two_writers_at_once_lose_nothing met once on a busy machine: the other writer's process, opening
    the same new file, was told "database is locked" at once (SQLite does not wait for some locks). It is tried
    again until the busy timeout is spent; any other error is not."""
    from vggbench.bench import db as db_module

    real, calls = db_module.Database._create_once, []

    def locked_twice(self):
        calls.append(1)
        if len(calls) <= 2:
            raise DatabaseError(f"results database {self.url}: database is locked")
        return real(self)

    monkeypatch.setattr(db_module.Database, "_create_once", locked_twice)
    with Database(str(tmp_path / "a.db")) as database:
        assert database.runs() == [] and len(calls) == 3
    monkeypatch.setattr(db_module, "BUSY_TIMEOUT_S", 0.1)
    monkeypatch.setattr(db_module.Database, "_create_once",
                        lambda self: (_ for _ in ()).throw(DatabaseError("results database x: database is locked")))
    with pytest.raises(DatabaseError, match="database is locked"):
        Database(str(tmp_path / "b.db"))  # a lock that stays: the timeout's error
    other = []
    monkeypatch.setattr(db_module.Database, "_create_once",
                        lambda self: other.append(1) or (_ for _ in ()).throw(DatabaseError("x: disk I/O error")))
    with pytest.raises(DatabaseError, match="disk I/O error"):
        Database(str(tmp_path / "c.db"))
    assert other == [1]  # not tried again


def test_two_writers_at_once_lose_nothing(tmp_path):
    db = str(tmp_path / "two.db")
    procs = [writer(db, tag, 15, 10, 50) for tag in ("a", "b")]
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        assert out.splitlines()[-1] == "recorded 15"
    with Database(db) as database:
        assert database.check() == []
        runs = database.runs()
        settings = [json.loads(s) for (s,) in database.engine.connect().exec_driver_sql("SELECT settings FROM runs")]
    assert len(runs) == 30 and sorted((s["tag"], s["n"]) for s in settings) == \
        sorted((tag, n) for tag in ("a", "b") for n in range(15))


# --- PostgreSQL -------------------------------------------------------------------------------------------------

def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    return str(versions[-1]) if versions else None


@contextlib.contextmanager
def postgres_server():
    """A throwaway PostgreSQL server (Debian's initdb and pg_ctl) on a Unix socket in a temp folder; its URL.
    As root, the server runs as the postgres user (it refuses root)."""
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not (initdb and pg_ctl):
        pytest.skip("PostgreSQL's initdb/pg_ctl are not installed (Debian: apt-get install postgresql)")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("psycopg is not installed (pip install 'vggbench[postgres]')")
    prefix: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="vggbench-pg-"))
    if os.geteuid() == 0:
        import pwd

        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(root)
            pytest.skip("running as root and there is no postgres user to run the server as")
        os.chown(root, user.pw_uid, user.pw_gid)
        root.chmod(0o755)
        prefix = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = root / "data"
    try:
        subprocess.run([*prefix, initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"],
                       check=True, capture_output=True, timeout=120)
        subprocess.run([*prefix, pg_ctl, "-D", str(data), "-w", "-l", str(root / "log"), "-o",
                        f"-k {root} -p {port} -c listen_addresses=''", "start"], check=True, capture_output=True,
                       timeout=120)
        try:
            yield f"postgresql+psycopg://postgres@/postgres?host={root}&port={port}"
        finally:
            subprocess.run([*prefix, pg_ctl, "-D", str(data), "-m", "immediate", "stop"], capture_output=True,
                           timeout=60)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
def test_a_real_postgresql_server_works_as_sqlite_does(tmp_path):
    with postgres_server() as url:
        assert database_url(url) == url
        old, new = two_runs(tmp_path)
        assert [what for _, what in import_files([old, new], url)] == \
            ["run 1 (run, 2 cases)", "run 2 (run, 1 cases)"]
        procs = [writer(url, tag, 5, 5, 20) for tag in ("a", "b")]
        for proc in procs:
            _, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, err
        with Database(url) as database:
            assert database.check() == []
            assert len(database.runs()) == 12
            assert len(database.case_history(json.loads(old.read_text())["results"][0], None)) == 2
        result = cli("history", "--db", url, "--backend", "onnxruntime", "--format", "json")
        assert result.exit_code == 0 and len(json.loads(result.stdout)) == 1
