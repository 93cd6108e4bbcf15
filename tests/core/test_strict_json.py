"""Request bodies the rest of the server could not handle are refused at parsing."""

from __future__ import annotations

import json

import pytest

from lumen_jupyter.core.errors import BadRequest
from lumen_jupyter.core.strict_json import MAX_DEPTH, loads


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 100_000,
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a":' * 50_000,
        b'{"a": ' * (MAX_DEPTH + 1) + b"1" + b"}" * (MAX_DEPTH + 1),
        b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1),
    ],
)
def test_nesting_beyond_the_limit_is_a_bad_request(raw: bytes) -> None:
    with pytest.raises(BadRequest, match="nested too deeply"):
        loads(raw)


def test_nesting_up_to_the_limit_is_fine() -> None:
    raw = b"[" * MAX_DEPTH + b"]" * MAX_DEPTH
    assert json.dumps(loads(raw)).count("[") == MAX_DEPTH
    wide = json.dumps([[i] for i in range(10_000)]).encode()  # many brackets, shallow
    assert len(loads(wide)) == 10_000


@pytest.mark.parametrize(
    "raw",
    [b'"\\ud800"', b'{"\\udfff": 1}', b'{"a": ["x", "\\uD83D"]}', b'["\\ude00\\ud83d"]'],
)
def test_lone_surrogates_are_a_bad_request(raw: bytes) -> None:
    with pytest.raises(BadRequest, match="surrogate"):
        loads(raw)


def test_surrogate_pairs_and_other_text_are_fine() -> None:
    assert loads(b'{"smile": "\\ud83d\\ude00", "e": "\\u00e9"}') == {"smile": "😀", "e": "é"}
    assert loads('{"ü": "ß"}'.encode()) == {"ü": "ß"}


@pytest.mark.parametrize("raw", [b"{oops", b"\xff\xfe", b"", b"[1,]"])
def test_invalid_json_is_a_bad_request(raw: bytes) -> None:
    with pytest.raises(BadRequest, match="not valid JSON") as caught:
        loads(raw, code="invalid_request")
    assert caught.value.code == "invalid_request"
