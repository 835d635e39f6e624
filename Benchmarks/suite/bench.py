#!/usr/bin/env python3
"""The moe-metricsd benchmark suite: our daemon against nginx, nghttpd and the Pushgateway in one run.

Run through scripts/bench, which installs the tools and builds the release binary first. Every
server is started here on 127.0.0.1 (the daemon on an OS-chosen port, the peers on free ports found
by binding port 0), every scenario runs for a bounded time and is repeated, medians are reported,
and everything started is stopped on exit, also on an error or a signal.

Settings (environment):
    BENCH_SECONDS         seconds per load run (default 5)
    BENCH_RUNS            repetitions per scenario, median reported (default 3)
    BENCH_GROWTH_SECONDS  seconds per run of the growth table (default 3)
    BENCH_MICRO_SECONDS   seconds per microbenchmark (default 2)
    BENCH_PROFILE         1 to record a CPU profile of the daemon (default 1)
"""

import argparse
import datetime
import gzip
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
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import payloads  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
CLK_TCK = os.sysconf("SC_CLK_TCK")
NPROC = os.cpu_count() or 1


def env_int(name, default):
    try:
        value = int(os.environ.get(name, ""))
        return value if value > 0 else default
    except ValueError:
        return default


SECONDS = env_int("BENCH_SECONDS", 5)
RUNS = env_int("BENCH_RUNS", 3)
GROWTH_SECONDS = env_int("BENCH_GROWTH_SECONDS", 3)
PROFILE = os.environ.get("BENCH_PROFILE", "1") != "0"


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Processes: everything started is recorded and stopped at exit.

class Processes:
    def __init__(self, pidfile):
        self.procs = []
        self.pidfile = pidfile

    def start(self, name, argv, **kw):
        log(f"start {name}: {' '.join(argv)}")
        p = subprocess.Popen(argv, start_new_session=True, **kw)
        p.bench_name = name
        self.procs.append(p)
        if self.pidfile:
            with open(self.pidfile, "a") as f:
                f.write(f"{p.pid}\n")
        return p

    def stop(self, p, grace=5.0):
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                p.wait(grace)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait()
        if p in self.procs:
            self.procs.remove(p)

    def stop_all(self):
        for p in list(reversed(self.procs)):
            self.stop(p)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method, url, body=None, headers=None, timeout=30):
    """One request; returns (status, headers, body bytes). HTTP error statuses are returned, not raised."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def wait_until(check, what, timeout=30.0, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: process exited with status {proc.returncode}")
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{what}: not ready after {timeout}s")


def tcp_open(port):
    with socket.create_connection(("127.0.0.1", port), timeout=1):
        return True


def process_tree(pid):
    """pid and all its descendants (nginx's workers are children of its master)."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(entry))
        except (OSError, IndexError):
            continue
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_seconds(pid):
    """utime + stime of a process tree, from /proc/PID/stat (fields 14 and 15, in clock ticks)."""
    total = 0
    for p in process_tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError):
            continue
    return total / CLK_TCK


def rss_kib(pid):
    """VmRSS of a process tree in KiB, from /proc/PID/status."""
    total = 0
    for p in process_tree(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            continue
    return total


# ---------------------------------------------------------------------------------------------
# Servers.

class Server:
    def __init__(self, name, proc, port):
        self.name, self.proc, self.port = name, proc, port
        self.base = f"http://127.0.0.1:{port}"


def start_logged(procs, name, argv, logpath):
    """Starts a server that logs `listening on 127.0.0.1:PORT` (the daemon and BareServer both do,
    having bound an OS-chosen port) and returns it once that line is there."""
    logfile = open(logpath, "w")
    p = procs.start(name, argv, stdout=subprocess.DEVNULL, stderr=logfile)
    port = None

    def bound():
        nonlocal port
        with open(logpath) as f:
            m = re.search(r"listening on 127\.0\.0\.1:(\d+)", f.read())
        if m:
            port = int(m.group(1))
        return port is not None

    wait_until(bound, f"{name} to log its address", proc=p)
    return Server(name, p, port)


def start_daemon(procs, binary, workdir, tag, extra=()):
    server = start_logged(procs, f"moe-metricsd ({tag})", [binary, "--listen", "127.0.0.1:0", *extra],
                          os.path.join(workdir, f"moe-metricsd-{tag}.log"))
    server.name = "moe-metricsd"
    wait_until(lambda: http("GET", server.base + "/readyz")[0] == 200, "moe-metricsd /readyz", proc=server.proc)
    return server


def build_bare_server(package_dir, scratch):
    """Builds the Benchmarks package's BareServer (our HTTP server answering 204, no daemon routes)
    in release mode in the microbenchmarks' build directory; returns the binary's path."""
    argv = ["swift", "build", "-c", "release", "--package-path", package_dir, "--scratch-path", scratch,
            "--product", "BareServer"]
    log("  " + " ".join(argv))
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError("building BareServer failed:\n" + proc.stdout[-4000:] + proc.stderr[-4000:])
    binpath = subprocess.run(argv[:-2] + ["--show-bin-path"], capture_output=True, text=True).stdout.strip()
    binary = os.path.join(binpath, "BareServer")
    if not os.access(binary, os.X_OK):
        raise RuntimeError(f"BareServer not found at {binary}")
    return binary


def start_bare_server(procs, binary, workdir):
    """BareServer on an OS-chosen port; like the daemon, it logs `listening on 127.0.0.1:PORT`."""
    s = start_logged(procs, "BareServer", [binary, "127.0.0.1:0"], os.path.join(workdir, "bare-server.log"))
    wait_until(lambda: http("GET", s.base + "/")[0] == 204, "BareServer", proc=s.proc)
    return s


def start_nginx(procs, workdir):
    prefix = os.path.join(workdir, "nginx")
    os.makedirs(prefix, exist_ok=True)
    port = free_port()
    with open(os.path.join(HERE, "nginx.conf.template")) as f:
        conf = f.read()
    conf = conf.replace("@PREFIX@", prefix).replace("@PORT@", str(port)).replace("@WORKERS@", str(NPROC))
    confpath = os.path.join(prefix, "nginx.conf")
    with open(confpath, "w") as f:
        f.write(conf)
    p = procs.start("nginx", ["nginx", "-p", prefix, "-e", os.path.join(prefix, "error.log"),
                              "-c", confpath, "-g", "daemon off;"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    s = Server("nginx", p, port)
    wait_until(lambda: http("GET", s.base + "/")[0] == 204, "nginx", proc=p)
    return s


def start_nghttpd(procs, workdir, answer):
    docroot = os.path.join(workdir, "nghttpd")
    os.makedirs(os.path.join(docroot, "v1"), exist_ok=True)
    with open(os.path.join(docroot, "v1", "decisions"), "wb") as f:
        f.write(answer)
    port = free_port()
    p = procs.start("nghttpd", ["nghttpd", "--no-tls", "-a", "127.0.0.1", "-n", str(NPROC), "-d", docroot, str(port)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until(lambda: tcp_open(port), "nghttpd", proc=p)
    return Server("nghttpd", p, port)


def start_pushgateway(procs, workdir, tag):
    port = free_port()
    p = procs.start(f"pushgateway ({tag})",
                    ["prometheus-pushgateway", f"--web.listen-address=127.0.0.1:{port}", "--persistence.file=",
                     "--log.level=error"],
                    stdout=subprocess.DEVNULL, stderr=open(os.path.join(workdir, f"pushgateway-{tag}.log"), "w"))
    s = Server("Pushgateway", p, port)
    wait_until(lambda: http("GET", s.base + "/-/ready")[0] == 200, "pushgateway /-/ready", proc=p)
    return s


# ---------------------------------------------------------------------------------------------
# Load generators.

def to_ms(text):
    m = re.match(r"([\d.]+)(us|ms|s|m)$", text)
    if not m:
        return None
    v = float(m.group(1))
    return {"us": v / 1000, "ms": v, "s": v * 1000, "m": v * 60000}[m.group(2)]


def wrk(url, seconds, connections, method="GET", body_file="-", content_type="-", headers=(), threads=None):
    threads = threads or min(NPROC, connections)
    # A 10 s timeout: the Pushgateway holding many series answers a push in seconds, and wrk's default
    # of 2 s would count those as socket errors instead of measuring them.
    argv = ["wrk", "--latency", "--timeout", "10s", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s",
            "-s", os.path.join(HERE, "request.lua"), url, "--", method, body_file, content_type, *headers]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60).stdout
    r = {"tool": "wrk", "raw": out}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    r["rps"] = float(m.group(1)) if m else 0.0
    m = re.search(r"(\d+) requests in", out)
    r["requests"] = int(m.group(1)) if m else 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    r["bad"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    r["socket_errors"] = sum(int(x) for x in m.groups()) if m else 0
    for pct in ("50", "99"):
        m = re.search(rf"^\s+{pct}(?:\.000)?%\s+(\S+)", out, re.M)
        r[f"p{pct}_ms"] = to_ms(m.group(1)) if m else None
    return r


def h2load(url, seconds, clients, streams, body_file=None, headers=(), threads=None):
    threads = threads or min(NPROC, clients)
    argv = ["h2load", "-t", str(threads), "-c", str(clients), "-m", str(streams), "-D", str(seconds),
            "--warm-up-time=1"]
    if body_file:
        argv += ["-d", body_file]
    for h in headers:
        argv += ["-H", h]
    argv.append(url)
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60).stdout
    r = {"tool": "h2load", "raw": out}
    m = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
    r["rps"] = float(m.group(1)) if m else 0.0
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored", out)
    r["requests"] = int(m.group(3)) if m else 0
    r["bad"] = (int(m.group(5)) + int(m.group(6))) if m else 0
    m = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    if m:
        r["bad"] += int(m.group(3)) + int(m.group(4))
        r["2xx"] = int(m.group(1))
    r["socket_errors"] = 0
    m = re.search(r"time for request:\s+(\S+)\s+(\S+)\s+(\S+)", out)
    r["p50_ms"] = to_ms(m.group(3)) if m else None  # h2load prints min, max, mean: mean shown
    r["p99_ms"] = None
    return r


def measured(server, run):
    """Runs a load against `server` and adds the server's CPU time per completed request."""
    before = cpu_seconds(server.proc.pid)
    r = run()
    after = cpu_seconds(server.proc.pid)
    r["cpu_s"] = after - before
    r["cpu_us_per_req"] = (after - before) * 1e6 / r["requests"] if r["requests"] else None
    if r["bad"] or r["socket_errors"]:
        log(f"  {server.name}: {r['bad']} bad responses, {r['socket_errors']} socket errors")
    return r


def median_of(results, key):
    values = [r[key] for r in results if r.get(key) is not None]
    return statistics.median(values) if values else None


def summarize(results):
    return {
        "rps": median_of(results, "rps"),
        "cpu_us_per_req": median_of(results, "cpu_us_per_req"),
        "p50_ms": median_of(results, "p50_ms"),
        "p99_ms": median_of(results, "p99_ms"),
        "bad": sum(r["bad"] + r["socket_errors"] for r in results),
        "runs": [round(r["rps"]) for r in results],
    }


def alternate(servers_and_loads, runs):
    """Runs each (server, load) pair `runs` times, interleaved (A B C A B C ...) so that a change in
    machine load during the scenario affects every contender alike; returns medians per server."""
    results = {name: [] for name, _, _ in servers_and_loads}
    for i in range(runs):
        for name, server, load in servers_and_loads:
            r = measured(server, load)
            results[name].append(r)
            log(f"  run {i + 1}/{runs} {name}: {r['rps']:.0f} req/s, "
                f"{(r['cpu_us_per_req'] or 0):.1f} CPU us/req")
    return {name: summarize(rs) for name, rs in results.items()}


# ---------------------------------------------------------------------------------------------
# Scenarios.

def scenario_http1(procs, workdir, daemon_bin, files):
    log("scenario 1: HTTP/1.1 single-decision POSTs, 64 experts, wrk 64 connections")
    d = start_daemon(procs, daemon_bin, workdir, "http1")
    n = start_nginx(procs, workdir)
    pg = start_pushgateway(procs, workdir, "http1")
    json_ct = "application/json"
    before = daemon_decisions(d, "L0")
    res = alternate([
        ("moe-metricsd", d, lambda: wrk(d.base + "/v1/decisions", SECONDS, 64, "POST", files["decision64"], json_ct)),
        ("nginx", n, lambda: wrk(n.base + "/v1/decisions", SECONDS, 64, "POST", files["decision64"], json_ct)),
        ("Pushgateway", pg, lambda: wrk(pg.base + "/metrics/job/moe/layer/L0", SECONDS, 64, "POST", files["push64"],
                                        "text/plain; version=0.0.4")),
    ], RUNS)
    after = daemon_decisions(d, "L0")
    res["moe-metricsd"]["recorded"] = after - before
    for s in (d, n, pg):
        procs.stop(s.proc)
    return res


def scenario_bare(procs, workdir, package_dir, scratch, files):
    """The transport's share of the gap: our HTTP server alone (the HTTPServer module answering 204 to every
    request, no routes, no decoding) against nginx's `return 204`, same load: wrk, 64 keep-alive
    connections, a POST of about 1.5 KB."""
    log("scenario 1c: bare HTTP/1.1 server (204) against nginx, wrk 64 connections, 1.5 KB POST")
    binary = build_bare_server(package_dir, scratch)
    b = start_bare_server(procs, binary, workdir)
    n = start_nginx(procs, workdir)
    body, ct = files["bare1500"], "application/json"
    res = alternate([
        ("moe-metricsd HTTP server", b, lambda: wrk(b.base + "/v1/decisions", SECONDS, 64, "POST", body, ct)),
        ("nginx", n, lambda: wrk(n.base + "/v1/decisions", SECONDS, 64, "POST", body, ct)),
    ], RUNS)
    for s in (b, n):
        procs.stop(s.proc)
    return res


def scenario_planner(package_dir, scratch):
    """The rebalance planner (MoEPlacement) on DeepSeek-V3's shape, 58 layers x 256 experts into 288
    replicas on 32 GPUs in 4 nodes with 8 groups: `Benchmarks/PlannerBench` times whole plans (median
    of 21 after one warm-up), pinned to one core, and compares each layer's busiest GPU with the plan
    EPLB's reference made for the same input (recorded in the vector file with its run time)."""
    log("scenario 7: rebalance planner, 58 layers x 256 experts, one core")
    argv = ["swift", "build", "-c", "release", "--package-path", package_dir, "--scratch-path", scratch,
            "--product", "PlannerBench"]
    log("  " + " ".join(argv))
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError("building PlannerBench failed:\n" + proc.stdout[-4000:] + proc.stderr[-4000:])
    binpath = subprocess.run(argv[:-2] + ["--show-bin-path"], capture_output=True, text=True).stdout.strip()
    run = [os.path.join(binpath, "PlannerBench")]
    if shutil.which("taskset"):
        run = ["taskset", "-c", "0"] + run
    proc = subprocess.run(run, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError("PlannerBench failed:\n" + proc.stderr[-4000:])
    return json.loads(proc.stdout)


PLANNER_BEGIN, PLANNER_END = "<!-- planner:begin -->", "<!-- planner:end -->"


def planner_section(r, command):
    """The planner's section, between markers so that a run of this scenario alone
    (BENCH_ONLY=planner) replaces it in an existing report and leaves the other sections as they were."""
    p = r["planner"]
    m = r["machine"]
    L = [PLANNER_BEGIN, "## 7. Rebalance planner (expert placement)", ""]
    L.append(f"Run: `{command}`, {r['date']}, commit {m['revision']}, load average before the run "
             f"{' '.join(m['load_before'])}.")
    L.append("")
    L.append(f"`Benchmarks/PlannerBench` on `Tests/Fixtures/eplb/{p['vector']}`: {p['layers']} layers x "
             f"{p['experts']} experts into {p['replicas']} replicas on {p['gpus']} GPUs in {p['nodes']} nodes "
             f"with {p['groups']} groups (DeepSeek-V3's shape, hierarchical policy), one core (`taskset -c 0`), "
             f"{p['runs']} runs after a warm-up. The reference's time is EPLB's own (`eplb.py` with torch, CPU) "
             "as recorded when the vector was generated, on this kind of machine.")
    L.append("")
    L.append("| planner | ms per plan (median) | min | max | layers better than EPLB | worse | "
             "balancedness, mean | worst layer |")
    L.append("|---|---|---|---|---|---|---|---|")
    L.append(f"| moe-metricsd (greedy + exchanges) | {p['plan_ms_median']:.1f} | {p['plan_ms_min']:.1f} | "
             f"{p['plan_ms_max']:.1f} | {p['layers_better']} of {p['layers']} | {p['layers_worse']} | "
             f"{p['balancedness_mean']:.4f} | {p['balancedness_min']:.4f} |")
    L.append(f"| moe-metricsd, EPLB's greedy steps only | {p['greedy_ms_median']:.1f} | | | | | | |")
    L.append(f"| EPLB reference (Python, torch) | {p['reference_seconds'] * 1000:,.0f} | | | - | - | "
             f"{p['reference_balancedness_mean']:.4f} | {p['reference_balancedness_min']:.4f} |")
    L.append("")
    L.append("Balancedness is the mean GPU load over the busiest GPU's (1 is perfect); a layer is better when "
             "its busiest GPU carries less than in EPLB's plan for the same loads.")
    L.append(PLANNER_END)
    return L


def splice_planner(path, section):
    """Replaces the planner's section of an existing report, or appends it."""
    text = open(path).read() if os.path.exists(path) else "# Benchmarks\n"
    block = "\n".join(section) + "\n"
    if PLANNER_BEGIN in text and PLANNER_END in text:
        head, rest = text.split(PLANNER_BEGIN, 1)
        tail = rest.split(PLANNER_END, 1)[1].lstrip("\n")
        return head + block + ("\n" + tail if tail else "")
    return text.rstrip("\n") + "\n\n" + block


def bare_body(target=1500):
    """A decision body of about `target` bytes (the ingest targets' 1.5 KB POST): the fewest experts whose
    decision reaches that size, so the bytes are what a worker would send."""
    experts = 64
    while len(payloads.decision_body("L0", experts)) < target:
        experts += 1
    return payloads.decision_body("L0", experts)


def daemon_decisions(server, layer):
    status, _, body = http("GET", f"{server.base}/v1/layers/{layer}")
    if status != 200:
        return 0
    return json.loads(body).get("total_routings", 0)


def scenario_http2(procs, workdir, daemon_bin, files):
    log("scenario 2: HTTP/2 POSTs, h2load -c 4 -m 10")
    d = start_daemon(procs, daemon_bin, workdir, "http2")
    status, _, answer = http("POST", d.base + "/v1/decisions", open(files["decision64"], "rb").read(),
                             {"Content-Type": "application/json"})
    ng = start_nghttpd(procs, workdir, answer)
    ct = "content-type: application/json"
    res = alternate([
        ("moe-metricsd", d, lambda: h2load(d.base + "/v1/decisions", SECONDS, 4, 10, files["decision64"], [ct])),
        ("nghttpd", ng, lambda: h2load(ng.base + "/v1/decisions", SECONDS, 4, 10, files["decision64"], [ct])),
    ], RUNS)
    for s in (d, ng):
        procs.stop(s.proc)
    return res


def scenario_batch(procs, workdir, daemon_bin, files):
    log("scenario 3: batched ingest, 64 layers x 64 experts per POST")
    d = start_daemon(procs, daemon_bin, workdir, "batch")
    res = alternate([
        ("moe-metricsd", d, lambda: wrk(d.base + "/v1/decisions", SECONDS, 16, "POST", files["batch64x64"],
                                        "application/json")),
    ], RUNS)
    r = res["moe-metricsd"]
    r["decisions_per_s"] = r["rps"] * 64 if r["rps"] else None
    r["cpu_us_per_decision"] = r["cpu_us_per_req"] / 64 if r["cpu_us_per_req"] else None
    procs.stop(d.proc)
    return res


def fill_daemon(server, layers, experts):
    # One decision per layer, 16 layers per POST.
    for start in range(0, layers, 16):
        items = [payloads.decision(f"L{i}", experts, i + 1) for i in range(start, min(start + 16, layers))]
        status, _, body = http("POST", server.base + "/v1/decisions", json.dumps(items).encode(),
                               {"Content-Type": "application/json"})
        if status // 100 != 2:
            raise RuntimeError(f"filling moe-metricsd failed: {status} {body[:200]!r}")


def fill_pushgateway(server, layers, experts):
    for i in range(layers):
        # The same numbers the daemon was given for layer i (seed i + 1), so both expose alike values.
        body = payloads.push_body(experts, seed=i + 1)
        status, _, text = http("PUT", f"{server.base}/metrics/job/moe/layer/L{i}", body,
                               {"Content-Type": "text/plain; version=0.0.4"})
        if status // 100 != 2:
            raise RuntimeError(f"filling the Pushgateway failed: {status} {text[:200]!r}")


def exposition_size(url, gzip_ok):
    headers = {"Accept-Encoding": "gzip"} if gzip_ok else {}
    status, h, body = http("GET", url, headers=headers)
    encoding = {k.lower(): v for k, v in h.items()}.get("content-encoding", "")
    text = gzip.decompress(body) if encoding == "gzip" else body
    series = sum(1 for line in text.decode().splitlines() if line and not line.startswith("#"))
    return {"status": status, "bytes": len(body), "encoding": encoding or "identity", "series": series}


def scenario_metrics(procs, workdir, daemon_bin, layers=64, experts=256):
    log(f"scenario 4+5: /metrics at {layers} layers x {experts} experts, and resident memory")
    d = start_daemon(procs, daemon_bin, workdir, "metrics")
    pg = start_pushgateway(procs, workdir, "metrics")
    fill_daemon(d, layers, experts)
    fill_pushgateway(pg, layers, experts)
    out = {"sizes": {}, "latency": {}}
    for name, s in (("moe-metricsd", d), ("Pushgateway", pg)):
        out["sizes"][name] = {
            "plain": exposition_size(s.base + "/metrics", False),
            "gzip": exposition_size(s.base + "/metrics", True),
        }
    for variant, hdrs in (("plain", ()), ("gzip", ("Accept-Encoding: gzip",))):
        res = alternate([
            ("moe-metricsd", d, lambda hdrs=hdrs: wrk(d.base + "/metrics", SECONDS, 1, headers=hdrs, threads=1)),
            ("Pushgateway", pg, lambda hdrs=hdrs: wrk(pg.base + "/metrics", SECONDS, 1, headers=hdrs, threads=1)),
        ], RUNS)
        out["latency"][variant] = res
    out["rss_kib"] = {"moe-metricsd": rss_kib(d.proc.pid), "Pushgateway": rss_kib(pg.proc.pid)}
    for s in (d, pg):
        procs.stop(s.proc)
    return out


def scenario_history(procs, workdir, daemon_bin, layers=64, experts=256, steps=512, per_post=8):
    """Resident memory with every layer's step history full at the default size (stats.history_steps)."""
    log(f"scenario 8: resident memory at {layers} layers x {experts} experts, {steps} steps each")
    d = start_daemon(procs, daemon_bin, workdir, "history")
    base = [payloads.decision(f"L{i}", experts, i + 1) for i in range(layers)]
    started = time.monotonic()
    for first in range(0, steps, per_post):
        # per_post steps of every layer in one NDJSON body (one worker; counts vary with the step).
        lines = []
        for step in range(first, min(first + per_post, steps)):
            for i, d0 in enumerate(base):
                counts = d0["expert_capacities"][step % experts:] + d0["expert_capacities"][:step % experts]
                lines.append(json.dumps(dict(d0, step=step, expert_capacities=counts), separators=(",", ":")))
        status, _, body = http("POST", d.base + "/v1/decisions", ("\n".join(lines) + "\n").encode(),
                               {"Content-Type": "application/x-ndjson"})
        if status // 100 != 2:
            raise RuntimeError(f"filling the history failed: {status} {body[:200]!r}")
    fill_s = time.monotonic() - started
    status, _, body = http("GET", d.base + f"/v1/layers/L0/history?last={steps}")
    kept = len(json.loads(body)["steps"]) if status == 200 else None
    if kept != steps:
        raise RuntimeError(f"layer L0 keeps {kept} steps, expected {steps}")
    out = {"layers": layers, "experts": experts, "steps": steps, "kept": kept, "fill_s": fill_s,
           "rss_kib": rss_kib(d.proc.pid)}
    procs.stop(d.proc)
    return out


def scenario_pushgateway_full(procs, workdir, files, layers=64, experts=256):
    """The Pushgateway's push rate once it holds the 64 x 256 series (its cost grows with its store)."""
    log("scenario 1b: Pushgateway push rate holding 64 layers x 256 experts")
    pg = start_pushgateway(procs, workdir, "full")
    fill_pushgateway(pg, layers, experts)
    res = alternate([
        ("Pushgateway (full)", pg, lambda: wrk(pg.base + "/metrics/job/moe/layer/L0", SECONDS, 64, "POST",
                                               files["push64"], "text/plain; version=0.0.4")),
    ], 1)
    procs.stop(pg.proc)
    return res


def scenario_growth(procs, workdir, daemon_bin, files):
    log("scenario 7: how cost grows with experts, layers per POST and client connections")
    d = start_daemon(procs, daemon_bin, workdir, "growth")
    rows = []

    def run(kind, value, body, connections, decisions_per_post):
        r = measured(d, lambda: wrk(d.base + "/v1/decisions", GROWTH_SECONDS, connections, "POST", body,
                                    "application/json"))
        rows.append({
            "kind": kind, "value": value, "connections": connections, "rps": r["rps"],
            "decisions_per_s": r["rps"] * decisions_per_post,
            "cpu_us_per_decision": (r["cpu_us_per_req"] / decisions_per_post) if r["cpu_us_per_req"] else None,
            "p99_ms": r["p99_ms"], "bad": r["bad"] + r["socket_errors"],
        })
        log(f"  {kind}={value}: {r['rps']:.0f} req/s")

    for e in (8, 64, 256):
        run("experts", e, files[f"growth_e{e}"], 64, 1)
    for n in (1, 16, 64):
        run("layers per POST", n, files[f"growth_l{n}"], 16, n)
    for c in (1, 4, 16, 64):
        run("connections", c, files["decision64"], c, 1)
    procs.stop(d.proc)
    return rows


def scenario_micro(package_dir, scratch, workdir):
    log("scenario 6: in-process microbenchmarks (ordo-one/benchmark)")
    outdir = os.path.join(workdir, "micro")
    os.makedirs(outdir, exist_ok=True)
    argv = ["swift", "package", "--package-path", package_dir, "--scratch-path", scratch,
            "--allow-writing-to-directory", outdir, "benchmark", "--format", "jmh", "--path", outdir,
            "--no-progress"]
    log("  " + " ".join(argv))
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError("microbenchmarks failed:\n" + proc.stdout[-4000:] + proc.stderr[-4000:])
    results = {}
    for name in os.listdir(outdir):
        if not name.endswith(".json"):
            continue
        with open(os.path.join(outdir, name)) as f:
            for el in json.load(f):
                key = el["benchmark"].split(".", 3)[-1].replace("_", " ")
                sec = el.get("secondaryMetrics", {})
                wall = next((v for k, v in sec.items() if "wall" in k.lower()), None)
                cpu = next((v for k, v in sec.items() if "cpu" in k.lower()), None)
                mallocs = next((v for k, v in sec.items() if "malloc" in k.lower()), None)
                results[key] = {
                    "p50_us": wall["scorePercentiles"]["50.0"] if wall else None,
                    "p90_us": wall["scorePercentiles"]["90.0"] if wall else None,
                    "p99_us": wall["scorePercentiles"]["99.0"] if wall else None,
                    "cpu_p50_us": cpu["scorePercentiles"]["50.0"] if cpu else None,
                    "mallocs_p50": mallocs["scorePercentiles"]["50.0"] if mallocs else None,
                    "samples": el.get("measurementIterations"),
                }
    if not results:
        raise RuntimeError("microbenchmarks wrote no results:\n" + proc.stdout[-4000:])
    return results


def profile_daemon(procs, workdir, daemon_bin, files):
    """Flat CPU profiles of the daemon under single-decision and batched HTTP/1.1 ingest, with perf's
    software cpu-clock event (hardware counters are often unavailable in VMs)."""
    if not shutil.which("perf"):
        return {"error": "perf not installed"}
    out = {}
    for label, body, connections in (("single 64-expert decisions, 64 connections", files["decision64"], 64),
                                     ("batches of 64 layers x 64 experts, 16 connections", files["batch64x64"], 16),
                                     ("nginx: the same single decisions, 64 connections", files["decision64"], 64)):
        log(f"profile: perf record under {label}")
        if label.startswith("nginx"):
            d = start_nginx(procs, workdir)
        else:
            d = start_daemon(procs, daemon_bin, workdir, "profile")
        data = os.path.join(workdir, "perf.data")
        secs = max(3, min(SECONDS, 5))
        pids = ",".join(str(p) for p in process_tree(d.proc.pid))
        rec = subprocess.Popen(["perf", "record", "-e", "cpu-clock", "-F", "999", "-p", pids, "-o", data,
                                "--", "sleep", str(secs + 1)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(0.5)
        r = measured(d, lambda: wrk(d.base + "/v1/decisions", secs, connections, "POST", body, "application/json"))
        _, err = rec.communicate(timeout=secs + 60)
        procs.stop(d.proc)
        if rec.returncode != 0 or not os.path.exists(data):
            out[label] = [f"perf record failed: {err.decode(errors='replace')[-300:]}"]
            continue
        lines = []
        for sort, limit, keep in (("dso", "1", 8), ("dso,symbol", "0.8", 25)):
            rep = subprocess.run(["perf", "report", "-i", data, "--stdio", "--no-children", "--sort", sort,
                                  "--percent-limit", limit], capture_output=True, text=True)
            text = rep.stdout
            if shutil.which("swift"):
                dem = subprocess.run(["swift", "demangle", "--simplified", "--compact"], input=text,
                                     capture_output=True, text=True)
                if dem.returncode == 0:
                    text = dem.stdout
            picked = []
            for line in text.splitlines():
                if not line.strip() or line.startswith("#"):
                    continue
                line = re.sub(r"(\s+-)+\s*$", "", line.rstrip())
                line = re.sub(r"\s+", " ", line.strip())
                picked.append(line[:160])
            lines.append(f"-- by {sort.replace(',', ' and ')} --")
            lines.extend(picked[:keep])
        lines.insert(0, f"-- {r['rps']:,.0f} req/s, {fmt(r['cpu_us_per_req'], 1)} CPU us per request while recorded --")
        out[label] = lines
    return {"profiles": out}


def syscall_counts(procs, workdir, daemon_bin, files):
    """System calls per request for the daemon and nginx under the same HTTP/1.1 load, counted with
    `strace -c -f` attached to every thread and process of each server for a short run: the kernel's
    share of the daemon's profile comes from these calls."""
    if not shutil.which("strace"):
        return {"error": "strace not installed"}
    out = {}
    for name in ("moe-metricsd", "nginx"):
        s = start_daemon(procs, daemon_bin, workdir, "strace") if name == "moe-metricsd" else start_nginx(procs, workdir)
        path = os.path.join(workdir, f"strace-{name}.txt")
        argv = ["strace", "-c", "-f", "-o", path]
        for pid in process_tree(s.proc.pid):
            argv += ["-p", str(pid)]
        tracer = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(1.0)
            r = wrk(s.base + "/v1/decisions", 3, 64, "POST", files["decision64"], "application/json")
        finally:
            tracer.send_signal(signal.SIGINT)  # strace detaches and writes its summary
            try:
                tracer.wait(30)
            except subprocess.TimeoutExpired:
                tracer.kill()
                tracer.wait()
            procs.stop(s.proc)
        calls = {}
        try:
            with open(path) as f:
                for line in f:
                    fields = line.split()
                    if len(fields) >= 5 and fields[0].replace(".", "").isdigit() and fields[-1] != "total":
                        calls[fields[-1]] = int(fields[3])
        except (OSError, ValueError):
            pass
        n = r["requests"]
        if not n or not calls:
            out[name] = {"error": "no requests or no strace summary"}
            continue
        top = sorted(calls.items(), key=lambda kv: -kv[1])[:6]
        out[name] = {"requests": n, "per_request": sum(calls.values()) / n,
                     "top": [(k, v / n) for k, v in top]}
        log(f"  {name}: {out[name]['per_request']:.2f} system calls per request")
    return out


# ---------------------------------------------------------------------------------------------
# Report.

def fmt(v, digits=0, unit=""):
    if v is None:
        return "n/a"
    if digits == 0:
        return f"{v:,.0f}{unit}"
    return f"{v:,.{digits}f}{unit}"


def ratio(a, b):
    return (a / b) if (a and b) else None


def verdict(value, target, higher_is_better=True):
    if value is None:
        return "not measured"
    ok = value >= target if higher_is_better else value <= target
    return "met" if ok else "missed"


def machine():
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            kb = int(f.readline().split()[1])
            mem = f"{kb / 1024 / 1024:.0f} GiB"
    except OSError:
        pass
    versions = {}
    for name, argv in (("nginx", ["nginx", "-v"]), ("nghttpd", ["nghttpd", "--version"]),
                       ("Pushgateway", ["prometheus-pushgateway", "--version"]), ("wrk", ["wrk", "-v"]),
                       ("h2load", ["h2load", "--version"]), ("swift", ["swift", "--version"])):
        try:
            p = subprocess.run(argv, capture_output=True, text=True, timeout=30)
            text = (p.stdout + p.stderr).strip().splitlines()
            versions[name] = text[0] if text else "?"
        except (OSError, subprocess.TimeoutExpired):
            versions[name] = "not found"
    revision = os.environ.get("BENCH_REVISION", "")
    if not revision:
        root = os.path.dirname(os.path.dirname(HERE))
        try:
            head = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True,
                                  text=True, timeout=30)
            dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--", "Sources", "Package.swift"],
                                   capture_output=True, text=True, timeout=30)
            if head.returncode == 0:
                revision = head.stdout.strip() + (" with uncommitted changes" if dirty.stdout.strip() else "")
        except (OSError, subprocess.TimeoutExpired):
            pass
    return {"nproc": NPROC, "cpu": model, "revision": revision or "unknown", "memory": mem, "kernel": os.uname().release, "versions": versions,
            "load_before": open("/proc/loadavg").read().split()[:3]}


def report(r, command):
    L = []
    m = r["machine"]
    L.append("# Benchmarks")
    L.append("")
    L.append("Generated by `scripts/bench`; every number below comes from the run described here, "
             "not edited by hand. Rerun it to reproduce on your machine.")
    L.append("")
    L.append(f"- Command: `{command}`")
    L.append(f"- Date: {r['date']}; moe-metricsd source: commit {m['revision']}")
    L.append(f"- Machine: {m['nproc']} CPUs ({m['cpu']}), {m['memory']}, Linux {m['kernel']}; "
             f"load average before the run {' '.join(m['load_before'])}")
    L.append(f"- Load runs: {SECONDS} s each, {RUNS} runs per contender interleaved, median shown "
             f"(growth table: {GROWTH_SECONDS} s, one run). Client and servers share the same CPUs.")
    L.append("- CPU us/req: the server's utime+stime (from `/proc/PID/stat`, all its processes) over the run, "
             "divided by the requests completed.")
    L.append("- Tools: " + "; ".join(f"{k}: {v}" for k, v in m["versions"].items()))
    L.append("")

    # Targets summary.
    s1, s2, s3, s4 = r.get("http1"), r.get("http2"), r.get("batch"), r.get("metrics")
    micro = r.get("micro") or {}
    targets = []
    if s1:
        ours = s1["moe-metricsd"]["rps"]
        targets.append(("HTTP/1.1 ingest >= 0.8x nginx req/s", ratio(ours, s1["nginx"]["rps"]), 0.8, True))
        targets.append(("HTTP/1.1 ingest >= 20x Pushgateway req/s", ratio(ours, s1["Pushgateway"]["rps"]), 20, True))
    sb = r.get("bare")
    if sb:
        targets.append(("HTTP/1.1 server (bare, 204) >= 0.8x nginx req/s",
                        ratio(sb["moe-metricsd HTTP server"]["rps"], sb["nginx"]["rps"]), 0.8, True))
    if s2:
        targets.append(("HTTP/2 ingest >= 0.7x nghttpd req/s", ratio(s2["moe-metricsd"]["rps"], s2["nghttpd"]["rps"]),
                        0.7, True))
    if s4:
        lat = s4["latency"]["plain"]
        targets.append(("/metrics 64x256 in <= 1/5 of Pushgateway's time (speedup >= 5x)",
                        ratio(lat["Pushgateway"]["p50_ms"], lat["moe-metricsd"]["p50_ms"]), 5, True))
        targets.append(("/metrics 64x256 with less resident memory (ours/theirs < 1)",
                        ratio(s4["rss_kib"]["moe-metricsd"], s4["rss_kib"]["Pushgateway"]), 1, False))
    m64, j64 = micro.get("decode+record, 64 experts"), micro.get("JSONDecoder decode, 64 experts")
    if m64 and j64:
        targets.append(("decode+record 64 experts >= 10x faster than JSONDecoder decode",
                        ratio(j64["p50_us"], m64["p50_us"]), 10, True))
    if r.get("history"):
        targets.append(("resident memory, 64x256 with every step history full, within 128 MiB (ours/128 MiB)",
                        ratio(r["history"]["rss_kib"], 128 * 1024), 1, False))
    if r.get("planner"):
        targets.append(("planner 58x256 into 288 replicas on 32 GPUs in <= 50 ms, one core (50 ms / ours)",
                        ratio(50.0, r["planner"]["plan_ms_median"]), 1, True))
    if s3:
        targets.append(("batched ingest 1,000,000 decisions/s (stretch)",
                        ratio(s3["moe-metricsd"]["decisions_per_s"], 1_000_000), 1, True))
    L.append("## Targets, measured in this run")
    L.append("")
    L.append("| target | measured ratio | needed | verdict |")
    L.append("|---|---|---|---|")
    for name, value, target, hib in targets:
        v = verdict(value, target, hib)
        if v == "missed" and value is not None:
            v += f" ({value / target:.0%} of target)" if hib else f" ({value / target:.2f}x the limit)"
        L.append(f"| {name} | {fmt(value, 2)}x | {'>=' if hib else '<'} {target}x | {v} |")
    L.append("")

    if s1:
        L.append("## 1. HTTP/1.1 single-decision POSTs (64 experts)")
        L.append("")
        L.append(f"wrk, 64 keep-alive connections, {NPROC} threads, body {r['sizes']['decision64']} bytes "
                 f"(Pushgateway: the equivalent text-format push of 64 expert series plus the layer's totals, "
                 f"{r['sizes']['push64']} bytes, POSTed to `/metrics/job/moe/layer/L0`; nginx answers 204 "
                 "and discards the body).")
        L.append("")
        L.append("| server | req/s (median) | runs | CPU us/req | p50 ms | p99 ms | ours / theirs (req/s) | errors |")
        L.append("|---|---|---|---|---|---|---|---|")
        ours = s1["moe-metricsd"]["rps"]
        for name in ("moe-metricsd", "nginx", "Pushgateway"):
            x = s1[name]
            L.append(f"| {name} | {fmt(x['rps'])} | {', '.join(f'{v:,}' for v in x['runs'])} | "
                     f"{fmt(x['cpu_us_per_req'], 1)} | {fmt(x['p50_ms'], 2)} | {fmt(x['p99_ms'], 2)} | "
                     f"{'-' if name == 'moe-metricsd' else fmt(ratio(ours, x['rps']), 2) + 'x'} | {x['bad']} |")
        if r.get("pushgateway_full"):
            x = r["pushgateway_full"]["Pushgateway (full)"]
            L.append(f"| Pushgateway holding 64x256 | {fmt(x['rps'])} | {', '.join(f'{v:,}' for v in x['runs'])} | "
                     f"{fmt(x['cpu_us_per_req'], 1)} | {fmt(x['p50_ms'], 2)} | {fmt(x['p99_ms'], 2)} | "
                     f"{fmt(ratio(ours, x['rps']), 0)}x | {x['bad']} |")
        rec = s1["moe-metricsd"].get("recorded")
        L.append("")
        L.append(f"The daemon's `total_routings` for L0 grew by {fmt(rec)} during its runs (every completed "
                 "request was recorded; the count can exceed wrk's, which drops requests in flight at the end).")
        L.append("")

    if sb:
        L.append("## 1b. HTTP/1.1 server alone (bare, 204)")
        L.append("")
        L.append(f"Our HTTP server with no daemon routes (`Benchmarks/BareServer`: the `HTTPServer` module "
                 f"answering 204 to every request, one event loop per core) against nginx's `return 204`: "
                 f"wrk, 64 keep-alive connections, {NPROC} threads, POST body {r['sizes']['bare1500']} bytes. "
                 "The gap between this and section 1 is what routing, decoding and recording cost per request.")
        L.append("")
        L.append("| server | req/s (median) | runs | CPU us/req | p50 ms | p99 ms | ours / theirs (req/s) | errors |")
        L.append("|---|---|---|---|---|---|---|---|")
        ours = sb["moe-metricsd HTTP server"]["rps"]
        for name in ("moe-metricsd HTTP server", "nginx"):
            x = sb[name]
            L.append(f"| {name} | {fmt(x['rps'])} | {', '.join(f'{v:,}' for v in x['runs'])} | "
                     f"{fmt(x['cpu_us_per_req'], 1)} | {fmt(x['p50_ms'], 2)} | {fmt(x['p99_ms'], 2)} | "
                     f"{'-' if name != 'nginx' else fmt(ratio(ours, x['rps']), 2) + 'x'} | {x['bad']} |")
        L.append("")

    if s2:
        L.append("## 2. HTTP/2 POSTs (h2c, prior knowledge)")
        L.append("")
        L.append(f"h2load -c 4 -m 10 -t {min(NPROC, 4)}, same 64-expert body; nghttpd (-n {NPROC}) serves a static "
                 "file of the daemon's answer for the same path. Latency is h2load's mean time per request.")
        L.append("")
        L.append("| server | req/s (median) | runs | CPU us/req | mean ms | ours / theirs | errors |")
        L.append("|---|---|---|---|---|---|---|")
        ours = s2["moe-metricsd"]["rps"]
        for name in ("moe-metricsd", "nghttpd"):
            x = s2[name]
            L.append(f"| {name} | {fmt(x['rps'])} | {', '.join(f'{v:,}' for v in x['runs'])} | "
                     f"{fmt(x['cpu_us_per_req'], 1)} | {fmt(x['p50_ms'], 2)} | "
                     f"{'-' if name == 'moe-metricsd' else fmt(ratio(ours, x['rps']), 2) + 'x'} | {x['bad']} |")
        L.append("")

    if s3:
        x = s3["moe-metricsd"]
        L.append("## 3. Batched ingest (64 layers x 64 experts per POST)")
        L.append("")
        L.append(f"wrk, 16 connections, body {r['sizes']['batch64x64']} bytes.")
        L.append("")
        L.append("| req/s (median) | runs | decisions/s | CPU us/decision | p99 ms | of 1M decisions/s | errors |")
        L.append("|---|---|---|---|---|---|---|")
        L.append(f"| {fmt(x['rps'])} | {', '.join(f'{v:,}' for v in x['runs'])} | {fmt(x['decisions_per_s'])} | "
                 f"{fmt(x['cpu_us_per_decision'], 2)} | {fmt(x['p99_ms'], 2)} | "
                 f"{fmt(ratio(x['decisions_per_s'], 1e6) * 100 if x['decisions_per_s'] else None, 0)}% | {x['bad']} |")
        L.append("")

    if s4:
        L.append("## 4. /metrics at 64 layers x 256 experts, and 5. resident memory")
        L.append("")
        L.append("The daemon holds one decision per layer (64 layers x 256 experts); the Pushgateway holds the "
                 "same layers pushed as 64 groups of the equivalent series. Latency: wrk with one connection "
                 "(sequential scrapes).")
        L.append("")
        L.append("| server | encoding | bytes | series | scrapes/s | p50 ms | p99 ms | CPU us/scrape | CPU ns/series | "
                 "Pushgateway p50 / ours |")
        L.append("|---|---|---|---|---|---|---|---|---|---|")
        for variant in ("plain", "gzip"):
            lat = s4["latency"][variant]
            for name in ("moe-metricsd", "Pushgateway"):
                size = s4["sizes"][name][variant]
                x = lat[name]
                sp = ratio(lat["Pushgateway"]["p50_ms"], lat["moe-metricsd"]["p50_ms"])
                L.append(f"| {name} | {size['encoding']} | {fmt(size['bytes'])} | {fmt(size['series'])} | "
                         f"{fmt(x['rps'], 1)} | {fmt(x['p50_ms'], 2)} | {fmt(x['p99_ms'], 2)} | "
                         f"{fmt(x['cpu_us_per_req'], 0)} | "
                         f"{fmt(x['cpu_us_per_req'] * 1000 / size['series'] if x['cpu_us_per_req'] and size['series'] else None)} | "
                         f"{fmt(sp, 1) + 'x' if name == 'moe-metricsd' else '-'} |")
        L.append("")
        rss = s4["rss_kib"]
        L.append("| server | VmRSS after fill and scrapes | ours / theirs |")
        L.append("|---|---|---|")
        L.append(f"| moe-metricsd | {rss['moe-metricsd'] / 1024:.1f} MiB | "
                 f"{fmt(ratio(rss['moe-metricsd'], rss['Pushgateway']), 2)}x |")
        L.append(f"| Pushgateway | {rss['Pushgateway'] / 1024:.1f} MiB | - |")
        L.append("")

    sh = r.get("history")
    if sh:
        L.append(f"## 8. Resident memory with every step history full")
        L.append("")
        L.append(f"The daemon (default settings) after {sh['steps']} steps of each of {sh['layers']} layers x "
                 f"{sh['experts']} experts (one worker, {sh['steps']} distinct steps per layer, so every history "
                 f"holds its default {sh['kept']} steps), posted in {sh['fill_s']:.1f} s.")
        L.append("")
        L.append("| VmRSS | target |")
        L.append("|---|---|")
        L.append(f"| {sh['rss_kib'] / 1024:.1f} MiB | at most 128 MiB |")
        L.append("")

    if micro:
        L.append("## 6. Microbenchmarks: decode (+ record) one decision")
        L.append("")
        L.append("ordo-one/benchmark 1.38.1 (`swift package --package-path Benchmarks benchmark`), release build, "
                 "one decision per sample, warm-up 1,000 samples, then samples until "
                 f"{os.environ.get('BENCH_MICRO_SECONDS', '2')} s; wall-clock percentiles, malloc count from the "
                 "malloc interposer. Baseline: Foundation `JSONDecoder` decoding the same bytes into a `Codable` "
                 "mirror of the schema.")
        L.append("")
        L.append("| experts | benchmark | p50 us | p90 us | p99 us | mallocs | samples | JSONDecoder p50 / this p50 |")
        L.append("|---|---|---|---|---|---|---|---|")
        for e in (8, 64, 256):
            base = micro.get(f"JSONDecoder decode, {e} experts")
            for kind in ("JSONDecoder decode", "DecisionDecoder decode", "decode+record"):
                x = micro.get(f"{kind}, {e} experts")
                if not x:
                    continue
                sp = ratio(base["p50_us"], x["p50_us"]) if base else None
                L.append(f"| {e} | {kind} | {fmt(x['p50_us'], 2)} | {fmt(x['p90_us'], 2)} | {fmt(x['p99_us'], 2)} | "
                         f"{fmt(x['mallocs_p50'])} | {fmt(x['samples'])} | {fmt(sp, 1)}x |")
        L.append("")
        batch = micro.get("decode+ingest batch, 64 layers x 64 experts")
        if batch:
            per_s = 64 / (batch["p50_us"] / 1e6) if batch["p50_us"] else None
            L.append("Scenario 3 without HTTP: one sample decodes a 64-layer x 64-expert batch body and ingests it into "
                     "64 existing layers, on one core.")
            L.append("")
            L.append("| benchmark | p50 us per batch | p90 us | p99 us | mallocs | samples | decisions/s on one core |")
            L.append("|---|---|---|---|---|---|---|")
            L.append(f"| decode+ingest batch, 64 layers x 64 experts | {fmt(batch['p50_us'], 1)} | {fmt(batch['p90_us'], 1)} | "
                     f"{fmt(batch['p99_us'], 1)} | {fmt(batch['mallocs_p50'])} | {fmt(batch['samples'])} | {fmt(per_s)} |")
            L.append("")

    if r.get("growth"):
        L.append("## 7. How the cost grows")
        L.append("")
        L.append(f"moe-metricsd alone, HTTP/1.1 POSTs with wrk, {GROWTH_SECONDS} s per row, one run. Experts: one "
                 "decision per POST, 64 connections. Layers per POST: one decision per layer, 64 experts each, 16 "
                 "connections. Connections: the 64-expert single decision.")
        L.append("")
        L.append("| varied | value | connections | req/s | decisions/s | CPU us/decision | p99 ms | errors |")
        L.append("|---|---|---|---|---|---|---|---|")
        for row in r["growth"]:
            L.append(f"| {row['kind']} | {row['value']} | {row['connections']} | {fmt(row['rps'])} | "
                     f"{fmt(row['decisions_per_s'])} | {fmt(row['cpu_us_per_decision'], 2)} | "
                     f"{fmt(row['p99_ms'], 2)} | {row['bad']} |")
        L.append("")

    prof = r.get("profile")
    if prof:
        L.append("## Profiles: where the CPU time goes")
        L.append("")
        if "profiles" in prof:
            L.append("`perf record -e cpu-clock -F 999 -p PIDS` on the server (all its processes) during a wrk run; `perf report "
                     "--no-children`, first by binary (entries above 1%), then by binary and symbol (above 0.8%), Swift "
                     "symbols demangled. "
                     "Time in `[kernel.kallsyms]` is the socket system calls and loopback TCP.")
            for label, lines in prof["profiles"].items():
                L.append("")
                L.append(f"{label}:" if label.startswith("nginx") else f"moe-metricsd under {label}:")
                L.append("")
                L.append("```")
                L.extend(lines)
                L.append("```")
        else:
            L.append(f"No profile: {prof['error']}")
        L.append("")

    sc = r.get("syscalls")
    if sc and "error" not in sc:
        L.append("## System calls per request (HTTP/1.1, single 64-expert decisions, 64 connections)")
        L.append("")
        L.append("`strace -c -f` attached to every thread (daemon) or process (nginx) for a 3 s wrk run; tracing "
                 "slows the servers, but the count per request does not depend on speed.")
        L.append("")
        L.append("| server | system calls per request | most frequent (calls per request) |")
        L.append("|---|---|---|")
        for name in ("moe-metricsd", "nginx"):
            x = sc.get(name, {})
            if "per_request" in x:
                L.append(f"| {name} | {x['per_request']:.2f} | " + ", ".join(f"{k} {v:.2f}" for k, v in x["top"]) + " |")
            else:
                L.append(f"| {name} | n/a ({x.get('error', 'not measured')}) | |")
        L.append("")

    if r.get("planner"):
        L.extend(planner_section(r, command))
        L.append("")

    if r.get("notes"):
        L.append("## Where targets are missed, and why")
        L.append("")
        L.extend(r["notes"])
        L.append("")
    if r.get("errors"):
        L.append("## Scenarios that failed in this run")
        L.append("")
        for name, err in r["errors"].items():
            L.append(f"- {name}: {err}")
        L.append("")
    return "\n".join(L) + "\n"


def profile_shares(r, label_start):
    """Per-binary shares (percent) from the profile whose label starts with `label_start`."""
    prof = (r.get("profile") or {}).get("profiles", {})
    for label, lines in prof.items():
        if not label.startswith(label_start):
            continue
        shares, symbols, section = {}, [], None
        for line in lines:
            if line.startswith("--"):
                section = line
                continue
            m = re.match(r"([\d.]+)% (\S+)(?: \[.\] (.*))?$", line)
            if not m:
                continue
            if "symbol" in section:
                if m.group(3):
                    symbols.append((float(m.group(1)), m.group(2), m.group(3)))
            else:
                shares[m.group(2)] = float(m.group(1))
        return shares, symbols
    return {}, []


def describe_split(shares):
    names = {"[kernel.kallsyms]": "kernel (sockets, TCP)", "moe-metricsd": "daemon code",
             "libswiftCore.so": "Swift runtime (retain/release, allocation, arrays)", "libc.so.6": "libc (malloc, memmove)"}
    return ", ".join(f"{names.get(k, k)} {v:.0f}%" for k, v in sorted(shares.items(), key=lambda kv: -kv[1]))


def missed_notes(r):
    """Plain statements of each missed target, its measured gap and what the measurements in the
    same run (profiles, system call counts, allocation counts) say limits it."""
    notes = []
    s1, s2, s3 = r.get("http1"), r.get("http2"), r.get("batch")
    sc = r.get("syscalls") or {}
    single_shares, single_symbols = profile_shares(r, "single")
    batch_shares, batch_symbols = profile_shares(r, "batches")
    if s1 and s1["moe-metricsd"]["rps"] and s1["nginx"]["rps"]:
        ours, ng = s1["moe-metricsd"], s1["nginx"]
        q = ours["rps"] / ng["rps"]
        if q < 0.8:
            text = (f"- HTTP/1.1: {q:.2f}x nginx, {0.8 - q:.2f} below the 0.8x target. Per request the "
                    f"daemon spends {fmt(ours['cpu_us_per_req'], 1)} CPU us against nginx's "
                    f"{fmt(ng['cpu_us_per_req'], 1)}; with wrk on the same two cores, every extra "
                    "microsecond of server CPU is taken from the client too.")
            d, n = sc.get("moe-metricsd", {}), sc.get("nginx", {})
            if "per_request" in d and "per_request" in n:
                text += (f" Both make about the same number of system calls per request ({d['per_request']:.2f} "
                         f"vs {n['per_request']:.2f}), so the gap is the cost around them, not their number.")
            if single_shares:
                text += f" The daemon's profile under this load: {describe_split(single_shares)}."
            nginx_shares, _ = profile_shares(r, "nginx")
            if nginx_shares:
                text += (f" nginx's: {describe_split(nginx_shares)}; so the daemon spends more both in the kernel "
                         "(the same calls per request, yet more kernel time per request) and, above all, in "
                         "user space (HTTP parsing, routing, decoding, recording and the Swift runtime's "
                         "reference counting and allocation).")
            notes.append(text)
    sb = r.get("bare")
    if sb and sb["moe-metricsd HTTP server"]["rps"] and sb["nginx"]["rps"]:
        ours, ng = sb["moe-metricsd HTTP server"], sb["nginx"]
        q = ours["rps"] / ng["rps"]
        if q < 0.8:
            notes.append(f"- HTTP/1.1 server alone (204, no routes): {q:.2f}x nginx, {0.8 - q:.2f} below the 0.8x "
                         f"target ({fmt(ours['cpu_us_per_req'], 1)} vs {fmt(ng['cpu_us_per_req'], 1)} CPU us per "
                         "request): the transport and the HTTP/1.1 layer themselves cost more than nginx's.")
    if s2 and s2["moe-metricsd"]["rps"] and s2["nghttpd"]["rps"]:
        q = s2["moe-metricsd"]["rps"] / s2["nghttpd"]["rps"]
        if q < 0.7:
            notes.append(f"- HTTP/2: {q:.2f}x nghttpd, {0.7 - q:.2f} below the 0.7x target "
                         f"({fmt(s2['moe-metricsd']['cpu_us_per_req'], 1)} vs "
                         f"{fmt(s2['nghttpd']['cpu_us_per_req'], 1)} CPU us per request). nghttpd answers from a "
                         "static file and does no decoding; the daemon decodes and records each decision as well "
                         "(see the microbenchmarks for that part alone).")
    if s3 and s3["moe-metricsd"]["decisions_per_s"]:
        q = s3["moe-metricsd"]["decisions_per_s"] / 1e6
        if q < 1:
            text = (f"- Batched ingest: {s3['moe-metricsd']['decisions_per_s']:,.0f} decisions/s, {q:.0%} of "
                    f"the 1M/s stretch; {fmt(s3['moe-metricsd']['cpu_us_per_decision'], 2)} CPU us per "
                    "decision in the server, where 1M/s on 2 cores shared with the client allows about 1.")
            if batch_shares:
                text += f" Profile: {describe_split(batch_shares)}."
            ours_syms = [f"`{sym}` {pct:.0f}%" for pct, dso, sym in batch_symbols if dso == "moe-metricsd"][:4]
            if ours_syms:
                text += " Largest daemon functions: " + ", ".join(ours_syms) + "."
            notes.append(text)
    s4 = r.get("metrics")
    if s4:
        lat = s4["latency"]["plain"]
        sp = ratio(lat["Pushgateway"]["p50_ms"], lat["moe-metricsd"]["p50_ms"])
        if sp is not None and sp < 5:
            so, sg = s4["sizes"]["moe-metricsd"]["plain"], s4["sizes"]["Pushgateway"]["plain"]
            text = (f"- /metrics: {sp:.1f}x faster than the Pushgateway at p50, short of 5x. The daemon exposes "
                    f"{so['series']:,} series ({so['bytes']:,} bytes: per-expert token counters and utilization "
                    f"ratios, plus per-layer statistics) where the Pushgateway holds {sg['series']:,}")
            co, cg = lat["moe-metricsd"]["cpu_us_per_req"], lat["Pushgateway"]["cpu_us_per_req"]
            if co and cg and so["series"] and sg["series"]:
                text += (f"; per series the daemon spends {co * 1000 / so['series']:,.0f} CPU ns against the "
                         f"Pushgateway's {cg * 1000 / sg['series']:,.0f}")
            gz = s4["latency"]["gzip"]["moe-metricsd"]["cpu_us_per_req"]
            if gz and co:
                text += (f". gzip adds {(gz - co) / 1000:,.0f} ms of CPU per scrape to the daemon "
                         f"({s4['sizes']['moe-metricsd']['gzip']['bytes']:,} bytes sent)")
            notes.append(text + ".")
        if s4["rss_kib"]["moe-metricsd"] >= s4["rss_kib"]["Pushgateway"]:
            notes.append("- Memory: the daemon's resident set is not below the Pushgateway's.")
    micro = r.get("micro") or {}
    m64, j64 = micro.get("decode+record, 64 experts"), micro.get("JSONDecoder decode, 64 experts")
    d64 = micro.get("DecisionDecoder decode, 64 experts")
    if m64 and j64:
        sp = ratio(j64["p50_us"], m64["p50_us"])
        if sp is not None and sp < 10:
            text = f"- Decode+record at 64 experts: {sp:.1f}x JSONDecoder, short of 10x."
            if d64 and d64["p50_us"]:
                text += (f" Decoding alone is {j64['p50_us'] / d64['p50_us']:.0f}x faster than JSONDecoder "
                         f"({fmt(d64['p50_us'], 2)} us, {fmt(d64['mallocs_p50'])} mallocs); recording adds "
                         f"{fmt(m64['p50_us'] - d64['p50_us'], 2)} us and "
                         f"{fmt((m64['mallocs_p50'] or 0) - (d64['mallocs_p50'] or 0))} mallocs per decision "
                         "(`LayerRegistry.ingest` and `LayerState.record`), which is what stands between the "
                         "decoder and the target.")
            notes.append(text)
    return notes


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--daemon", required=True, help="path of the release moe-metricsd binary")
    ap.add_argument("--package", required=True, help="the Benchmarks package directory (microbenchmarks)")
    ap.add_argument("--scratch", required=True, help="build directory for the microbenchmarks")
    ap.add_argument("--output", required=True, help="where to write BENCHMARKS.md")
    ap.add_argument("--pidfile", default=None, help="file to append the PID of every started server to")
    ap.add_argument("--command", default="scripts/bench", help="the command shown in the report")
    ap.add_argument("--only", default="", help="comma-separated scenarios: http1,bare,http2,batch,metrics,micro,growth,"
                                               "profile,syscalls,pgfull,history,planner (default all)")
    args = ap.parse_args()
    only = set(filter(None, args.only.split(",")))

    def wanted(name):
        return not only or name in only

    procs = Processes(args.pidfile)

    def on_signal(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    workdir = tempfile.mkdtemp(prefix="moe-bench-")
    files = {}

    def write(name, data):
        path = os.path.join(workdir, name)
        with open(path, "wb") as f:
            f.write(data)
        files[name] = path

    write("decision64", payloads.decision_body("L0", 64))
    write("push64", payloads.push_body(64))
    write("bare1500", bare_body())
    write("batch64x64", payloads.batch_body(64, 64))
    for e in (8, 64, 256):
        write(f"growth_e{e}", payloads.decision_body(f"E{e}", e))
    for n in (1, 16, 64):
        write(f"growth_l{n}", payloads.batch_body(n, 64, prefix=f"B{n}-"))

    results = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
               "machine": machine(), "errors": {},
               "sizes": {k: os.path.getsize(v) for k, v in files.items()}}
    started = time.monotonic()
    steps = [
        ("micro", lambda: scenario_micro(args.package, args.scratch, workdir)),
        ("http1", lambda: scenario_http1(procs, workdir, args.daemon, files)),
        ("pgfull", lambda: scenario_pushgateway_full(procs, workdir, files)),
        ("bare", lambda: scenario_bare(procs, workdir, args.package, args.scratch, files)),
        ("http2", lambda: scenario_http2(procs, workdir, args.daemon, files)),
        ("batch", lambda: scenario_batch(procs, workdir, args.daemon, files)),
        ("metrics", lambda: scenario_metrics(procs, workdir, args.daemon)),
        ("growth", lambda: scenario_growth(procs, workdir, args.daemon, files)),
        ("history", lambda: scenario_history(procs, workdir, args.daemon)),
        ("profile", lambda: profile_daemon(procs, workdir, args.daemon, files)),
        ("syscalls", lambda: syscall_counts(procs, workdir, args.daemon, files)),
        ("planner", lambda: scenario_planner(args.package, args.scratch)),
    ]
    try:
        for name, step in steps:
            if not wanted(name) or (name in ("profile", "syscalls") and not PROFILE):
                continue
            try:
                value = step()
                results["pushgateway_full" if name == "pgfull" else name] = value
            except (RuntimeError, OSError, subprocess.SubprocessError, KeyError, ValueError) as e:
                log(f"scenario {name} failed: {e}")
                results["errors"][name] = str(e).strip().splitlines()[0][:300] if str(e).strip() else repr(e)
                procs.stop_all()
    finally:
        procs.stop_all()
    results["elapsed_s"] = time.monotonic() - started
    results["notes"] = missed_notes(results)
    text = report(results, args.command)
    if only == {"planner"} and results.get("planner"):
        text = splice_planner(args.output, planner_section(results, args.command))
    with open(args.output, "w") as f:
        f.write(text)
    with open(os.path.join(workdir, "results.json"), "w") as f:
        json.dump(results, f, indent=1, default=str)
    print(text)
    log(f"wrote {args.output} in {results['elapsed_s']:.0f} s; raw results in {workdir}/results.json")
    shutil.rmtree(os.path.join(workdir, "nghttpd"), ignore_errors=True)
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
