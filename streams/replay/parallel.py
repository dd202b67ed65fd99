"""An evidence export in parallel parts: one process per contiguous group of partitions, joined in plan order.

One Python process exports about 100k records/s on this machine, most of it spent turning each record's
key, timestamp and headers into Python objects while holding the GIL. A large export is therefore split
into groups of consecutive partitions, each exported by a process of its own into
`<bundle>.partial/part-<i>.partial` (an ordinary, resumable partial bundle). The sealed parts' records files
then move into the bundle as they are (`records-<schema id>.part<i>.avro`) and their hash lists are joined
in plan order (docs/decisions/0013-parallel-export.md).
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from streams.errors import StreamsError
from streams.replay.errors import ReplayError
from streams.replay.evidence import EvidenceWriter, partial_dir
from streams.replay.filters import PayloadDecoder, RecordFilter
from streams.replay.reader import reader_consumer
from streams.replay.runner import run_replay
from streams.replay.selection import PARALLEL_MIN_OFFSETS, ReplayPlan
from streams.schemas.registry_client import RegistryClient

if TYPE_CHECKING:
    from multiprocessing.queues import SimpleQueue
    from multiprocessing.sharedctypes import Synchronized
    from pathlib import Path

    from streams.replay.runner import OnProgress, Progress
    from streams.settings import KafkaConfig

__all__ = ["PARALLEL_MIN_OFFSETS", "PartsJob", "export_in_parts", "parts_for", "split_plan"]

POLL_S = 0.2


def parts_for(plan: ReplayPlan, output: str, jobs: int | None) -> int:
    """How many parts to export `plan` in: `jobs` (None: one per CPU for a large export), at most one per
    non-empty partition range; 1 for JSONL bundles, which are written in one piece."""
    if output != "avro":
        return 1
    if jobs is None:
        jobs = (os.cpu_count() or 1) if plan.total >= PARALLEL_MIN_OFFSETS else 1
    return max(1, min(jobs, sum(1 for r in plan.ranges if r.size)))


def split_plan(plan: ReplayPlan, parts: int) -> list[ReplayPlan]:
    """`plan`'s ranges in `parts` contiguous groups (partition order kept) of about equal offsets."""
    groups: list[list[Any]] = [[]]
    done = 0
    for pinned in plan.ranges:
        if groups[-1] and len(groups) < parts and done >= plan.total * len(groups) / parts:
            groups.append([])
        groups[-1].append(pinned)
        done += pinned.size
    return [replace(plan, ranges=tuple(group)) for group in groups]


@dataclass(frozen=True)
class PartsJob:
    """What every part's process needs (plain data: it crosses a process boundary)."""

    kafka: KafkaConfig
    registry_url: str
    replay_id: str
    codec: str
    rate: float | None


def export_in_parts(
    writer: EvidenceWriter, job: PartsJob, parts: int, *, on_progress: OnProgress | None = None
) -> Progress:
    """Export `writer`'s plan in `parts` processes (or continue an interrupted parallel export) and merge
    the parts into `writer`'s files; the whole export's progress, ready for `writer.finish`."""
    progress = writer.resume()
    if writer.parts == 0:
        writer.parts = parts
        writer.commit(progress)  # from here on the layout is fixed: a re-run continues the same parts
    plans = split_plan(writer.plan, writer.parts)
    directories = [writer.partial / f"part-{index}" for index in range(len(plans))]
    if writer.merged:  # merged before an interruption
        for directory in directories:
            shutil.rmtree(partial_dir(directory), ignore_errors=True)
        return progress
    _run_parts(plans, directories, job, on_progress)
    return writer.merge_parts(directories)


def _run_parts(plans: list[ReplayPlan], directories: list[Path], job: PartsJob, on_progress: OnProgress | None) -> None:
    context = multiprocessing.get_context("spawn")  # librdkafka's threads do not survive a fork
    results: SimpleQueue[tuple[int, str | None]] = context.SimpleQueue()
    counters: list[Synchronized[int]] = []
    processes = []
    sealed = 0  # offsets of parts a previous run finished
    for index, (plan, directory) in enumerate(zip(plans, directories, strict=True)):
        if EvidenceWriter.part_sealed(directory):
            sealed += plan.total
            continue
        counter: Synchronized[int] = context.Value("q", 0)
        counters.append(counter)
        rate = None if job.rate is None else job.rate / len(plans)
        processes.append(
            context.Process(
                target=_export_part,
                name=f"export-part-{index}",
                daemon=True,
                args=(replace(job, rate=rate), index, plan.to_json(), directory, counter, results),
            )
        )
    if on_progress is not None and sealed:
        on_progress(sealed)
    reported = 0  # of the running parts
    try:
        for process in processes:
            process.start()
        while any(process.is_alive() for process in processes):
            time.sleep(POLL_S)
            reported = _report(counters, reported, on_progress)
            _raise_failure(results)
        _report(counters, reported, on_progress)
        _raise_failure(results)
        for process in processes:
            if process.exitcode:
                raise ReplayError(
                    f"export {process.name} stopped with exit code {process.exitcode} (see above); "
                    "run the same command again to continue"
                )
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()  # its last checkpoint lets the re-run continue
            process.join()


def _report(counters: list[Synchronized[int]], reported: int, on_progress: OnProgress | None) -> int:
    """Pass on what the running parts covered since `reported`; the new total."""
    total = sum(counter.value for counter in counters)
    if on_progress is not None and total > reported:
        on_progress(total - reported)
    return total


def _raise_failure(results: SimpleQueue[tuple[int, str | None]]) -> None:
    while not results.empty():
        index, error = results.get()
        if error is not None:
            raise ReplayError(f"export part {index}: {error}")


def _export_part(
    job: PartsJob,
    index: int,
    plan_json: dict[str, Any],
    directory: Path,
    counter: Synchronized[int],
    results: SimpleQueue[tuple[int, str | None]],
) -> None:
    """One part, in its own process: an ordinary export of the part's ranges, sealed for the merge."""
    plan = ReplayPlan.from_json(plan_json)
    parent = os.getppid()

    def advance(count: int) -> None:
        if os.getppid() != parent:  # the export was killed: stop at this batch, the checkpoint is kept
            raise SystemExit(1)
        with counter.get_lock():
            counter.value += count

    try:
        consumer = reader_consumer(job.kafka)
        try:
            with RegistryClient(job.registry_url) as registry:
                decoder = PayloadDecoder(registry)
                writer = EvidenceWriter(directory, plan, job.replay_id, decoder, codec=job.codec, part=index)
                try:
                    progress = run_replay(
                        consumer, plan, writer, RecordFilter(plan.query, decoder), rate=job.rate, on_progress=advance
                    )
                except BaseException:
                    writer.close()  # its checkpoint lets the re-run continue
                    raise
                writer.seal_part(progress)
        finally:
            consumer.close()
    except StreamsError as exc:
        results.put((index, str(exc)))
    except KeyboardInterrupt:
        return  # the parent reports the interruption
    else:
        results.put((index, None))
