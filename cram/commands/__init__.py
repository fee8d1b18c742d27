"""The ``cram`` subcommands: one module per group, each exposing ``register(subparsers)``."""
