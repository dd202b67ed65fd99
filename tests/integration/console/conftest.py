"""The console's browser tests share one stack, one console and one Chromium across their files, for this
package only: Playwright's sync API keeps an event loop running in the main thread while it is open, so it is
closed when the package ends, before tests that call asyncio.run (test_publish, test_outbox)."""

from tests.integration.console_harness import browser_fixture, console_stack_fixture  # noqa: F401
