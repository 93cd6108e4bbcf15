"""The embedded default: what a new user gets with no configuration at all.

A 20-coin pool refilled by 1 coin an hour, and three demo models served by the
built-in demo backend - one free, one priced, one that needs a one-time consent.
"""

from __future__ import annotations

from .catalog import Catalog, EndpointSpec, ModelSpec, PoolSpec, Rule
from .money import MICRO

DEMO_NOTICE = (
    "demo-restricted stands for a model with terms of use. Its answers are generated "
    "by a local demo backend and may be wrong; do not send personal or confidential "
    "data. By accepting, you acknowledge this notice once; if it changes, you will be "
    "asked again."
)


def embedded_default(demo_base_url: str) -> Catalog:
    """The default catalog, pointing the demo models at ``demo_base_url``."""

    def demo_endpoint(name: str) -> tuple[EndpointSpec, ...]:
        return (EndpointSpec(url=demo_base_url.rstrip("/"), model=name),)

    models = [
        ModelSpec(
            name="demo-free",
            endpoints=demo_endpoint("demo-free"),
            description="A free demo model: replies cost nothing, tokens are still counted.",
            max_model_len=8192,
            max_output_tokens=1024,
            supports_function_calling=False,
            supports_reasoning=False,
            input_modalities=("text",),
            output_modalities=("text",),
        ),
        ModelSpec(
            name="demo-pro",
            input_price_micro=50 * MICRO,
            output_price_micro=150 * MICRO,
            endpoints=demo_endpoint("demo-pro"),
            description="A priced demo model: 50 coins per million tokens in, 150 out.",
            max_model_len=32768,
            max_output_tokens=2048,
            supports_function_calling=True,
            supports_reasoning=False,
            input_modalities=("text",),
            output_modalities=("text",),
        ),
        ModelSpec(
            name="demo-restricted",
            input_price_micro=100 * MICRO,
            output_price_micro=300 * MICRO,
            endpoints=demo_endpoint("demo-restricted"),
            needs_consent=True,
            notice=DEMO_NOTICE,
            description="A demo model that needs a one-time consent before use.",
            max_model_len=16384,
            max_output_tokens=1024,
            supports_function_calling=False,
            supports_reasoning=True,
            input_modalities=("text",),
            output_modalities=("text",),
        ),
    ]
    return Catalog(
        models={m.name: m for m in models},
        default_pool=PoolSpec(
            max_micro=20 * MICRO, refresh_micro=1 * MICRO, starting_micro=20 * MICRO
        ),
        default_rule=Rule.ALLOWED,
    )
