#!/usr/bin/env python
"""Profile REST API latency on a store holding 1,000,000 logged calls.

    python benchmarks/bench_profile_api.py            # SQLite and PostgreSQL, ~4-7 min

What it does, for each store (SQLite file in WAL mode; a throwaway PostgreSQL 15
cluster started as the ``postgres`` user on a free loopback port):

1. creates the schema with the product's own migrations (``Store.migrate``);
2. seeds one user's history: ``--rows`` request-log rows over ``--days`` days,
   ``--models`` models, ``--keys`` personal keys (a quarter revoked), 40 notebooks,
   chat conversations - and the counters exactly as ``core.billing.settle`` and
   ``core.usage.record_usage`` would have left them (``usage_stats``,
   ``usage_daily``, the per-key counters), generated deterministically and written
   in bulk (executemany / COPY);
3. starts a real ``jupyter server`` subprocess with lumen-jupyter from this
   working tree (a YAML file with the same models; the Jupyter token as auth);
4. measures ``--requests`` sequential keep-alive requests per endpoint after a
   warm-up, in ``--rounds`` interleaved rounds, next to two floors measured in the
   same run: Jupyter's own ``GET /api`` and lumen's ``openapi.json`` (auth + one
   executor hop, no query);
5. breaks the time down in-process: each service call timed directly, every SQL
   statement it issues captured, re-run alone and EXPLAINed.

Results: ``benchmarks/results/profile_api-<utc>.json`` (and ``-latest.json``).
Only 127.0.0.1 is contacted; every process and temporary directory is removed
at exit.  ``--backends sqlite`` skips PostgreSQL.
"""

from __future__ import annotations

import argparse
import http.client
import math
import os
import random
import sqlite3
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness as h

sys.path.insert(0, str(h.REPO))

from lumen_jupyter.core import keys as keymod
from lumen_jupyter.core.money import MICRO, call_cost, token_cost

USERNAME = "bench"
SOURCES = (("api", 0.45), ("kernel", 0.35), ("chat", 0.15), ("session", 0.05))
WORKING_MODEL_WEIGHTS = (0.45, 0.25, 0.12, 0.08, 0.06, 0.04)
NOTEBOOKS = 40
CHAT_TURNS = 8

ENDPOINTS: list[tuple[str, str]] = [
    ("floor: jupyter GET /api", "api"),
    ("floor: lumen openapi.json", "lumen/api/openapi.json"),
    ("profile", "lumen/api/profile"),
    ("keys", "lumen/api/keys"),
    ("keys?include_revoked=true", "lumen/api/keys?include_revoked=true"),
    ("models", "lumen/api/models"),
    # what the profile's first screen asks for (then it fetches the whole lists)
    ("keys first page", "lumen/api/keys?include_revoked=false&limit=40"),
    ("models first page", "lumen/api/models?limit=40"),
    ("usage week", "lumen/api/usage?period=week&group_by=model"),
    ("usage month", "lumen/api/usage?period=month&group_by=model"),
    ("usage year", "lumen/api/usage?period=year&group_by=model"),
    ("usage all", "lumen/api/usage?period=all&group_by=model"),
]
TARGETS_MS = {"profile": 10.0, **{f"usage {p}": 100.0 for p in ("week", "month", "year", "all")}}
TARGETS_MS_P95 = {"profile": 20.0}


# -- the configuration -------------------------------------------------------------------


@dataclass(frozen=True)
class Model:
    name: str
    input_micro: int
    output_micro: int


def make_models(count: int) -> list[Model]:
    if count < len(WORKING_MODEL_WEIGHTS):  # each day's calls go to that many models
        raise SystemExit(f"--models must be at least {len(WORKING_MODEL_WEIGHTS)} (got {count})")
    rng = random.Random(7)
    vendors = ("acme", "globex", "initech", "umbrella", "hooli", "stark", "wayne", "tyrell")
    models = []
    for i in range(count):
        price_in = rng.choice((0, 0.1, 0.15, 0.5, 1, 2.5, 3, 5, 10, 15))
        price_out = price_in * rng.choice((2, 3, 4, 5))
        name = f"{vendors[i % len(vendors)]}/model-{i:03d}"
        models.append(Model(name, int(price_in * MICRO), int(price_out * MICRO)))
    return models


def write_config(path: Path, models: list[Model]) -> None:
    lines = [
        "version: 2",
        "defaults:",
        "  tokens: {max: 20, refresh: 1, starting: 20}",
        "  models: allowed",
        "users:",
        f"  {USERNAME}: {{display_name: Bench Marker, email: bench@example.org}}",
        "models:",
    ]
    for i, m in enumerate(models):
        lines += [
            f"  - name: {m.name}",
            f"    description: Benchmark model number {i}, a stand-in for a real one.",
            f"    input_cost_per_million: {m.input_micro / MICRO}",
            f"    output_cost_per_million: {m.output_micro / MICRO}",
            "    endpoints:",
            # nothing listens on the discard port; health probes are off in this benchmark
            f"      - {{url: 'http://127.0.0.1:9/v1', model: {m.name}}}",
            f"    max_model_len: {8192 * (1 + i % 16)}",
            f"    max_output_tokens: {1024 * (1 + i % 8)}",
            f"    supports_function_calling: {'true' if i % 2 else 'false'}",
            f"    supports_reasoning: {'true' if i % 3 == 0 else 'false'}",
            "    knowledge_cutoff: 2025-01",
            "    input_modalities: [text]",
            "    output_modalities: [text]",
        ]
        if i % 20 == 19:
            lines += [
                "    needs_consent: true",
                f"    notice: Model {i} has terms of use; accept them once.",
            ]
    path.write_text("\n".join(lines) + "\n")


# -- the seed ----------------------------------------------------------------------------

REQUEST_COLUMNS = [
    "id",
    "account_id",
    "created_at",
    "finished_at",
    "model",
    "endpoint",
    "key_id",
    "source",
    "notebook",
    "cell",
    "conversation",
    "input_tokens",
    "output_tokens",
    "reserved_micro",
    "coins_micro",
    "duration_ms",
    "status",
    "http_status",
    "estimated",
    "metered",
    # the per-call cap (what was reserved) and no overrun
    "cap_micro",
    "overrun_micro",
    # nothing reserved on a key's own budget (the seed's keys have none)
    "key_reserved_micro",
]


def ts(dt: datetime) -> str:
    """A naive-UTC timestamp the way SQLAlchemy stores DateTime on SQLite."""
    return dt.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


@dataclass
class Key:
    id: int
    name: str
    key_hash: str
    hint: str
    created_at: datetime
    revoked_at: datetime | None
    counters: list[int] = field(default_factory=lambda: [0, 0, 0, 0])
    last_used_at: datetime | None = None


class Seed:
    """One user's deterministic history and the counters it implies."""

    def __init__(
        self,
        *,
        rows: int,
        days: int,
        models: list[Model],
        keys: int,
        secret: bytes,
        now: datetime,
        seed: int = 42,
    ) -> None:
        self.rows = rows
        self.days = days
        self.models = models
        self.now = now
        self.start = (now - timedelta(days=days)).replace(hour=0, minute=0, second=0, microsecond=0)
        self.rng = random.Random(seed)
        self.keys = self._make_keys(keys, secret)
        self.notebooks = [
            f"projects/study-{i // 8}/analysis-{i:02d}.ipynb" for i in range(NOTEBOOKS)
        ]
        self.stats: dict[tuple[str, str], list[Any]] = {}
        self.daily: dict[tuple[date, str, str, int, str], list[int]] = defaultdict(
            lambda: [0, 0, 0, 0]
        )
        self.counted = 0
        self.status_counts: dict[str, int] = defaultdict(int)

    def _make_keys(self, count: int, secret: bytes) -> list[Key]:
        rng = random.Random(11)
        span = (self.now - self.start).total_seconds()
        out = []
        for i in range(count):
            created = self.start + timedelta(seconds=span * i / count + rng.random() * 60)
            revoked = None
            if rng.random() < 0.25:
                revoked = min(
                    self.now - timedelta(minutes=5), created + timedelta(days=rng.uniform(1, 120))
                )
            raw = keymod.generate_key()
            out.append(
                Key(
                    i + 1,
                    f"key {i:04d} {rng.choice(('ci', 'laptop', 'lab', 'cron'))}",
                    keymod.hash_key(raw, secret),
                    keymod.key_hint(raw),
                    created,
                    revoked,
                )
            )
        return out

    def _day_volumes(self) -> list[int]:
        weights = []
        for d in range(self.days):
            day = self.start + timedelta(days=d)
            weekend = 0.35 if day.weekday() >= 5 else 1.0
            growth = 0.5 + d / self.days
            weights.append(weekend * growth * self.rng.uniform(0.6, 1.4))
        total = sum(weights)
        volumes = [int(self.rows * w / total) for w in weights]
        volumes[-1] += self.rows - sum(volumes)
        return volumes

    def requests(self, batch: int = 20000) -> Iterator[list[tuple[Any, ...]]]:
        """Request-log rows in id (= time) order, in batches; counters fill as a side effect."""
        rng = self.rng
        models = self.models
        n_models = len(models)
        zipf = [1 / (r + 1) ** 1.1 for r in range(n_models)]
        zipf_total = sum(zipf)
        cum = []
        acc = 0.0
        for w in zipf:
            acc += w / zipf_total
            cum.append(acc)
        import bisect

        next_id = 1
        out: list[tuple[Any, ...]] = []
        key_index = 0
        active: list[Key] = []
        source_names = [s for s, _ in SOURCES]
        source_weights = [w for _, w in SOURCES]
        for d, volume in enumerate(self._day_volumes()):
            day_start = self.start + timedelta(days=d)
            day_end = day_start + timedelta(days=1)
            while key_index < len(self.keys) and self.keys[key_index].created_at < day_end:
                active.append(self.keys[key_index])
                key_index += 1
            live = [k for k in active if k.revoked_at is None or k.revoked_at > day_end]
            working_keys = live[-3:] + (rng.sample(live[:-3], min(2, max(0, len(live) - 3))))
            offset = (d // 60) * 7  # popularity drifts: new favourites every two months
            working_models: list[Model] = []
            while len(working_models) < len(WORKING_MODEL_WEIGHTS):
                m = models[(bisect.bisect_left(cum, rng.random()) + offset) % n_models]
                if m not in working_models:
                    working_models.append(m)
            working_notebooks = rng.sample(self.notebooks, 3)
            limit = min(self.now, day_end) - timedelta(minutes=1)
            span = max(1.0, (limit - day_start).total_seconds())
            if span <= 60:
                continue
            seconds = sorted(rng.random() * span for _ in range(volume))
            chat_seen = 0
            for sec in seconds:
                created = day_start + timedelta(seconds=sec)
                source = rng.choices(source_names, source_weights)[0]
                model = rng.choices(working_models, WORKING_MODEL_WEIGHTS)[0]
                key = None
                notebook = cell = conversation = None
                if source == "api":
                    candidates = [
                        k
                        for k in working_keys
                        if k.created_at <= created
                        and (k.revoked_at is None or k.revoked_at > created)
                    ]
                    key = rng.choice(candidates) if candidates else None
                    if key is None:
                        source = "session"
                elif source == "kernel":
                    notebook = rng.choice(working_notebooks)
                    cell = f"{rng.getrandbits(64):016x}"
                elif source == "chat":
                    conversation = f"c{d:04d}-{chat_seen // CHAT_TURNS:04d}"
                    chat_seen += 1
                endpoint = "embeddings" if rng.random() < 0.05 else "chat"
                tokens_in = min(100_000, int(rng.lognormvariate(6.0, 1.0)) + 1)
                tokens_out = (
                    0
                    if endpoint == "embeddings"
                    else min(4096, int(rng.lognormvariate(5.0, 1.0)) + 1)
                )
                duration_ms = int(200 + tokens_out * rng.uniform(8, 25))
                finished = created + timedelta(milliseconds=duration_ms)
                roll = rng.random()
                status, http_status, estimated = "ok", 200, False
                if roll < 0.02:
                    status, http_status = "error", 502
                elif roll < 0.03:
                    status, estimated = "aborted", True
                    tokens_out = tokens_out // 3
                reserved = call_cost(
                    tokens_in, max(tokens_out, 1024), model.input_micro, model.output_micro
                )
                counted = status != "error"
                coins = (
                    (
                        token_cost(tokens_in, model.input_micro)
                        + token_cost(tokens_out, model.output_micro)
                    )
                    if counted
                    else 0
                )
                self.status_counts[status] += 1
                if counted:
                    self._count(
                        model.name, source, key, notebook, finished, tokens_in, tokens_out, coins
                    )
                out.append(
                    (
                        next_id,
                        1,
                        ts(created),
                        ts(finished),
                        model.name,
                        endpoint,
                        key.id if key else None,
                        source,
                        notebook,
                        cell,
                        conversation,
                        tokens_in if counted else 0,
                        tokens_out if counted else 0,
                        reserved,
                        coins,
                        duration_ms,
                        status,
                        http_status,
                        estimated,
                        True,
                    )
                )
                next_id += 1
                if len(out) >= batch:
                    yield out
                    out = []
        if out:
            yield out
        self.total_rows = next_id - 1

    def _count(
        self,
        model: str,
        source: str,
        key: Key | None,
        notebook: str | None,
        finished: datetime,
        tokens_in: int,
        tokens_out: int,
        coins: int,
    ) -> None:
        self.counted += 1
        stat = self.stats.get((model, source))
        if stat is None:
            stat = self.stats[(model, source)] = [0, 0, 0, 0, finished]
        stat[0] += 1
        stat[1] += tokens_in
        stat[2] += tokens_out
        stat[3] += coins
        if finished > stat[4]:
            stat[4] = finished
        row = self.daily[
            (finished.date(), model, source, key.id if key else 0, (notebook or "")[:1024])
        ]
        row[0] += 1
        row[1] += tokens_in
        row[2] += tokens_out
        row[3] += coins
        if key is not None:
            c = key.counters
            c[0] += 1
            c[1] += tokens_in
            c[2] += tokens_out
            c[3] += coins
            if key.last_used_at is None or finished > key.last_used_at:
                key.last_used_at = finished


RESERVED = REQUEST_COLUMNS.index("reserved_micro")


# -- writing the seed --------------------------------------------------------------------


class SqliteSink:
    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=OFF")
        self.conn.execute("BEGIN")
        self.placeholders = ",".join("?" * len(REQUEST_COLUMNS))

    def requests(self, rows: list[tuple[Any, ...]]) -> None:
        self.conn.executemany(
            f"INSERT INTO lumen_requests ({','.join(REQUEST_COLUMNS)}) "
            f"VALUES ({self.placeholders})",
            [(*r[:18], int(r[18]), int(r[19]), r[RESERVED], 0, 0) for r in rows],
        )

    def rows(self, table: str, columns: list[str], rows: list[tuple[Any, ...]]) -> None:
        marks = ",".join("?" * len(columns))
        self.conn.executemany(
            f"INSERT INTO {table} ({','.join(columns)}) VALUES ({marks})",
            [tuple(_sqlite_value(v) for v in r) for r in rows],
        )

    def finish(self) -> None:
        self.conn.execute("COMMIT")
        self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.conn.close()


def _sqlite_value(v: Any) -> Any:
    if isinstance(v, datetime):
        return ts(v)
    if isinstance(v, date):
        return v.isoformat()
    if isinstance(v, bool):
        return int(v)
    return v


def _copy_value(v: Any) -> str:
    if v is None:
        return "\\N"
    if isinstance(v, bool):
        return "t" if v else "f"
    if isinstance(v, datetime):
        return ts(v)
    return str(v)


class PostgresSink:
    def __init__(self, libpq: str) -> None:
        import psycopg

        self.conn = psycopg.connect(libpq)

    def _copy(self, table: str, columns: list[str], rows: list[tuple[Any, ...]]) -> None:
        text = "".join("\t".join(_copy_value(v) for v in r) + "\n" for r in rows)
        with (
            self.conn.cursor() as cur,
            cur.copy(f"COPY {table} ({','.join(columns)}) FROM STDIN") as copy,
        ):
            copy.write(text)

    def requests(self, rows: list[tuple[Any, ...]]) -> None:
        self._copy("lumen_requests", REQUEST_COLUMNS, [(*r, r[RESERVED], 0, 0) for r in rows])

    def rows(self, table: str, columns: list[str], rows: list[tuple[Any, ...]]) -> None:
        self._copy(table, columns, rows)

    def finish(self) -> None:
        with self.conn.cursor() as cur:
            for table in ("lumen_requests", "lumen_api_keys", "lumen_ledger", "lumen_accounts"):
                cur.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                    f"(SELECT max(id) FROM {table}))"
                )
        self.conn.commit()
        self.conn.autocommit = True
        self.conn.execute("VACUUM ANALYZE")  # the state autovacuum reaches after a bulk load
        self.conn.close()


def seed_stores(seed: Seed, sinks: list[Any]) -> dict[str, Any]:
    now = seed.now
    t0 = time.perf_counter()
    for sink in sinks:
        sink.rows(
            "lumen_accounts",
            ["id", "username", "created_at"],
            [(1, USERNAME, seed.start - timedelta(days=1))],
        )
    for rows in seed.requests():
        for sink in sinks:
            sink.requests(rows)
    key_rows = [
        (
            k.id,
            1,
            k.name,
            k.key_hash,
            k.hint,
            "revoked" if k.revoked_at else "active",
            k.created_at,
            k.revoked_at,
            k.last_used_at,
            *k.counters,
            0,
        )
        for k in seed.keys
    ]
    stats_rows = [(1, m, s, *v) for (m, s), v in seed.stats.items()]
    daily_rows = [(1, d, m, s, k, nb, *v) for (d, m, s, k, nb), v in seed.daily.items()]
    balance = 15 * MICRO
    for sink in sinks:
        sink.rows(
            "lumen_api_keys",
            [
                "id",
                "account_id",
                "name",
                "key_hash",
                "hint",
                "status",
                "created_at",
                "revoked_at",
                "last_used_at",
                "requests",
                "input_tokens",
                "output_tokens",
                "coins_micro",
                "reserved_micro",
            ],
            key_rows,
        )
        sink.rows(
            "lumen_usage_stats",
            [
                "account_id",
                "model",
                "source",
                "requests",
                "input_tokens",
                "output_tokens",
                "coins_micro",
                "last_used_at",
            ],
            stats_rows,
        )
        sink.rows(
            "lumen_usage_daily",
            [
                "account_id",
                "day",
                "model",
                "source",
                "key_id",
                "notebook",
                "requests",
                "input_tokens",
                "output_tokens",
                "coins_micro",
            ],
            daily_rows,
        )
        sink.rows(
            "lumen_balances",
            ["account_id", "balance_micro", "last_refill_at"],
            [(1, balance, now - timedelta(minutes=10))],
        )
        # one row stands for the ledger's history so that balance == sum(ledger) holds
        sink.rows(
            "lumen_ledger",
            ["id", "account_id", "kind", "amount_micro", "request_id", "note", "created_at"],
            [(1, 1, "adjust", balance, None, "benchmark seed", now - timedelta(minutes=10))],
        )
        sink.rows("lumen_consents", ["account_id", "model", "notice_digest", "created_at"], [])
        sink.finish()
    chat = sum(v[0] for (m, s), v in seed.stats.items() if s == "chat")
    return {
        "seconds": round(time.perf_counter() - t0, 1),
        "request_rows": seed.total_rows,
        "status_counts": dict(seed.status_counts),
        "counted_calls": seed.counted,
        "usage_stats_rows": len(stats_rows),
        "usage_daily_rows": len(daily_rows),
        "keys": len(key_rows),
        "revoked_keys": sum(1 for k in seed.keys if k.revoked_at),
        "chat_calls": chat,
        "models_used": len({m for m, _ in seed.stats}),
        "first_day": seed.start.date().isoformat(),
        "last_day": now.date().isoformat(),
    }


# -- measuring over HTTP -----------------------------------------------------------------


def write_secret(work: Path) -> Path:
    """A fresh key secret in ``work/secret`` (0600), as the server keeps one."""
    secret_file = work / "secret"
    secret_file.write_bytes(os.urandom(32).hex().encode())
    secret_file.chmod(0o600)
    return secret_file


def rebuild_rollups_of(url: str) -> None:
    """What record_usage writes beside the daily counters, rebuilt from a seeded store."""
    from lumen_jupyter.store import Store
    from lumen_jupyter.store.engine import rebuild_rollups

    store = Store(url)
    with store.write() as conn:
        rebuild_rollups(conn)
    store.dispose()


def seeded_sqlite(path: Path, seed: Seed) -> str:
    """A migrated SQLite store at ``path`` holding ``seed``'s account; its URL."""
    from lumen_jupyter.store import Store

    url = f"sqlite:///{path}"
    Store(url).migrate()
    seed_stores(seed, [SqliteSink(path)])
    rebuild_rollups_of(url)
    return url


def measure_http(
    server: h.JupyterServer, requests: int, warmup: int, rounds: int, budget: float
) -> dict[str, Any]:
    """Sequential GETs: per endpoint at most ``requests`` or ``budget`` seconds (split over
    the rounds, at least 5 a round), after ``warmup`` requests (at most 3 s)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    headers = {**server.auth, "Connection": "keep-alive"}

    def one(path: str) -> tuple[float, int, int]:
        t0 = time.perf_counter()
        conn.request("GET", "/" + path, headers=headers)
        response = conn.getresponse()
        body = response.read()
        return time.perf_counter() - t0, response.status, len(body)

    samples: dict[str, list[float]] = {name: [] for name, _ in ENDPOINTS}
    per_round: dict[str, list[float]] = {name: [] for name, _ in ENDPOINTS}
    sizes: dict[str, int] = {}
    for name, path in ENDPOINTS:
        spent = 0.0
        for _ in range(warmup):
            took, status, size = one(path)
            if status != 200:
                raise RuntimeError(f"{path} answered {status}")
            sizes[name] = size
            spent += took
            if spent > 3.0:
                break
    per = max(1, math.ceil(requests / rounds))
    per_budget = budget / rounds
    for _ in range(rounds):
        for name, path in ENDPOINTS:
            got: list[float] = []
            while len(got) < per and (len(got) < 5 or sum(got) < per_budget):
                took, status, _size = one(path)
                if status != 200:
                    raise RuntimeError(f"{path} answered {status}")
                got.append(took)
            samples[name] += got
            per_round[name].append(round(statistics.median(got) * 1000, 3))
    conn.close()
    out = {}
    for name, path in ENDPOINTS:
        out[name] = {
            "path": path,
            "response_bytes": sizes[name],
            **h.summary_ms(samples[name]),
            "p50_per_round": per_round[name],
        }
    return out


# -- the in-process breakdown ------------------------------------------------------------


def breakdown(url: str, config: Path, secret: bytes, repeats: int = 7) -> dict[str, Any]:
    """Time each service call directly and every SQL statement it issues, with plans."""
    from sqlalchemy import event

    from lumen_jupyter.core.accounts import Identity
    from lumen_jupyter.core.config import load_config_file
    from lumen_jupyter.core.paging import Page
    from lumen_jupyter.core.service import LumenService
    from lumen_jupyter.store import Store

    store = Store(url)
    service = LumenService(store, load_config_file(config), secret)
    who = Identity(USERNAME, "Bench Marker", "bench@example.org")
    calls = {
        "profile": lambda: service.profile(who),
        "keys": lambda: service.list_keys(who, False),
        "keys?include_revoked=true": lambda: service.list_keys(who, True),
        "models": lambda: service.list_models(who),
        "keys first page": lambda: service.list_keys_page(who, False, Page(limit=40)),
        "models first page": lambda: service.list_models_page(who, Page(limit=40)),
        **{
            f"usage {p}": (lambda p=p: service.usage_history(who, p, None, "model"))
            for p in ("week", "month", "year", "all")
        },
    }
    captured: list[tuple[str, Any]] = []

    @event.listens_for(store.engine, "before_cursor_execute")
    def _capture(
        _conn: Any, _cursor: Any, statement: str, parameters: Any, _ctx: Any, _many: bool
    ) -> None:
        captured.append((statement, parameters))

    out: dict[str, Any] = {}
    for name, fn in calls.items():
        fn()
        captured.clear()
        fn()
        statements = list(captured)
        captured.clear()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        captured.clear()
        out[name] = {
            "service_ms": h.summary_ms(times),
            "statements": [_statement_report(store, s, p) for s, p in statements],
        }
    event.remove(store.engine, "before_cursor_execute", _capture)
    store.dispose()
    return out


def _statement_report(
    store: Any, statement: str, parameters: Any, repeats: int = 5
) -> dict[str, Any]:
    text = " ".join(statement.split())
    report: dict[str, Any] = {"sql": text[:600]}
    select = text.lstrip().upper().startswith("SELECT")
    if not select:
        return report
    raw = store.engine.raw_connection()
    try:
        cur = raw.cursor()
        times = []
        rows = 0
        for _ in range(repeats):
            t0 = time.perf_counter()
            cur.execute(statement, parameters)
            rows = len(cur.fetchall())
            times.append(time.perf_counter() - t0)
        report["db_ms_p50"] = round(statistics.median(times) * 1000, 3)
        report["rows"] = rows
        if store.dialect == "sqlite":
            cur.execute("EXPLAIN QUERY PLAN " + statement, parameters)
            report["plan"] = [str(r[-1]) for r in cur.fetchall()]
        else:
            cur.execute("EXPLAIN (ANALYZE, BUFFERS) " + statement, parameters)
            report["plan"] = [str(r[0]) for r in cur.fetchall()]
        raw.rollback()
    finally:
        raw.close()
    return report


# -- main --------------------------------------------------------------------------------


def run_backend(
    name: str, url: str, config: Path, secret_file: Path, args: argparse.Namespace
) -> dict[str, Any]:
    print(f"[{name}] starting jupyter server", flush=True)
    server = h.start_jupyter(
        {
            "database_url": url,
            "username": USERNAME,
            "config_file": str(config),
            "secret_file": str(secret_file),
            "health_interval": 0,
            "demo_backend": "off",
        },
        extra_args=["--ServerApp.log_level=WARN"],
    )
    load_before = h.loadavg()
    print(
        f"[{name}] measuring {len(ENDPOINTS)} endpoints (<= {args.requests} requests or "
        f"{args.budget:g} s each)",
        flush=True,
    )
    http = measure_http(server, args.requests, args.warmup, args.rounds, args.budget)
    cpu = h.cpu_seconds(server.pid)
    rss = h.memory_kb(server.pid)
    h.stop(server.proc)
    print(f"[{name}] in-process breakdown", flush=True)
    parts = breakdown(url, config, secret_file.read_bytes().strip())
    return {
        "url": url.split("@")[-1] if "@" in url else url,
        "loadavg_before": load_before,
        "loadavg_after": h.loadavg(),
        "server_cpu_s": cpu,
        "server_rss_kb": rss,
        "http": http,
        "breakdown": parts,
    }


def print_table(results: dict[str, Any]) -> None:
    for backend, data in results["backends"].items():
        if "error" in data:
            print(f"\n{backend}: {data['error']}")
            continue
        print(f"\n{backend}  (ms; floor = Jupyter GET /api)")
        floor = data["http"]["floor: jupyter GET /api"]["p50"]
        print(
            f"{'endpoint':32} {'n':>4} {'p50':>8} {'p95':>8} {'p99':>8} {'x floor':>8} "
            f"{'service':>8} {'target':>7}"
        )
        for name, row in data["http"].items():
            service = data["breakdown"].get(name, {}).get("service_ms", {}).get("p50", "")
            target = TARGETS_MS.get(name)
            target95 = TARGETS_MS_P95.get(name, math.inf)
            verdict = (
                ""
                if target is None
                else ("ok" if row["p50"] <= target and row["p95"] <= target95 else "MISS")
            )
            print(
                f"{name:32} {row['n']:4d} {row['p50']:8.2f} {row['p95']:8.2f} {row['p99']:8.2f} "
                f"{row['p50'] / floor:8.1f} {service!s:>8} {verdict:>7}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=730)
    parser.add_argument("--models", type=int, default=200)
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument(
        "--requests", type=int, default=300, help="most requests measured per endpoint"
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=10.0,
        help="most seconds of requests per endpoint (at least 5 a round)",
    )
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--backends", default="sqlite,postgres")
    args = parser.parse_args()
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]

    from lumen_jupyter.store import Store

    facts = h.machine_facts()
    print(
        f"machine: {facts['usable_cores']} cores, python {facts['python']}, "
        f"load {facts['loadavg_at_start']}",
        flush=True,
    )
    work = h.temp_dir("lumen-bench-profile-")
    models = make_models(args.models)
    config = work / "lumen.yaml"
    write_config(config, models)
    secret_file = write_secret(work)
    now = datetime.now(timezone.utc)

    urls: dict[str, str] = {}
    sinks: list[Any] = []
    skipped: dict[str, str] = {}
    if "sqlite" in backends:
        path = work / "lumen.db"
        urls["sqlite"] = f"sqlite:///{path}"
        Store(urls["sqlite"]).migrate()
        sinks.append(SqliteSink(path))
    if "postgres" in backends:
        reason = h.postgres_unavailable()
        if reason:
            skipped["postgres"] = reason
        else:
            pg = h.start_postgres()
            urls["postgres"] = pg.sqlalchemy_url
            store = Store(urls["postgres"])
            store.migrate()
            store.dispose()
            sinks.append(PostgresSink(pg.libpq))
    print(f"seeding {args.rows:,} calls into {', '.join(urls)}", flush=True)
    seed = Seed(
        rows=args.rows,
        days=args.days,
        models=models,
        keys=args.keys,
        secret=secret_file.read_bytes().strip(),
        now=now,
    )
    seeded = seed_stores(seed, sinks)
    for url in urls.values():
        rebuild_rollups_of(url)
    print(
        f"seeded in {seeded['seconds']} s: {seeded['usage_daily_rows']:,} usage_daily rows, "
        f"{seeded['usage_stats_rows']} usage_stats rows",
        flush=True,
    )

    results: dict[str, Any] = {
        "benchmark": "profile_api",
        "command": "python benchmarks/bench_profile_api.py " + " ".join(sys.argv[1:]),
        "machine": facts,
        "parameters": vars(args),
        "seed": seeded,
        "targets_ms_p50": TARGETS_MS,
        "targets_ms_p95": TARGETS_MS_P95,
        "backends": {},
    }
    for name, reason in skipped.items():
        results["backends"][name] = {"error": f"skipped: {reason}"}
    for name, url in urls.items():
        results["backends"][name] = run_backend(name, url, config, secret_file, args)
    results["machine"]["loadavg_at_end"] = h.loadavg()
    path = h.write_results("profile_api", results)
    print_table(results)
    print(f"\nresults: {path}")


if __name__ == "__main__":
    main()
