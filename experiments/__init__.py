"""Experiments above training: every ``cram bench`` study, its run cache, tables and timing.

Each study trains real runs through ``cram.consolidation`` (reusing a cached run only when it is
the same experiment: ``cram.core.identity``), reads them back through ``cram.core.runs`` and
returns rows; the CLI verbs (``cram/commands/bench*.py``) parse, call and write result files.
``consolidation/`` keeps training and evaluation only, and nothing below this layer imports it.
"""
