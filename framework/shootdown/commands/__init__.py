"""Subcommands of the shootdown CLI, one module each."""
