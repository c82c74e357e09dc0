"""Subcommand modules of the actlab CLI (see actlab.cli)."""
