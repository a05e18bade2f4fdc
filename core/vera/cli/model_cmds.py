"""Subcommands: (being built; see docs/architecture.md)."""


def register(subparsers) -> None:
    """Adds nothing yet."""
