"""The status page that ``sdi up`` serves: every system, its state, live process charts.

``GET /`` is the page, ``GET /api/status`` the same facts as JSON,
``GET /healthz`` answers ``ok``. The page polls the JSON every two seconds
and charts event-loop lag and resident memory over the last five minutes.
"""

from __future__ import annotations

import asyncio
import html
import os
import resource
import time
from collections import deque
from collections.abc import Callable

from sdi.runtime.http import HttpServer, Request, Response
from sdi.runtime.service import Endpoint, Service, ServiceConfig
from sdi.systems import SYSTEMS

__all__ = ["StatusService"]

SAMPLE_SECONDS = 1.0
SAMPLES_KEPT = 300


def _resident_bytes() -> int:
    """Resident set size now, from /proc (the peak from getrusage where /proc is absent)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            pages = int(statm.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class StatusService(Service):
    """Serves the status page; ``running`` says which system keys are up right now."""

    key = "status"

    def __init__(self, running: Callable[[], dict[str, str]] | None = None) -> None:
        self._running = running or dict
        self._http = HttpServer(self._handle)
        self._started = time.time()
        self._samples: deque[tuple[float, float, int]] = deque(maxlen=SAMPLES_KEPT)
        self._sampler: asyncio.Task[None] | None = None
        self.port = 0

    async def start(self, config: ServiceConfig) -> list[Endpoint]:
        self.port = await self._http.start(config.host, config.port)
        self._started = time.time()
        self._sampler = asyncio.create_task(self._sample())
        url = f"http://{config.host}:{self.port}/"
        return [Endpoint("status", url, f"curl -s {url}api/status")]

    async def stop(self) -> None:
        if self._sampler is not None:
            self._sampler.cancel()
            await asyncio.gather(self._sampler, return_exceptions=True)
        await self._http.stop()

    async def _sample(self) -> None:
        """Every second: how late the loop woke (its lag) and the resident memory."""
        loop = asyncio.get_running_loop()
        while True:
            planned = loop.time() + SAMPLE_SECONDS
            await asyncio.sleep(SAMPLE_SECONDS)
            lag = max(0.0, loop.time() - planned)
            self._samples.append((time.time(), lag * 1000.0, _resident_bytes()))

    def status(self) -> dict[str, object]:
        """The facts the page shows, as plain data."""
        running = self._running()
        return {
            "uptime_seconds": round(time.time() - self._started, 3),
            "pid": os.getpid(),
            "systems": [
                {
                    "key": system.key,
                    "title": system.title,
                    "chapter": system.chapter,
                    "protocol": system.protocol,
                    "core": system.core,
                    "state": "running" if system.key in running else system.state,
                    "endpoint": running.get(system.key),
                }
                for system in SYSTEMS
            ],
            "samples": {
                "time": [round(t, 3) for t, _, _ in self._samples],
                "loop_lag_ms": [round(lag, 3) for _, lag, _ in self._samples],
                "resident_bytes": [rss for _, _, rss in self._samples],
            },
        }

    async def _handle(self, request: Request) -> Response:
        if request.method not in ("GET", "HEAD"):
            return Response.error(405, "only GET and HEAD are served here")
        if request.path == "/api/status":
            return Response.json(self.status())
        if request.path == "/healthz":
            return Response.text("ok\n")
        if request.path == "/":
            return Response.text(self._page(), content_type="text/html")
        return Response.error(404, f"no page at {request.path}; try / or /api/status")

    def _page(self) -> str:
        running = self._running()
        rows = "\n".join(
            "<tr><td>{chapter}</td><td>{title}</td><td><code>{key}</code></td>"
            "<td>{protocol}</td><td class='{css}'>{state}</td></tr>".format(
                chapter=system.chapter,
                title=html.escape(system.title),
                key=html.escape(system.key),
                protocol=html.escape(system.protocol),
                css="up" if system.key in running else "off",
                state=html.escape(
                    f"running at {running[system.key]}" if system.key in running else system.state
                ),
            )
            for system in SYSTEMS
        )
        return _PAGE.replace("{rows}", rows)


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>sdi status</title>
<style>
body { font: 14px system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; } td, th { padding: 4px 12px; border-bottom: 1px solid #ddd; }
th { text-align: left; } .up { color: #1a7f37; font-weight: 600; } .off { color: #888; }
.chart { display: inline-block; margin-right: 2em; } svg { background: #f6f8fa; }
</style></head><body>
<h1>sdi</h1>
<p>The thirteen systems of <i>System Design Interview, Vol. 2</i>.
Up for <span id="uptime">0</span> s, pid <span id="pid"></span>.</p>
<table><tr><th>ch.</th><th>system</th><th>key</th><th>protocol</th><th>state</th></tr>
{rows}
</table>
<h2>This process</h2>
<div class="chart"><div>event-loop lag, ms: <b id="lag-now">-</b></div>
<svg id="lag" width="420" height="90"></svg></div>
<div class="chart"><div>resident memory, MiB: <b id="rss-now">-</b></div>
<svg id="rss" width="420" height="90"></svg></div>
<script>
function draw(id, values) {
  const svg = document.getElementById(id);
  if (values.length < 2) { return; }
  const w = svg.width.baseVal.value, h = svg.height.baseVal.value;
  const max = Math.max(...values) || 1;
  const points = values.map((v, i) =>
    (i * w / (values.length - 1)).toFixed(1) + "," + (h - 4 - v * (h - 8) / max).toFixed(1));
  svg.innerHTML = '<polyline fill="none" stroke="#d1495b" stroke-width="1.5" points="' +
    points.join(" ") + '"/>';
}
async function refresh() {
  try {
    const status = await (await fetch("/api/status")).json();
    document.getElementById("uptime").textContent = Math.round(status.uptime_seconds);
    document.getElementById("pid").textContent = status.pid;
    const lag = status.samples.loop_lag_ms;
    const rss = status.samples.resident_bytes.map(b => b / 1048576);
    draw("lag", lag); draw("rss", rss);
    if (lag.length) {
      document.getElementById("lag-now").textContent = lag[lag.length - 1].toFixed(2);
      document.getElementById("rss-now").textContent = rss[rss.length - 1].toFixed(1);
    }
  } catch (error) { document.getElementById("uptime").textContent = "(stopped)"; }
}
refresh(); setInterval(refresh, 2000);
</script></body></html>
"""
