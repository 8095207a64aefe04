#!/usr/bin/env python3
"""Ingest side by side: maelab's ingest API against an MLflow tracking server.

Standard library only. `scripts/bench-ingest` starts both servers (each on its
own fresh PostgreSQL database) and runs this; it can also be pointed at servers
started by hand:

    python benches/ingest_bench.py --maelab-url http://127.0.0.1:8081 --maelab-token T \
        --maelab-pid PID --mlflow-url http://127.0.0.1:5001 --mlflow-pid PID

Workloads (one server at a time, the order alternating between rounds):
  (a) per-row: CLIENTS concurrent clients, each with its own run, one HTTP request per
      epoch row of 6 metrics (maelab: POST /api/v1/runs/{id}/metrics with 6 points;
      MLflow: POST /api/2.0/mlflow/runs/log-batch with 6 metrics, same step);
  (b) batched: the same with 100 rows (600 points) per request;
  (c) history: one run with a 10,000-step metric (logged 1,000 points a request), then
      the whole history read REPEAT times, sequentially.

Clients are threads, one keep-alive http.client.HTTPConnection each, spread over
CLIENT_PROCS processes so that one interpreter's lock does not cap the request rate;
each process's CPU time is measured so a saturated client shows. While a workload
runs, a sampler reads /proc every 0.5 s: the server's process tree (maelab: one
process; MLflow: the CLI, uvicorn's supervisor and its workers) for RSS and CPU, and
the PostgreSQL backends connected to that server's database for CPU.
"""

import argparse
import http.client
import json
import multiprocessing as mp
import os
import resource
import sys
import threading
import time
import urllib.parse

KEYS = ["train_lr", "train_loss", "test_loss", "test_acc1", "test_acc5", "n_parameters"]
TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


# --------------------------------------------------------------------------- HTTP


class Api:
    """One keep-alive connection to one server."""

    def __init__(self, url, token=None):
        u = urllib.parse.urlsplit(url)
        self.host, self.port = u.hostname, u.port
        self.headers = {"content-type": "application/json"}
        if token:
            self.headers["authorization"] = f"Bearer {token}"
        self.conn = None

    def request(self, method, path, body=None):
        """(status, body bytes). Reconnects once if the kept-alive socket went away."""
        data = json.dumps(body).encode() if body is not None else None
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
            try:
                self.conn.request(method, path, body=data, headers=self.headers)
                r = self.conn.getresponse()
                return r.status, r.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.conn.close()
                self.conn = None
                if attempt:
                    raise

    def ok(self, method, path, body=None):
        status, data = self.request(method, path, body)
        if not 200 <= status < 300:
            raise RuntimeError(f"{method} {path}: {status} {data[:300]!r}")
        return json.loads(data) if data else None


class Maelab:
    name = "maelab"

    def __init__(self, url, token):
        self.url, self.token = url, token

    def api(self):
        return Api(self.url, self.token)

    def create_run(self, api, label):
        r = api.ok("POST", "/api/v1/runs/external",
                   {"name": f"bench-{label}", "tags": ["bench"], "kind": "pretrain",
                    "config": {"model": "mae_vit_base_patch16", "epochs": 800}})
        return r.get("run_id") or r["id"]

    def log_request(self, run_id, rows):
        """rows: [(step, wall_time, [6 values])] -> (method, path, body)."""
        points = [{"key": k, "step": step, "value": v, "wall_time": t}
                  for step, t, values in rows for k, v in zip(KEYS, values)]
        return "POST", f"/api/v1/runs/{run_id}/metrics", {"points": points}

    def history_path(self, run_id, key):
        return f"/api/v1/runs/{run_id}/metrics?key={key}"

    def history_len(self, body):
        return len(json.loads(body))


class Mlflow:
    name = "mlflow"

    def __init__(self, url):
        self.url = url

    def api(self):
        return Api(self.url)

    def create_run(self, api, label):
        r = api.ok("POST", "/api/2.0/mlflow/runs/create",
                   {"experiment_id": "0", "run_name": f"bench-{label}",
                    "start_time": int(time.time() * 1000)})
        return r["run"]["info"]["run_id"]

    def log_request(self, run_id, rows):
        metrics = [{"key": k, "value": v, "timestamp": int(t * 1000), "step": step}
                   for step, t, values in rows for k, v in zip(KEYS, values)]
        return "POST", "/api/2.0/mlflow/runs/log-batch", {"run_id": run_id, "metrics": metrics}

    def history_path(self, run_id, key):
        return f"/api/2.0/mlflow/metrics/get-history?run_id={run_id}&metric_key={key}"

    def history_len(self, body):
        return len(json.loads(body).get("metrics", []))


def epoch_values(step):
    return [1.5e-4 * (1 + step % 7), 1.0 / (step + 1), 1.2 / (step + 1) + 0.3,
            min(99.0, step * 0.7), min(100.0, step * 0.9), 111_660_000.0]


# --------------------------------------------------------------------------- /proc


def proc_table():
    """pid -> (ppid, cpu ticks, rss bytes, cmdline) for every readable process."""
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                s = f.read()
            with open(f"/proc/{name}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        rest = s[s.rindex(")") + 2:].split()
        # fields after the comm: state(0) ppid(1) ... utime(11) stime(12) ... rss(21)
        out[int(name)] = (int(rest[1]), int(rest[11]) + int(rest[12]), int(rest[21]) * PAGE, cmd)
    return out


def tree(table, root):
    pids, todo = set(), [root]
    while todo:
        p = todo.pop()
        if p in table and p not in pids:
            pids.add(p)
            todo.extend(c for c, row in table.items() if row[0] == p)
    return pids


def pss(pid):
    """Proportional set size: shared pages divided among the processes sharing them."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def serving(table, pids):
    """The processes that answer HTTP: uvicorn/gunicorn and their workers (MLflow), else all."""
    roots = [p for p in pids if " uvicorn " in table[p][3] or "gunicorn" in table[p][3]]
    out = set()
    for r in roots:
        out |= tree(table, r)
    return out or pids


def vm_hwm(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class Sampler(threading.Thread):
    """RSS and CPU of a server's process tree and of its database's PostgreSQL backends."""

    def __init__(self, root, database, period=0.5):
        super().__init__(daemon=True)
        self.root, self.database, self.period = root, database, period
        self.stop = threading.Event()
        self.peak_rss = 0
        self.peak_serving_rss = 0
        self.pss = self.serving_pss = 0
        self.server_cpu = {}  # pid -> (first ticks, last ticks)
        self.db_cpu = {}
        self.hwm = {}
        self.procs = 0
        self.sample()

    def sample(self):
        t = proc_table()
        pids = tree(t, self.root)
        self.procs = max(self.procs, len(pids))
        self.peak_rss = max(self.peak_rss, sum(t[p][2] for p in pids))
        self.serving = serving(t, pids)
        self.peak_serving_rss = max(self.peak_serving_rss, sum(t[p][2] for p in self.serving))
        self.pids = pids
        for p in pids:
            first = self.server_cpu.get(p, (t[p][1], 0))[0]
            self.server_cpu[p] = (first, t[p][1])
            self.hwm[p] = vm_hwm(p)
        tag = f" {self.database} "
        for p, row in t.items():
            if row[3].startswith("postgres:") and tag in row[3]:
                first = self.db_cpu.get(p, (row[1], 0))[0]
                self.db_cpu[p] = (first, row[1])

    def run(self):
        while not self.stop.wait(self.period):
            self.sample()

    def finish(self):
        self.stop.set()
        self.join()
        self.sample()
        self.pss = sum(pss(p) for p in self.pids)
        self.serving_pss = sum(pss(p) for p in self.serving)
        cpu = lambda d: sum(b - a for a, b in d.values()) / TICK  # noqa: E731
        return {"server_cpu_s": cpu(self.server_cpu), "db_cpu_s": cpu(self.db_cpu),
                "rss_peak_mib": self.peak_rss / 2**20, "serving_rss_peak_mib": self.peak_serving_rss / 2**20,
                "pss_end_mib": self.pss / 2**20, "serving_pss_end_mib": self.serving_pss / 2**20,
                "vmhwm_sum_mib": sum(self.hwm.values()) / 2**20, "server_procs": self.procs}


# --------------------------------------------------------------------------- load


def client_proc(server, n_threads, label, rows_per_req, ready, go, deadline, out):
    """One client process: n_threads threads, each its own run and connection."""
    results = [None] * n_threads
    runs = [None] * n_threads
    apis = [server.api() for _ in range(n_threads)]
    for i in range(n_threads):
        runs[i] = server.create_run(apis[i], f"{label}-{os.getpid()}-{i}")

    def worker(i):
        api, run_id = apis[i], runs[i]
        lat, errors, rows, step = [], [], 0, 0
        end = deadline.value
        while True:
            t0 = time.perf_counter()
            if time.time() >= end:
                break
            batch = [(step + j, time.time(), epoch_values(step + j)) for j in range(rows_per_req)]
            method, path, body = server.log_request(run_id, batch)
            try:
                status, data = api.request(method, path, body)
            except Exception as e:  # noqa: BLE001: counted, reported
                status, data = None, repr(e).encode()
            dt = time.perf_counter() - t0
            lat.append((dt, time.time()))
            if status is not None and 200 <= status < 300:
                rows += rows_per_req
                step += rows_per_req
            else:
                errors.append(f"{status} {data[:200]!r}")
        results[i] = (lat, errors, rows)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n_threads)]
    ready.put(os.getpid())
    go.wait()
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    lat = [x for r in results for x in r[0]]
    errors = [e for r in results for e in r[1]]
    out.put({"lat": lat, "errors": errors, "rows": sum(r[2] for r in results), "cpu_s": cpu,
             "end": time.time()})


def pct(sorted_xs, q):
    if not sorted_xs:
        return float("nan")
    k = max(0, min(len(sorted_xs) - 1, int(round(q / 100 * len(sorted_xs) + 0.5)) - 1))
    return sorted_xs[k]


def load(server, pid, database, clients, procs, rows_per_req, duration, label):
    ctx = mp.get_context("fork")
    ready, out, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    deadline = ctx.Value("d", 0.0)
    share = [clients // procs + (1 if i < clients % procs else 0) for i in range(procs)]
    ps = [ctx.Process(target=client_proc,
                      args=(server, n, f"{label}-{k}", rows_per_req, ready, go, deadline, out))
          for k, n in enumerate(share) if n]
    for p in ps:
        p.start()
    for _ in ps:
        ready.get(timeout=120)  # every run created, every connection open
    sampler = Sampler(pid, database)
    sampler.start()
    t0 = time.time()
    deadline.value = t0 + duration
    go.set()
    parts = [out.get(timeout=duration + 300) for _ in ps]
    for p in ps:
        p.join()
    wall = max(p["end"] for p in parts) - t0
    res = sampler.finish()
    lat = sorted(dt for p in parts for dt, _ in p["lat"])
    slowest = max((x for p in parts for x in p["lat"]), default=(0, t0))
    errors = [e for p in parts for e in p["errors"]]
    rows = sum(p["rows"] for p in parts)
    res.update({
        "server": server.name, "workload": label, "clients": clients, "rows_per_request": rows_per_req,
        "wall_s": wall, "requests": len(lat), "rows": rows, "rows_per_s": rows / wall,
        "points_per_s": rows * len(KEYS) / wall, "p50_ms": pct(lat, 50) * 1e3,
        "p99_ms": pct(lat, 99) * 1e3, "max_ms": slowest[0] * 1e3,
        "slowest_at_s": slowest[1] - t0, "over_1s": sum(1 for x in lat if x > 1.0),
        "errors": len(errors), "error_samples": errors[:3],
        "client_cpu_s": sum(p["cpu_s"] for p in parts),
        "client_proc_max_cores": max(p["cpu_s"] for p in parts) / wall,
    })
    res["client_cores"] = res["client_cpu_s"] / wall
    res["server_cores"] = res["server_cpu_s"] / wall
    res["db_cores"] = res["db_cpu_s"] / wall
    return res


def history(server, pid, database, steps, per_req, repeat, key="train_loss"):
    api = server.api()
    run_id = server.create_run(api, "history")
    t_log = time.perf_counter()
    for start in range(0, steps, per_req):
        n = min(per_req, steps - start)
        # one key only: rows of one value each
        if server.name == "maelab":
            body = {"points": [{"key": key, "step": s, "value": 1.0 / (s + 1), "wall_time": time.time()}
                               for s in range(start, start + n)]}
            api.ok("POST", f"/api/v1/runs/{run_id}/metrics", body)
        else:
            now = int(time.time() * 1000)
            body = {"run_id": run_id, "metrics": [{"key": key, "value": 1.0 / (s + 1), "timestamp": now,
                                                   "step": s} for s in range(start, start + n)]}
            api.ok("POST", "/api/2.0/mlflow/runs/log-batch", body)
    log_s = time.perf_counter() - t_log
    path = server.history_path(run_id, key)
    status, body = api.request("GET", path)  # warm: first read, checked
    got = server.history_len(body) if status == 200 else -1
    if got != steps:
        raise RuntimeError(f"{server.name} history: {status}, {got} points, expected {steps}")
    sampler = Sampler(pid, database)
    sampler.start()
    lat, errors = [], 0
    t_reads = time.perf_counter()
    for _ in range(repeat):
        t0 = time.perf_counter()
        status, body = api.request("GET", path)
        lat.append(time.perf_counter() - t0)
        errors += status != 200
    reads_s = time.perf_counter() - t_reads
    res = sampler.finish()
    res["server_cores"] = res["server_cpu_s"] / reads_s
    lat.sort()
    res.update({"server": server.name, "workload": "history", "points": steps, "log_s": log_s,
                "reads": repeat, "p50_ms": pct(lat, 50) * 1e3, "p99_ms": pct(lat, 99) * 1e3,
                "max_ms": lat[-1] * 1e3, "errors": errors, "bytes": len(body)})
    return res


def warm(server):
    """A few unmeasured requests: lazy imports, pools, caches."""
    api = server.api()
    run_id = server.create_run(api, "warmup")
    for i in range(20):
        method, path, body = server.log_request(run_id, [(i, time.time(), epoch_values(i))])
        api.ok(method, path, body)
    api.request("GET", server.history_path(run_id, "train_loss"))


# --------------------------------------------------------------------------- report


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def fmt_load(r):
    return (f"| ({r['workload']}) {r['rows_per_request']} | {r['round']} | {r['server']} | {r['rows_per_s']:,.0f} | "
            f"{r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['max_ms']:,.0f} | {r['over_1s']} | {r['errors']} | "
            f"{r['requests']:,} | {r['load']} |")


def fmt_res(r):
    return (f"| ({r['workload']}) | {r['round']} | {r['server']} | {r['server_procs']} | {r['rss_peak_mib']:,.0f} | "
            f"{r['serving_rss_peak_mib']:,.0f} | {r['pss_end_mib']:,.0f} | {r['vmhwm_sum_mib']:,.0f} | "
            f"{r['server_cores']:.2f} | {r['db_cores']:.2f} | {r['client_cores']:.2f} ({r['client_proc_max_cores']:.2f}) |")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--maelab-url", required=True)
    ap.add_argument("--maelab-token", required=True)
    ap.add_argument("--maelab-pid", type=int, required=True)
    ap.add_argument("--maelab-db", default="")
    ap.add_argument("--mlflow-url", required=True)
    ap.add_argument("--mlflow-pid", type=int, required=True)
    ap.add_argument("--mlflow-db", default="")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--client-procs", type=int, default=2)
    ap.add_argument("--duration", type=float, default=30)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--batch-rows", type=int, default=100)
    ap.add_argument("--history-steps", type=int, default=10_000)
    ap.add_argument("--history-repeat", type=int, default=200)
    ap.add_argument("--json", help="write every result here too")
    a = ap.parse_args()

    maelab = (Maelab(a.maelab_url, a.maelab_token), a.maelab_pid, a.maelab_db)
    mlflow = (Mlflow(a.mlflow_url), a.mlflow_pid, a.mlflow_db)
    for s, _, _ in (maelab, mlflow):
        warm(s)

    results = []
    order = [maelab, mlflow]
    for rnd in range(a.rounds):
        for label, rows in (("a", 1), ("b", a.batch_rows)):
            for server, pid, db in order:
                before = loadavg()
                print(f"== round {rnd + 1} ({label}) {server.name}: {a.clients} clients, "
                      f"{rows} rows/request, {a.duration:.0f} s; load {before}", file=sys.stderr, flush=True)
                r = load(server, pid, db, a.clients, a.client_procs, rows, a.duration, label)
                r["round"], r["load"] = rnd + 1, before
                print(f"   {r['rows_per_s']:,.0f} rows/s, p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, "
                      f"max {r['max_ms']:.0f} ms, errors {r['errors']} {r['error_samples']}, "
                      f"client {r['client_cores']:.2f} cores, server {r['server_cores']:.2f}, "
                      f"db {r['db_cores']:.2f}", file=sys.stderr, flush=True)
                results.append(r)
            order.reverse()  # alternate: a is A-B, b is B-A, next round's a is B-A ...
    hist = []
    for server, pid, db in order:
        print(f"== (c) history {server.name}", file=sys.stderr, flush=True)
        r = history(server, pid, db, a.history_steps, 1000, a.history_repeat)
        r["load"] = loadavg()
        hist.append(r)

    print(f"\nload average at the end: {loadavg()}\n")
    print("| workload, rows/request | round | server | rows/s | p50 ms | p99 ms | slowest ms | requests > 1 s "
          "| errors | requests | load average before |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(fmt_load(r))
    print("\n| workload | round | server | processes | RSS peak MiB (tree) | RSS peak MiB (HTTP processes) "
          "| PSS MiB at end (tree) | VmHWM sum MiB | server CPU cores | PG backend cores | client cores (busiest process) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(fmt_res(r))
    print()
    for label in ("a", "b"):
        pick = lambda name: [r for r in results if r["workload"] == label and r["server"] == name]  # noqa: E731
        m, f = pick("maelab"), pick("mlflow")
        mr = sum(r["rows"] for r in m) / sum(r["wall_s"] for r in m)
        fr = sum(r["rows"] for r in f) / sum(r["wall_s"] for r in f)
        print(f"({label}) maelab {mr:,.0f} rows/s, MLflow {fr:,.0f} rows/s (all rounds): ratio {mr / fr:.1f}x; "
              f"slowest request maelab {max(r['max_ms'] for r in m):,.0f} ms, MLflow {max(r['max_ms'] for r in f):,.0f} ms")
    print("\n| history read | points | reads | p50 ms | p99 ms | max ms | response bytes | errors | server cores | load |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in hist:
        print(f"| {r['server']} | {r['points']:,} | {r['reads']} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
              f"{r['max_ms']:.1f} | {r['bytes']:,} | {r['errors']} | {r['server_cores']:.2f} | {r['load']} |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"load": results, "history": hist}, f, indent=1)


if __name__ == "__main__":
    main()
