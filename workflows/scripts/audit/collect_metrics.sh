#!/usr/bin/env bash
# Collect system metrics as JSON (pattern 9, step 'collect' of ops/system-audit.toml).
#
# Output (JSON written to $WEIR_OUTPUT, or printed when run by hand):
#   {"hostname": "db-1", "collected_at": "2024-11-05T06:30:00Z", "cpus": 4,
#    "load": {"1m": 0.5, "5m": 0.4, "15m": 0.3}, "memory": {"total_kb": ..., "available_kb": ..., "used_pct": 41},
#    "disks": [{"mount": "/", "used_pct": 63}, ...]}
# Reads no input. Linux only (/proc).
set -euo pipefail

json_string() {  # print $1 as a JSON string
    local s=${1//\\/\\\\}
    s=${s//\"/\\\"}
    printf '"%s"' "$s"
}

host=$(hostname 2>/dev/null || uname -n)
now=$(date -u +%Y-%m-%dT%H:%M:%SZ)
cpus=$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1)
read -r load1 load5 load15 _ < /proc/loadavg
mem_total=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)
mem_avail=$(awk '/^MemAvailable:/ {print $2}' /proc/meminfo)
mem_used_pct=$(( (mem_total - mem_avail) * 100 / mem_total ))

# Real filesystems only: skip pseudo ones and lines whose use% is not a number.
disks=$(df -P -k -x tmpfs -x devtmpfs -x squashfs -x overlay 2>/dev/null || df -P -k)
disks_json=$(printf '%s\n' "$disks" | awk '
    NR > 1 && $5 ~ /^[0-9]+%$/ {
        mount = $6; gsub(/\\/, "\\\\", mount); gsub(/"/, "\\\"", mount)
        pct = $5; sub(/%/, "", pct)
        printf "%s{\"mount\": \"%s\", \"used_pct\": %d}", sep, mount, pct
        sep = ", "
    }')

result=$(printf '{"hostname": %s, "collected_at": "%s", "cpus": %d, "load": {"1m": %s, "5m": %s, "15m": %s}, "memory": {"total_kb": %d, "available_kb": %d, "used_pct": %d}, "disks": [%s]}' \
    "$(json_string "$host")" "$now" "$cpus" "$load1" "$load5" "$load15" \
    "$mem_total" "$mem_avail" "$mem_used_pct" "$disks_json")

if [[ -n "${WEIR_OUTPUT:-}" ]]; then
    printf '%s\n' "$result" > "$WEIR_OUTPUT"
else
    printf '%s\n' "$result"
fi
