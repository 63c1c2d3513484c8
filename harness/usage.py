"""CPU time and resident memory of processes, read from ``/proc`` (Linux)."""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads), from ``/proc/<pid>/stat``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def machine_busy_s() -> float:
    """CPU seconds all cores have spent busy since boot (``/proc/stat``), whoever ran."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values[:8]) - idle) / _TICK


@dataclass
class CpuMeter:
    """Cores used over a stretch of wall time by this process (the load generator, or the raw encoder),
    by the gateway process ``pid`` (if any), and by everything else on the machine (``other_cores``:
    other processes, e.g. other people's jobs; above about 0.1 the figures are not reliable)."""

    pid: int | None = None

    def _now(self) -> tuple[float, float, float, float]:
        gateway = process_cpu_s(self.pid) if self.pid is not None else 0.0
        return time.perf_counter(), own_cpu_s(), gateway, machine_busy_s()

    def __enter__(self) -> CpuMeter:
        self._start = self._now()
        return self

    def __exit__(self, *exc: object) -> None:
        wall, own, gateway, machine = (b - a for a, b in zip(self._start, self._now(), strict=True))
        self.wall_s = wall
        self.own_cores = own / wall
        self.gateway_cores = gateway / wall
        self.machine_cores = machine / wall
        self.other_cores = max(0.0, (machine - own - gateway) / wall)


def memory_kb(pid: int) -> dict[str, int]:
    """The ``Vm*`` lines of ``/proc/<pid>/status`` in kB: ``VmRSS`` (resident now), ``VmHWM`` (peak)..."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key.startswith("Vm"):
            fields[key] = int(value.split()[0])
    return fields


def rss_bytes(pid: int) -> int:
    """Resident set size of process ``pid``."""
    rss = memory_kb(pid).get("VmRSS")
    if rss is None:
        raise RuntimeError(f"no VmRSS for pid {pid}")
    return rss * 1024
