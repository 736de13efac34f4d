"""Call every adapter directly: `python examples/adapters_demo.py [--offline]`.

Each vendor adapter talks to the real API when its key is set (OPENAI_API_KEY,
ANTHROPIC_API_KEY, GEMINI_API_KEY, MISTRAL_API_KEY with optional MISTRAL_BASE_URL), and
otherwise to the fake vendor server, started in-process on 127.0.0.1. The simulated adapter
needs nothing. `--offline` uses the fakes even when keys are set.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout: `tests.fakes` is not installed

from adapters import LLMAdapter, Price, ProviderError, SimulatedAdapter, build_adapter

# kind, key variable, model, price (USD per million tokens)
VENDORS = [
    ("openai", "OPENAI_API_KEY", "gpt-4o-mini", Price(0.15, 0.60)),
    ("anthropic", "ANTHROPIC_API_KEY", "claude-haiku-4-5", Price(1.0, 5.0)),
    ("gemini", "GEMINI_API_KEY", "gemini-2.5-flash", Price(0.30, 2.50)),
    ("openai_compatible", "MISTRAL_API_KEY", "mistral-small-latest", Price(0.10, 0.30)),
]


def build(offline: bool, fake_url: str | None) -> tuple[list[tuple[str, LLMAdapter]], bool]:
    """The adapters to call, each labelled with where it goes; and whether a fake is needed."""
    chosen: list[tuple[str, LLMAdapter]] = []
    need_fake = False
    for kind, env, model, price in VENDORS:
        key = None if offline else os.environ.get(env)
        options: dict[str, object] = {"endpoint": "mistral"} if kind == "openai_compatible" else {}
        if key:
            base_url = os.environ.get("MISTRAL_BASE_URL") if kind == "openai_compatible" else None
            where = "live"
        else:
            need_fake = True
            if fake_url is None:
                continue
            key = f"fake-{kind}-key"
            base_url = fake_url + ("/v1" if kind in ("openai", "openai_compatible") else "")
            if kind == "openai_compatible":
                base_url = fake_url + "/mistral/v1"
            where = "fake"
        adapter = build_adapter(kind, provider=kind, model=model, api_key=key, base_url=base_url, timeout_s=30,
                                price=price, options=options)
        chosen.append((where, adapter))
    sim = SimulatedAdapter("sim", "sim-small", price=Price(0.05, 0.1), latency_ms=(40, 120), seed=1)
    chosen.append(("offline", sim))
    return chosen, need_fake


async def run(adapters: list[tuple[str, LLMAdapter]], prompt: str) -> int:
    """Call each adapter with generate(prompt, max_tokens, temperature) and print one line each."""
    failures = 0
    for where, adapter in adapters:
        try:
            c = await adapter.generate(prompt, 64, 0.2)
        except ProviderError as err:
            failures += 1
            print(f"{adapter.kind:<18} {where:<7} ERROR {err}")
        else:
            print(f"{adapter.kind:<18} {where:<7} {c.latency_ms:7.1f} ms  in={c.input_tokens:<4} "
                  f"out={c.output_tokens:<4} ${c.cost_usd:.6f}  {c.text[:60]!r}")
        finally:
            await adapter.aclose()
    return failures


async def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the number of failed calls."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--offline", action="store_true", help="use the fake vendors even when keys are set")
    parser.add_argument("--prompt", default="In one sentence: why route LLM requests by policy?")
    args = parser.parse_args(argv)
    adapters, need_fake = build(args.offline, None)
    if not need_fake:
        return await run(adapters, args.prompt)
    from tests.fakes import FakeVendorServer

    with FakeVendorServer() as fake:
        adapters, _ = build(args.offline, fake.url)
        return await run(adapters, args.prompt)


if __name__ == "__main__":
    sys.exit(1 if asyncio.run(main()) else 0)
