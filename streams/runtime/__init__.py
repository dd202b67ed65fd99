"""The one agent runtime: the public App API (agents, tables, windows, outcomes) and the transactional engine
that runs every agent, the built-ins and the ones users write (docs/decisions/0016, 0018)."""
