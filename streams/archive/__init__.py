"""The legal archive: every record of `archive: true` topics copied into sealed, hashed segment files.

`streams archive run` (an agent on the one runtime) writes it, `verify` checks it, replay reads through it
(docs/decisions/0025-archive.md).
"""
