"""Turn query rows into CSV (pattern 6, step 'csv' of orders/daily-sales-export.toml).

Input (JSON on stdin, and in the file named by $WEIR_INPUT):
    {"rows": [{"id": 1, "total": 9.5, ...}, ...], "columns": ["id", "total", ...]}
Output (JSON written to the file named by $WEIR_OUTPUT):
    {"csv": "id,total\\r\\n1,9.5\\r\\n", "row_count": 1, "total": 9.5}
"""

import csv
import io
import json
import os
import sys
from decimal import Decimal


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


def main():
    data = read_input() or {}
    rows = data.get("rows") or []
    columns = data.get("columns") or (list(rows[0]) if rows else [])
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    total = Decimal(0)
    for row in rows:
        writer.writerow({key: "" if row.get(key) is None else row.get(key) for key in columns})
        if row.get("total") is not None:
            total += Decimal(str(row["total"]))
    write_output({"csv": out.getvalue(), "row_count": len(rows), "total": str(total)})


if __name__ == "__main__":
    main()
