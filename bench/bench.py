#!/usr/bin/env python3
"""flora-cluster load benchmarks: real processes on 127.0.0.1, a real load generator (wrk),
side-by-side runs and ratios. Bounded in time; every process it starts is stopped by pid.

    bench/run.sh [all|overhead|nginx|node|reload|scrape|respawn|rss|instructions|sampler] [--secs N] [--runs N]
                 [--pin]

Reports requests/s, p99 latency and server CPU time per request (workers' utime+stime from
/proc over the run / requests served), which is much steadier than requests/s on a 2-core
machine where wrk competes with the servers. The worker is examples/hello.rs (tracked, or
untracked with HELLO_UNTRACKED=1: the same hyper server without any scoreboard write).
--pin runs one worker per server on CPU 1 and wrk on CPU 0, so the two never share a core:
the steadiest CPU-per-request figures this machine gives.
"""
import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MASTER = os.path.join(ROOT, "target/release/flora-cluster")
DEMO = os.path.join(ROOT, "target/release/flora-demo")
HELLO = os.path.join(ROOT, "target/release/examples/hello")
NODE_HELLO = os.path.join(ROOT, "bench/node-hello.js")
# Set by --pin: CPU of the servers and CPU of the load generator.
PIN = {"server": None, "load": None}


def pinned(cmd, role):
    cpu = PIN[role]
    return ["taskset", "-c", str(cpu), *cmd] if cpu is not None else cmd
TICKS = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return total / TICKS


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            m = re.search(r"VmRSS:\s+(\d+)", f.read())
        return int(m.group(1)) if m else 0
    except OSError:
        return 0


def wait_http(url, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"{url} did not answer within {timeout}s")


class Cluster:
    """A flora-cluster master with hello (or other) workers."""

    def __init__(self, workers, worker_cmd=(HELLO,), name="bench", env=None, master_args=()):
        self.dir = tempfile.mkdtemp(prefix="flora-bench-")
        self.port, self.status_port = free_port(), free_port()
        self.name = name
        env = dict(os.environ, HOST="127.0.0.1", PORT=str(self.port), RUST_LOG="warn", **(env or {}))
        self.started = time.time()
        self.proc = subprocess.Popen(
            pinned([MASTER, "run", "--name", name, "--runtime-dir", self.dir, "--workers", str(workers),
                    "--status-addr", f"127.0.0.1:{self.status_port}", "--shutdown-timeout", "10",
                    *master_args, "--",
                    *worker_cmd], "server"),
            env=env, stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.dir, "master.log"), "w"))
        self.url = f"http://127.0.0.1:{self.port}/"
        self.workers = workers

    def status(self):
        out = subprocess.run([MASTER, "status", "--json", "--name", self.name, "--runtime-dir", self.dir],
                             capture_output=True, text=True, timeout=10)
        return json.loads(out.stdout)

    def ready_pids(self):
        return [w["pid"] for w in self.status()["workers"] if w["state"] == "ready"]

    def requests_by_slot(self):
        return {w["index"]: w["requests_total"] for w in self.status()["workers"]}

    def wait_ready(self, n=None, timeout=30):
        n = n or self.workers
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                pids = self.ready_pids()
                if len(pids) >= n:
                    return pids
            except (json.JSONDecodeError, subprocess.SubprocessError):
                pass
            time.sleep(0.005)
        raise RuntimeError("workers not ready")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def write_nginx_conf(directory, port, head):
    """An nginx.conf in `directory` answering the hello response on 127.0.0.1:`port`;
    `head` holds the process directives. Returns its path."""
    conf = os.path.join(directory, "nginx.conf")
    with open(conf, "w") as f:
        f.write(f"""{head}
pid {directory}/nginx.pid;
error_log {directory}/error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {directory}/body; proxy_temp_path {directory}/proxy;
  fastcgi_temp_path {directory}/fcgi; uwsgi_temp_path {directory}/uwsgi; scgi_temp_path {directory}/scgi;
  server {{
    listen 127.0.0.1:{port};
    location / {{ default_type text/plain; return 200 "Hello World\\n"; }}
  }}
}}
""")
    return conf


class Nginx:
    """nginx with N workers answering the same hello response."""

    def __init__(self, workers=2):
        affinity = f"worker_cpu_affinity {1 << PIN['server']:b};" if PIN["server"] is not None else ""
        self.dir = tempfile.mkdtemp(prefix="flora-bench-nginx-")
        self.port = free_port()
        conf = write_nginx_conf(self.dir, self.port, f"worker_processes {workers}; {affinity}")
        subprocess.run(["nginx", "-c", conf, "-p", self.dir, "-e", f"{self.dir}/error.log"], check=True)
        self.url = f"http://127.0.0.1:{self.port}/"
        wait_http(self.url)
        with open(f"{self.dir}/nginx.pid") as f:
            self.master = int(f.read().strip())

    def worker_pids(self):
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(self.master)], capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]

    def stop(self):
        subprocess.run(["nginx", "-c", f"{self.dir}/nginx.conf", "-p", self.dir, "-s", "quit"],
                       stderr=subprocess.DEVNULL)
        deadline = time.time() + 10
        while time.time() < deadline and os.path.exists(f"/proc/{self.master}"):
            time.sleep(0.05)
        shutil.rmtree(self.dir, ignore_errors=True)


class NodeCluster:
    """Node.js `cluster` preforking N workers with the same hello response."""

    def __init__(self, workers=2):
        self.port = free_port()
        env = dict(os.environ, PORT=str(self.port), WORKERS=str(workers))
        self.proc = subprocess.Popen(pinned(["node", NODE_HELLO], "server"), env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.url = f"http://127.0.0.1:{self.port}/"
        wait_http(self.url)

    def worker_pids(self):
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(self.proc.pid)], capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def parse_wrk(text):
    def num(pattern, default=0.0):
        m = re.search(pattern, text)
        return float(m.group(1)) if m else default

    def latency(v, unit):
        return float(v) * {"us": 1e-3, "ms": 1.0, "s": 1000.0}[unit]

    p99 = re.search(r"^\s*99%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
    errs = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    return {
        "rps": num(r"Requests/sec:\s+([\d.]+)"),
        "requests": int(num(r"(\d+) requests in")),
        "p99_ms": latency(*p99.groups()) if p99 else float("nan"),
        "errors": sum(int(x) for x in errs.groups()) if errs else 0,
        "non2xx": int(num(r"Non-2xx or 3xx responses:\s+(\d+)")),
    }


def wrk(url, secs, conns=50, threads=2):
    if PIN["load"] is not None:
        threads = 1
    out = subprocess.run(pinned(["wrk", f"-t{threads}", f"-c{conns}", f"-d{secs}s", "--latency", url], "load"),
                         capture_output=True, text=True, timeout=secs + 60)
    return parse_wrk(out.stdout)


def measured(url, pids_of, secs, cluster=None):
    """One wrk run with the servers' CPU time per request, and with a cluster each worker's
    share of the requests (from the scoreboard)."""
    pids = pids_of()
    before = cpu_seconds(pids)
    counts = cluster.requests_by_slot() if cluster else None
    r = wrk(url, secs)
    r["cpu_us_per_req"] = (cpu_seconds(pids) - before) / max(r["requests"], 1) * 1e6
    if cluster:
        after = cluster.requests_by_slot()
        served = {i: after[i] - counts.get(i, 0) for i in after}
        total = sum(served.values()) or 1
        r["shares"] = sorted(100.0 * n / total for n in served.values() if n)
    return r


def shares(runs):
    """Lowest and highest per-worker share of requests over the runs, in %."""
    s = [x for r in runs for x in r.get("shares", [])]
    return f"{min(s):.1f}–{max(s):.1f} %" if s else "—"


def workers_of(args):
    return 1 if PIN["server"] is not None else args.workers


def summary(runs, key):
    vals = [r[key] for r in runs]
    return statistics.median(vals), min(vals), max(vals)


def ratio(a_runs, b_runs, key):
    """Median of per-pair ratios a/b, with min and max."""
    rs = [a[key] / b[key] for a, b in zip(a_runs, b_runs) if b[key]]
    return (statistics.median(rs), min(rs), max(rs)) if rs else (float("nan"),) * 3


def fmt(t, digits=2):
    return f"{t[0]:.{digits}f} ({t[1]:.{digits}f}–{t[2]:.{digits}f})"


def table(title, rows, names):
    print(f"\n### {title}\n")
    print("| run | req/s median (min–max) | p99 ms | CPU µs/request | socket errors | worker shares |")
    print("|---|---|---|---|---|---|")
    for name, runs in zip(names, rows):
        print(f"| {name} | {fmt(summary(runs, 'rps'), 0)} | {fmt(summary(runs, 'p99_ms'))} | "
              f"{fmt(summary(runs, 'cpu_us_per_req'))} | {sum(r['errors'] for r in runs)} | {shares(runs)} |")


def setup(args):
    n = workers_of(args)
    where = "1 worker on CPU 1, wrk -t1 on CPU 0" if PIN["server"] is not None else f"{n} workers, wrk -t2"
    return n, f"{where} -c50, {args.secs} s runs"


def bench_overhead(args):
    n, where = setup(args)
    tracked = Cluster(n, name="tracked")
    plain = Cluster(n, name="plain", env={"HELLO_UNTRACKED": "1"})
    try:
        tp, pp = tracked.wait_ready(), plain.wait_ready()
        wrk(tracked.url, 1), wrk(plain.url, 1)
        a, b = [], []
        for _ in range(args.runs):  # alternate, so drift hits both alike
            a.append(measured(tracked.url, lambda: tp, args.secs, tracked))
            b.append(measured(plain.url, lambda: pp, args.secs))
        table(f"Tracking overhead: hello, {where}", [a, b], ["tracked (scoreboard on)", "untracked (same hyper server)"])
        print(f"\nthroughput ratio tracked/untracked: {fmt(ratio(a, b, 'rps'), 3)}; "
              f"p99 ratio: {fmt(ratio(a, b, 'p99_ms'), 3)}; CPU/request ratio: {fmt(ratio(a, b, 'cpu_us_per_req'), 3)}")
    finally:
        tracked.stop(), plain.stop()


def compare_with_peer(args, start_peer, title, label, short):
    """flora-cluster against a peer server with the same hello response, runs alternated."""
    n, where = setup(args)
    flora, peer, old = Cluster(n), None, None
    try:
        peer = start_peer(n)
        fp = flora.wait_ready()
        if args.before:
            old = Cluster(n, worker_cmd=(args.before,), name="before")
            op = old.wait_ready()
            wrk(old.url, 1)
        wrk(flora.url, 1), wrk(peer.url, 1)
        a, b, c = [], [], []
        for _ in range(args.runs):
            a.append(measured(flora.url, lambda: fp, args.secs, flora))
            b.append(measured(peer.url, peer.worker_pids, args.secs))
            if old:
                c.append(measured(old.url, lambda: op, args.secs, old))
        rows, names = [a, b], ["flora-cluster (tracked)", label]
        if old:
            rows.append(c), names.append(f"flora-cluster before ({os.path.basename(args.before)})")
        table(f"{title}: hello world, {where}", rows, names)
        print(f"\nthroughput ratio flora/{short}: {fmt(ratio(a, b, 'rps'), 3)}; "
              f"CPU/request ratio flora/{short}: {fmt(ratio(a, b, 'cpu_us_per_req'), 3)}")
        if old:
            print(f"before: throughput ratio before/{short}: {fmt(ratio(c, b, 'rps'), 3)}; "
                  f"CPU/request ratio before/{short}: {fmt(ratio(c, b, 'cpu_us_per_req'), 3)}")
    finally:
        flora.stop()
        if peer:
            peer.stop()
        if old:
            old.stop()


def bench_nginx(args):
    if not shutil.which("nginx"):
        sys.exit("nginx missing: bench/run.sh installs it (apt-get install nginx-light)")
    compare_with_peer(args, Nginx, "Peer comparison", "nginx", "nginx")


def bench_node(args):
    if not shutil.which("node"):
        sys.exit("node missing: bench/run.sh installs it (apt-get install nodejs)")
    compare_with_peer(args, NodeCluster, "Node.js cluster comparison", "Node.js cluster", "node")


def bench_reload(args):
    c = Cluster(2)
    try:
        pids = c.wait_ready()
        wrk(c.url, 1)
        plain, reloading, outcomes = [], [], []
        for _ in range(args.runs):
            plain.append(measured(c.url, c.ready_pids, args.secs, c))
            stop = threading.Event()

            def reloader():
                while not stop.wait(1.0):
                    r = subprocess.run([MASTER, "reload", "--name", c.name, "--runtime-dir", c.dir, "--timeout", "30"],
                                       capture_output=True, text=True)
                    outcomes.append(r.returncode)

            t = threading.Thread(target=reloader)
            t.start()
            r = wrk(c.url, args.secs)
            stop.set(), t.join()
            r["cpu_us_per_req"] = float("nan")
            reloading.append(r)
        table("Reload under load: 2 workers, wrk -t2 -c50", [plain, reloading], ["no reload", "reload every 1 s"])
        print(f"\nreloads: {outcomes.count(0)} succeeded, {len(outcomes) - outcomes.count(0)} rolled back; "
              f"errors with reloads: {sum(r['errors'] for r in reloading)}, non-2xx: {sum(r['non2xx'] for r in reloading)}")
        del pids
    finally:
        c.stop()


def bench_scrape(args):
    c = Cluster(2)
    try:
        pids = c.wait_ready()
        metrics = f"http://127.0.0.1:{c.status_port}/metrics"
        wrk(c.url, 1)
        quiet, scraped, lat = [], [], []
        for _ in range(args.runs):
            quiet.append(measured(c.url, lambda: pids, args.secs, c))
            stop = threading.Event()

            def scraper():
                while not stop.wait(0.1):
                    t0 = time.perf_counter()
                    urllib.request.urlopen(metrics, timeout=5).read()
                    lat.append((time.perf_counter() - t0) * 1000)

            t = threading.Thread(target=scraper)
            t.start()
            scraped.append(measured(c.url, lambda: pids, args.secs, c))
            stop.set(), t.join()
        table("Scrape under load: 2 workers saturated by wrk -t2 -c50", [quiet, scraped], ["no scraper", "10 Hz /metrics scraper"])
        q = statistics.quantiles(lat, n=100)
        print(f"\n/metrics latency while saturated: p50 {statistics.median(lat):.2f} ms, p99 {q[98]:.2f} ms "
              f"({len(lat)} scrapes); throughput ratio scraped/quiet: {fmt(ratio(scraped, quiet, 'rps'), 3)}")
    finally:
        c.stop()


def bench_respawn(args):
    times = []
    c = Cluster(2)
    try:
        c.wait_ready()
        for _ in range(args.runs):
            status = c.status()
            victim = next(w for w in status["workers"] if w["state"] == "ready")
            t0 = time.perf_counter()
            os.kill(victim["pid"], signal.SIGKILL)
            deadline = time.time() + 30
            while time.time() < deadline:
                w = next(w for w in c.status()["workers"] if w["index"] == victim["index"])
                if w["state"] == "ready" and w["pid"] != victim["pid"]:
                    break
            # Serving again: a request answered by the new pid is the end of the outage.
            times.append((time.perf_counter() - t0) * 1000)
            time.sleep(11)  # past the backoff's stable period, so each kill is a "first" crash
            if len(times) >= 3:
                break
    finally:
        c.stop()
    starts, master_rss, worker_rss = [], [], []
    for _ in range(args.runs):
        t0 = time.perf_counter()
        c = Cluster(8, name="start8")
        try:
            pids = c.wait_ready(8)
            starts.append((time.perf_counter() - t0) * 1000)
            wrk(c.url, 2)
            master_rss.append(rss_kib(c.proc.pid))
            worker_rss.extend(rss_kib(p) for p in pids)
        finally:
            c.stop()
    print("\n### Respawn and start-up\n")
    print("| measure | median (min–max) |\n|---|---|")
    print(f"| kill -9 of a worker → replacement ready (ms) | {fmt((statistics.median(times), min(times), max(times)), 1)} |")
    print(f"| master start → all 8 workers ready (ms) | {fmt((statistics.median(starts), min(starts), max(starts)), 1)} |")
    print(f"| master RSS (MiB) | {fmt((statistics.median(master_rss) / 1024, min(master_rss) / 1024, max(master_rss) / 1024), 1)} |")
    print(f"| worker RSS (MiB) | {fmt((statistics.median(worker_rss) / 1024, min(worker_rss) / 1024, max(worker_rss) / 1024), 1)} |")


def bench_rss(args):
    """Master and worker memory with 64 hello workers, after load and /metrics scrapes (the
    master renders every scrape from the whole segment)."""
    c = Cluster(64, name="rss64")
    try:
        t0 = time.perf_counter()
        pids = c.wait_ready(64, timeout=60)
        ready_ms = (time.perf_counter() - t0) * 1000
        wrk(c.url, 2)
        metrics = f"http://127.0.0.1:{c.status_port}/metrics"
        for _ in range(20):
            urllib.request.urlopen(metrics, timeout=5).read()
        html = urllib.request.urlopen(f"http://127.0.0.1:{c.status_port}/server-status", timeout=5).read()
        master, workers = rss_kib(c.proc.pid), [rss_kib(p) for p in pids]
        print("\n### Memory with 64 workers\n")
        print("| measure | value |\n|---|---|")
        print(f"| master start → all 64 workers ready (ms) | {ready_ms:.0f} |")
        print(f"| master RSS after load, 20 scrapes and the status page (MiB) | {master / 1024:.1f} |")
        print(f"| worker RSS median (min–max) (MiB) | {fmt((statistics.median(workers) / 1024, min(workers) / 1024, max(workers) / 1024), 1)} |")
        segs = [os.path.join(d, f) for d, _, fs in os.walk(c.dir) for f in fs if f.endswith(".scoreboard")]
        if segs:
            print(f"| scoreboard segment (MiB) | {os.path.getsize(segs[0]) / 2**20:.1f} |")
        del html
    finally:
        c.stop()


def thread_cpu_seconds(pid, name=None):
    """CPU seconds (ns-exact, from schedstat) of the threads of `pid` called `name` (all
    threads without a name)."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            if name is not None:
                with open(f"/proc/{pid}/task/{tid}/comm") as f:
                    if f.read().strip() != name:
                        continue
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return total / 1e9


def bench_sampler(args):
    """The listen-queue sampler's cost: CPU of the master's `flora-queues` thread (10 reads a
    second of every listener) and of the whole master, idle and under load, with the workers'
    listener alone and with 8 more TCP listeners and a Unix one."""
    secs = max(args.secs, 10)
    print(f"\n### Listen-queue sampler ({secs} s per measure, 2 workers)\n")
    print("| listeners | load | sampler CPU (ms/s) | per sample (µs) | master CPU (ms/s) |")
    print("|---|---|---|---|---|")
    for extra in (0, 9):
        sock_dir = tempfile.mkdtemp(prefix="flora-bench-sock-")
        listen = []
        for _ in range(extra - 1 if extra else 0):
            listen += ["--listen", f"127.0.0.1:{free_port()}"]
        if extra:
            listen += ["--listen", f"unix:{sock_dir}/app.sock"]
        c = Cluster(2, name=f"sampler{extra}", master_args=listen)
        try:
            c.wait_ready()
            for load in ("idle", "wrk -c50"):
                s0, m0, t0 = thread_cpu_seconds(c.proc.pid, "flora-queues"), cpu_seconds([c.proc.pid]), time.time()
                if load == "idle":
                    time.sleep(secs)
                else:
                    wrk(c.url, secs)
                s1, m1, t1 = thread_cpu_seconds(c.proc.pid, "flora-queues"), cpu_seconds([c.proc.pid]), time.time()
                wall = t1 - t0
                per_sec = (s1 - s0) / wall * 1000
                print(f"| {1 + extra} | {load} | {per_sec:.3f} | {per_sec * 1000 / 10:.1f} | {(m1 - m0) / wall * 1000:.2f} |")
        finally:
            c.stop()
            shutil.rmtree(sock_dir, ignore_errors=True)


def callgrind_instructions(cmd, env, port, secs):
    """Instructions (user space, callgrind) the server executed, and the requests wrk got
    answered, for one wrk run of `secs` seconds against `cmd` on `port`."""
    out_file = tempfile.mktemp(prefix="flora-bench-cg-")
    proc = subprocess.Popen(["valgrind", "--tool=callgrind", "--vgdb=no", f"--callgrind-out-file={out_file}", *cmd],
                            env=dict(os.environ, **env), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_http(f"http://127.0.0.1:{port}/", timeout=60)
        r = subprocess.run(["wrk", "-t1", "-c10", f"-d{secs}s", f"http://127.0.0.1:{port}/"],
                           capture_output=True, text=True, timeout=secs + 60)
        requests = parse_wrk(r.stdout)["requests"]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    with open(out_file) as f:
        totals = [int(line.split()[1]) for line in f if line.startswith(("summary:", "totals:"))]
    os.unlink(out_file)
    if not totals:
        raise RuntimeError(f"{cmd[0]} left no callgrind totals (killed before its exit?)")
    return totals[0], requests


def bench_instructions(args):
    """User-space instructions per request under callgrind: deterministic, unlike time on this
    machine. Two runs of different length per server; the difference cancels start-up."""
    if not shutil.which("valgrind"):
        sys.exit("valgrind missing: apt-get install valgrind")
    rows = []
    port = free_port()
    servers = [("hello, tracked", [HELLO], {"HOST": "127.0.0.1", "PORT": str(port)}),
               ("hello, untracked", [HELLO], {"HOST": "127.0.0.1", "PORT": str(port), "HELLO_UNTRACKED": "1"})]
    if args.before:
        servers.append((f"hello before ({os.path.basename(args.before)}), tracked", [args.before],
                        {"HOST": "127.0.0.1", "PORT": str(port)}))
    if shutil.which("nginx"):
        ng = tempfile.mkdtemp(prefix="flora-bench-nginx-cg-")
        write_nginx_conf(ng, port, "daemon off; master_process off; worker_processes 1;")
        servers.append(("nginx", ["nginx", "-c", f"{ng}/nginx.conf", "-p", ng, "-e", f"{ng}/error.log"], {}))
    for name, cmd, env in servers:
        for attempt in range(2):  # one retry: a run is lost when the server is killed before its exit
            try:
                short = callgrind_instructions(cmd, env, port, 1)
                long = callgrind_instructions(cmd, env, port, 4)
                break
            except RuntimeError as e:
                if attempt:
                    raise
                print(f"retrying {name}: {e}", file=sys.stderr)
        rows.append((name, (long[0] - short[0]) / max(long[1] - short[1], 1)))
    if shutil.which("nginx"):
        shutil.rmtree(ng, ignore_errors=True)
    print("\n### User-space instructions per request (callgrind, wrk -t1 -c10)\n")
    print("| server | instructions/request |\n|---|---|")
    for name, ir in rows:
        print(f"| {name} | {ir:.0f} |")
    print(f"\ntracked/untracked: {rows[0][1] / rows[1][1]:.3f}; extra per request: {rows[0][1] - rows[1][1]:.0f} instructions")
    ng_row = [ir for name, ir in rows if name == "nginx"]
    if ng_row:
        print(f"hello tracked/nginx: {rows[0][1] / ng_row[0]:.3f}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("which", nargs="?", default="all",
                   choices=["all", "overhead", "nginx", "node", "reload", "scrape", "respawn", "rss",
                            "instructions", "sampler"])
    p.add_argument("--secs", type=int, default=5, help="seconds per wrk run")
    p.add_argument("--runs", type=int, default=3, help="runs of each side")
    p.add_argument("--workers", type=int, default=2, help="workers per server (overhead, nginx, node)")
    p.add_argument("--before", metavar="HELLO",
                   help="also measure this hello binary (built from an earlier commit: run.sh --before-ref REF)")
    p.add_argument("--pin", action="store_true",
                   help="one worker per server on CPU 1, wrk on CPU 0 (overhead, nginx, node)")
    args = p.parse_args()
    if args.pin:
        PIN.update(server=1, load=0)
    print(f"machine: {os.cpu_count()} cores, {os.uname().release}; {args.secs} s runs, {args.runs} runs each"
          + (", pinned" if args.pin else ""))
    benches = {"overhead": bench_overhead, "nginx": bench_nginx, "node": bench_node, "reload": bench_reload,
               "scrape": bench_scrape, "respawn": bench_respawn, "rss": bench_rss,
               "instructions": bench_instructions, "sampler": bench_sampler}
    for name, fn in benches.items():
        if args.which in (name, "all"):
            fn(args)


if __name__ == "__main__":
    main()
