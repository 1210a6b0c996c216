#!/usr/bin/env python3
"""Sums the kernel times of an `ncu --csv --metrics gpu__time_duration.sum` log by kernel name.

usage: ncu_kernel_times.py LOG [LOG ...] [--json OUT]; prints one table per log, largest first.
"""
import argparse
import collections
import csv
import io
import json


def kernel_times(path):
    text = open(path, errors="replace").read()
    start = text.find('"ID"')
    if start < 0:
        raise SystemExit(f"{path}: no ncu CSV in it")
    totals = collections.defaultdict(lambda: [0.0, 0])
    for row in csv.DictReader(io.StringIO(text[start:])):
        if row.get("Metric Name") != "gpu__time_duration.sum":
            continue
        scale = {"nsecond": 1e-3, "usecond": 1.0, "msecond": 1e3}.get(row["Metric Unit"], 1.0)
        us = float(row["Metric Value"].replace(",", "")) * scale
        t = totals[row["Kernel Name"][:90]]
        t[0] += us
        t[1] += 1
    return totals


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("logs", nargs="+")
    ap.add_argument("--json")
    a = ap.parse_args()
    out = {}
    for path in a.logs:
        totals = kernel_times(path)
        all_us = sum(t[0] for t in totals.values())
        print(f"-- {path.rsplit('/', 1)[-1]}: {all_us / 1e3:.2f} ms in {sum(t[1] for t in totals.values())} kernels")
        for name, (us, n) in sorted(totals.items(), key=lambda kv: -kv[1][0])[:25]:
            print(f"{us / 1e3:9.3f} ms {100 * us / all_us:5.1f}% {n:5d}x  {name}")
        out[path] = {name: {"us": us, "launches": n} for name, (us, n) in totals.items()}
    if a.json:
        json.dump(out, open(a.json, "w"), indent=1)


if __name__ == "__main__":
    main()
