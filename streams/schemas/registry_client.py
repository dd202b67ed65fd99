"""A small synchronous client for a Confluent-compatible schema registry (ours, Confluent, Karapace).

Every failure is a SchemaError: an unreachable registry says so, a refusal carries Confluent's error_code.
"""

from __future__ import annotations

import json
import threading
from typing import TYPE_CHECKING, Any, NamedTuple, Self
from urllib.parse import quote, urlsplit, urlunsplit

import httpx

from streams.errors import SchemaError

if TYPE_CHECKING:
    from types import TracebackType

__all__ = ["RegisteredSchema", "RegistryClient", "RegistryRequestError"]

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
SUBJECT_NOT_FOUND = 40401
VERSION_NOT_FOUND = 40402
SCHEMA_NOT_FOUND = 40403
SUBJECT_CONFIG_NOT_FOUND = 40408


def compact_schema(text: str) -> str:
    """The compact JSON form registries store: a lookup then matches whatever whitespace the file has."""
    return json.dumps(json.loads(text), separators=(",", ":"), ensure_ascii=False)


class RegisteredSchema(NamedTuple):
    """One version of a subject: `(id, version, schema)`."""

    id: int
    version: int
    schema: str


class RegistryRequestError(SchemaError):
    """The registry answered with an error: HTTP `status`, Confluent `error_code` and `message`."""

    def __init__(self, url: str, request: str, status: int, error_code: int, message: str) -> None:
        self.status, self.error_code, self.message = status, error_code, message
        super().__init__(
            f"the schema registry at {url} refused {request}: {message} (error_code {error_code}, HTTP {status})"
        )


class RegistryClient:
    """Talks to one registry at `url` (basic auth may ride in the URL); one connection pool, thread-safe.

    `with RegistryClient("http://127.0.0.1:8081") as registry: registry.register("t-value", text)`.
    """

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._shown = _redacted(self.url)
        self._http = httpx.Client(
            base_url=self.url, timeout=timeout, headers={"Accept": CONTENT_TYPE, "Content-Type": CONTENT_TYPE}
        )
        self._by_id: dict[int, str] = {}  # ids are immutable, so schemas by id are cached for good
        self._lock = threading.Lock()

    # ---- subjects and versions ----------------------------------------------------------------------

    def register(self, subject: str, schema_str: str) -> int:
        """Register `schema_str` (Avro) under `subject`; its id (the existing one if already registered)."""
        body = self._request("POST", f"/subjects/{_path(subject)}/versions", {"schema": schema_str})
        return int(body["id"])

    def lookup(self, subject: str, schema_str: str) -> int | None:
        """The id of `schema_str` under `subject`, or None when the subject or the schema is not there."""
        found = self.lookup_version(subject, schema_str)
        return None if found is None else found.id

    def lookup_version(self, subject: str, schema_str: str) -> RegisteredSchema | None:
        """`schema_str`'s `(id, version, schema)` under `subject`, or None when not registered there."""
        try:
            body = self._request("POST", f"/subjects/{_path(subject)}", {"schema": schema_str})
        except RegistryRequestError as exc:
            if exc.error_code in {SUBJECT_NOT_FOUND, SCHEMA_NOT_FOUND}:
                return None
            raise
        return _registered(body)

    def latest(self, subject: str) -> RegisteredSchema | None:
        """The latest version of `subject` as `(id, version, schema)`, or None when there is none."""
        try:
            return _registered(self._request("GET", f"/subjects/{_path(subject)}/versions/latest"))
        except RegistryRequestError as exc:
            if exc.error_code in {SUBJECT_NOT_FOUND, VERSION_NOT_FOUND}:
                return None
            raise

    def versions(self, subject: str) -> list[int]:
        """The live version numbers of `subject`, oldest first; empty when the subject does not exist."""
        try:
            body = self._request("GET", f"/subjects/{_path(subject)}/versions")
        except RegistryRequestError as exc:
            if exc.error_code == SUBJECT_NOT_FOUND:
                return []
            raise
        return sorted(int(version) for version in body)

    def get_version(self, subject: str, version: int | str) -> str:
        """The schema text of `subject`'s `version` (a number or "latest")."""
        body = self._request("GET", f"/subjects/{_path(subject)}/versions/{_path(str(version))}")
        return str(body["schema"])

    def schema_by_id(self, schema_id: int) -> str:
        """The schema text with global id `schema_id` (cached: ids never change meaning)."""
        with self._lock:
            cached = self._by_id.get(schema_id)
        if cached is not None:
            return cached
        text = str(self._request("GET", f"/schemas/ids/{int(schema_id)}")["schema"])
        with self._lock:
            self._by_id[schema_id] = text
        return text

    # ---- compatibility ------------------------------------------------------------------------------

    def test_compatibility(
        self, subject: str, schema_str: str, version: int | str | None = "latest"
    ) -> tuple[bool, tuple[str, ...]]:
        """Whether `schema_str` may follow `subject`, and why not; a subject with no versions is compatible.

        `version="latest"` (the default) asks about the latest version; `version=None` asks about every
        version the subject's level covers (Confluent's POST /compatibility/subjects/{s}/versions).
        """
        path = f"/compatibility/subjects/{_path(subject)}/versions"
        if version is not None:
            path += f"/{_path(str(version))}"
        try:
            body = self._request("POST", path, {"schema": schema_str}, params={"verbose": "true"})
        except RegistryRequestError as exc:
            if exc.error_code in {SUBJECT_NOT_FOUND, VERSION_NOT_FOUND}:
                return True, ()
            raise
        return bool(body["is_compatible"]), tuple(str(m) for m in body.get("messages") or ())

    def get_compatibility(self, subject: str | None = None) -> str:
        """The level that applies to `subject` (its own, else the global one); the global one for None."""
        if subject is None:
            return str(self._request("GET", "/config")["compatibilityLevel"])
        try:
            body = self._request("GET", f"/config/{_path(subject)}", params={"defaultToGlobal": "true"})
        except RegistryRequestError as exc:
            if exc.error_code not in {SUBJECT_NOT_FOUND, SUBJECT_CONFIG_NOT_FOUND}:
                raise
            body = self._request("GET", "/config")  # registries that ignore defaultToGlobal
        return str(body["compatibilityLevel"])

    def set_compatibility(self, subject: str | None, level: str) -> str:
        """Set `subject`'s level (the global one for None); the level the registry now reports."""
        path = "/config" if subject is None else f"/config/{_path(subject)}"
        body = self._request("PUT", path, {"compatibility": level.upper()})
        return str(body.get("compatibility", body.get("compatibilityLevel", level.upper())))

    # ---- lifecycle ----------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RegistryClient({self._shown!r})"

    def _request(
        self, method: str, path: str, body: dict[str, Any] | None = None, params: dict[str, str] | None = None
    ) -> Any:
        request = f"{method} {path}"
        try:
            response = self._http.request(method, path, json=body, params=params)
        except httpx.TimeoutException:
            raise SchemaError(
                f"cannot reach the schema registry at {self._shown}: no answer to {request} within {self.timeout:g}s"
            ) from None
        except httpx.TransportError as exc:
            raise SchemaError(
                f"cannot reach the schema registry at {self._shown}: {exc or type(exc).__name__} (is it "
                "running? set STREAMS_SCHEMA_REGISTRY_URL, or start the local stack with `streams dev up`)"
            ) from None
        try:
            payload = response.json()
        except json.JSONDecodeError:
            payload = None
        if response.is_success and payload is not None:
            return payload
        if isinstance(payload, dict) and "error_code" in payload:
            code, message = int(payload["error_code"]), str(payload.get("message", ""))
        else:
            code, message = response.status_code, (response.text.strip()[:200] or response.reason_phrase)
            if response.is_success:
                message = f"the answer is not JSON: {message!r}"
        raise RegistryRequestError(self._shown, request, response.status_code, code, message)


def _path(part: str) -> str:
    return quote(part, safe="")


def _registered(body: dict[str, Any]) -> RegisteredSchema:
    return RegisteredSchema(int(body["id"]), int(body["version"]), str(body["schema"]))


def _redacted(url: str) -> str:
    """`url` without a password, so error messages and logs never carry one."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))
