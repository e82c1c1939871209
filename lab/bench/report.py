"""Turns docs/bench/results.json (written by `kube-failover-lab bench --json`) into the table in
BENCHMARKS.md and a plot of the failover latency distribution (docs/bench/latency.png)."""
import json
import platform
import subprocess
import sys
from pathlib import Path

root = Path(__file__).resolve().parents[2]
results = json.loads((root / "docs/bench/results.json").read_text())


def fmt(x):
    return "—" if x is None or x != x else f"{x:.3f}"


def machine():
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    mem = ""
    try:
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kib / 1024 / 1024:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return f"{cpu}, {cores} cores{mem}, {platform.system()} {platform.release()}"


rows = []
for r in results:
    ratio = r["controller_wall"] / r["floor_wall"] if r["floor_wall"] else float("nan")
    reqs = ", ".join(f"{k} {v:.1f}" for k, v in sorted(r["api_requests_per_failover"].items()))
    rows.append(
        f"| {r['name']} | {r['affected']} | {r['lease_stale_seconds']} | "
        f"{fmt(r['detection']['p50'])} / {fmt(r['detection']['p99'])} | "
        f"{fmt(r['reaction']['p50'])} / {fmt(r['reaction']['p99'])} | "
        f"{fmt(r['total']['p50'])} / {fmt(r['total']['p95'])} / {fmt(r['total']['p99'])} / {fmt(r['total']['max'])} | "
        f"{fmt(r['controller_wall'])} | {fmt(r['floor_wall'])} | {ratio:.2f} | {reqs} | "
        f"{r['controller_peak_rss_mib']:.1f} | {r['controller_cpu_seconds']:.2f} | {r['caches_synced_seconds']:.2f} |"
    )

by_resource = []
for r in results:
    per = r.get("api_requests_by_resource") or {}
    if per:
        cells = ", ".join(f"{k} {v:.2f}" for k, v in sorted(per.items(), key=lambda kv: -kv[1]))
        by_resource.append(f"| {r['name']} | {sum(per.values()):.1f} | {cells} |")

at_rest = []
for r in results:
    rest = r.get("at_rest")
    if rest:
        writes = ", ".join(f"{k} {v:.0f}" for k, v in sorted((r.get("idle_writes") or {}).items())) or "none"
        at_rest.append(
            f"| {r['name']} | {rest['reconciles']:.0f} | {rest['cpu_seconds']:.2f} | {rest['rss_mib']:.1f} | {writes} |"
        )

lone = []
for r in results:
    l = r.get("lone")
    if l:
        x = l["reaction"]
        steps = ", ".join(f"{name} {fmt(st['p50'])} / {fmt(st['p99'])}" for name, st in l["steps"])
        lone.append(
            f"| {r['name']} | {l['rounds']} ({x['n']} moves) | {fmt(x['p50'])} / {fmt(x['p95'])} / "
            f"{fmt(x['p99'])} / {fmt(x['max'])} | {steps} |"
        )

baselines = []
for r in results:
    for b in r.get("baselines", []):
        ours = r["total"]["max"]
        if b["recovered_after"] is None:
            got = f"not running elsewhere within {b['bound_seconds']} s"
            ratio = f"> {b['bound_seconds'] / ours:.0f}×" if ours else "—"
        else:
            got = f"{b['recovered_after']:.1f} s"
            ratio = f"{b['recovered_after'] / ours:.1f}×"
        baselines.append(f"| {r['name']} | {b['workload']} | {got} | {b['note']} | {fmt(ours)} s | {ratio} |")

table = "\n".join(
    [
        "| scenario | failed over | declared down after (s) | detection p50 / p99 (s) | reaction p50 / p99 (s) "
        "| total p50 / p95 / p99 / max (s) | controller: all done (s) | floor (s) | ratio | API requests per failover "
        "| peak RSS (MiB) | CPU in failover (s) | caches synced (s) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        *rows,
    ]
)
base_table = "\n".join(
    [
        "| scenario | baseline workload | running elsewhere with its volume after | why | kube-failover, same run (max) | ratio |",
        "|---|---|---|---|---|---|",
        *baselines,
    ]
)

md = root / "BENCHMARKS.md"
text = md.read_text() if md.exists() else ""
start, end = "<!-- results:start -->", "<!-- results:end -->"
trace = ""
if (root / "docs/bench/storm-trace.svg").exists():
    trace = (
        "\n\nThe storm, move by move (`--trace`): one row per move from the moment the heartbeats "
        "stopped, each bar coloured by the step it waited for.\n\n"
        "![the storm's moves, step by step](docs/bench/storm-trace.svg)"
    )
if (root / "docs/bench/large-trace.svg").exists():
    trace += (
        "\n\nThe large storm (N=100/M=1,000, a third of the nodes killed), move by move, from its last run.\n\n"
        "![the large storm's moves, step by step](docs/bench/large-trace.svg)"
    )
resource_table = "\n".join(
    [
        "| scenario | API requests per failover | by verb and resource, most first |",
        "|---|---|---|",
        *by_resource,
    ]
)
rest_table = "\n".join(
    [
        "| scenario | reconciles in 20 s at rest | CPU (s) | RSS at rest (MiB) | writes in those 20 s |",
        "|---|---|---|---|---|",
        *at_rest,
    ]
)
lone_table = "\n".join(
    [
        "| scenario | lone failovers, one after the other | reaction p50 / p95 / p99 / max (s) "
        "| each step from the move's start, p50 / p99 (s) |",
        "|---|---|---|---|",
        *lone,
    ]
)
block = f"{start}\nMachine: {machine()}.\n\n{table}\n\n{resource_table}\n\n{rest_table}\n\n{lone_table}\n\n{base_table}\n\n![failover latency](docs/bench/latency.png){trace}\n{end}"
if start in text and end in text:
    text = text[: text.index(start)] + block + text[text.index(end) + len(end):]
else:
    text = text + "\n" + block + "\n"
md.write_text(text)

try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:
    print("matplotlib missing: pip install -r lab/bench/requirements.txt", file=sys.stderr)
    sys.exit(0)

fig, ax = plt.subplots(figsize=(9, 4.5))
for r in results:
    xs = sorted(r["raw_totals"])
    if not xs:
        continue
    ys = [(i + 1) / len(xs) for i in range(len(xs))]
    ax.step(xs, ys, where="post", marker="o" if len(xs) < 20 else None, label=f"{r['name']} ({len(xs)} failovers)")
ax.set_xlabel("seconds from heartbeat stop to instance online (endpoint published)")
ax.set_ylabel("fraction of instances")
ax.set_title("kube-failover: failover latency distribution (CDF)")
ax.grid(True, alpha=0.3)
ax.legend(loc="lower right", fontsize=8)
fig.tight_layout()
fig.savefig(root / "docs/bench/latency.png", dpi=110)
print("wrote BENCHMARKS.md and docs/bench/latency.png")
