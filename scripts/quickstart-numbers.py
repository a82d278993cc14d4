#!/usr/bin/env python3
"""Measures the quickstart mesh: each proxy's idle RSS, and the latency of sequential requests
to bar directly and through the mesh (foo's proxy → mTLS → bar's proxy → bar). Run while
examples/quickstart/run.sh is up:  python3 scripts/quickstart-numbers.py [N]"""
import http.client
import subprocess
import sys
import time


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def proxies():
    out = subprocess.run(["pgrep", "-a", "weft-proxy"], capture_output=True, text=True).stdout
    found = {}
    for line in out.splitlines():
        pid, cmd = line.split(" ", 1)
        if "--service" in cmd:
            svc = cmd.split("--service", 1)[1].split()[0]
            found[svc] = int(pid)
    return found


def latencies(port, n, warmup=100):
    conn = http.client.HTTPConnection("127.0.0.1", port)
    out = []
    for i in range(n + warmup):
        t = time.perf_counter()
        conn.request("GET", "/")
        resp = conn.getresponse()
        resp.read()
        dt = time.perf_counter() - t
        if resp.status != 200:
            raise SystemExit(f"port {port}: status {resp.status}")
        if i >= warmup:
            out.append(dt)
    out.sort()
    return out


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    ps = proxies()
    for svc, pid in sorted(ps.items()):
        print(f"idle VmRSS {svc}'s proxy: {rss_kib(pid) / 1024:.1f} MiB")
    direct = latencies(8081, n)
    mesh = latencies(4140, n)
    for name, lat in [("direct to bar", direct), ("through the mesh", mesh)]:
        p50, p90, p99 = (lat[int(len(lat) * q)] * 1e3 for q in (0.5, 0.9, 0.99))
        print(f"{name:18} n={len(lat)}  p50 {p50:.3f} ms  p90 {p90:.3f} ms  p99 {p99:.3f} ms")
    print(f"added by the mesh (two proxies, mTLS): p50 {(mesh[len(mesh)//2] - direct[len(direct)//2]) * 1e3:.3f} ms")
    for svc, pid in sorted(ps.items()):
        print(f"VmRSS after the run, {svc}'s proxy: {rss_kib(pid) / 1024:.1f} MiB")


if __name__ == "__main__":
    main()
