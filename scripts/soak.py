"""Soak test: concurrent uploads, downloads and deletes against a real `reliquary serve` for a
bounded time, then an integrity sweep (every slot's blob exists and matches its sha256).
Loopback only. Run by scripts/soak, once per backend; writes docs/benchmarks-soak.md rows.

usage: soak.py BACKEND_LABEL SECONDS [extra serve flags...]
"""
import hashlib
import io
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tarfile
import gzip
import tempfile
import threading
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target/release/reliquary")
TOKEN = "soak-admin-token-0123456789abcdefghijklmn"
WORKERS = 8


def tarball(name, version, size):
    manifest = json.dumps({"name": name, "version": version}).encode()
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=1) as gz, tarfile.open(fileobj=gz, mode="w|") as tar:
        for entry, data in (("package/package.json", manifest), ("package/payload", os.urandom(size))):
            info = tarfile.TarInfo(entry)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def request(url, method="GET", body=None):
    req = urllib.request.Request(url, data=body, method=method, headers={"Authorization": f"Bearer {TOKEN}"})
    try:
        with urllib.request.urlopen(req, timeout=60) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def main():
    label, seconds, extra = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
    work = tempfile.mkdtemp(prefix="reliquary-soak-")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [BIN, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", work, *extra],
        env=dict(os.environ, RELIQUARY_ADMIN_TOKEN=TOKEN, RELIQUARY_LOG="warn"),
        stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "serve.log"), "w"))
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            urllib.request.urlopen(f"{url}/healthz", timeout=1)
            break
        except OSError:
            time.sleep(0.1)
    counts = {"upload": 0, "download": 0, "delete": 0, "errors": 0, "bytes": 0}
    lock = threading.Lock()
    deadline = time.time() + seconds

    def worker(n):
        rng = random.Random(n)
        version = 0
        while time.time() < deadline:
            ident = f"soak{rng.randrange(40)}@{rng.choice(['1', 'main'])}"
            kind = "branch" if ident.endswith("@main") else "release"
            action = rng.random()
            try:
                if action < 0.45:
                    version += 1
                    body = tarball(ident.split("@")[0], f"1.{n}.{version}", rng.randrange(1, 256) << 10)
                    arch = rng.choice(["noarch", "x64", "arm64"])
                    status, _ = request(f"{url}/artefacts/npm/{ident}?architecture={arch}&kind={kind}&force=true", "POST", body)
                    key = "upload"
                    ok = status in (200, 201, 409)
                elif action < 0.9:
                    status, data = request(f"{url}/artefacts/{ident}/tarball?architecture=x64")
                    key = "download"
                    ok = status in (200, 404)
                    with lock:
                        counts["bytes"] += len(data) if status == 200 else 0
                else:
                    status, _ = request(f"{url}/artefacts/{ident}", "DELETE")
                    key = "delete"
                    ok = status in (200, 404)
            except OSError:
                key, ok = "errors", False
            with lock:
                counts[key if ok else "errors"] += 1

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(WORKERS)]
    started = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.time() - started

    # Integrity sweep: every slot of every artefact downloads and matches its sha256 and size.
    checked = mismatched = 0
    cursor = None
    while True:
        page_url = f"{url}/artefacts?limit=500" + (f"&cursor={cursor}" if cursor else "")
        status, data = request(page_url)
        page = json.loads(data)
        for doc in page["items"]:
            for arch, slot in doc["tarballs"].items():
                status, blob = request(f"{url}/artefacts/{doc['id']}/tarball?architecture={arch}")
                checked += 1
                if status != 200 or hashlib.sha256(blob).hexdigest() != slot["sha256"] or len(blob) != slot["size"]:
                    mismatched += 1
        cursor = page.get("nextCursor")
        if not cursor:
            break
    server.send_signal(signal.SIGTERM)
    server.wait(timeout=30)
    total = counts["upload"] + counts["download"] + counts["delete"]
    row = (f"| {label} | {elapsed:.0f} s, {WORKERS} workers | {total} ({total / elapsed:.0f}/s): "
           f"{counts['upload']} uploads, {counts['download']} downloads, {counts['delete']} deletes | "
           f"{counts['errors']} | {checked} slots checked, {mismatched} mismatched |")
    print(row)
    sys.exit(1 if mismatched or counts["errors"] else 0)


if __name__ == "__main__":
    main()
