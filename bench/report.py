#!/usr/bin/env python3
"""Renders the results tables of docs/benchmarks.md from bench/results/summary.json.

Usage: python3 bench/report.py [bench/results/summary.json] > /tmp/tables.md
Standard library only. Prints markdown: one table per scenario with the median of every
target (medhub, Socket.IO, Synapse), medhub's ratio to each peer, the run count, and the
exact commands behind each row.
"""
import json
import sys

PEERS = {"socketio/memory": "Socket.IO 4", "synapse/sqlite": "Synapse", "floor/memory": "floor relay"}
LABEL = {
    "medhub/sqlite": "medhub (SQLite)",
    "medhub/postgres": "medhub (PostgreSQL)",
    "socketio/memory": "Socket.IO 4 (in memory)",
    "synapse/sqlite": "Synapse (SQLite)",
    "floor/memory": "floor relay (bare write loop, fan-out only)",
}


def fmt(v, unit):
    if v is None:
        return "–"
    if unit in ("s",):
        return f"{v:.2f} s"
    if unit in ("ms",):
        return f"{v:.1f} ms"
    if unit == "bytes":
        return f"{v:,.0f} B"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.3g}"


def unit_of(h):
    u = h.get("unit") or ""
    if u:
        return u
    p = h["path"]
    if p.endswith("_ms"):
        return "ms"
    if p.endswith("_s") and "per_s" not in p:
        return "s"
    if "bytes" in p:
        return "bytes"
    return ""


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else "bench/results/summary.json"
    d = json.load(open(path))
    groups = d["groups"]
    out = []
    by_scenario = {}
    for h in d["headlines"]:
        by_scenario.setdefault(h["scenario"], []).append(h)
    for scenario, heads in by_scenario.items():
        targets = []
        for h in heads:
            for t in h["best_median"]:
                if t not in targets:
                    targets.append(t)
        targets.sort(key=lambda t: (not t.startswith("medhub"), t))
        out.append(f"### {scenario}\n")
        header = "| Figure | " + " | ".join(LABEL.get(t, t) for t in targets) + " | medhub ÷ peer |"
        out.append(header)
        out.append("|" + "---|" * (len(targets) + 2))
        for h in heads:
            unit = unit_of(h)
            cells = []
            for t in targets:
                m = h["best_median"].get(t)
                if m is None:
                    cells.append("–")
                else:
                    runs = groups.get(m["group"], {}).get("runs", "?")
                    cells.append(f"{fmt(m['median'], unit)} <sub>({runs} runs)</sub>")
            def pair(k):
                a, b = k.split(" vs ")
                return f"{LABEL.get(a, a).split(' (')[1].rstrip(')') if a.startswith('medhub/') and len(targets) > 3 else 'medhub'} vs {PEERS.get(b, b)}"
            ratios = "; ".join(f"{pair(k)}: {v:.2f}×" for k, v in sorted(h.get("medhub_advantage", {}).items()))
            out.append(f"| {h['figure']} | " + " | ".join(cells) + f" | {ratios or '–'} |")
        out.append("")
        out.append("Commands (one run of each; every run's command is in its JSON file):\n")
        seen = set()
        for h in heads:
            for t, m in h["best_median"].items():
                g = groups.get(m["group"], {})
                if m["group"] in seen:
                    continue
                seen.add(m["group"])
                cmd = (g.get("commands") or ["?"])[0]
                srv = (g.get("server_commands") or [""])[0]
                out.append(f"- `{m['group']}`: `{cmd}`" + (f"  \n  server: `{srv}`" if srv else ""))
        out.append("")
    # The throughput sweep: every sender shape, not only the best one.
    sweep = sorted((k, g) for k, g in groups.items() if k.startswith("throughput/"))
    if sweep:
        out.append("### throughput sweep (every sender shape)\n")
        out.append("| Target | Senders × in flight | Acked msg/s (median) | Runs | Ack p99 | Server CPU-s per 1,000 msgs |")
        out.append("|---|---|---|---|---|---|")
        for k, g in sweep:
            m = g.get("median", {})
            shape = f"{int(m.get('params.senders', g.get('size', 0)))} × {int(m.get('params.window', 0))}" if m.get("params.window") else str(g.get("size"))
            out.append(
                f"| {LABEL.get(g['target'] + '/' + g['backend'], k)} | {shape} | {fmt(m.get('throughput.acked_per_s'), '')} | {g.get('runs')} "
                f"| {fmt(m.get('throughput.ack.p99_ms'), 'ms')} | {fmt(m.get('throughput.cpu_s_per_1000_msgs'), '')} |"
            )
        out.append("")
    # Every issue target, with the value of each run.
    out.append("### issue targets, run by run\n")
    out.append("| Group | Measure | Target | Runs (value, met?) |")
    out.append("|---|---|---|---|")
    for k, g in sorted(groups.items()):
        per = {}
        for run in g.get("targets_met_in_runs", []):
            for t in run:
                if t.get("applicable"):
                    per.setdefault((t["measure"], t["target"]), []).append(f"{t['value']} {'✓' if t['met'] else '✗'}")
        for (measure, target), vals in per.items():
            out.append(f"| `{k}` | {measure} | {target} | {'; '.join(vals)} |")
    out.append("")
    out.append("_medhub ÷ peer is medhub's advantage: the peer's figure divided by medhub's where lower is better, "
               "medhub's divided by the peer's where higher is better; above 1 means medhub does better._")
    print("\n".join(out))


if __name__ == "__main__":
    main()
