"""Evidence bundles built from the console: each a `streams replay --export` run in its own process.

The CLI's one implementation builds, signs and checks bundles; this module starts it, follows it and zips the result.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streams.console.kafka_views import ConsoleInputError

if TYPE_CHECKING:
    from streams.replay.verify import VerifyReport
    from streams.settings import Settings

MAX_UPLOAD_BYTES = 512 * 1024 * 1024


@dataclass
class Job:
    """One bundle build: its query, where it goes, and how it went."""

    id: str
    user: str
    args: list[str]
    directory: Path
    status: str = "running"  # running | done | failed
    started: float = field(default_factory=time.time)
    finished: float | None = None
    result: dict[str, Any] | None = None
    error: str | None = None

    def archive(self) -> Path:
        return self.directory.with_suffix(".zip")


class EvidenceJobs:
    """Starts `streams replay ... --export` processes and remembers them for the progress and download pages."""

    def __init__(self, settings: Settings, root: Path, sign_key: Path | None) -> None:
        self.settings = settings
        self.root = root
        self.sign_key = sign_key
        self.jobs: dict[str, Job] = {}
        self._lock = threading.Lock()

    def start(self, user: str, form: dict[str, str]) -> Job:
        """A new build from the form (topic, from, to, tenant, key); ConsoleInputError on bad input."""
        from streams.replay.errors import ReplayError  # noqa: PLC0415
        from streams.replay.selection import parse_bound  # noqa: PLC0415

        topic = form.get("topic", "").strip()
        for name in ("from", "to"):
            try:
                parse_bound(form.get(name) or None, name)
            except ReplayError as exc:
                raise ConsoleInputError(str(exc)) from None
        job_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
        directory = self.root / job_id
        args = [topic, "--export", str(directory), "--output", "json"]
        for name, option in (("from", "--from"), ("to", "--to"), ("tenant", "--tenant"), ("key", "--key")):
            if (form.get(name) or "").strip():
                args += [option, form[name].strip()]
        if self.sign_key is not None:
            args += ["--sign-key", str(self.sign_key)]
        job = Job(job_id, user, args, directory)
        self.root.mkdir(parents=True, exist_ok=True)
        with self._lock:
            self.jobs[job_id] = job
        threading.Thread(target=self._run, args=(job,), name=f"evidence-{job_id}", daemon=True).start()
        return job

    def get(self, job_id: str) -> Job:
        job = self.jobs.get(job_id)
        if job is None:
            raise ConsoleInputError(f"no evidence build {job_id!r} on this console", 404)
        return job

    def _run(self, job: Job) -> None:
        env = {
            **os.environ,
            "STREAMS_DATA_DIR": str(self.settings.data_dir),
            "STREAMS_CATALOG_PATH": str(self.settings.catalog_path),
        }
        command = [sys.executable, "-m", "streams.cli", "replay", *job.args]
        # The arguments are the form's values as separate argv items (no shell); replay checks them itself.
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=3600, check=False)  # noqa: S603
        job.finished = time.time()
        if done.returncode != 0:
            job.status, job.error = "failed", (done.stderr.strip().splitlines() or ["replay failed"])[-1]
            return
        try:
            job.result = json.loads(done.stdout)
            shutil.make_archive(str(job.directory), "zip", root_dir=job.directory.parent, base_dir=job.directory.name)
        except (ValueError, OSError) as exc:
            job.status, job.error = "failed", f"{type(exc).__name__}: {exc}"
            return
        job.status = "done"


def verify_upload(archive: bytes, public_key_pem: bytes | None, workdir: Path) -> VerifyReport:
    """Unpack an uploaded bundle (.zip) and verify it; ConsoleInputError when it is not a bundle at all."""
    from streams.replay.errors import ReplayError  # noqa: PLC0415
    from streams.replay.signing import load_public_key  # noqa: PLC0415
    from streams.replay.verify import verify_bundle  # noqa: PLC0415

    if not archive:
        raise ConsoleInputError("choose a bundle (.zip) to verify")
    if len(archive) > MAX_UPLOAD_BYTES:
        raise ConsoleInputError(f"the upload is over {MAX_UPLOAD_BYTES // 2**20} MiB", 413)
    upload = workdir / "upload.zip"
    upload.write_bytes(archive)
    if not zipfile.is_zipfile(upload):
        raise ConsoleInputError(
            "the upload is not an evidence bundle: not a .zip archive (download one from the"
            " Evidence page, or zip the bundle's directory)"
        )
    unpacked = workdir / "bundle"
    with zipfile.ZipFile(upload) as bundle:
        for name in bundle.namelist():
            target = (unpacked / name).resolve()
            if not target.is_relative_to(unpacked.resolve()):
                raise ConsoleInputError(f"the upload is not an evidence bundle: {name!r} points outside it")
        bundle.extractall(unpacked)
    manifests = sorted(unpacked.rglob("manifest.json"))
    if not manifests:
        raise ConsoleInputError("the upload is not an evidence bundle: it holds no manifest.json")
    trusted = None
    if public_key_pem:
        key_file = workdir / "trusted.pub"
        key_file.write_bytes(public_key_pem)
        try:
            trusted = load_public_key(key_file)
        except ReplayError as exc:
            raise ConsoleInputError(str(exc).replace(str(key_file), "the public key")) from None
    try:
        return verify_bundle(manifests[0].parent, trusted)
    except ReplayError as exc:
        raise ConsoleInputError(str(exc)) from None
