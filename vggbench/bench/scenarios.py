"""The settings of `vggbench loadgen`, declared once: which MLPerf scenarios, LoadGen's run lengths, the query
sample library's images, and the batching SUT. Light to import (the CLI builds its options from them).

MLPerf's rules ask 600 s per run and, per scenario, 1,024 (SingleStream), 662 (MultiStream) and 270,336 (Server)
queries, which VGG16 on a few CPU cores would take hours to serve. vggbench keeps MLPerf's query counts where
they are practical and otherwise the fewest LoadGen's early stopping accepts for a VALID verdict (459 queries at
Server's p99 when every one is on time), and runs for 60 s unless told otherwise; the values used are recorded
with each result.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..core.settings import Settings, setting

SCENARIOS = ("singlestream", "multistream", "server", "offline")
VERDICTS = ("VALID", "INVALID")
MODES = ("performance", "accuracy", "both")
MLPERF_MIN_DURATION_S = 600.0
MLPERF_MIN_QUERIES = {"singlestream": 1024, "multistream": 662, "server": 270_336, "offline": 1}
DEFAULT_MIN_DURATION_S = 60.0
DEFAULT_MIN_QUERIES = {"singlestream": 1024, "multistream": 662, "server": 500, "offline": 1}
# --short, for tests and smoke runs: what early stopping needs to be able to say VALID (SingleStream's p90 after
# 64 queries, Server's p99 after 459 on-time ones); MultiStream's 662 are kept, since fewer are always INVALID
SHORT_MIN_DURATION_S = 0.25
SHORT_MIN_QUERIES = {"singlestream": 64, "multistream": 662, "server": 500, "offline": 1}
# the percentile each scenario is judged at (MLPerf's)
PERCENTILES = {"singlestream": 0.90, "multistream": 0.99, "server": 0.99, "offline": None}
# Caps on what a run may ask for, refused up front (one line, exit 2): past them LoadGen generates its schedule for
# hours, or a batch or the library alone fills the memory; what a run asks within them is checked against the
# measured speed before it runs (see vggbench.bench.loadgen.check_run_length)
MAX_DURATION_S = 86_400.0  # a day per run (MLPerf's rules ask 600 s)
MAX_QUERIES = 1_000_000  # LoadGen holds every query's record; MLPerf's most is Server's 270,336
MAX_TARGET_QPS = 1e6
MAX_SAMPLES_PER_QUERY = 1024  # the sample library's size at most (qsl.MAX_SAMPLES); MLPerf's MultiStream: 8
MAX_SEARCH_RUNS = 100
MAX_LIBRARY = 50_000  # images preprocessed and held in memory (ImageNet's validation split)
MAX_LATENCY_BOUND_MS = 3_600_000.0  # an hour
MAX_BATCH = 4096
MAX_WORKERS = 256  # threads
SAMPLE_SOURCES_HELP = ("auto (the test split of the dataset the weights were trained on, when it loads offline, "
                       "else photos), photos (scikit-learn's two photos, their mirror images and random crops), "
                       "digits, synthetic, cifar10, stl10, or folder:PATH")


@dataclass(frozen=True, kw_only=True)
class LoadgenSettings(Settings):
    """What LoadGen runs: scenarios, mode, run lengths, the Server search and the query sample library."""

    scenarios: tuple[str, ...] = setting(("singlestream",), "Comma-separated: singlestream, multistream, server, "
                                                            "offline.", choices=SCENARIOS, option="--scenario")
    mode: str = setting("performance", "performance (LoadGen's timed run), accuracy (every sample once, scored "
                                       "from LoadGen's accuracy log) or both.", choices=MODES)
    # run lengths (None: the scenario's default; see the module's docstring)
    min_duration_s: float | None = setting(None, "Seconds each LoadGen run lasts at least [default: 60, or "
                                                 "0.25 with --short; MLPerf's rules: 600].", minimum=0,
                                           maximum=MAX_DURATION_S, option="--min-duration")
    min_queries: int | None = setting(None, "Queries each run issues at least [default: singlestream 1024, "
                                            "multistream 662, server 500, offline 1; with --short 64, 662, 500, "
                                            "1].", minimum=1, maximum=MAX_QUERIES)
    short: bool = setting(False, "Short runs for tests and smoke checks (see --min-duration, --min-queries).")
    target_qps: float | None = setting(None, "Server: run at this rate instead of searching for the highest "
                                             "VALID one; offline: LoadGen's expected QPS [default: estimated "
                                             "from timed batches].", above=0, maximum=MAX_TARGET_QPS)
    samples_per_query: int = setting(8, "MultiStream: samples per query (MLPerf's 8).", minimum=1,
                                     maximum=MAX_SAMPLES_PER_QUERY)
    latency_bound_ms: float = setting(1000.0, "Server: the p99 latency bound a VALID run keeps.", above=0,
                                      maximum=MAX_LATENCY_BOUND_MS)
    # the Server search: probes judged by LoadGen's latency check, then full runs down to a VALID one and back up
    max_runs: int = setting(8, "Server search: LoadGen runs at most, probes and full runs together.", minimum=1,
                            maximum=MAX_SEARCH_RUNS, option="--search-max-runs")
    search_tolerance: float = setting(0.05, "Server search: stop when the VALID and INVALID full runs' rates are "
                                            "this close (a fraction of the VALID one).", above=0, below=1)
    probe_duration_s: float | None = setting(None, "Server search: seconds of each probe run [default: a "
                                                   "quarter of --min-duration].", minimum=0, maximum=MAX_DURATION_S,
                                             option="--probe-duration")
    # the query sample library
    images: str = setting("auto", f"Query sample library: {SAMPLE_SOURCES_HELP}.")
    split: str = setting("test", "The dataset split (val where a dataset has no test split).",
                         choices=("train", "val", "test"))
    count: int | None = setting(None, "Samples in the library [default: the whole split up to 1024; photos: "
                                      "64].", minimum=1, maximum=MAX_LIBRARY)
    data_dir: str = setting("data", "Folder holding cifar10/stl10 in torchvision's layout.")

    def min_duration_for(self, scenario: str) -> float:
        if self.min_duration_s is not None:
            return self.min_duration_s
        return SHORT_MIN_DURATION_S if self.short else DEFAULT_MIN_DURATION_S

    def min_queries_for(self, scenario: str) -> int:
        if self.min_queries is not None:
            return self.min_queries
        return (SHORT_MIN_QUERIES if self.short else DEFAULT_MIN_QUERIES)[scenario]

    def probe_duration_for(self) -> float:
        if self.probe_duration_s is not None:
            return self.probe_duration_s
        return self.min_duration_for("server") / 4


@dataclass(frozen=True, kw_only=True)
class SutSettings(Settings):
    """The system under test: how it batches what LoadGen issues, and how many workers run the batches."""

    max_batch: int = setting(8, "Largest batch the SUT runs (Server and Offline; SingleStream runs 1 and "
                                "MultiStream a query's samples, up to this); Server's is capped further by "
                                "--server-batch-budget.", minimum=1, maximum=MAX_BATCH)
    server_batch_budget: float = setting(0.25, "Server: run batches only as large as one timed call within this "
                                               "fraction of --latency-bound-ms (1, 2, 4, ... up to --max-batch; "
                                               "1 at least), so that a sample queued behind a batch still has "
                                               "time for its own.", above=0, maximum=1)
    max_wait_ms: float = setting(5.0, "Server: how long a batch waits for more samples after its first one "
                                      "arrived.", minimum=0, maximum=MAX_LATENCY_BOUND_MS)
    workers: int = setting(1, "Threads that each take a batch and run it (a stream each); more than 1 for "
                              "backends whose runners may be called concurrently ({thread_safe_backends}).", minimum=1, maximum=MAX_WORKERS)
