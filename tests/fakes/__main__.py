"""`python -m tests.fakes --port N --latency-ms 0`: serve the fake vendors, print the URL."""

from __future__ import annotations

import argparse

from tests.fakes.server import serve


def main(argv: list[str] | None = None) -> None:
    """Parse arguments and serve until interrupted (SIGINT/SIGTERM)."""
    parser = argparse.ArgumentParser(prog="python -m tests.fakes", description=__doc__)
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: pick a free one)")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="fixed delay before each answer")
    parser.add_argument("--context-window", type=int, default=None, help="reject inputs above this many tokens")
    parser.add_argument("--record", action="store_true", help="keep every request (grows memory)")
    args = parser.parse_args(argv)
    serve(port=args.port, latency_ms=args.latency_ms, context_window=args.context_window, record=args.record)


if __name__ == "__main__":
    main()
