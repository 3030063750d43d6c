"""Load test of POST /api/search/ against a running server: latency, throughput, memory.

    SEARCH_RATE_LIMIT= make run        # in one terminal: the rate limit off for this run
    make load                          # in another: 60 s at 8 clients on http://127.0.0.1:$PORT
    python bench/load_search.py --seconds 20 --clients 4 --url http://127.0.0.1:8000

Start the server with SEARCH_RATE_LIMIT= (empty): the default limit (120/min per client
address) would throttle a load run, all of whose clients share one address. Answers 429
count as errors, and the summary says so.

Each client is a thread with its own keep-alive connection, sending base64 JPEGs made from
scikit-image's sample photos (several crops and sizes of each, so queries differ). The run
stops at --seconds, waiting at most --timeout more for requests in flight. While it runs,
the web server's processes (found through the listening port in /proc, or --pid) are
sampled for resident memory. The exit status is 1 when any request failed, 2 when the
server cannot be reached.

Stdlib only for the load itself (threads and http.client); Pillow and scikit-image, which
the project already needs, make the photos. Linux only for the memory figures (/proc).
"""

from __future__ import annotations

import argparse
import base64
import http.client
import io
import json
import math
import os
import random
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import descendants, script_parser, status_kib

PHOTOS = ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "brick.png"]
PHOTOS += ["camera.png", "horse.png", "motorcycle_left.png", "retina.jpg", "hubble_deep_field.jpg"]


def main() -> int:
    args = parse_args()
    target = urlparse(args.url)
    bodies = search_bodies(args.top_k)
    print(
        f"{len(bodies)} query photos; {args.clients} clients for {args.seconds:g} s on {args.url}"
    )

    warm_up = new_connection(target, args.timeout)
    try:
        status, body = post(warm_up, bodies[0])  # not counted: the first may load the model
    except (OSError, http.client.HTTPException) as exc:
        print(f"Cannot reach {args.url} ({exc}). Start the server first: make run", file=sys.stderr)
        return 2
    if status == 429:
        print(THROTTLED_HELP, file=sys.stderr)
        return 1
    if status != 200:
        print(f"The first search answered {status}: {body[:300]!r}", file=sys.stderr)
        return 1
    warm_up.close()
    if not json.loads(body).get("results"):
        print("Note: the first search found nothing; is the catalog indexed yet?")

    pids = web_pids(args.pids, target.port or 80)
    memory = MemorySampler(pids, args.pids or None, target.port or 80)
    results = Results()
    deadline = time.monotonic() + args.seconds
    clients = [
        threading.Thread(
            target=client, args=(target, bodies, deadline, args.timeout, results), daemon=True
        )
        for _ in range(args.clients)
    ]
    memory.start()
    started = time.monotonic()
    for thread in clients:
        thread.start()
    for thread in clients:  # bounded: a request still hanging after --timeout is abandoned
        thread.join(max(0.0, deadline + args.timeout + 1 - time.monotonic()))
    elapsed = time.monotonic() - started
    memory.stop()

    report(results, elapsed, memory)
    return 1 if results.errors else 0


THROTTLED_HELP = (
    "The server answered 429 Too Many Requests: its search rate limit (SEARCH_RATE_LIMIT, "
    "default 120/min per address) throttles a load test. Restart it with the limit off: "
    "SEARCH_RATE_LIMIT= make run"
)


def parse_args() -> argparse.Namespace:
    parser = script_parser(
        __doc__,
        epilog=(
            "Start the server with SEARCH_RATE_LIMIT= (empty), e.g. `SEARCH_RATE_LIMIT= make "
            "run`, or the rate limit throttles the run (HTTP 429, counted as errors)."
        ),
    )
    port = os.environ.get("PORT", "8000")
    parser.add_argument("--url", default=f"http://127.0.0.1:{port}", help="the server ($PORT)")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long to send (60)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (8)")
    parser.add_argument("--top-k", type=int, default=10, help="results asked per search (10)")
    parser.add_argument("--timeout", type=float, default=30.0, help="per request, seconds (30)")
    parser.add_argument(
        "--pid",
        dest="pids",
        type=int,
        action="append",
        default=[],
        help="web process to sample (with its children); default: whoever listens on the port",
    )
    args = parser.parse_args()
    if args.seconds <= 0 or args.clients < 1:
        parser.error("--seconds must be positive and --clients at least 1")
    return args


def search_bodies(top_k: int) -> list[bytes]:
    """JSON bodies with base64 JPEGs: each sample photo whole, and two crops at other sizes."""
    import skimage.data
    from PIL import Image

    folder = Path(skimage.data.__file__).parent
    rng = random.Random(0)  # the same crops and qualities every run
    bodies = []
    for name in PHOTOS:
        if not (folder / name).exists():
            continue
        with Image.open(folder / name) as source:
            photo = source.convert("RGB")
        variants = [photo]
        for _ in range(2):
            width, height = photo.size
            w, h = int(width * rng.uniform(0.5, 0.9)), int(height * rng.uniform(0.5, 0.9))
            left, top = rng.randint(0, width - w), rng.randint(0, height - h)
            crop = photo.crop((left, top, left + w, top + h))
            variants.append(crop.resize((max(64, w * 3 // 4), max(64, h * 3 // 4))))
        for image in variants:
            buffer = io.BytesIO()
            image.save(buffer, "JPEG", quality=rng.choice([75, 85, 92]))
            text = base64.b64encode(buffer.getvalue()).decode()
            bodies.append(json.dumps({"image": text, "top_k": top_k}).encode())
    if not bodies:
        raise SystemExit("No sample photos found in scikit-image's data folder.")
    return bodies


def new_connection(target, timeout: float) -> http.client.HTTPConnection:
    cls = http.client.HTTPSConnection if target.scheme == "https" else http.client.HTTPConnection
    return cls(target.hostname, target.port, timeout=timeout)


def post(connection: http.client.HTTPConnection, body: bytes) -> tuple[int, bytes]:
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    connection.request("POST", "/api/search/", body=body, headers=headers)
    response = connection.getresponse()
    return response.status, response.read()


@dataclass
class Results:
    latencies: list[float] = field(default_factory=list)  # seconds, successful requests
    errors: dict[str, int] = field(default_factory=dict)  # what went wrong -> how often
    lock: threading.Lock = field(default_factory=threading.Lock)

    def ok(self, seconds: float) -> None:
        with self.lock:
            self.latencies.append(seconds)

    def error(self, what: str) -> None:
        with self.lock:
            self.errors[what] = self.errors.get(what, 0) + 1


def client(target, bodies: list[bytes], deadline: float, timeout: float, results: Results):
    rng = random.Random()
    connection = new_connection(target, timeout)
    while time.monotonic() < deadline:
        body = rng.choice(bodies)
        started = time.monotonic()
        try:
            status, answer = post(connection, body)
        except (OSError, http.client.HTTPException) as exc:
            results.error(type(exc).__name__)
            connection.close()
            connection = new_connection(target, timeout)
            continue
        if status == 200 and b'"results"' in answer:
            results.ok(time.monotonic() - started)
        elif status == 200:
            results.error("200 without results")
        else:
            results.error(f"HTTP {status}")
    connection.close()


# --- Memory of the web server, from /proc ---------------------------------------------------


def web_pids(given: list[int], port: int) -> set[int]:
    """The given processes, or those holding the socket listening on `port` (gunicorn's
    master and its workers share it), with their children."""
    roots = set(given) or listeners(port)
    return roots | {pid for root in roots for pid in descendants(root)}


def listeners(port: int) -> set[int]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                inodes.add(f"socket:[{inode}]")
    pids = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if any(os.readlink(fd) in inodes for fd in (proc / "fd").iterdir()):
                pids.add(int(proc.name))
        except OSError:  # gone, or another user's
            continue
    return pids


class MemorySampler(threading.Thread):
    """Every 0.2 s: VmRSS of each web process (their sum at its peak) and each one's VmHWM.
    Processes are looked for again each second: gunicorn may restart a worker."""

    def __init__(self, pids: set[int], given: list[int] | None, port: int):
        super().__init__(daemon=True)
        self.pids, self.given, self.port = set(pids), given, port
        self.peak_total_kib = 0
        self.hwm_kib: dict[int, int] = {}
        self.finished = threading.Event()

    def run(self) -> None:
        last_lookup = time.monotonic()
        while True:
            self.sample()
            if self.finished.wait(0.2):
                break
            if time.monotonic() - last_lookup > 1:
                self.pids |= web_pids(self.given or [], self.port)
                last_lookup = time.monotonic()
        self.sample()

    def sample(self) -> None:
        total = 0
        for pid in list(self.pids):
            values = status_kib(pid)
            total += values.get("VmRSS", 0)
            self.hwm_kib[pid] = max(self.hwm_kib.get(pid, 0), values.get("VmHWM", 0))
        self.peak_total_kib = max(self.peak_total_kib, total)

    def stop(self) -> None:
        self.finished.set()
        self.join(5)


# --- The summary --------------------------------------------------------------------------


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest rank: the smallest value with at least `fraction` of them at or below it."""
    if not sorted_values:
        return float("nan")
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


def report(results: Results, elapsed: float, memory: MemorySampler) -> None:
    latencies = sorted(results.latencies)
    errors = sum(results.errors.values())
    total = len(latencies) + errors
    rows = [
        ("requests", f"{total}"),
        ("errors", f"{errors}" + (f"  {dict(sorted(results.errors.items()))}" if errors else "")),
        ("latency p50", f"{percentile(latencies, 0.50) * 1000:.0f} ms"),
        ("latency p95", f"{percentile(latencies, 0.95) * 1000:.0f} ms"),
        ("latency p99", f"{percentile(latencies, 0.99) * 1000:.0f} ms"),
        ("throughput", f"{len(latencies) / elapsed:.1f} searches/s over {elapsed:.1f} s"),
    ]
    if memory.hwm_kib:
        largest = max(memory.hwm_kib.values())
        rows.append(
            (
                "web memory",
                f"peak RSS {memory.peak_total_kib / 1024:.0f} MiB in all "
                f"({len(memory.hwm_kib)} web process(es): master and workers), "
                f"largest VmHWM {largest / 1024:.0f} MiB",
            )
        )
    else:
        rows.append(("web memory", "not measured: no process found (pass --pid)"))
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    if results.errors.get("HTTP 429"):
        print(THROTTLED_HELP, file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
