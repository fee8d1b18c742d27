"""The bottom layer: errors, the run-folder contract, JSON files, overrides and benchmark logs.

It imports nothing else of the project and never imports torch, so every layer above may use it.
"""
