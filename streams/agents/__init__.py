"""Stream agents, one family per module: validation, audit (the hash chain) and indexing.

The audit chain writer is not a faust agent: it owns its exactly-once guarantee (docs/decisions/0010).
"""
