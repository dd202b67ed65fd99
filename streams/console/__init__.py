"""The web console (`streams console`): topics, messages, dead letters, audit chain and evidence in a browser.

Server-rendered Starlette pages with roles, sessions and CSRF; see docs/decisions/0027-console.md.
"""
