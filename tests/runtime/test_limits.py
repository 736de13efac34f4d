"""Rate limits through the router: beyond rpm, requests wait or move on, never exceed."""

from __future__ import annotations

from engine.runtime.router import Router
from tests.runtime.conftest import make_policy, sims

LIMITED = """
version: 1
providers:
  pa: {adapter: simulated, limits: {rpm: 5}}
  pb: {adapter: simulated}
models:
  a: {provider: pa, price: {input: 0.1, output: 0.1}, context_window: 8000}
  b: {provider: pb, price: {input: 1, output: 1}, context_window: 8000}
routes:
  - {name: default, strategy: cheapest}
deadline_s: 2
"""


async def test_requests_beyond_rpm_move_to_the_next_model() -> None:
    p = make_policy(base=LIMITED)
    ads = sims(p)
    router = Router(p, log_path=None, adapters=ads)
    served = [(await router.generate(f"q{i}")).model for i in range(12)]
    # `a` takes its burst of 5; waiting for the next slot (12 s at 5 rpm) would pass the 2 s
    # deadline, so the rest move on to `b` at once
    assert served.count("a") == 5 and served.count("b") == 7
    assert ads["a"].calls == 5
    await router.aclose()
