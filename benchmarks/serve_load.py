"""Load test of ``classicnets serve``: concurrent clients on loopback, a fixed number of requests each.

    python benchmarks/serve_load.py --runs /tmp/serve_runs                 # 8 clients x 200 requests
    python benchmarks/serve_load.py --runs /tmp/serve_runs --clients 1 --requests 100   # unloaded latency

Starts ``classicnets serve --runs DIR --port 0`` (a free loopback port) unless ``--url`` names a running
one (loopback addresses only), then each client sends its requests back to back on one keep-alive
connection: predict (50%), features (25%), Grad-CAM (10%) on real Fashion-MNIST test images, for each model
in turn, and bad inputs (15%: not an image, a decompression bomb, a 6 MB upload, malformed JSON, an unknown
model id, a file path as the model). It prints the latency per endpoint and model (client-side p50/p99,
queueing included, and the server's own compute time) and checks that no request got a 5xx and every bad
input got its 4xx; the exit status is 1 if not. Bounded: ``clients x requests`` requests and ``--max-seconds``.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import io
import ipaddress
import json
import os
import random
import statistics
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections import defaultdict
from dataclasses import dataclass, field
from urllib.parse import urlsplit

MIX = (("predict", 0.50), ("features", 0.25), ("gradcam", 0.10), ("bad", 0.15))


def bomb_png(side: int = 50_000) -> bytes:
    """A 60-byte PNG that declares ``side`` x ``side`` pixels (a decompression bomb's header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")


def multipart(fields: dict[str, str | bytes]) -> tuple[bytes, str]:
    boundary = "classicnets-load-" + os.urandom(8).hex()
    parts = []
    for name, value in fields.items():
        if isinstance(value, bytes):
            head = f'Content-Disposition: form-data; name="{name}"; filename="{name}.png"\r\nContent-Type: image/png'
            parts.append(f"--{boundary}\r\n{head}\r\n\r\n".encode() + value + b"\r\n")
        else:
            parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def json_body(model: str, png: bytes) -> tuple[bytes, str]:
    url = "data:image/png;base64," + base64.b64encode(png).decode()
    return json.dumps({"model": model, "image": url}).encode(), "application/json"


def test_pngs(n: int = 16) -> list[bytes]:
    """The first ``n`` Fashion-MNIST test images as PNG files (28x28 grey)."""
    from PIL import Image

    from classicnets.data import load_dataset

    images = load_dataset("fashion-mnist").test.images[:n, 0].numpy()
    out = []
    for img in images:
        buffer = io.BytesIO()
        Image.fromarray(img).save(buffer, format="PNG")
        out.append(buffer.getvalue())
    return out


def bad_requests(model: str, png: bytes) -> list[tuple[str, bytes, str, int]]:
    """(name, body, content type, expected status) for each kind of bad input the load mixes in."""
    return [
        ("not-an-image", *multipart({"model": model, "image": b"this is not an image" * 10}), 415),
        ("bomb", *multipart({"model": model, "image": bomb_png()}), 413),
        ("too-large", *multipart({"model": model, "image": b"\0" * (6 * 1024 * 1024)}), 413),
        ("malformed-json", b'{"model": "' + model.encode() + b'", "image": ', "application/json", 400),
        ("unknown-model", *json_body("m0000000000", png), 404),
        ("path-as-model", *json_body("/etc/passwd", png), 400),
    ]


@dataclass
class Results:
    latency: dict[tuple[str, str], list[float]] = field(default_factory=lambda: defaultdict(list))  # ms, client
    server_ms: dict[tuple[str, str], list[float]] = field(default_factory=lambda: defaultdict(list))
    statuses: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    failures: list[str] = field(default_factory=list)
    requests: int = 0
    seconds: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def count_5xx(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 500)

    def table(self) -> str:
        head = ("endpoint", "model", "n", "p50 ms", "p99 ms", "max ms", "server p50")
        lines = ["{:<10} {:<28} {:>5} {:>8} {:>8} {:>8} {:>11}".format(*head)]
        for (endpoint, label), values in sorted(self.latency.items()):
            values = sorted(values)
            p99 = values[min(len(values) - 1, round(0.99 * (len(values) - 1)))]
            served = self.server_ms.get((endpoint, label))
            server = f"{statistics.median(served):.1f}" if served else "-"
            lines.append(f"{endpoint:<10} {label[:28]:<28} {len(values):>5} {statistics.median(values):>8.1f} "
                         f"{p99:>8.1f} {values[-1]:>8.1f} {server:>11}")  # fmt: skip
        return "\n".join(lines)


def _send(conn: http.client.HTTPConnection, method: str, path: str, body: bytes | None, ctype: str | None):
    headers = {"Content-Type": ctype} if ctype else {}
    conn.request(method, path, body=body, headers=headers)
    response = conn.getresponse()
    return response.status, response.read(), response.getheader("Connection", "")


def run_load(
    url: str, models: list[tuple[str, str]], *, clients: int = 8, requests: int = 200, seed: int = 0,
    max_seconds: float = 300.0,
) -> Results:  # fmt: skip
    """``clients`` threads, ``requests`` each, on the models ``[(label, id), ...]`` (see the module doc)."""
    parts = urlsplit(url)
    host, port = parts.hostname, parts.port
    if not ipaddress.ip_address("127.0.0.1" if host == "localhost" else host).is_loopback:
        raise ValueError(f"the load test only targets loopback addresses, not {host}")
    pngs = test_pngs()
    bad = bad_requests(models[0][1], pngs[0])
    results = Results()
    deadline = time.monotonic() + max_seconds

    def client(index: int) -> None:
        rng = random.Random(seed * 1000 + index)
        conn = http.client.HTTPConnection(host, port, timeout=60)
        for i in range(requests):
            if time.monotonic() > deadline:
                with results.lock:
                    results.failures.append(f"client {index}: stopped at the {max_seconds:.0f} s limit")
                return
            kind = rng.choices([k for k, _ in MIX], [w for _, w in MIX])[0]
            label, model = models[(index + i) % len(models)]
            if kind == "bad":
                name, body, ctype, expect = rng.choice(bad)
                key = ("bad", name)
            else:
                png = rng.choice(pngs)
                body, ctype = multipart({"model": model, "image": png}) if i % 2 else json_body(model, png)
                key, expect = (kind, label), 200
            path = "/api/predict" if kind == "bad" else f"/api/{kind}"
            started = time.perf_counter()
            try:
                status, payload, connection = _send(conn, "POST", path, body, ctype)
            except (ConnectionError, http.client.HTTPException, OSError) as exc:
                conn.close()  # the server may close a connection whose oversized body it refused; reconnect
                conn = http.client.HTTPConnection(host, port, timeout=60)
                if key == ("bad", "too-large"):
                    status, payload, connection = _send(conn, "POST", path, body, ctype)
                else:
                    with results.lock:
                        results.failures.append(f"{key}: {type(exc).__name__}: {exc}")
                    continue
            ms = (time.perf_counter() - started) * 1000
            if connection.lower() == "close":
                conn.close()
                conn = http.client.HTTPConnection(host, port, timeout=60)
            with results.lock:
                results.requests += 1
                results.statuses[status] += 1
                results.latency[key].append(ms)
                if status != expect:
                    results.failures.append(f"{key}: expected {expect}, got {status}: {payload[:200]!r}")
                elif status == 200:
                    results.server_ms[key].append(json.loads(payload)["ms"])
        conn.close()

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    results.seconds = time.perf_counter() - started
    return results


def listed_models(url: str, wanted: list[str]) -> list[tuple[str, str]]:
    """``[(label, id)]`` of the listed models whose label or model name is in ``wanted`` (in that order)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    status, payload, _ = _send(conn, "GET", "/api/models", None, None)
    conn.close()
    if status != 200:
        raise SystemExit(f"GET /api/models answered {status}: {payload[:200]!r}")
    listed = json.loads(payload)["models"]
    picked = []
    for want in wanted:
        match = next((m for m in listed if want in (m["label"], m["model"])), None)
        if match is None:
            raise SystemExit(f"no listed model is called {want!r}; listed: {', '.join(m['label'] for m in listed)}")
        picked.append((match["label"], match["id"]))
    return picked


def start_server(runs: str) -> tuple[subprocess.Popen, str]:
    """``classicnets serve --runs RUNS --port 0`` in a subprocess and its URL (from the line it prints)."""
    cmd = [sys.executable, "-m", "classicnets", "serve", "--runs", runs, "--port", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    for line in proc.stdout:
        print(line.rstrip())
        if line.startswith("serving on "):
            return proc, line.split()[2]
    proc.wait()
    raise SystemExit(f"classicnets serve exited with status {proc.returncode} before serving")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", default="runs", help="the runs folder the server lists (when it starts one)")
    p.add_argument("--url", default=None, help="a running server on loopback (default: start one)")
    p.add_argument("--models", default="lenet5_modern,resnet20", help="labels or model names, comma-separated")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--requests", type=int, default=200, help="per client")
    p.add_argument("--max-seconds", type=float, default=600)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    proc, url = (None, args.url) if args.url else start_server(args.runs)
    try:
        models = listed_models(url, args.models.split(","))
        print(f"{args.clients} clients x {args.requests} requests on {url}: {', '.join(m for m, _ in models)}; "
              f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}, {os.cpu_count()} CPUs")  # fmt: skip
        results = run_load(url, models, clients=args.clients, requests=args.requests, seed=args.seed,
                           max_seconds=args.max_seconds)  # fmt: skip
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
    print(results.table())
    rate = results.requests / results.seconds if results.seconds else 0.0
    print(f"{results.requests} requests in {results.seconds:.1f} s ({rate:.0f}/s); statuses "
          f"{dict(sorted(results.statuses.items()))}")  # fmt: skip
    print(f"5xx responses: {results.count_5xx} ({'ok' if results.count_5xx == 0 else 'FAIL'})")
    for failure in results.failures[:10]:
        print(f"  {failure}")
    ok = results.count_5xx == 0 and not results.failures
    print("all requests answered as expected" if ok else f"FAIL: {len(results.failures)} unexpected answers")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
