"""Draws the benchmark plots from the figures `tidemark-bench ...` wrote.

usage: bench_plot.py FIGURES_DIR
Reads FIGURES_DIR/{merge,cdc,overhead,scale}.json (whichever exist) and writes PNGs beside
them: s1_incremental.png, s2_merge_memory.png, s3_cdc.png, s4_overhead.png, s7_scale.png.
Run by `tidemark-bench all` with the peer's virtualenv (matplotlib).
"""
import json
import statistics
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

TM, PEER = "#1f6feb", "#d1242f"


def med(xs):
    return statistics.median_low(xs) if xs else float("nan")


def load(d, name):
    p = d / f"{name}.json"
    return json.loads(p.read_text()) if p.exists() else None


def footer(fig, machine):
    fig.text(0.99, 0.01, f"{machine['cores']} cores, commit {machine['commit']}",
             ha="right", va="bottom", fontsize=7, color="gray")


def s1(d, r):
    pts = r["s1"]
    files = [p["files"] for p in pts]
    fig, ax = plt.subplots(figsize=(6.4, 4))
    sides = [("tidemark", TM, "tidemark copy-on-write (engine)"), ("peer", PEER, "peer (seed_pipeline.py)")]
    if all(p.get("tidemark_dv") for p in pts):
        sides.insert(1, ("tidemark_dv", "#2ca02c", "tidemark merge-on-read, deletion vectors (engine)"))
    for who, color, label in sides:
        ys = [med([s["engine_s"] for s in p[who]]) for p in pts]
        lo = [y - min(s["engine_s"] for s in p[who]) for y, p in zip(ys, pts)]
        hi = [max(s["engine_s"] for s in p[who]) - y for y, p in zip(ys, pts)]
        ax.errorbar(files, ys, yerr=[lo, hi], marker="o", color=color, label=label, capsize=3)
    ax.set_xlabel("files in the source (one new daily file; the rest already loaded)")
    ax.set_ylabel("run time, s (median, min–max)")
    ax.set_title(f"S1: one new file of {r['rows_per_file']:,} rows vs source size")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend()
    footer(fig, r["machine"])
    fig.tight_layout()
    fig.savefig(d / "s1_incremental.png", dpi=120)


def s2(d, r):
    p = r["s2"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(8, 3.6))
    t = med([s["engine_s"] for s in p["tidemark"]])
    q = med([s["engine_s"] for s in p["peer"]])
    names, values, colors = ["tidemark", "peer"], [t, q], [TM, PEER]
    if p.get("tidemark_dv"):
        names.insert(1, "tidemark\nmerge-on-read")
        values.insert(1, med([s["engine_s"] for s in p["tidemark_dv"]]))
        colors.insert(1, "#2ca02c")
    a.bar(names, values, color=colors)
    a.set_ylabel("engine time, s (median)")
    a.set_title(f"S2: merge into {p['table_rows_before'] / 1e6:.1f} M rows")
    for i, v in enumerate(values):
        a.text(i, v, f"{v:.2f} s", ha="center", va="bottom")
    tr = med([s["peak_rss_mib"] for s in p["tidemark"]])
    pr = med([s["peak_rss_mib"] for s in p["peer"]])
    b.bar(["tidemark worker", "peer"], [tr, pr], color=[TM, PEER])
    b.set_ylabel("peak RSS, MiB")
    b.set_title("S5: memory during S2")
    for i, v in enumerate([tr, pr]):
        b.text(i, v, f"{v:.0f}", ha="center", va="bottom")
    footer(fig, r["machine"])
    fig.tight_layout()
    fig.savefig(d / "s2_merge_memory.png", dpi=120)


def s3(d, r):
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for who, color in (("tidemark", TM), ("peer", PEER)):
        ser = [s for s in r["series"] if s["who"] == who]
        ax.plot([s["events"] for s in ser], [s["events_per_s"] for s in ser], marker="o",
                color=color, label=who)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("events applied in one run")
    ax.set_ylabel("events per second (median)")
    ax.set_title(f"S3: Debezium events applied to a {r['rows']:,}-row table")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    footer(fig, r["machine"])
    fig.tight_layout()
    fig.savefig(d / "s3_cdc.png", dpi=120)


def s4(d, r):
    servers = r["servers"]
    fig, axes = plt.subplots(1, len(servers), figsize=(9.5, 3.8), sharex=True)
    if len(servers) == 1:
        axes = [axes]
    for ax, srv in zip(axes, servers):
        variants = []
        for k in srv["kinds"]:
            if k["variant"] not in variants:
                variants.append(k["variant"])
        ys = list(range(len(variants)))
        for off, kind, color in ((-0.2, "empty", plt.cm.Blues(0.5)), (0.2, "1 row", plt.cm.Blues(0.8))):
            vals = [
                next((med(k["wall_ms"]) for k in srv["kinds"] if k["variant"] == v and k["kind"] == kind), 0.0)
                for v in variants
            ]
            ax.barh([y + off for y in ys], vals, height=0.38, color=color, label=f"{kind} run")
        for f in srv["floors"]:
            style = ":" if f["eager_dispatch"] else "-."
            ax.axvline(med(f["wall_ms"]), color="#777777", linestyle=style,
                       label=f"floor, eager dispatch {'on' if f['eager_dispatch'] else 'off'}")
        ax.axvline(80, color=PEER, linestyle="--", label="targets 80 / 110 ms")
        ax.axvline(110, color=PEER, linestyle="--")
        ax.set_yticks(ys)
        ax.set_yticklabels(variants)
        ax.invert_yaxis()
        ax.set_title(f"{srv['server']} server", fontsize=9)
        ax.set_xlabel("ms, end to end (median)")
    axes[-1].legend(fontsize=6, loc="lower right")
    fig.suptitle("S4: orchestration overhead per run")
    footer(fig, r["machine"])
    fig.tight_layout()
    fig.savefig(d / "s4_overhead.png", dpi=120)


def s7(d, r):
    pts = r["points"]
    rows = [p["source_rows"] / 1e6 for p in pts]
    fig, (a, b) = plt.subplots(1, 2, figsize=(8, 3.6))
    for who, color, label in (
        ("tidemark", TM, "tidemark (in batches)"),
        ("tidemark_dv", "#2ca02c", "tidemark, deletion vectors"),
        ("peer", PEER, "peer (seed_pipeline.py)"),
    ):
        xs = [x for x, p in zip(rows, pts) if p.get(who)]
        done = [p for p in pts if p.get(who)]
        if not done:
            continue
        a.plot(xs, [med([s["peak_rss_mib"] for s in p[who]]) for p in done], marker="o", color=color, label=label)
        b.plot(xs, [med([s["engine_s"] for s in p[who]]) for p in done], marker="o", color=color, label=label)
    a.set_xlabel("rows, millions")
    a.set_ylabel("peak RSS, MiB")
    a.set_ylim(bottom=0)
    b.set_xlabel("rows, millions")
    b.set_ylabel("first-load time, s")
    b.set_ylim(bottom=0)
    for ax in (a, b):
        ax.grid(alpha=0.3)
    a.legend(fontsize=7)
    fig.suptitle("S7: a first load of any size")
    footer(fig, r["machine"])
    fig.tight_layout()
    fig.savefig(d / "s7_scale.png", dpi=120)


def main():
    d = Path(sys.argv[1])
    drawn = []
    for name, fns in (("merge", (s1, s2)), ("cdc", (s3,)), ("overhead", (s4,)), ("scale", (s7,))):
        r = load(d, name)
        if r is None:
            continue
        for fn in fns:
            fn(d, r)
            drawn.append(fn.__name__)
    print(f"drew {', '.join(drawn) or 'nothing'} in {d}")


if __name__ == "__main__":
    main()
