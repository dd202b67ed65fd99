"""`python -m streams.webhooks`: the `streams webhooks` command on its own (for process supervisors and tests).

Same options and exit codes as `streams webhooks`.
"""

from streams.webhooks.commands import webhooks

if __name__ == "__main__":
    webhooks()
