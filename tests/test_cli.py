"""``jupyter lumen``: the admin command, run for real against a store the "server" also uses.

Each test opens the database the way the server does (a ``LumenService`` on its own
``Store``) to set the scene - accounts, keys, calls - and runs the command through
``main([...])``; one test runs it as a subprocess, one while the server writes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from lumen_jupyter.cli import DEMO_URL, main
from lumen_jupyter.core.accounts import Identity
from lumen_jupyter.core.billing import CallContext
from lumen_jupyter.core.defaults import embedded_default
from lumen_jupyter.core.errors import BadRequest
from lumen_jupyter.core.ledger import ledger_matches_balance
from lumen_jupyter.core.money import MICRO
from lumen_jupyter.core.service import LumenService
from lumen_jupyter.store import Store, sqlite_url
from lumen_jupyter.store.schema import api_keys, ledger

SECRET = b"0123456789abcdef0123456789abcdef-cli-test-secret"
ROOT = Path(__file__).resolve().parents[1]
# demo-pro: 50 coins per million tokens in, 150 out; 1000 in + 100 out cost 0.065 coins.
CALL_COST = 65_000


def who(username: str) -> Identity:
    return Identity(username=username, display_name=username)


@dataclass
class Scene:
    """The database as the running server sees it, and a way to run the command on it."""

    url: str
    server: LumenService
    capsys: pytest.CaptureFixture[str]

    def run(self, *args: str) -> tuple[int, str, str]:
        code = main(["--db", self.url, *args])
        out, err = self.capsys.readouterr()
        return code, out, err

    def ok(self, *args: str) -> str:
        code, out, err = self.run(*args)
        assert (code, err) == (0, ""), err
        return out

    def json(self, *args: str) -> Any:
        return json.loads(self.ok("--json", *args))

    def fails(self, *args: str) -> str:
        """Runs a command that must be refused: exit 2, one line on stderr, no output."""
        code, out, err = self.run(*args)
        assert code == 2, (out, err)
        assert out == ""
        assert err.startswith("jupyter lumen") and err.count("\n") == 1, err
        assert "Traceback" not in err
        return err

    def balance(self, username: str) -> str:
        return str(self.server.profile(who(username))["pool"]["balance"]["text"])

    def call(self, username: str, key_id: int | None = None, notebook: str | None = None) -> None:
        """One settled call to demo-pro, as the gateway makes it."""
        ctx = CallContext(
            self.server.account(username),
            source="api" if key_id else "kernel",
            key_id=key_id,
            notebook=notebook,
        )
        admission = self.server.calls.open_call(
            who(username),
            ctx,
            "demo-pro",
            endpoint="chat",
            input_tokens=1000,
            max_output_tokens=100,
        )
        self.server.calls.settle(admission, 1000, 100)


@contextmanager
def server_on(url: str) -> Iterator[LumenService]:
    """The running server's side: its own store on the same database."""
    store = Store(url)
    store.migrate()
    try:
        yield LumenService(store, embedded_default(DEMO_URL), SECRET)
    finally:
        store.dispose()


@pytest.fixture(autouse=True)
def clean_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing from the environment running the tests: no database, no configuration."""
    monkeypatch.delenv("LUMEN_DATABASE_URL", raising=False)
    monkeypatch.delenv("LUMEN_CONFIG", raising=False)
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "jupyter-data"))


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return sqlite_url(tmp_path / "lumen.db")


@pytest.fixture
def scene(db_url: str, capsys: pytest.CaptureFixture[str]) -> Iterator[Scene]:
    with server_on(db_url) as server:
        server.profile(who("alice"))  # alice has used Lumen: 20 coins, the default pool
        yield Scene(db_url, server, capsys)


def ledger_rows(server: LumenService, username: str) -> list[Any]:
    acct = server.account(username)
    with server.store.read() as conn:
        return list(conn.execute(select(ledger).where(ledger.c.account_id == acct)))


def consistent(server: LumenService, username: str) -> bool:
    with server.store.read() as conn:
        return ledger_matches_balance(conn, server.account(username))


# -- grant ---------------------------------------------------------------------------------


def test_grant_adds_coins_the_profile_sees(scene: Scene) -> None:
    out = scene.ok("grant", "alice", "5.5", "--note", "workshop bonus")
    assert out == "alice: granted 5.5 coins; balance now 25.5 coins (max 20)\n"
    assert scene.balance("alice") == "25.5"
    adjust = [r for r in ledger_rows(scene.server, "alice") if r.kind == "adjust"]
    assert [(r.amount_micro, r.note) for r in adjust] == [(5_500_000, "workshop bonus")]
    assert consistent(scene.server, "alice")


def test_negative_grant_puts_a_user_in_debt(scene: Scene) -> None:
    out = scene.ok("grant", "alice", "-30")
    assert "took away 30 coins; balance now -10 coins" in out and "in debt" in out
    assert scene.balance("alice") == "-10"
    assert scene.server.pool_state(who("alice"))["exhausted"] is True
    assert "(in debt)" in scene.ok("pool", "alice")
    assert consistent(scene.server, "alice")


def test_grant_refuses_unlimited_and_missing_pools(scene: Scene, tmp_path: Path) -> None:
    scene.ok("pool", "alice", "--max", "-2")
    err = scene.fails("grant", "alice", "5")
    assert "alice has an unlimited pool" in err and "pool alice --max" in err
    config = tmp_path / "lumen.yaml"
    config.write_text("models:\n  - name: m\n    endpoints: [{url: 'http://127.0.0.1:9/v1'}]\n")
    scene.ok("pool", "alice", "--clear")
    err = scene.fails("--config", str(config), "grant", "alice", "5")
    assert "alice has no pool" in err
    assert "no pool - model calls are refused" in scene.ok("--config", str(config), "pool", "alice")


def test_grant_to_a_new_account_needs_create(scene: Scene) -> None:
    assert "no account named 'bob'" in scene.fails("grant", "bob", "5")
    assert scene.server.known_account("bob") is None  # a typo makes no account
    assert "balance now 25 coins" in scene.ok("grant", "bob", "5", "--create")
    assert scene.balance("bob") == "25"


# -- pool ----------------------------------------------------------------------------------


def test_pool_set_show_and_clear(scene: Scene) -> None:
    shown = scene.ok("pool", "alice")
    assert shown.startswith("alice: limited, from default pool\n")
    assert "balance   20 of max 20 coins" in shown and "+1 coins/hour" in shown

    out = scene.ok("pool", "alice", "--max", "50", "--refresh", "2.5", "--starting", "10")
    assert "own pool set" in out and "starting applies to a new balance only" in out
    assert "own pool  max 50, refresh 2.5/hour, starting 10" in out
    state = scene.server.pool_state(who("alice"))
    assert (state["source"], state["max"]["text"], state["refresh_per_hour"]["text"]) == (
        "user",
        "50",
        "2.5",
    )
    data = scene.json("pool", "alice")
    assert data["own_pool"]["starting"] == {"micro": 10_000_000, "text": "10"}

    assert "blocked (max 0)" in scene.ok("pool", "alice", "--max", "0")
    assert scene.server.pool_state(who("alice"))["state"] == "blocked"
    assert "unlimited (own pool)" in scene.ok("pool", "alice", "--max", "-2")

    out = scene.ok("pool", "alice", "--clear")
    assert "own pool removed" in out and "from default pool" in out
    assert scene.json("pool", "alice")["own_pool"] is None
    assert scene.server.pool_state(who("alice"))["source"] == "default"


def test_lowering_the_max_keeps_the_balance_unless_clamped(scene: Scene) -> None:
    scene.ok("grant", "alice", "980")  # 1,000 coins, above the default max of 20
    out = scene.ok("pool", "alice", "--max", "1")
    assert "the balance of 1000 coins is above the new max: it is kept until spent" in out
    assert scene.balance("alice") == "1000"
    out = scene.ok("pool", "alice", "--max", "1", "--clamp")
    assert "balance lowered to the max: 999 coins taken" in out
    assert scene.balance("alice") == "1"
    assert "above the new max" not in scene.ok("pool", "alice", "--max", "1")
    assert consistent(scene.server, "alice")


def test_pool_for_a_new_user_with_create_opens_at_starting(scene: Scene) -> None:
    scene.ok("pool", "carol", "--max", "100", "--starting", "40", "--create")
    assert scene.balance("carol") == "40"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--max", "-3"], "--max must be -2 (unlimited), 0 (blocked) or positive"),
        (["--refresh", "1"], "--refresh and --starting need --max"),
        (["--max", "5", "--clear"], "either --max or --clear"),
        (["--max", "5", "--refresh", "-1"], "--refresh must not be negative"),
        (["--max", "lots"], "not a coin amount: 'lots'"),
    ],
)
def test_pool_bad_input(scene: Scene, args: list[str], message: str) -> None:
    assert message in scene.fails("pool", "alice", *args)
    assert scene.server.pool_state(who("alice"))["source"] == "default"


# -- keys and revoke ---------------------------------------------------------------------


def test_keys_show_hints_never_keys(scene: Scene) -> None:
    laptop = scene.server.create_key(who("alice"), "laptop")
    scene.server.create_key(who("alice"), None)  # a draft: not listed
    scene.call("alice", key_id=laptop["id"])
    out = scene.ok("keys", "alice")
    lines = out.splitlines()
    assert lines[0].split() == [
        "ID",
        "NAME",
        "HINT",
        "STATUS",
        "REQUESTS",
        "TOKENS",
        "COINS",
        "BUDGET",
        "EXPIRES",
        "(UTC)",
        "LAST",
        "USED",
        "(UTC)",
    ]
    assert len(lines) == 2
    row = [str(laptop["id"]), "laptop", laptop["hint"], "active", "1", "1,100", "0.065", "-"]
    assert lines[1].split()[:9] == [*row, "never"]
    assert laptop["key"] not in out and laptop["key"][4:-4] not in out
    data = scene.json("keys", "alice")
    assert laptop["key"] not in json.dumps(data)
    assert [(k["name"], k["hint"], "key" in k) for k in data["keys"]] == [
        ("laptop", laptop["hint"], False)
    ]


def test_keys_show_budget_and_expiry(scene: Scene) -> None:
    made = scene.server.create_key(who("alice"), "workshop", budget="2.5", expires_in="7d")
    out = scene.ok("keys", "alice")
    row = out.splitlines()[1].split()
    assert row[:8] == [str(made["id"]), "workshop", made["hint"], "active", "0", "0", "0", "2.5"]
    assert row[8].startswith(str(made["expires_at"])[:10])
    assert scene.json("keys", "alice")["keys"][0]["budget_micro"] == 2_500_000


def test_names_cannot_drive_the_terminal(scene: Scene) -> None:
    with pytest.raises(BadRequest, match="control characters"):
        scene.server.create_key(who("alice"), "evil\x9b2J\x7fname")
    # Rows written before that rule (or by hand) are still printed safely.
    key = scene.server.create_key(who("alice"), "plain")
    with scene.server.store.write() as conn:
        conn.execute(
            update(api_keys).where(api_keys.c.id == key["id"]).values(name="evil\x9b2J\x7fname")
        )
    out = scene.ok("keys", "alice")
    assert "evil?2J?name" in out and "\x9b" not in out and "\x7f" not in out
    assert scene.json("keys", "alice")["keys"][0]["name"] == "evil\x9b2J\x7fname"


def test_revoke_stops_a_key(scene: Scene) -> None:
    key = scene.server.create_key(who("alice"), "leaked")
    assert scene.server.key_owner(key["key"]) is not None
    out = scene.ok("revoke", "alice", str(key["id"]))
    assert out == f"alice: key {key['id']} (leaked, {key['hint']}) revoked\n"
    assert scene.server.key_owner(key["key"]) is None
    assert scene.ok("keys", "alice") == "alice has no keys\n"
    assert "revoked" in scene.ok("keys", "alice", "--all")
    assert "already revoked" in scene.ok("revoke", "alice", str(key["id"]))
    assert scene.json("revoke", "alice", str(key["id"]))["result"] == "already revoked"


def test_revoke_only_the_named_users_key(scene: Scene) -> None:
    scene.server.profile(who("bob"))
    key = scene.server.create_key(who("bob"), "bobs")
    assert f"alice: no key with id {key['id']}" in scene.fails("revoke", "alice", str(key["id"]))
    assert scene.server.key_owner(key["key"]) is not None
    assert "no key with id 999" in scene.fails("revoke", "bob", "999")
    assert "a key id is a whole number" in scene.fails("revoke", "bob", "first")


# -- usage and users ---------------------------------------------------------------------


def test_usage_table(scene: Scene) -> None:
    key = scene.server.create_key(who("alice"), "laptop")
    scene.call("alice", key_id=key["id"], notebook="analysis.ipynb")
    scene.call("alice", key_id=key["id"], notebook="analysis.ipynb")
    scene.call("alice")
    out = scene.ok("usage", "alice")
    lines = out.splitlines()
    assert lines[0].startswith("alice: usage over the last month (") and "by model" in lines[0]
    assert lines[1].split() == ["MODEL", "REQUESTS", "INPUT", "OUTPUT", "TOKENS", "COINS"]
    assert lines[2].split() == ["demo-pro", "3", "3,000", "300", "3,300", "0.195"]
    assert lines[3].split() == ["TOTAL", "3", "3,000", "300", "3,300", "0.195"]
    by_key = scene.ok("usage", "alice", "--by", "key", "--period", "week").splitlines()
    assert [line.split()[:2] for line in by_key[2:]] == [
        ["laptop", "2"],
        ["(no", "key)"],
        ["TOTAL", "3"],
    ]
    by_source = scene.ok("usage", "alice", "--by", "source", "--period", "all")
    assert "usage over all time" in by_source and "kernel" in by_source
    assert "analysis.ipynb" in scene.ok("usage", "alice", "--by", "notebook")
    data = scene.json("usage", "alice", "--period", "year", "--by", "key")
    assert data["user"] == "alice" and data["bucket"] == "month"
    assert data["totals"]["laptop"]["coins_micro"] == 2 * CALL_COST
    scene.server.profile(who("bob"))
    assert scene.ok("usage", "bob").splitlines()[1] == "no usage in this period"


def test_users_lists_accounts_with_balances(scene: Scene) -> None:
    scene.server.profile(who("bob"))
    scene.call("bob")
    scene.ok("pool", "dave", "--max", "-2", "--create")
    scene.ok("grant", "alice", "-25")
    lines = scene.ok("users").splitlines()
    assert lines[0].split()[:8] == [
        "USER",
        "POOL",
        "STATE",
        "BALANCE",
        "MAX",
        "REFILL/H",
        "REQUESTS",
        "USED",
    ]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert rows["alice"][:9] == ["alice", "default", "pool", "limited", "-5", "20", "1", "0", "0"]
    assert rows["bob"][4:9] == ["19.935", "20", "1", "1", "0.065"]
    assert rows["dave"][:8] == ["dave", "own", "pool", "unlimited", "-", "-", "-", "0"]
    data = scene.json("users")
    assert [u["username"] for u in data["users"]] == ["alice", "bob", "dave"]
    assert data["users"][1]["balance"] == {"micro": 20_000_000 - CALL_COST, "text": "19.935"}
    assert "balance" not in data["users"][2]


def test_users_on_an_empty_database(scene: Scene, tmp_path: Path) -> None:
    with server_on(sqlite_url(tmp_path / "empty.db")):
        code = main(["--db", sqlite_url(tmp_path / "empty.db"), "users"])
        assert code == 0
        assert "no accounts yet" in scene.capsys.readouterr().out


# -- errors, configuration, where the database is ---------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["grant", "alice", "ten"], "argument COINS: not a coin amount: 'ten'"),
        (["grant", "alice", "0"], "COINS must not be 0"),
        (["grant", "alice", "1.0000001"], "at most six decimals"),
        (["grant", "alice", "1e30"], "too large"),
        (["grant", "alice", "nan"], "not a coin amount"),
        (["grant", "alice", "1", "--note", "x" * 300], "--note has at most 255 characters"),
        (["grant", "nobody", "1"], "no account named 'nobody'"),
        (["keys", "nobody"], "no account named 'nobody'"),
        (["usage", "nobody"], "no account named 'nobody'"),
        (["pool", "nobody"], "no account named 'nobody'"),
        (["revoke", "alice", "12345"], "alice: no key with id 12345"),
        (["usage", "alice", "--period", "day"], "invalid choice: 'day'"),
        (["usage", "alice", "--by", "colour"], "invalid choice: 'colour'"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        ([], "choose a command"),
        (["grant", "alice"], "the following arguments are required: COINS"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(scene: Scene, args: list[str], message: str) -> None:
    assert message in scene.fails(*args)
    assert scene.server.known_account("nobody") is None
    assert scene.balance("alice") == "20"


def test_bad_database_or_config_is_exit_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    there = sqlite_url(tmp_path / "there.db")
    cases = [
        (["--db", sqlite_url(tmp_path / "missing.db"), "users"], "no database at"),
        (["--db", "mysql://x/y", "users"], "unsupported database 'mysql'"),
        (["--db", "not a url", "users"], "not a database URL"),
        (["--db", there, "--config", str(tmp_path / "no.yaml"), "users"], "cannot read config"),
    ]
    with server_on(there):
        for args, message in cases:
            assert main(args) == 2
            out, err = capsys.readouterr()
            assert out == "" and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "missing.db").exists()


def test_global_options_go_before_or_after_the_command(scene: Scene) -> None:
    before = json.loads(scene.ok("--json", "pool", "alice"))
    after = json.loads(scene.ok("pool", "alice", "--json"))
    assert before["pool"]["balance"] == after["pool"]["balance"]


def test_database_from_env_and_from_the_jupyter_data_dir(
    scene: Scene, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LUMEN_DATABASE_URL", scene.url)
    assert main(["grant", "alice", "1"]) == 0
    assert "balance now 21" in scene.capsys.readouterr().out

    monkeypatch.delenv("LUMEN_DATABASE_URL")
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "data"))
    assert main(["users"]) == 2
    assert str(tmp_path / "data" / "lumen" / "lumen.db") in scene.capsys.readouterr().err
    with server_on(sqlite_url(tmp_path / "data" / "lumen" / "lumen.db")) as server:
        server.profile(who("erin"))
        assert main(["users"]) == 0
        assert "erin" in scene.capsys.readouterr().out


def test_pools_resolve_from_the_yaml_configuration(
    scene: Scene, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "lumen.yaml"
    config.write_text(
        "defaults:\n  tokens: {max: 5}\n"
        "groups:\n  staff:\n    members: [alice]\n    tokens: {max: 100, refresh: 10}\n"
    )
    monkeypatch.setenv("LUMEN_CONFIG", str(config))
    out = scene.ok("pool", "alice")
    assert "from group staff" in out and "+10 coins/hour" in out
    scene.server.profile(who("bob"))
    rows = {u["username"]: u for u in scene.json("users")["users"]}
    assert rows["alice"]["source"] == "group:staff"
    assert (rows["bob"]["source"], rows["bob"]["max"]["text"]) == ("default", "5")
    config.write_text("defaults: {tokens: {max: many}}\n")
    assert "defaults.tokens.max must be a number" in scene.fails("users")


# -- a real process, and a running server --------------------------------------------------


def test_runs_as_a_program(scene: Scene, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("LUMEN_CONFIG", None)

    def program(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "lumen_jupyter.cli", "--db", scene.url, *args]
        return subprocess.run(
            command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
        )

    done = program("grant", "alice", "2.25", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["pool"]["balance"]["text"] == "22.25"
    assert scene.balance("alice") == "22.25"
    refused = program("grant", "alice", "two")
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr == "jupyter lumen grant: argument COINS: not a coin amount: 'two'\n"


def test_works_while_the_server_holds_the_database_and_writes(scene: Scene) -> None:
    """The server keeps a read transaction open and settles calls until the CLI is done."""
    server = scene.server
    server.grant(who("alice"), 1000 * MICRO, "enough for the server's calls")
    grants = 10
    calls: list[int] = []
    failures: list[BaseException] = []
    started, done = threading.Event(), threading.Event()

    def serve() -> None:
        try:
            with server.store.read() as reader:
                reader.execute(select(ledger.c.id)).all()  # a reader that stays open
                scene.call("alice")
                calls.append(1)
                started.set()
                while not done.wait(0.002) and len(calls) < 5000:  # a busy server
                    scene.call("alice")
                    calls.append(1)
        except BaseException as exc:  # reported by the main thread
            failures.append(exc)
        finally:
            started.set()

    worker = threading.Thread(target=serve)
    worker.start()
    started.wait(30)
    try:
        before = len(calls)
        codes = [main(["--db", scene.url, "grant", "alice", "1"]) for _ in range(grants)]
        codes.append(main(["--db", scene.url, "users"]))
        codes.append(main(["--db", scene.url, "usage", "alice"]))
        during = len(calls) - before
    finally:
        done.set()
        worker.join(60)
    assert not failures, failures
    assert codes == [0] * (grants + 2), scene.capsys.readouterr().err
    # The server kept writing while the CLI ran (how often depends on the machine's load).
    assert during >= 1
    expected = (20 + 1000 + grants) * MICRO - len(calls) * CALL_COST
    assert server.pool_state(who("alice"))["balance"]["micro"] == expected
    assert consistent(server, "alice")


def test_round_trip_on_each_backend(store_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    with server_on(store_url) as server:
        scene = Scene(store_url, server, capsys)
        server.profile(who("alice"))
        key = server.create_key(who("alice"), "laptop")
        scene.call("alice", key_id=key["id"])
        scene.ok("grant", "alice", "-1.5", "--note", "correction")
        scene.ok("pool", "alice", "--max", "30", "--refresh", "3")
        users = scene.json("users")["users"]
        assert users == [
            {
                "username": "alice",
                "state": "limited",
                "source": "user",
                "requests": 1,
                "coins_used": {"micro": CALL_COST, "text": "0.065"},
                "last_used_at": users[0]["last_used_at"],
                "balance": {"micro": 18_500_000 - CALL_COST, "text": "18.435"},
                "max": {"micro": 30_000_000, "text": "30"},
                "refresh_per_hour": {"micro": 3_000_000, "text": "3"},
            }
        ]
        assert scene.json("usage", "alice", "--by", "key")["totals"]["laptop"]["requests"] == 1
        assert scene.ok("revoke", "alice", str(key["id"])).endswith("revoked\n")
        assert scene.json("keys", "alice", "--all")["keys"][0]["status"] == "revoked"
        assert consistent(server, "alice")
