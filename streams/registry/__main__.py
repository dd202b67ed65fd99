"""`python -m streams.registry --bootstrap-servers HOST:PORT --port 8081 [--catalog topics.yaml]`.

Prints "registry listening on http://HOST:PORT" once it answers requests.
"""

from __future__ import annotations

from streams.registry.commands import standalone

if __name__ == "__main__":
    standalone(prog_name="python -m streams.registry")
