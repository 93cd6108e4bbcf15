"""An in-memory ProfileSource with every state the views can show.

For the browser tests (imported in the kernel) and widget tests: pools in each
of their states, models with every access and status badge, as many keys and
models as asked (1,000 keys with 200 models for the render timing), and the
actions (create, save, revoke, consent, usage periods) working on that memory.
"""

from __future__ import annotations

import hashlib
import random
import secrets
from datetime import date, datetime, timedelta, timezone
from typing import Any

MICRO = 1_000_000
ACCESS = ("allowed", "consented", "needs_ack", "blocked")
STATUS = ("ok", "degraded", "down", "disabled")
NOTICE = "Answers of {name} come from a third party. Do not send personal data. Accept once."


def coins(micro: int) -> dict[str, Any]:
    whole, frac = divmod(abs(micro), MICRO)
    text = f"{whole}.{frac:06d}".rstrip("0").rstrip(".")
    return {"micro": micro, "text": f"-{text}" if micro < 0 and text != "0" else text}


def iso(moment: datetime | None) -> str | None:
    return (
        None if moment is None else moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    )


class FakeSource:
    def __init__(
        self,
        *,
        keys: int = 4,
        models: int = 8,
        pool: str = "limited",
        refill_in: float = 1800.0,
        seed: int = 7,
        email: str | None = "grace@example.org",
        echo_calls: bool = False,
    ) -> None:
        self.echo_calls = echo_calls
        self.rng = random.Random(seed)
        self.now = datetime.now(timezone.utc).replace(microsecond=0)
        self.pool_state = pool
        self.refill_at = self.now + timedelta(seconds=refill_in)
        self.email = email
        self.calls: dict[str, int] = {}
        self.next_id = 1
        self._keys: list[dict[str, Any]] = [self._make_key(i) for i in range(keys)]
        self._models: list[dict[str, Any]] = [self._make_model(i) for i in range(models)]
        self.issued: list[str] = []

    def _count(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1

    def _make_key(self, i: int) -> dict[str, Any]:
        rng = self.rng
        used = rng.random() > 0.2
        requests = rng.randint(1, 5000) if used else 0
        tokens = requests * rng.randint(50, 900)
        micro = tokens * rng.randint(0, 40)
        key_id = self.next_id
        self.next_id += 1
        revoked = i % 7 == 3
        last = self.now - timedelta(minutes=rng.randint(1, 60 * 24 * 60)) if used else None
        words = ("research", "notebook", "script", "ci", "laptop", "cluster", "agent", "eval")
        return {
            "id": key_id,
            "name": f"{words[i % len(words)]}-{i:04d}",
            "hint": f"sk_{chr(65 + i % 26)}{i % 10}…{i:04x}",
            "status": "revoked" if revoked else "active",
            "created_at": iso(self.now - timedelta(days=90)),
            "revoked_at": iso(self.now - timedelta(days=1)) if revoked else None,
            "last_used_at": iso(last),
            "requests": requests,
            "input_tokens": tokens // 2,
            "output_tokens": tokens - tokens // 2,
            "tokens": tokens,
            "coins_micro": micro,
            "coins": coins(micro)["text"],
        }

    def _make_model(self, i: int) -> dict[str, Any]:
        rng = self.rng
        families = ("alpha", "Beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta")
        name = (
            f"{families[i % len(families)]}-{i // len(families) + 1}b"
            if i >= 8
            else f"{families[i]}-chat"
        )
        access = ACCESS[i % 4]
        status = STATUS[(i // 4) % 4] if i < 16 else "ok"
        active = status != "disabled"
        if not active:
            access = "blocked"
        requests = rng.randint(0, 800) if access in ("allowed", "consented") else 0
        tokens = requests * rng.randint(100, 1500)
        micro = tokens * rng.randint(0, 30)
        needs = access in ("needs_ack", "consented")
        notice = NOTICE.format(name=name) if needs else None
        return {
            "name": name,
            "description": f"{name}: a test model with {['no', 'some'][i % 2]} special powers.",
            "active": active,
            "access": access,
            "status": status,
            "instances": {"configured": 2, "healthy": {"ok": 2, "degraded": 1}.get(status, 0)},
            "needs_consent": needs,
            "notice": notice,
            "notice_digest": hashlib.sha256(notice.encode()).hexdigest() if notice else None,
            "input_cost_per_million": coins((i % 5) * 500_000),
            "output_cost_per_million": coins((i % 5) * 1_500_000),
            "max_model_len": 8192 * (1 + i % 4),
            "max_output_tokens": 2048,
            "supports_function_calling": i % 2 == 0,
            "supports_reasoning": i % 3 == 0,
            "knowledge_cutoff": "2025-06",
            "input_modalities": ["text"],
            "output_modalities": ["text"],
            "usage": {
                "requests": requests,
                "input_tokens": tokens // 2,
                "output_tokens": tokens - tokens // 2,
                "tokens": tokens,
                "coins_micro": micro,
                "coins": coins(micro)["text"],
                "last_used_at": iso(self.now - timedelta(hours=rng.randint(1, 400)))
                if requests
                else None,
            },
        }

    # -- ProfileSource ------------------------------------------------------------------

    def profile(self) -> dict[str, Any]:
        self._count("profile")
        now = datetime.now(timezone.utc).replace(microsecond=0)
        while self.refill_at <= now:
            self.refill_at += timedelta(hours=1)
        pools: dict[str, dict[str, Any]] = {
            "none": {"state": "none", "source": None},
            "unlimited": {"state": "unlimited", "source": "group:staff"},
            "limited": {
                "state": "limited",
                "source": "default",
                "balance": coins(12_345_678),
                "max": coins(20 * MICRO),
                "refresh_per_hour": coins(1_500_000),
                "exhausted": False,
                "last_refill_at": iso(self.refill_at - timedelta(hours=1)),
                "next_refill_at": iso(self.refill_at),
            },
            "exhausted": {
                "state": "limited",
                "source": "default",
                "balance": coins(-250_000),
                "max": coins(20 * MICRO),
                "refresh_per_hour": coins(1 * MICRO),
                "exhausted": True,
                "last_refill_at": iso(self.refill_at - timedelta(hours=1)),
                "next_refill_at": iso(self.refill_at),
            },
            "blocked": {
                "state": "blocked",
                "source": "user",
                "balance": coins(0),
                "max": coins(0),
                "refresh_per_hour": coins(0),
                "exhausted": True,
                "last_refill_at": None,
                "next_refill_at": None,
            },
        }
        total = sum(m["usage"]["coins_micro"] for m in self._models)
        tokens = sum(m["usage"]["tokens"] for m in self._models)
        used = [m for m in self._models if m["usage"]["requests"]]
        favorite = (
            min(used, key=lambda m: (-m["usage"]["requests"], m["name"]))["name"] if used else None
        )
        return {
            "user": {
                "username": "grace",
                "display_name": f"Grace Hopper ({self.calls['profile']})"
                if self.echo_calls
                else "Grace Hopper",
                "email": self.email,
                "initials": "GH",
                "avatar_url": None,
            },
            "tiles": {
                "groups": ["compilers", "navy"],
                "coins_used": coins(total),
                "tokens_used": tokens,
                "favorite_model": favorite,
            },
            "pool": pools[self.pool_state],
            "web_chat": {
                "conversations": 12,
                "requests": 87,
                "input_tokens": 30_000,
                "output_tokens": 12_345,
                "tokens": 42_345,
                "coins_micro": 1_234_500,
                "coins": "1.2345",
                "last_used_at": iso(now - timedelta(minutes=5)),
            },
            "server_time": iso(now),
        }

    def keys(self, include_revoked: bool = False) -> list[dict[str, Any]]:
        self._count("keys")
        rows = [k for k in self._keys if k["status"] != "draft"]
        if not include_revoked:
            rows = [k for k in rows if k["status"] == "active"]
        return [dict(k) for k in rows]

    def create_key(self, name: str | None = None) -> dict[str, Any]:
        self._count("create_key")
        raw = "sk_" + secrets.token_urlsafe(32)
        self.issued.append(raw)
        row = self._make_key(len(self._keys))
        row.update(
            name=name or "",
            hint=f"{raw[:4]}…{raw[-4:]}",
            status="active" if name else "draft",
            requests=0,
            tokens=0,
            input_tokens=0,
            output_tokens=0,
            coins_micro=0,
            coins="0",
            last_used_at=None,
            revoked_at=None,
        )
        self._keys.append(row)
        return {**row, "key": raw}

    def _key(self, id: int) -> dict[str, Any]:
        for row in self._keys:
            if row["id"] == id:
                return row
        raise KeyError(f"no key with id {id}")

    def save_key(self, id: int, name: str, **limits: Any) -> dict[str, Any]:
        self._count("save_key")
        if not name.strip():
            raise ValueError("a key name must not be empty")
        row = self._key(id)
        row["name"] = name.strip()
        row["limits"] = {f: v for f, v in limits.items() if v is not None}
        if row["status"] == "draft":
            row["status"] = "active"
        return dict(row)

    def revoke_key(self, id: int) -> dict[str, Any]:
        self._count("revoke_key")
        row = self._key(id)
        if row["status"] == "draft":
            self._keys.remove(row)
            return {"id": id, "result": "discarded"}
        row["status"] = "revoked"
        row["revoked_at"] = iso(datetime.now(timezone.utc))
        return {"id": id, "result": "revoked"}

    def models(self) -> list[dict[str, Any]]:
        self._count("models")
        return [dict(m) for m in self._models]

    def consent(self, name: str, notice_digest: str | None = None) -> dict[str, Any]:
        self._count("consent")
        for row in self._models:
            if row["name"] == name:
                if row["access"] != "needs_ack":
                    raise ValueError(f"{name} does not need consent")
                if notice_digest is not None and notice_digest != row["notice_digest"]:
                    raise ValueError(f"the notice of {name} has changed")
                row["access"] = "consented"
                return dict(row)
        raise KeyError(name)

    def usage(
        self, period: str = "month", bucket: str | None = None, group_by: str = "model"
    ) -> dict[str, Any]:
        self._count("usage")
        days = {"week": 7, "month": 30, "year": 365, "all": 730}[period]
        bucket = bucket or ("day" if period in ("week", "month") else "month")
        today = date.today()
        used = [m["name"] for m in self._models if m["usage"]["requests"]][:10]
        rng = random.Random(f"{period}-{len(self._models)}")
        starts: list[date] = []
        cursor = today - timedelta(days=days - 1)
        if bucket == "month":
            cursor = cursor.replace(day=1)
        while cursor <= today:
            starts.append(cursor)
            cursor = (
                (cursor.replace(day=28) + timedelta(days=4)).replace(day=1)
                if bucket == "month"
                else cursor + timedelta(days=1)
            )
        buckets = []
        totals: dict[str, dict[str, int]] = {}
        for start in starts:
            values = {}
            for name in used:
                if rng.random() < 0.45:
                    continue
                requests = rng.randint(1, 40)
                tok = requests * rng.randint(200, 1200)
                micro = tok * rng.randint(1, 25)
                values[name] = {
                    "requests": requests,
                    "input_tokens": tok // 2,
                    "output_tokens": tok - tok // 2,
                    "tokens": tok,
                    "coins_micro": micro,
                }
                total = totals.setdefault(
                    name,
                    {
                        "requests": 0,
                        "input_tokens": 0,
                        "output_tokens": 0,
                        "tokens": 0,
                        "coins_micro": 0,
                    },
                )
                for field, value in values[name].items():
                    total[field] += value
            buckets.append({"start": start.isoformat(), "values": values})
        series = sorted(totals, key=lambda n: (-totals[n]["coins_micro"], n))
        return {
            "period": period,
            "bucket": bucket,
            "group_by": group_by,
            "start": starts[0].isoformat(),
            "end": today.isoformat(),
            "series": series,
            "buckets": buckets,
            "totals": {n: totals[n] for n in series},
        }
