"""`make bench`: every benchmark in bench/ side by side with its peer, then docs/benchmarks.md from scratch.

Starts a local stack of its own (Kafka, our registry, Redis) under .streams/bench, runs each bench as a
child process with that stack's addresses (bench/agents.py starts its own stacks), keeps each bench's
printed output and JSON in bench/results/, and writes docs/benchmarks.md from them: the machine and its
load, what each bench measures (bench/notes/<name>.md), and the numbers exactly as the bench printed them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
NOTES = ROOT / "bench" / "notes"

# name -> arguments (besides --json); the order is the order of docs/benchmarks.md.
BENCHES: dict[str, list[str]] = {
    "publish": ["--events", "50000", "--profile"],
    "agents": ["--events", "60000", "--rounds", "3", "--profile"],
    "judge": ["--events", "4000", "--rounds", "7"],
    "user_agents": ["--events", "60000", "--rounds", "3"],
    "bridge": ["--events", "100000", "--runs", "2"],
    "replay": ["--events", "1000000", "--rounds", "3"],
    "webhooks": ["--events", "5000"],
    "outbox": ["--events", "30000", "--peer-events", "3000", "--rate", "1000", "--seconds", "10"],
    "console": ["--records", "1000", "--runs", "15"],
    "archive": ["--events", "200000"],
}
QUICK: dict[str, list[str]] = {  # --quick: the same paths on small inputs, to check the harness itself
    "publish": ["--events", "5000"],
    "agents": ["--events", "2000", "--rounds", "1", "--seconds", "5"],
    "judge": ["--events", "200", "--rounds", "1"],
    "user_agents": ["--events", "2000", "--rounds", "1", "--seconds", "5"],
    "bridge": ["--events", "5000", "--runs", "1"],
    "replay": ["--events", "20000", "--rounds", "1"],
    "webhooks": ["--events", "500"],
    "outbox": ["--events", "3000", "--peer-events", "500", "--seconds", "3"],
    "console": ["--records", "1000", "--runs", "3"],
    "archive": ["--events", "20000"],
}


def load_average() -> float:
    return os.getloadavg()[0]


def run_bench(name: str, args: list[str], env: dict[str, str], results: Path) -> dict[str, object]:
    """Run one bench; its stdout goes to the console and <results>/<name>.txt, its JSON to <results>/<name>.json."""
    results.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, str(ROOT / "bench" / f"{name}.py"), *args, "--json", str(results / f"{name}.json")]
    print(f"\n=== bench/{name}.py {' '.join(args)}", flush=True)
    load_before, started = load_average(), time.monotonic()
    lines: list[str] = []
    with subprocess.Popen(  # noqa: S603 - our own bench scripts
        command,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
    ) as process:
        assert process.stdout is not None  # noqa: S101 - stdout=PIPE
        for line in process.stdout:
            sys.stdout.write(line)
            lines.append(line)
    output = "".join(lines)
    (results / f"{name}.txt").write_text(output)
    return {
        "name": name,
        "command": f"python bench/{name}.py {' '.join(args)}",
        "exit_code": process.returncode,
        "when": f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC",
        "seconds": round(time.monotonic() - started, 1),
        "load_before": round(load_before, 2),
        "load_after": round(load_average(), 2),
        "output": output,
    }


def kept_sections(document: Path) -> dict[str, str]:
    """The `## bench/<name>` sections of an existing document, by name: what a partial run leaves as it was."""
    if not document.exists():
        return {}
    sections: dict[str, str] = {}
    for part in document.read_text().split("\n## bench/")[1:]:
        name, body = part.split("\n", 1)
        sections[name.strip()] = f"## bench/{name.strip()}\n{body.rstrip()}\n"
    return sections


def with_current_notes(name: str, section: str) -> str:
    """A kept section with bench/notes/<name>.md as it is now in place of the notes it was rendered with."""
    notes = NOTES / f"{name}.md"
    start = section.find("\n`python bench/")
    if not notes.exists() or start < 0:
        return section
    return f"## bench/{name}\n\n{notes.read_text().strip()}\n\n{section[start + 1 :]}"


def render(runs: list[dict[str, object]], started: dt.datetime, kept: dict[str, str] | None = None) -> str:
    cpus = os.cpu_count()
    memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    kept = kept or {}
    redone = ", ".join(str(run["name"]) for run in runs) or "none (the notes were re-rendered)"
    partial = (
        f" This run redid {redone}; the other sections are from an earlier run (dated where run_all ran them)."
        if kept
        else ""
    )
    parts = [
        "# Benchmarks\n",
        (
            f"Generated by `make bench` (bench/run_all.py) on {started:%Y-%m-%d %H:%M} UTC.{partial} "
            "Every bench runs our "
            "path and "
            "its peer side by side in one run on the same broker (the embedded local stack: one Apache Kafka KRaft "
            "node on loopback, our schema registry, a private redis-server) and prints both rates and the ratio; the "
            "numbers below are that output, unedited. Re-run with `make bench`.\n"
        ),
        (
            f"Machine: {cpus} CPUs ({platform.machine()}), {memory_gb:.0f} GB, Python {platform.python_version()}, "
            f"{platform.platform()}. The 1-minute load average before and after each bench is given with it: on "
            "2 cores, anything else running shows up directly in the rates.\n"
        ),
    ]
    by_name = {str(run["name"]): run for run in runs}
    for name in BENCHES:
        if name not in by_name:
            if name in kept:
                parts.append(with_current_notes(name, kept[name]))
            continue
        run = by_name[name]
        notes = NOTES / f"{name}.md"
        parts.append(f"## bench/{name}\n")
        if notes.exists():
            parts.append(notes.read_text().strip() + "\n")
        status = "" if run["exit_code"] == 0 else f" **(exited with {run['exit_code']}: the run is incomplete)**"
        parts.append(
            f"`{run['command']}` ({run['when']}): {run['seconds']} s, load {run['load_before']} before, "
            f"{run['load_after']} after{status}. Output:\n"
        )
        parts.append("```text\n" + str(run["output"]).strip() + "\n```\n")
    return "\n".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(BENCHES), help="Comma-separated benches to run.")
    parser.add_argument("--quick", action="store_true", help="Small inputs: checks the harness, numbers mean little.")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--results", type=Path, default=RESULTS, help="Where each bench's output and JSON go.")
    parser.add_argument(
        "--render-only",
        action="store_true",
        help="Run nothing: re-render the document's sections with the current bench/notes.",
    )
    options = parser.parse_args()
    if options.render_only:
        options.output.write_text(render([], dt.datetime.now(dt.UTC), kept_sections(options.output)))
        print(f"wrote {options.output}")
        return
    chosen = [name.strip() for name in options.only.split(",") if name.strip()]
    unknown = set(chosen) - set(BENCHES)
    if unknown:
        parser.error(f"unknown bench(es) {sorted(unknown)}; choose from {', '.join(BENCHES)}")

    sys.path.insert(0, str(ROOT))
    from streams.local.stack import start_stack, stop_stack  # noqa: PLC0415 - after the path is set

    data_dir = ROOT / ".streams" / "bench"
    started = dt.datetime.now(dt.UTC)
    state = start_stack(data_dir, with_redis=True, catalog=ROOT / "topics.yaml")
    # Library deprecation notices would only clutter the outputs that go into the document.
    env = {**os.environ, "STREAMS_DATA_DIR": str(data_dir), "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore"}
    print("stack:", ", ".join(f"{s.name} {s.address}" for s in state.services.values()), flush=True)
    try:
        runs = [run_bench(name, (QUICK if options.quick else BENCHES)[name], env, options.results) for name in chosen]
    finally:
        stop_stack(data_dir)
    # --only some benches: the others keep their sections from the document as it was
    kept = kept_sections(options.output) if set(chosen) != set(BENCHES) else {}
    options.output.write_text(render(runs, started, kept))
    # the runs of this invocation replace their own entries; the other benches' entries stay
    index = options.results / "run_all.json"
    entries = {str(e["name"]): e for e in (json.loads(index.read_text()) if index.exists() else [])}
    entries.update({str(run["name"]): {k: v for k, v in run.items() if k != "output"} for run in runs})
    index.write_text(json.dumps([entries[name] for name in BENCHES if name in entries], indent=2) + "\n")
    print(f"\nwrote {options.output}")
    failed = [str(run["name"]) for run in runs if run["exit_code"] != 0]
    if failed:
        sys.exit(f"bench(es) failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
