"""A webhook endpoint on loopback that verifies Standard Webhooks signatures and keeps what it received.

The demo prints what it got; tests and bench/webhooks post to it (tests inject failures with `respond`).
`python -m streams.webhooks.receiver --secret-name NAME` serves one on its own; GET on its path shows counts.
"""

from __future__ import annotations

import argparse
import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web

from streams.webhooks.signing import SignatureError, verify

__all__ = ["Answer", "Received", "Receiver"]


@dataclass(frozen=True, slots=True)
class Received:
    """One request as it arrived (lower-case headers), and whether its signature verified."""

    webhook_id: str
    headers: dict[str, str]
    body: bytes
    verified: bool
    at: float


@dataclass(frozen=True, slots=True)
class Answer:
    """What `respond` wants sent back instead of 204 (after `delay_s`: longer than a client's time-out is a
    time-out to it)."""

    status: int = 204
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    delay_s: float = 0.0


Respond = Callable[[Received], Awaitable[Answer | None]]


class Receiver:
    """An aiohttp server on its own thread. `delivered` maps webhook-id -> the first request answered 2xx
    (recorded before the answer leaves, so a sender killed meanwhile does not hide a delivery)."""

    def __init__(
        self,
        secret: str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        path: str = "/hook",
        respond: Respond | None = None,
        keep_bodies: bool = True,
    ) -> None:
        self.secret, self.host, self.port, self.path = secret, host, port, path
        self.respond = respond
        self.keep_bodies = keep_bodies
        self.delivered: dict[str, Received] = {}
        self.requests = 0
        self.answered_2xx = 0  # duplicates included
        self.first_2xx_at = self.last_2xx_at = 0.0  # wall clock, for rates measured where the requests land
        self.bad_signatures: list[str] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}{self.path}"

    # ---- lifecycle (from any thread) ----------------------------------------------------------------

    def start(self) -> Receiver:
        ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(ready,), name="webhook-receiver", daemon=True)
        self._thread.start()
        if not ready.wait(30):
            raise RuntimeError("the webhook receiver did not start within 30 s")
        return self

    def down(self) -> None:
        """Stop listening (senders get connection refused); `up()` listens again on the same port."""
        self._call(self._close_site())

    def up(self) -> None:
        self._call(self._open_site())

    def stop(self) -> None:
        if self._loop is None:
            return
        self._call(self._cleanup())
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        self._loop = None

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    # ---- serving ------------------------------------------------------------------------------------

    def _call(self, coroutine: Awaitable[None]) -> None:
        assert self._loop is not None  # noqa: S101 - started
        asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(30)  # type: ignore[arg-type]

    def _serve(self, ready: threading.Event) -> None:
        self._loop = asyncio.new_event_loop()
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_post(self.path, self._handle)
        app.router.add_get(self.path, self._stats)
        self._runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(self._runner.setup())
        self._loop.run_until_complete(self._open_site())
        ready.set()
        self._loop.run_forever()
        self._loop.close()

    async def _open_site(self) -> None:
        assert self._runner is not None  # noqa: S101
        self._site = web.TCPSite(self._runner, self.host, self.port)
        await self._site.start()
        if not self.port:
            server = self._site._server  # the port the OS chose
            self.port = server.sockets[0].getsockname()[1] if server is not None else 0  # type: ignore[attr-defined]

    async def _close_site(self) -> None:
        if self._site is not None:
            await self._site.stop()  # no new connections...
            self._site = None
        if self._runner is not None and self._runner.server is not None:
            await self._runner.server.shutdown(0.1)  # ...and the kept-alive ones closed, as a crashed server would

    async def _cleanup(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = {k.lower(): v for k, v in request.headers.items()}
        self.requests += 1
        try:
            msg_id = verify(self.secret, headers, body)
            verified = True
        except SignatureError as exc:
            msg_id, verified = headers.get("webhook-id", ""), False
            self.bad_signatures.append(f"{msg_id}: {exc}")
        received = Received(msg_id, headers, body if self.keep_bodies else b"", verified, time.time())
        answer = (await self.respond(received) if self.respond is not None else None) or Answer()
        if not verified:
            answer = Answer(401, body=b"signature does not verify")
        if answer.delay_s:
            await asyncio.sleep(answer.delay_s)
        if 200 <= answer.status < 300:
            self.answered_2xx += 1
            self.last_2xx_at = time.time()
            self.first_2xx_at = self.first_2xx_at or self.last_2xx_at
            self.delivered.setdefault(msg_id, received)
        return web.Response(status=answer.status, headers=answer.headers, body=answer.body)

    async def _stats(self, _: web.Request) -> web.Response:
        return web.json_response(
            {
                "delivered": len(self.delivered),
                "answered_2xx": self.answered_2xx,
                "requests": self.requests,
                "bad_signatures": len(self.bad_signatures),
                "first_2xx_at": self.first_2xx_at,
                "last_2xx_at": self.last_2xx_at,
            }
        )


def main() -> None:
    """Serve a receiver until interrupted; its secret is STREAMS_WEBHOOK_SECRETS[--secret-name]."""
    from streams.settings import Settings  # noqa: PLC0415 - only for the command

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--secret-name", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--path", default="/hook")
    args = parser.parse_args()
    secret = Settings().webhook_secret_map()[args.secret_name].get_secret_value()
    receiver = Receiver(secret, port=args.port, path=args.path, keep_bodies=False).start()
    print(f"receiver listening on {receiver.url}", flush=True)  # noqa: T201 - the caller reads the URL
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        receiver.stop()


if __name__ == "__main__":
    main()
