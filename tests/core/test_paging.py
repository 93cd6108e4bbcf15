"""The server's name order agrees with the browser's, and pages are what they say."""

from __future__ import annotations

import json
import random
import shutil
import subprocess

import pytest

from lumen_jupyter.core.errors import BadRequest
from lumen_jupyter.core.paging import Page, in_name_order, name_order, parse_page

# Names as people give them to keys and models: cases, accents, numbers of any length,
# versions, punctuation, spaces, leading zeros.
NAMES = [
    "key 1",
    "key 2",
    "key 10",
    "Key 9",
    "key 1.5",
    "key 1.10",
    "key 007",
    "key 7b",
    "laptop",
    "Laptop",
    "lap top",
    "lap-top",
    "lap_top",
    "lap.top",
    "lap/top",
    "lap(top)",
    "[lab]",
    "{lab}",
    "@home",
    "#1",
    "$cash",
    "~tilde",
    "+plus",
    "a|b",
    "a<b",
    "a=b",
    "ältere",
    "alter",
    "Ålesund",
    "école",
    "ecole",
    "Ecole 2",
    "naïve",
    "naive",
    "straße",
    "strasse",
    "Æsir",
    "aesir",
    "Ørsted",
    "orsted",
    "acme/model-000",
    "acme/model-10",
    "acme/model-9",
    "meta-llama/Llama-3.1-8B-Instruct",
    "meta-llama/Llama-3.1-70B-Instruct",
    "qwen2.5-coder:32b",
    "qwen2.5-coder:7b",
    "gpt-4o",
    "gpt-4o-mini",
    "gpt-4.1",
    "x",
    "x2",
    "x 2",
    "2x",
    "99 bottles",
    "100 bottles",
    "",
]


def browser_order(names: list[str]) -> list[str]:
    """``names`` sorted by node's Intl.Collator as the profile's tables sort them."""
    script = (
        "const c = new Intl.Collator('en', {sensitivity: 'base', numeric: true});"
        "const names = JSON.parse(require('fs').readFileSync(0, 'utf8'));"
        "process.stdout.write(JSON.stringify(names.sort(c.compare)));"
    )
    node = shutil.which("node")
    assert node is not None
    done = subprocess.run(
        [node, "-e", script], input=json.dumps(names), capture_output=True, text=True, check=True
    )
    result: list[str] = json.loads(done.stdout)
    return result


def equal_in_browser(a: str, b: str) -> bool:
    return browser_order([a, b]) == [a, b] and browser_order([b, a]) == [b, a]


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node (Intl.Collator)")
def test_names_sort_as_the_browser_sorts_them() -> None:
    shuffled = NAMES[:]
    random.Random(7).shuffle(shuffled)
    ours = sorted(shuffled, key=name_order)
    theirs = browser_order(shuffled)
    # Names the collator holds equal (case, accents: "naive" and "naïve") may come in
    # either order on each side; everything else must match position by position.
    for mine, browser in zip(ours, theirs, strict=True):
        assert mine == browser or equal_in_browser(mine, browser), (ours, theirs)


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node (Intl.Collator)")
def test_every_ascii_character_sorts_as_in_the_browser() -> None:
    chars = [chr(c) for c in range(32, 127)]
    theirs = browser_order([f"a{c}" for c in chars])
    ours = sorted((f"a{c}" for c in chars), key=name_order)
    for mine, browser in zip(ours, theirs, strict=True):
        assert mine == browser or equal_in_browser(mine, browser)


def test_numbers_compare_by_value_at_any_length() -> None:
    assert name_order("v9") < name_order("v10") < name_order("v" + "9" * 5000)
    assert name_order("v007") == name_order("v7")


def test_equal_names_keep_the_tie_order() -> None:
    rows = [(3, "Key"), (1, "key"), (2, "KEY")]
    assert in_name_order(rows, name=lambda r: r[1], tie=lambda r: r[0]) == [
        (1, "key"),
        (2, "KEY"),
        (3, "Key"),
    ]


def test_pages() -> None:
    rows = list(range(10))
    assert Page().of(rows) == rows and Page().everything
    assert Page(limit=3).of(rows) == [0, 1, 2]
    assert Page(limit=3, offset=8).of(rows) == [8, 9]
    assert Page(offset=12).of(rows) == []
    assert Page(limit=0).of(rows) == []
    assert not Page(limit=0).everything and not Page(offset=1).everything
    assert parse_page(None, None) == Page()
    assert parse_page("40", "0") == Page(limit=40, offset=0)
    for bad in ("-1", "1.0", "1e3", "", "\u0663", "1000000000"):
        with pytest.raises(BadRequest, match="whole number"):
            parse_page(bad, None)
        with pytest.raises(BadRequest, match="offset"):
            parse_page(None, bad)
