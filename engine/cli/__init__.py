"""The `engine` command line."""

from __future__ import annotations


def main() -> None:
    """Entry point of the `engine` console script."""
    from engine.cli.app import cli

    cli()
