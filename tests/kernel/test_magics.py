"""``%lumen`` and ``%%lumen`` in an IPython shell: parsing, output, errors, chat."""

from __future__ import annotations

import builtins
import importlib.util
import json
import os
import re
import stat
import sys
import types
from pathlib import Path
from typing import Any

import pytest
from IPython.core.error import StdinNotImplementedError, UsageError

from lumen_jupyter.kernel.magics.lumen_magics import LumenMagics
from tests.kernel.conftest import Shell, last_text, texts
from tests.kernel.server import JupyterServer

RAW_KEY = re.compile(r"sk_[A-Za-z0-9_-]{43}")


def usage_error(shell: Shell, source: str) -> str:
    captured = shell.run(source)
    assert isinstance(captured.result.error_in_exec, UsageError), captured.stdout
    assert "Traceback" not in captured.stderr
    lines = captured.stderr.strip().splitlines()
    assert len(lines) == 1, captured.stderr
    return lines[0]


# -- parsing ------------------------------------------------------------------------------------


def test_help_lists_every_command(shell: Shell) -> None:
    text = last_text(shell.run("%lumen help"))
    for command in (
        "balance",
        "keys new NAME",
        "keys revoke ID",
        "models NAME",
        "consent",
        "usage",
        "estimate",
        "%%lumen",
    ):
        assert command in text


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("%lumen bogus", "%lumen: unknown command 'bogus'; commands: help, profile"),
        ("%lumen usage --period decade", "argument --period: invalid choice: 'decade'"),
        ("%lumen usage --by colour", "argument --by: invalid choice: 'colour'"),
        ("%lumen estimate demo-pro", "the following arguments are required: PROMPT"),
        ("%lumen estimate demo-pro hi --max-tokens 0", "argument --max-tokens: 0 must be positive"),
        ("%lumen keys new", "the following arguments are required: NAME"),
        ("%lumen keys delete 3", "argument ACTION: invalid choice: 'delete'"),
        ("%lumen consent", "the following arguments are required: MODEL"),
        ('%lumen estimate demo-pro "unclosed', "cannot read the arguments (No closing quotation)"),
        ("%%lumen --temperature 3\nhi", "argument --temperature: 3 is outside 0..2"),
        ("%%lumen --max-tokens many\nhi", "argument --max-tokens: 'many' is not a whole number"),
        ("%%lumen --colour red\nhi", "unrecognized arguments: --colour red"),
        ("%%lumen -m demo-pro\n   \n", "%%lumen: the cell is empty"),
    ],
)
def test_argument_errors_are_one_line(shell: Shell, source: str, message: str) -> None:
    line = usage_error(shell, source)
    assert line.startswith("UsageError: ") and message in line


def test_dash_h_prints_the_subcommand_help(shell: Shell) -> None:
    captured = shell.run("%lumen usage -h")
    assert captured.result.error_in_exec is None
    assert "--period {week,month,year,all}" in captured.stdout


def test_without_a_gateway_one_line_says_what_to_set(shell: Shell) -> None:
    captured = shell.run("%lumen balance")
    assert captured.result.error_in_exec is None
    assert texts(captured) == [
        "✗ No Lumen gateway found: this kernel was not started by a Jupyter server running "
        "lumen-jupyter. Set LUMEN_BASE_URL (a lumen-jupyter server URL, or an "
        "OpenAI-compatible URL ending in /v1) and LUMEN_API_KEY."
    ]


# -- the profile commands ---------------------------------------------------------------------


def test_dashboard_balance_status(shell: Shell, kernel_env: JupyterServer) -> None:
    dashboard = last_text(shell.run("%lumen"))
    assert dashboard.startswith("Ada Lovelace (ada) · ada@example.org")
    for part in ("Coins available", "API Keys", "Model Access", "demo-pro"):
        assert part in dashboard
    assert re.fullmatch(
        r"✓ Coins available: [\d.]+ / 20 · refill \+1/hr, next at \d\d:\d\d UTC\.",
        last_text(shell.run("%lumen balance")),
    )
    status = last_text(shell.run("%lumen status"))
    assert "kernel credential lkt_…" in status and kernel_env.kernel_token not in status
    assert str(kernel_env.root_dir / "work" / "analysis.ipynb") in status


def test_dashboard_uses_the_profile_widget_in_a_kernel(
    shell: Shell, kernel_env: JupyterServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[Any] = []

    class Profile:
        def __init__(self, source: Any) -> None:
            made.append(source)

        def __repr__(self) -> str:
            return "<the widget>"

    monkeypatch.setattr(shell.ip, "kernel", object(), raising=False)
    monkeypatch.setitem(
        sys.modules, "lumen_jupyter.widgets", types.SimpleNamespace(Profile=Profile)
    )
    assert last_text(shell.run("%lumen")) == "<the widget>"
    assert made == [shell.magics.client]

    def broken(source: Any) -> Any:
        raise RuntimeError("no front end")

    monkeypatch.setitem(sys.modules, "lumen_jupyter.widgets", types.SimpleNamespace(Profile=broken))
    assert last_text(shell.run("%lumen")).startswith("Ada Lovelace")


def test_keys_new_shows_the_key_once_then_only_its_hint(
    shell: Shell, kernel_env: JupyterServer
) -> None:
    captured = shell.run("%lumen keys new magic-key")
    assert len(captured.outputs) == 1
    shown = captured.outputs[0]
    raw = RAW_KEY.search(shown.data["text/plain"])
    assert raw and raw.group(0) in shown.data["text/html"]  # with a Copy button
    display_id = shown.transient["display_id"]
    assert shell.magics.one_time.pending == 1

    after = shell.run("%lumen keys")  # the next cell replaces it first
    update = after.outputs[0]
    assert update.update and update.transient["display_id"] == display_id
    assert raw.group(0) not in str(update.data)
    assert "API key 'magic-key'" in update.data["text/plain"]
    assert "magic-key" in last_text(after) and raw.group(0) not in last_text(after)
    assert shell.magics.one_time.pending == 0

    listed = kernel_env.rest("GET", "lumen/api/keys").json()["keys"]
    key_id = next(k["id"] for k in listed if k["name"] == "magic-key")
    assert last_text(shell.run("%lumen keys revoke magic-key")) == (
        f"✓ API key 'magic-key' (id {key_id}) revoked: calls with it now fail; its history is kept."
    )
    assert "already revoked" in last_text(shell.run(f"%lumen keys revoke {key_id}"))
    assert "(revoked)" in last_text(shell.run("%lumen keys --all"))
    assert "no active key is named 'magic-key'" in usage_error(
        shell, "%lumen keys revoke magic-key"
    )


def test_keys_new_with_a_budget_and_an_expiry(shell: Shell, kernel_env: JupyterServer) -> None:
    shell.run("%lumen keys new workshop --budget 5 --expires 7d")
    shell.run("%lumen keys new until --budget 0.25 --expires 2030-01-31T12:00:00Z")
    listed = {k["name"]: k for k in kernel_env.rest("GET", "lumen/api/keys").json()["keys"]}
    assert listed["workshop"]["budget"] == "5" and listed["workshop"]["expires_at"]
    assert listed["until"]["budget"] == "0.25"
    assert listed["until"]["expires_at"] == "2030-01-31T12:00:00.000Z"
    table = last_text(shell.run("%lumen keys"))
    assert "Budget" in table and "Expires" in table
    assert "5 left of 5" in table and "0.25 left of 0.25" in table
    refused = last_text(shell.run("%lumen keys new bad --budget lots"))
    assert "budget is a number of coins" in refused
    assert "bad" not in {k["name"] for k in kernel_env.rest("GET", "lumen/api/keys").json()["keys"]}


def test_keys_new_can_write_the_key_to_a_private_file(
    shell: Shell, kernel_env: JupyterServer, tmp_path: Path
) -> None:
    target = tmp_path / "lumen.key"
    captured = shell.run(f"%lumen keys new file-key --save {target}")
    assert not RAW_KEY.search(str([o.data for o in captured.outputs]))
    assert "was written to" in last_text(captured)
    assert RAW_KEY.fullmatch(target.read_text().strip())
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600
    assert "exists; choose another file" in usage_error(
        shell, f"%lumen keys new other --save {target}"
    )


def test_models_list_filter_detail(shell: Shell, kernel_env: JupyterServer) -> None:
    listing = last_text(shell.run("%lumen models"))
    assert [line.split()[0] for line in listing.splitlines()[3:6]] == [
        "demo-free",
        "demo-pro",
        "demo-restricted",
    ]
    filtered = last_text(shell.run("%lumen models --filter PRO"))
    assert "demo-pro" in filtered and "demo-free" not in filtered
    detail = last_text(shell.run("%lumen models demo-pro"))
    assert "Context window    32,768 tokens" in detail
    assert "Input price       50 coins / M tokens" in detail
    missing = shell.run("%lumen models nope")
    assert texts(missing) == [
        "✗ The model 'nope' does not exist or is hidden. See `%lumen models` for the models "
        "you can use."
    ]


def test_consent_asks_or_takes_accept(
    shell: Shell, kernel_env: JupyterServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = kernel_env.rest("GET", "lumen/api/models/demo-restricted").json()["access"]
    if state == "needs_ack":

        def cannot_ask(prompt: str = "") -> str:
            raise StdinNotImplementedError("no stdin")

        monkeypatch.setattr(builtins, "input", cannot_ask)
        asked = texts(shell.run("%lumen consent demo-restricted"))
        assert asked[0].startswith("Notice for demo-restricted:")
        assert asked[-1] == "i This front end cannot ask; add `--accept` to accept the notice."
        monkeypatch.setattr(builtins, "input", lambda prompt="": "n")
        assert texts(shell.run("%lumen consent demo-restricted"))[-1] == "i Not accepted."
        refused = texts(shell.run("%%lumen -m demo-restricted\nhi"))
        assert refused[-1] == (
            "✗ 'demo-restricted' needs your one-time consent. Run `%lumen consent "
            "demo-restricted` to read its notice and accept it."
        )
        monkeypatch.setattr(builtins, "input", lambda prompt="": "yes")
        accepted = texts(shell.run("%lumen consent demo-restricted"))
        assert accepted[-1] == "✓ Accepted: you can now use demo-restricted."
    assert texts(shell.run("%lumen consent demo-restricted --accept")) == [
        "✓ You have already accepted the notice of demo-restricted."
    ]
    assert texts(shell.run("%lumen consent demo-pro")) == [
        "i demo-pro does not need consent: you can use it directly."
    ]


def test_usage_table_and_charts(
    shell: Shell, kernel_env: JupyterServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    shell.run("%%lumen -m demo-pro\nsomething to count")
    table = last_text(shell.run("%lumen usage --by source --period week"))
    assert table.startswith("Usage by source") and "chat" in table
    plotted = shell.run("%lumen usage --plot")
    if importlib.util.find_spec("matplotlib") is not None:
        assert "image/png" in plotted.outputs[0].data
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    text_chart = last_text(shell.run("%lumen usage --plot --bucket day --metric tokens"))
    assert text_chart.startswith("Tokens per day")
    assert "█" in text_chart and "matplotlib is not installed" in text_chart


def test_estimate_before_sending(shell: Shell, kernel_env: JupyterServer) -> None:
    shell.ip.user_ns["question"] = "Hello there"
    text = last_text(shell.run("%lumen estimate demo-pro {question} --max-tokens 100"))
    assert "Input             10 tokens (estimated) × 50/M = 0.0005 coins" in text
    assert "Output (at most)  100 tokens (your max_tokens) × 150/M = 0.015 coins" in text
    assert "Worst case        0.0155 coins" in text
    assert "(fits)" in text


# -- chat ---------------------------------------------------------------------------------------


def test_chat_streams_interpolates_and_continues(shell: Shell, kernel_env: JupyterServer) -> None:
    shell.run("%config LumenMagics.stream_interval = 0")
    shell.ip.user_ns["topic"] = "llamas"
    first = shell.run("%%lumen -m demo-pro --max-tokens 50\nTell me about {topic} and {{topic}}.")
    assert first.result.error_in_exec is None
    markdown = [o.data["text/markdown"] for o in first.outputs]
    assert markdown[0] == "▍" and len(markdown) > 3
    assert all(m.endswith("▍") for m in markdown[:-1])
    final = first.outputs[-1].data["text/plain"]
    assert final.startswith("Demo reply to: Tell me about llamas and {topic}.")
    assert re.search(
        r"\[demo-pro · \d+ in \+ \d+ out tokens · [\d.]+ coins · [\d.]+ coins left\]$", final
    )
    conversation = shell.magics.conversation
    assert conversation.exchanges == 1 and conversation.model == "demo-pro"

    second = shell.run("%%lumen\nAnd then?")
    assert last_text(second).startswith("Demo reply to: And then?")
    assert "demo-pro · " in last_text(second)  # the conversation keeps its model
    assert conversation.exchanges == 2

    conversation_id = conversation.id
    third = shell.run('%%lumen --new -m demo-free --system "Be brief."\nHi')
    assert "demo-free · " in last_text(third) and "0 coins" in last_text(third)
    assert conversation.id != conversation_id and conversation.exchanges == 1
    assert conversation.messages_for("x")[0] == {"role": "system", "content": "Be brief."}


def test_chat_with_another_model_starts_a_new_conversation(
    shell: Shell, kernel_env: JupyterServer
) -> None:
    def conversations() -> int:
        profile = kernel_env.rest("GET", "lumen/api/profile").json()
        return int(profile["web_chat"]["conversations"])

    before = conversations()
    conversation = shell.magics.conversation
    shell.run("%%lumen -m demo-free\nA secret plan.")
    shell.run("%%lumen -m demo-free\nMore of it.")
    first_id = conversation.id
    assert conversation.exchanges == 2

    switched = shell.run("%%lumen -m demo-pro\nSummarize.")
    footer = last_text(switched).rsplit("[", 1)[1]
    assert footer.startswith(
        "new conversation (the last one was with demo-free; --continue keeps it) · demo-pro · "
    )
    assert conversation.id != first_id and conversation.model == "demo-pro"
    # demo-pro got the new prompt only, none of demo-free's cells
    assert conversation.turns[0] == {"role": "user", "content": "Summarize."}
    assert conversation.exchanges == 1

    same = shell.run("%%lumen -m demo-pro\nAnd?")
    assert "new conversation" not in last_text(same)
    assert conversation.exchanges == 2

    kept_id = conversation.id
    kept = shell.run("%%lumen -m demo-free --continue\nGo on.")
    assert "new conversation" not in last_text(kept) and "demo-free · " in last_text(kept)
    assert conversation.id == kept_id and conversation.exchanges == 3
    assert conversation.model == "demo-free"

    assert conversations() == before + 2  # as the gateway recorded them


def test_usage_by_cell_names_the_cells_of_this_notebook(
    shell: Shell, kernel_env: JupyterServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = Path(os.environ["JPY_SESSION_NAME"])
    path.parent.mkdir(parents=True, exist_ok=True)
    cells = [
        {"id": "cell-load", "cell_type": "code", "source": ["\n", "data = load('x.csv')\n"]},
        {"id": "cell-md", "cell_type": "markdown", "source": "# Results"},
        {"id": "cell-ask", "cell_type": "code", "source": "%%lumen -m demo-pro\nSummarize"},
    ]
    path.write_text(json.dumps({"cells": cells, "nbformat": 4, "nbformat_minor": 5}))
    for cell in ("cell-load", "cell-ask", "cell-ask", "cell-gone"):
        monkeypatch.setattr(
            shell.ip, "parent_header", {"metadata": {"cellId": cell}}, raising=False
        )
        assert shell.run("%%lumen -m demo-pro\nHello there").result.error_in_exec is None
    monkeypatch.setattr(shell.ip, "parent_header", {}, raising=False)

    table = last_text(shell.run("%lumen usage --by cell --period week"))
    assert "Usage by cell" in table and f"in {path}" in table
    rows = {line.split("  ")[0].strip(): line for line in table.splitlines()[1:]}
    assert set(rows) >= {"[1] data = load('x.csv')", "[3] %%lumen -m demo-pro"}
    assert "cell cell-gon (not in the saved notebook)" in table
    assert re.search(r"\[3\] %%lumen -m demo-pro\s+2\s", table)

    # the same through the REST API, and its errors
    response = kernel_env.rest(
        "GET", "lumen/api/usage", params={"group_by": "cell", "notebook": str(path)}
    )
    assert response.status_code == 200
    assert response.json()["totals"]["cell-ask"]["requests"] == 2
    missing = kernel_env.rest("GET", "lumen/api/usage", params={"group_by": "cell"})
    assert missing.status_code == 400 and "needs notebook" in missing.text

    other = last_text(shell.run("%lumen usage --by cell --notebook elsewhere.ipynb"))
    assert "No usage in this period." in other
    line = usage_error(shell, "%lumen usage --by model --notebook x.ipynb")
    assert "--notebook goes with --by cell" in line
    monkeypatch.delenv("JPY_SESSION_NAME")
    line = usage_error(shell, "%lumen usage --by cell")
    assert "this kernel runs no notebook; name one with --notebook" in line


def test_default_model_is_configurable(shell: Shell, kernel_env: JupyterServer) -> None:
    shell.run('%config LumenMagics.default_model = "demo-pro"')
    assert shell.magics.default_model == "demo-pro"
    assert "demo-pro · " in last_text(shell.run("%%lumen\nHi"))
    config = shell.run("%config LumenMagics")
    assert "default_model" in config.stdout and "key_reveal_seconds" in config.stdout


def test_chat_without_a_model_uses_the_first_available(
    shell: Shell, kernel_env: JupyterServer
) -> None:
    assert "demo-free · " in last_text(shell.run("%%lumen\nHi"))


def test_chat_errors_replace_the_answer_with_one_line(
    shell: Shell, kernel_env: JupyterServer
) -> None:
    captured = shell.run("%%lumen -m nope\nHi")
    assert captured.result.error_in_exec is None
    assert texts(captured)[-1] == (
        "✗ The model 'nope' does not exist or is hidden. See `%lumen models` for the models "
        "you can use."
    )
    assert shell.magics.conversation.exchanges == 0


def test_raise_errors_stops_the_run_with_one_line(shell: Shell, kernel_env: JupyterServer) -> None:
    shell.run("%config LumenMagics.raise_errors = True")
    captured = shell.run("%lumen models nope")
    assert captured.result.error_in_exec is not None
    output = captured.stdout + captured.stderr
    assert "LumenAPIError: The model 'nope' does not exist" in output
    assert "Traceback" not in output


def test_chat_in_a_terminal_prints_as_it_streams(
    shell: Shell, kernel_env: JupyterServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(LumenMagics, "terminal", property(lambda self: True))
    captured = shell.run("%%lumen -m demo-free\nHello")
    assert captured.outputs == []
    assert captured.stdout.startswith("Demo reply to: Hello")
    assert re.search(
        r"\n\n\[demo-free · \d+ in \+ \d+ out tokens · 0 coins · [\d.]+ coins left\]\n$",
        captured.stdout,
    )


# -- with a personal key: no profile API --------------------------------------------------------


def test_a_personal_key_gets_the_limited_view(
    shell: Shell, server: JupyterServer, clean_env: pytest.MonkeyPatch
) -> None:
    created = server.rest("POST", "lumen/api/keys", json={"name": "magics-script"}).json()
    clean_env.setenv("LUMEN_BASE_URL", server.root_url)
    clean_env.setenv("LUMEN_API_KEY", created["key"])
    chat = shell.run("%%lumen -m demo-pro\nHello")
    assert re.search(r"this session: [\d.]+ coins\]$", last_text(chat))
    dashboard = last_text(shell.run("%lumen"))
    assert dashboard.startswith("! Personal API keys cannot read the profile")
    assert "Models at " in dashboard and "demo-pro" in dashboard
    assert re.search(r"This session since .*: [\d.]+ coins", dashboard)
    assert "the balance is not known here" in last_text(shell.run("%lumen balance"))
    keys = last_text(shell.run("%lumen keys"))
    assert keys.startswith("✗ Personal API keys work on the model API only")
    assert "demo-pro" in last_text(shell.run("%lumen models"))
    assert "Worst case" in last_text(shell.run("%lumen estimate demo-pro hi"))
    assert "only this session's usage" in texts(shell.run("%lumen usage"))[0]
    assert "consent cannot be given from here" in last_text(shell.run("%lumen consent demo-pro"))
    assert created["key"] not in str(texts(shell.run("%lumen status")))
    server.rest("DELETE", f"lumen/api/keys/{created['id']}")


def test_unload_removes_everything(shell: Shell) -> None:
    shell.ip.run_line_magic("unload_ext", "lumen_jupyter")
    assert "lumen" not in shell.ip.magics_manager.magics["line"]
    assert "lumen" not in shell.ip.magics_manager.magics["cell"]
    assert not any(isinstance(c, LumenMagics) for c in shell.ip.configurables)
    shell.ip.run_line_magic("load_ext", "lumen_jupyter")
    assert "lumen" in shell.ip.magics_manager.magics["cell"]
