"""Check system metrics against thresholds (pattern 9, step 'analyse' of ops/system-audit.toml).

Input (JSON on stdin, and in the file named by $WEIR_INPUT):
    {"metrics": <output of collect_metrics.sh>,
     "thresholds": {"disk_warn_pct": 80, "disk_crit_pct": 95, "mem_crit_pct": 95, "load_per_cpu_warn": 2.0}}
Output (JSON written to the file named by $WEIR_OUTPUT):
    {"findings": [{"severity": "warning", "check": "disk", "message": "..."}],
     "worst": "ok" | "warning" | "critical", "critical": false, "summary": "1 warning"}
"""

import json
import os
import sys

DEFAULTS = {"disk_warn_pct": 80, "disk_crit_pct": 95, "mem_crit_pct": 95, "load_per_cpu_warn": 2.0}
RANK = {"ok": 0, "warning": 1, "critical": 2}


def read_input():
    path = os.environ.get("WEIR_INPUT")
    if path and os.path.exists(path):
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    return json.load(sys.stdin)


def write_output(result):
    path = os.environ.get("WEIR_OUTPUT")
    if path:
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(result, fh)
    else:
        sys.stdout.write(json.dumps(result) + "\n")


def analyse(metrics, limits):
    findings = []
    for disk in metrics.get("disks", []):
        used = disk["used_pct"]
        if used >= limits["disk_crit_pct"]:
            findings.append(("critical", "disk", f"{disk['mount']} is {used}% full"))
        elif used >= limits["disk_warn_pct"]:
            findings.append(("warning", "disk", f"{disk['mount']} is {used}% full"))
    memory = metrics.get("memory", {})
    if memory.get("used_pct", 0) >= limits["mem_crit_pct"]:
        findings.append(("critical", "memory", f"memory is {memory['used_pct']}% used"))
    cpus = max(int(metrics.get("cpus", 1)), 1)
    load = float(metrics.get("load", {}).get("1m", 0))
    if load / cpus >= float(limits["load_per_cpu_warn"]):
        findings.append(("warning", "load", f"load {load:.2f} on {cpus} CPUs"))
    return [{"severity": s, "check": c, "message": m} for s, c, m in findings]


def main():
    data = read_input() or {}
    limits = {**DEFAULTS, **(data.get("thresholds") or {})}
    findings = analyse(data.get("metrics") or {}, limits)
    worst = max((f["severity"] for f in findings), key=RANK.__getitem__, default="ok")
    counts = {s: sum(1 for f in findings if f["severity"] == s) for s in ("critical", "warning")}
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n) or "all checks passed"
    write_output({"findings": findings, "worst": worst, "critical": worst == "critical", "summary": summary})


if __name__ == "__main__":
    main()
