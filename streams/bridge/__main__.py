"""`python -m streams.bridge`: the `streams bridge` command on its own (for process supervisors and tests).

Same options and exit codes as `streams bridge`.
"""

from streams.bridge.commands import bridge

if __name__ == "__main__":
    bridge()
