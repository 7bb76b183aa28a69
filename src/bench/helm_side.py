"""Renders releases with Helm's Go SDK (helm-python-sdk) in one process,
for `kdeploy bench`. Reads {"chart": DIR, "releases": [{"name",
"namespace", "values"}]} on stdin; writes {"ms": render time, "texts":
[one release's manifests]} on stdout. Only the render loop is timed."""
import json
import sys
import time

try:
    from helm_python.chart import Chart
except ImportError:
    sys.exit("helm-python-sdk is not installed (pip install helm-python-sdk)")

request = json.load(sys.stdin)
chart = Chart.load(request["chart"])
outputs = []
start = time.perf_counter()
for r in request["releases"]:
    outputs.append(
        chart.render(r["values"], name=r["name"], namespace=r["namespace"], is_install=True)
    )
ms = (time.perf_counter() - start) * 1000
texts = [
    "\n---\n".join(
        text
        for path, text in sorted(rendered.items())
        if text.strip() and not path.endswith("NOTES.txt")
    )
    for rendered in outputs
]
json.dump({"ms": ms, "texts": texts}, sys.stdout)
