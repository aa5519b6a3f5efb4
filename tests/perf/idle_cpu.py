"""Idle cost: CPU time each service process burns while nothing happens.

Starts the services as processes (like the end-to-end tests: own ports, fresh schemas, a
temporary artifact folder) against a running broker and PostgreSQL, lets them settle, then
reads their CPU time (user + system, whole process group) from /proc over a quiet interval.

    .venv/bin/python -m tests.perf.idle_cpu [--seconds 60] [--warmup 15] [service ...]

Environment: MLOOP_KAFKA__BOOTSTRAP_SERVERS (default 127.0.0.1:9092), MLOOP_TEST_PORT_OFFSET
(HTTP ports 8001..8006 plus the offset, default 10000), MLOOP_DATABASE_PORT (default 55432).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

import asyncpg

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # also runnable as a plain script
    sys.path.insert(0, str(REPO))

from tests.stack import ServiceStack  # noqa: E402

PG_PORT = int(os.environ.get("MLOOP_DATABASE_PORT", "55432"))
ADMIN_DSN = f"postgresql://mloop:mloop@127.0.0.1:{PG_PORT}/mloop"
ADMIN_URL = f"postgresql+asyncpg://mloop:mloop@127.0.0.1:{PG_PORT}/mloop"
TICKS = os.sysconf("SC_CLK_TCK")


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU seconds of every live process in process group ``pgid``."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # exited meanwhile
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
        if int(fields[2]) == pgid:  # field 5 of stat: pgrp
            total += int(fields[11]) + int(fields[12])  # fields 14, 15: utime, stime
    return total / TICKS


async def drop_schemas(names: list[str]) -> None:
    connection = await asyncpg.connect(ADMIN_DSN)
    try:
        for name in names:
            await connection.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
    finally:
        await connection.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("services", nargs="*", help="services to start (default: all six)")
    parser.add_argument("--seconds", type=float, default=60.0, help="measured idle interval")
    parser.add_argument("--warmup", type=float, default=15.0, help="settling time after every service is ready")
    args = parser.parse_args()
    bootstrap = os.environ.get("MLOOP_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    with tempfile.TemporaryDirectory(prefix="mloop-idle-") as root:
        stack = ServiceStack(bootstrap=bootstrap, database_url=ADMIN_URL, root=Path(root), repo=REPO)
        names = args.services or list(stack.ports)
        try:
            stack.start(*names)
            time.sleep(args.warmup)
            before = {name: group_cpu_seconds(stack.processes[name].pid) for name in names}
            started = time.monotonic()
            time.sleep(args.seconds)
            elapsed = time.monotonic() - started
            after = {name: group_cpu_seconds(stack.processes[name].pid) for name in names}
        finally:
            codes = stack.stop()
            asyncio.run(drop_schemas(stack.schemas))
    print(f"idle CPU over {elapsed:.0f}s (share of one core, whole process group):")
    for name in names:
        print(f"  {name:<10} {100 * (after[name] - before[name]) / elapsed:6.2f} %")
    total = sum(after[n] - before[n] for n in names)
    print(f"  {'total':<10} {100 * total / elapsed:6.2f} %")
    unclean = {n: c for n, c in codes.items() if c not in (0, -15)}
    if unclean:
        print(f"services exited uncleanly: {unclean}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
