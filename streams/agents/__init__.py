"""Stream agents, one family per module: validation, audit (the hash chain) and indexing.

The audit chain writer is not a faust agent: it owns its exactly-once guarantee (docs/decisions/0010).
"""

DEFAULT_APP_ID = "streams-worker"  # `streams worker --app-id`: consumer group, state namespace, ACL prefix
