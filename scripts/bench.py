"""Reliquary benchmarks, driven by scripts/bench. Every figure is compared with a baseline
measured in the same run (these machines are noisy), and medians of several runs are quoted.
Writes docs/benchmarks.md. Loopback only; everything it starts it stops.
"""
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.request
import zlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target/release/reliquary")
WORK = tempfile.mkdtemp(prefix="reliquary-bench-")
TOKEN = "bench-admin-token-0123456789abcdefghijkl"
RUNS = int(os.environ.get("RELIQUARY_BENCH_RUNS", "3"))
SIZES_MIB = [int(s) for s in os.environ.get("RELIQUARY_BENCH_SIZES", "64,256,1024").split(",")]
STARTED = []
rows = []


def log(message):
    print(f"bench: {message}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def serve(name):
    """A fresh `reliquary serve` (release build) with its own data dir; returns (url, process)."""
    port = free_port()
    data = os.path.join(WORK, f"data-{name}-{port}")
    env = dict(os.environ, RELIQUARY_ADMIN_TOKEN=TOKEN, RELIQUARY_LOG="warn")
    process = subprocess.Popen(
        [BIN, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", data,
         "--max-upload-bytes", str(4 << 30), "--anonymous-read", "all"],
        env=env, stdout=subprocess.DEVNULL, stderr=open(os.path.join(WORK, f"{name}.log"), "w"))
    STARTED.append(process)
    wait_port(port)
    return f"http://127.0.0.1:{port}", process


def stop(process):
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()


def peak_rss_mib(process):
    with open(f"/proc/{process.pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def timed(command, **kwargs):
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, **kwargs)
    return time.perf_counter() - started


def median_of(fn, runs=RUNS):
    return statistics.median(fn() for _ in range(runs))


def make_tarball(mib):
    """An npm-pack-shaped tarball with a random payload, compressed with gzip -1."""
    path = os.path.join(WORK, f"payload-{mib}.tgz")
    if os.path.exists(path):
        return path
    manifest = json.dumps({"name": "bench", "version": f"1.0.{mib}"}).encode()
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1) as gz:
        with tarfile.open(fileobj=gz, mode="w|") as tar:
            info = tarfile.TarInfo("package/package.json")
            info.size = len(manifest)
            tar.addfile(info, io.BytesIO(manifest))
            info = tarfile.TarInfo("package/payload.bin")
            info.size = mib << 20
            tar.addfile(info, RandomReader(mib << 20))
    return path


class RandomReader:
    def __init__(self, size):
        self.left = size

    def read(self, n=-1):
        n = self.left if n < 0 else min(n, self.left)
        self.left -= n
        return os.urandom(n)


def upload(url, id_, path, arch="noarch"):
    return timed(["curl", "-sS", "--fail-with-body", "-X", "POST", "-H", f"Authorization: Bearer {TOKEN}",
                  "-H", "Content-Type: application/gzip", "-T", path,
                  f"{url}/artefacts/npm/{id_}?architecture={arch}"])


def baseline_hash_and_inflate(path):
    hashing = timed(["openssl", "dgst", "-sha256", path])
    started = time.perf_counter()
    inflater = zlib.decompressobj(31)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            inflater.decompress(chunk)
    return hashing + (time.perf_counter() - started)


def bench_upload_download():
    log("upload and download")
    nginx_root = os.path.join(WORK, "nginx-root")
    os.makedirs(nginx_root, exist_ok=True)
    nginx_url, nginx = start_nginx(nginx_root)
    for mib in SIZES_MIB:
        path = make_tarball(mib)
        size = os.path.getsize(path)
        url, server = serve(f"upload-{mib}")
        uploads = []
        for run in range(RUNS):
            # Each run a new version, so every upload is stored (not answered as a retry).
            uploads.append(upload(url, f"bench{run}@1", path))
        upload_s = statistics.median(uploads)
        upload_rss = peak_rss_mib(server)
        baseline = median_of(lambda: baseline_hash_and_inflate(path))
        rows.append(("Upload", f"{mib} MiB tarball (gzip -1)", f"{upload_s:.2f} s",
                     f"openssl sha256 + zlib inflate, sequential: {baseline:.2f} s",
                     f"{upload_s / baseline:.2f}", "<= 1.0"))
        rows.append(("Upload", f"peak server RSS, {mib} MiB", f"{upload_rss:.0f} MiB", "-", "-", "<= 64 MiB, flat"))
        if mib == 256 or mib == SIZES_MIB[0]:
            shutil.copy(path, os.path.join(nginx_root, "payload.tgz"))
            ours = median_of(lambda: timed(["curl", "-sSf", "-o", "/dev/null", f"{url}/artefacts/bench0@1/tarball"]), RUNS + 2)
            theirs = median_of(lambda: timed(["curl", "-sSf", "-o", "/dev/null", f"{nginx_url}/payload.tgz"]), RUNS + 2)
            rows.append(("Download", f"{mib} MiB tarball", f"{ours:.3f} s", f"nginx sendfile: {theirs:.3f} s",
                         f"{ours / theirs:.2f}", "<= 1.1"))
            rows.append(("Download", f"peak server RSS after downloads, {mib} MiB", f"{peak_rss_mib(server):.0f} MiB",
                         "-", "-", "<= 64 MiB"))
        stop(server)
    stop(nginx)


def bench_stalled_readers(readers=500, mib=64, send_timeout=10):
    """Readers that ask for a large tarball and never read: server memory stays bounded (the
    response budget), and the send timeout takes their connections back."""
    log(f"{readers} stalled readers")
    path = make_tarball(mib)
    port = free_port()
    data = os.path.join(WORK, f"data-stalled-{port}")
    env = dict(os.environ, RELIQUARY_ADMIN_TOKEN=TOKEN, RELIQUARY_LOG="warn")
    server = subprocess.Popen(
        [BIN, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", data, "--anonymous-read", "all",
         "--max-upload-bytes", str(4 << 30), "--send-timeout", f"{send_timeout}s"],
        env=env, stdout=subprocess.DEVNULL, stderr=open(os.path.join(WORK, "stalled.log"), "w"))
    STARTED.append(server)
    wait_port(port)
    url = f"http://127.0.0.1:{port}"
    upload(url, "stalled@1", path)
    subprocess.run(["curl", "-sSf", "-o", "/dev/null", f"{url}/artefacts/stalled@1/tarball"], check=True)
    idle_rss = current_rss_mib(server)
    sockets = []
    for _ in range(readers):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", port))
        s.sendall(b"GET /artefacts/stalled@1/tarball HTTP/1.1\r\nHost: x\r\n\r\n")
        sockets.append(s)
    time.sleep(3)
    started = time.perf_counter()
    subprocess.run(["curl", "-sSf", "-o", "/dev/null", f"{url}/healthz"], check=True)
    healthz_ms = (time.perf_counter() - started) * 1e3
    stalled_rss = peak_rss_mib(server)
    # Those queued behind the budget wait at most one more send timeout.
    time.sleep(2 * send_timeout + 5)
    held = open_connections(url)
    for s in sockets:
        s.close()
    stop(server)
    rows.append(("Edge", f"peak server RSS, {readers} stalled downloads of a {mib} MiB tarball",
                 f"{stalled_rss:.0f} MiB", f"same server idle, after one download: {idle_rss:.0f} MiB",
                 f"{stalled_rss / idle_rss:.1f}", "<= 256 MiB"))
    rows.append(("Edge", f"/healthz while {readers} readers stall", f"{healthz_ms:.1f} ms", "-", "-", "answered"))
    rows.append(("Edge", f"stalled connections still open {2 * send_timeout + 5} s later (--send-timeout {send_timeout}s)",
                 f"{held - 1}", "-", "-", "0"))


def current_rss_mib(process):
    with open(f"/proc/{process.pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def open_connections(url):
    """The server's own gauge (this scrape's connection included)."""
    text = subprocess.run(["curl", "-sSf", f"{url}/metrics"], check=True, stdout=subprocess.PIPE, text=True).stdout
    for line in text.splitlines():
        if line.startswith("reliquary_http_open_connections "):
            return int(float(line.split()[1]))
    return -1


def start_nginx(root):
    port = free_port()
    conf = os.path.join(WORK, "nginx.conf")
    with open(conf, "w") as f:
        f.write(f"""
daemon off; worker_processes 1; user root; pid {WORK}/nginx.pid; error_log {WORK}/nginx-error.log;
events {{ worker_connections 1024; }}
http {{
  access_log off; sendfile on; tcp_nopush on; keepalive_requests 100000;
  types {{ application/gzip tgz; application/json json; }}
  client_body_temp_path {WORK}/nginx-body; proxy_temp_path {WORK}/nginx-proxy;
  fastcgi_temp_path {WORK}/nginx-fcgi; uwsgi_temp_path {WORK}/nginx-uwsgi; scgi_temp_path {WORK}/nginx-scgi;
  server {{ listen 127.0.0.1:{port}; root {root}; }}
}}
""")
    process = subprocess.Popen(["nginx", "-c", conf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    STARTED.append(process)
    wait_port(port)
    return f"http://127.0.0.1:{port}", process


VERDACCIO_DIR = os.path.join(ROOT, "benches/verdaccio")


def start_verdaccio(tarball):
    """Verdaccio (benches/verdaccio, installed by scripts/bench with `npm ci`) on a free loopback
    port, storage and users in WORK, no uplinks (it never reaches out), with `tarball` published to
    it by `npm publish` as a user created through the registry's own user API. Returns (url, process)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    conf = os.path.join(WORK, "verdaccio.yaml")
    with open(conf, "w") as f:
        f.write(f"""
storage: {WORK}/verdaccio-storage
auth:
  htpasswd:
    file: {WORK}/verdaccio-htpasswd
    max_users: 10
uplinks: {{}}
packages:
  '**':
    access: $all
    publish: $authenticated
    unpublish: $authenticated
web:
  enable: false
server:
  keepAliveTimeout: 60
listen: 127.0.0.1:{port}
max_body_size: 1gb
log: {{ type: file, path: {WORK}/verdaccio.log, level: warn }}
""")
    cli = os.path.join(VERDACCIO_DIR, "node_modules/verdaccio/bin/verdaccio")
    if not os.path.exists(cli):
        raise RuntimeError(f"{cli} is missing: run `npm ci` in {VERDACCIO_DIR} (scripts/bench does)")
    output = open(os.path.join(WORK, "verdaccio.out"), "w")
    process = subprocess.Popen(["node", cli, "--config", conf], cwd=WORK, stdin=subprocess.DEVNULL,
                               stdout=output, stderr=subprocess.STDOUT, env=dict(os.environ, NODE_ENV="production"))
    STARTED.append(process)
    wait_port(port)
    user = json.dumps({"_id": "org.couchdb.user:bench", "name": "bench", "password": "bench-password",
                       "type": "user", "roles": [], "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    request = urllib.request.Request(f"{url}/-/user/org.couchdb.user:bench", data=user.encode(), method="PUT",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request) as response:
        token = json.load(response)["token"]
    npmrc = os.path.join(WORK, "verdaccio.npmrc")
    with open(npmrc, "w") as f:
        f.write(f"registry={url}/\n//127.0.0.1:{port}/:_authToken={token}\n"
                "update-notifier=false\nfund=false\naudit=false\n")
    subprocess.run(["npm", "publish", tarball, "--registry", f"{url}/", "--userconfig", npmrc,
                    "--cache", os.path.join(WORK, "npm-cache"), "--ignore-scripts"],
                   cwd=WORK, check=True, stdout=subprocess.DEVNULL, stderr=output)
    return url, process


def wrk(url, headers=()):
    command = ["wrk", "-t1", "-c32", "-d5s", "--latency"]
    for header in headers:
        command += ["-H", header]
    out = subprocess.run(command + [url], check=True, capture_output=True, text=True).stdout
    if "Non-2xx or 3xx responses" in out:
        raise RuntimeError(f"{url} answered errors under load:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    return rps, float(p99.group(1)) * scale


def make_small_tarball():
    """small@1.0.0: a package.json and 6 KiB of random bytes, the file every small-request row serves."""
    small = os.path.join(WORK, "small.tgz")
    manifest = json.dumps({"name": "small", "version": "1.0.0"}).encode()
    with open(small, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1) as gz:
        with tarfile.open(fileobj=gz, mode="w|") as tar:
            for name, data in (("package/package.json", manifest), ("package/index.js", os.urandom(6 << 10))):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return small


def wrk_median(url, headers=()):
    """(requests/s, p99 ms), each the median of RUNS wrk runs."""
    results = [wrk(url, headers) for _ in range(RUNS)]
    return statistics.median(r[0] for r in results), statistics.median(r[1] for r in results)


def bench_small_requests():
    log("small requests under load (wrk -t1 -c32 -d5s), against nginx and Verdaccio")
    url, server = serve("small")
    small = make_small_tarball()
    upload(url, "small@1", small)
    nginx_root = os.path.join(WORK, "nginx-small")
    os.makedirs(nginx_root, exist_ok=True)
    shutil.copy(small, os.path.join(nginx_root, "small.tgz"))
    with urllib.request.urlopen(f"{url}/artefacts/small@1") as response:
        doc = response.read()
        etag = response.headers["ETag"]
    with open(os.path.join(nginx_root, "doc.json"), "wb") as f:
        f.write(doc)
    nginx_url, nginx = start_nginx(nginx_root)
    nginx_rps, nginx_p99 = statistics.median([wrk(f"{nginx_url}/small.tgz")[0] for _ in range(RUNS)]), wrk(f"{nginx_url}/small.tgz")[1]
    # Verdaccio serving the same package: measured, then stopped, before Reliquary's runs.
    verdaccio_url, verdaccio = start_verdaccio(small)
    packument, tarball = f"{verdaccio_url}/small", f"{verdaccio_url}/small/-/small-1.0.0.tgz"
    with urllib.request.urlopen(packument) as response:
        if json.load(response)["versions"]["1.0.0"]["name"] != "small":
            raise RuntimeError("Verdaccio's packument for small lacks 1.0.0")
        packument_etag = response.headers["ETag"]
    with urllib.request.urlopen(tarball) as response, open(small, "rb") as f:
        if response.read() != f.read():
            raise RuntimeError("Verdaccio serves a different small-1.0.0.tgz")
    verdaccio_results = {
        "304": wrk_median(packument, (f"If-None-Match: {packument_etag}",)),
        "document": wrk_median(packument),
        "tarball": wrk_median(tarball),
    }
    stop(verdaccio)
    for label, target, headers, kind, verdaccio_label in (
        ("GET /artefacts/{id} with If-None-Match (304)", f"{url}/artefacts/small@1", (f"If-None-Match: {etag}",),
         "304", "Verdaccio, packument with If-None-Match (304)"),
        ("GET /artefacts/{id}", f"{url}/artefacts/small@1", (), "document", "Verdaccio, packument"),
        ("6 KiB tarball download", f"{url}/artefacts/small@1/tarball", (), "tarball", "Verdaccio, same tarball"),
    ):
        rps, p99 = wrk_median(target, headers)
        ours = f"{rps:,.0f} req/s, p99 {p99:.2f} ms"
        rows.append(("Small requests", label, ours,
                     f"nginx, same 6 KiB file: {nginx_rps:,.0f} req/s, p99 {nginx_p99:.2f} ms",
                     f"{rps / nginx_rps:.2f}x", ">= 0.5x nginx"))
        verdaccio_rps, verdaccio_p99 = verdaccio_results[kind]
        rows.append(("Small requests", label, ours,
                     f"{verdaccio_label}: {verdaccio_rps:,.0f} req/s, p99 {verdaccio_p99:.2f} ms",
                     f"{rps / verdaccio_rps:.0f}x", ">= 25x Verdaccio"))
    stop(nginx)
    stop(server)


def bench_in_process():
    """The parts measured inside one process by benches/bench.rs (list, federation, client)."""
    log("in-process benchmarks (benches/bench.rs)")
    out = subprocess.run(["cargo", "bench", "--quiet", "--bench", "bench"], cwd=ROOT, check=True,
                         stdout=subprocess.PIPE, text=True, env=dict(os.environ, RELIQUARY_BENCH_WORK=WORK)).stdout
    for line in out.splitlines():
        if line.startswith("ROW\t"):
            rows.append(tuple(line.split("\t")[1:]))


def machine():
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / (1 << 30)
    return f"{os.cpu_count()} cores ({cpu}), {memory:.0f} GiB memory, {os.uname().sysname} {os.uname().release}"


def write_report():
    lines = [
        "# Benchmarks",
        "",
        "Produced by `scripts/bench` (which runs `scripts/bench.py` and `benches/bench.rs`); every",
        "figure is compared with a baseline measured in the same run, and is the median of",
        f"{RUNS} runs unless stated otherwise. Release build, loopback only.",
        "",
        f"- Machine: {machine()}",
        f"- Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        f"- Command: `scripts/bench` (sizes {', '.join(map(str, SIZES_MIB))} MiB)",
        "",
        "| area | measurement | Reliquary | baseline, same run | ratio | goal |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append("| " + " | ".join(str(c) for c in row) + " |")
    for extra in ("docs/benchmarks-notes.md", "docs/benchmarks-soak.md"):
        path = os.path.join(ROOT, extra)
        if os.path.exists(path):
            lines += ["", open(path).read().strip()]
    with open(os.path.join(ROOT, "docs/benchmarks.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


def main():
    try:
        all_sections = "transfer,small,stalled,inprocess"
        sections = os.environ.get("RELIQUARY_BENCH_SECTIONS", all_sections).split(",")
        if "transfer" in sections:
            bench_upload_download()
        if "stalled" in sections:
            bench_stalled_readers()
        if "small" in sections:
            bench_small_requests()
        if "inprocess" in sections:
            bench_in_process()
        if sorted(sections) == sorted(all_sections.split(",")):
            write_report()
        else:
            # A partial run prints its rows and leaves the full report alone.
            for row in rows:
                print("| " + " | ".join(str(c) for c in row) + " |")
    finally:
        for process in STARTED:
            if process.poll() is None:
                process.kill()
                process.wait()
        shutil.rmtree(WORK, ignore_errors=True)


if __name__ == "__main__":
    main()
