"""Renders releases with Helm's Go SDK (helm-python-sdk) in one process,
for `kdeploy bench`. Reads {"chart": DIR, "releases": [{"name",
"namespace", "values"}], "runs": N} on stdin; renders them all N times;
writes {"ms": the median loop's time, "texts": [one release's manifests]}
on stdout. Only the render loops are timed: one is too noisy to compare."""
import json
import sys
import time

try:
    from helm_python.chart import Chart
except ImportError:
    sys.exit("helm-python-sdk is not installed (pip install helm-python-sdk)")

request = json.load(sys.stdin)
chart = Chart.load(request["chart"])
times = []
for _ in range(max(1, request.get("runs", 1))):
    outputs = []
    start = time.perf_counter()
    for r in request["releases"]:
        outputs.append(
            chart.render(r["values"], name=r["name"], namespace=r["namespace"], is_install=True)
        )
    times.append((time.perf_counter() - start) * 1000)
ms = sorted(times)[len(times) // 2]
texts = [
    "\n---\n".join(
        text
        for path, text in sorted(rendered.items())
        if text.strip() and not path.endswith("NOTES.txt")
    )
    for rendered in outputs
]
json.dump({"ms": ms, "texts": texts}, sys.stdout)
