"""Writes bench/run's results into README.md between the bench markers.

Usage: report.py RESULTS.jsonl TARGET_DIR README.md
"""

import io
import json
import os
import platform
import subprocess
import sys
import zipfile

results_path, target_dir, readme_path = sys.argv[1:4]
rows = [json.loads(line) for line in open(results_path) if line.strip()]

# The targets of the issue.
INIT_MS, FIRST_MS, WARM_MS, RSS_MB = 20.0, 40.0, 1.0, 24.0
ARM_MB, ZIP_MB = 8.0, 3.5
# Against the floor measured alternately in the same run (gatehouse-floor): ratios for init,
# first response and peak RSS; a margin for warm p50.
RATIO, WARM_MARGIN_MS = 1.10, 0.2
MB = 1024 * 1024


def sizes(path):
    """(bootstrap bytes, zip bytes) of a bootstrap as Lambda gets it, or None."""
    if not os.path.isfile(path):
        return None
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        info = zipfile.ZipInfo("bootstrap")
        info.external_attr = 0o755 << 16
        info.compress_type = zipfile.ZIP_DEFLATED
        with open(path, "rb") as f:
            z.writestr(info, f.read(), compresslevel=9)
    return os.path.getsize(path), len(buf.getvalue())


def machine():
    model = "unknown"
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem_kib = next(int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemTotal"))
    rustc = subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip()
    return (f"{os.cpu_count()} CPUs (`nproc` {subprocess.run(['nproc'], capture_output=True, text=True).stdout.strip()}), "
            f"{model}, {mem_kib / 1024 / 1024:.1f} GiB memory, {platform.system()} {platform.machine()}, {rustc}")


def fmt_size(s):
    return "not built" if s is None else f"{s[0] / MB:.2f} / {s[1] / MB:.2f}"


def other(r, when, spec):
    """Calls to any other AWS service (EventBridge's PutEvents, for the publisher), if any."""
    n = r.get(f"{when}_other_calls", 0)
    return f" (+ {n:{spec}} EventBridge)" if n else ""


misses = []
lines = [
    "<!-- bench:start -->",
    f"Measured by `bench/run` on {machine()}; machine shared with other work, so expect noise. MB are 2^20 bytes.",
    "",
    "| function | event (status) | arm64 bootstrap / zip (MB) | x86_64 bootstrap / zip (MB) "
    "| init p50 (ms) | first response p50 (ms), without moto | peak RSS (MB) | warm p50 / p99 (ms) "
    "| warm without moto p50 / p99 (ms) "
    "| DynamoDB + Secrets Manager calls, cold | same, warm (per invocation) |",
    "|---|---|---|---|---|---|---|---|---|---|---|",
]
for r in rows:
    f = r["function"]
    arm = sizes(os.path.join(target_dir, "lambda", f, "bootstrap"))
    host = sizes(os.path.join(target_dir, "release", f))
    if arm is not None:
        if arm[0] / MB > ARM_MB:
            misses.append(f"`{f}`: arm64 bootstrap {arm[0] / MB:.2f} MB, {arm[0] / MB - ARM_MB:.2f} MB over {ARM_MB:g} MB")
        if arm[1] / MB > ZIP_MB:
            misses.append(f"`{f}`: arm64 zip {arm[1] / MB:.2f} MB, {arm[1] / MB - ZIP_MB:.2f} MB over {ZIP_MB:g} MB")
    if "event" not in r:
        lines.append(f"| `{f}` | no event in `events/` | {fmt_size(arm)} | {fmt_size(host)} | | | | | | | |")
        continue
    event = os.path.basename(r["event"]).removesuffix(".json")
    if "error" in r:
        lines.append(f"| `{f}` | `{event}`: {r['error']} | {fmt_size(arm)} | {fmt_size(host)} | | | | | | | |")
        misses.append(f"`{f}`: not measured ({r['error']})")
        continue
    rss = max(r["cold_rss_mb_max"], r["warm_rss_mb"])
    lines.append(
        f"| `{f}` | `{event}` ({r['cold_status']}) | {fmt_size(arm)} | {fmt_size(host)} "
        f"| {r['init_ms_p50']:.1f} | {r['first_response_ms_p50']:.1f}, {r['first_response_own_ms_p50']:.1f} | {rss:.1f} "
        f"| {r['warm_ms_p50']:.3f} / {r['warm_ms_p99']:.3f} "
        f"| {r['warm_own_ms_p50']:.3f} / {r['warm_own_ms_p99']:.3f} "
        f"| {r['cold_dynamodb_calls']:g} + {r['cold_secrets_calls']:g}{other(r, 'cold', 'g')} "
        f"| {r['warm_dynamodb_calls']:.2f} + {r['warm_secrets_calls']:.2f}{other(r, 'warm', '.2f')} |"
    )
    checks = [
        (r["init_ms_p50"], INIT_MS, "init p50", "ms"),
        (r["first_response_ms_p50"], FIRST_MS, "first response p50", "ms"),
        (r["warm_ms_p50"], WARM_MS, "warm p50", "ms"),
        (r["warm_own_ms_p50"], WARM_MS, "warm p50 without the time waiting on moto", "ms"),
        (rss, RSS_MB, "peak RSS", "MB"),
        (r["warm_dynamodb_calls"], 2.0, "warm DynamoDB calls per invocation", ""),
        (r["warm_secrets_calls"], 0.0, "warm Secrets Manager calls per invocation", ""),
    ]
    for value, limit, what, unit in checks:
        if value > limit:
            why = ""
            if what == "first response p50":
                why = (f": {value - r['first_response_own_ms_p50']:.1f} ms of it waiting on moto "
                       f"({r['cold_dynamodb_calls']:g} DynamoDB and {r['cold_secrets_calls']:g} "
                       "Secrets Manager calls)")
            if what == "warm p50" and r["warm_own_ms_p50"] <= limit:
                why = (f": waiting on moto for its {r['warm_dynamodb_calls']:g} DynamoDB call(s) per "
                       f"invocation; Gatehouse's own time is {r['warm_own_ms_p50']:.3f} ms")
            misses.append(f"`{f}`: {what} {value:.3g} {unit}, {value - limit:.3g} {unit} over "
                          f"{limit:g} {unit}{why}".replace("  ", " ").replace(" ,", ","))

lines += [
    "",
    "Against the floor: `gatehouse-floor` (bench/floor; `gatehouse-floor-events` for "
    "`events-publisher`, which also replays `PutEvents`), a minimal Rust Lambda that replays the "
    "function's own AWS calls for the same event (recorded through the counting proxy: same "
    "operations, keys, conditions and payloads) and does nothing else, spawned and invoked "
    "alternately with the function in the same run. The floor's figures are this machine's "
    "reference at the moment of the run; the ratios are what a change to Gatehouse moves.",
    "",
    "| function | init: function / floor (ms), ratio | first response (ms), ratio | peak RSS (MB), ratio "
    "| warm p50 (ms), function − floor | warm without moto p50 (ms), function − floor |",
    "|---|---|---|---|---|---|",
]
for r in rows:
    fl = r.get("floor")
    if not fl or "error" in r:
        continue
    f = r["function"]
    rss = max(r["cold_rss_mb_max"], r["warm_rss_mb"])
    frss = max(fl["cold_rss_mb_max"], fl["warm_rss_mb"])
    ratio = lambda a, b: a / b if b else float("inf")
    init_r = ratio(r["init_ms_p50"], fl["init_ms_p50"])
    first_r = ratio(r["first_response_ms_p50"], fl["first_response_ms_p50"])
    rss_r = ratio(rss, frss)
    warm_d = r["warm_ms_p50"] - fl["warm_ms_p50"]
    own_d = r["warm_own_ms_p50"] - fl["warm_own_ms_p50"]
    lines.append(
        f"| `{f}` | {r['init_ms_p50']:.1f} / {fl['init_ms_p50']:.1f}, {init_r:.2f}× "
        f"| {r['first_response_ms_p50']:.1f} / {fl['first_response_ms_p50']:.1f}, {first_r:.2f}× "
        f"| {rss:.1f} / {frss:.1f}, {rss_r:.2f}× "
        f"| {r['warm_ms_p50']:.3f} − {fl['warm_ms_p50']:.3f} = {warm_d:+.3f} "
        f"| {r['warm_own_ms_p50']:.3f} − {fl['warm_own_ms_p50']:.3f} = {own_d:+.3f} |"
    )
    for value, what in [(init_r, "init"), (first_r, "first response"), (rss_r, "peak RSS")]:
        if value > RATIO:
            miss = f"`{f}`: {what} {value:.2f}× the floor, over {RATIO:.2f}×"
            # The profile of an RSS miss: which part of the resident set is larger.
            split = ("cold_rss_file_mb_p50", "cold_rss_anon_mb_p50")
            if what == "peak RSS" and all(k in r and k in fl for k in split):
                dfile = r[split[0]] - fl[split[0]]
                danon = r[split[1]] - fl[split[1]]
                miss += (
                    f" (file-backed pages, the binary's: {dfile:+.1f} MB; "
                    f"anonymous, heap and stacks: {danon:+.1f} MB)"
                )
            misses.append(miss)
    if warm_d > WARM_MARGIN_MS:
        misses.append(f"`{f}`: warm p50 {warm_d:.3f} ms above the floor, over {WARM_MARGIN_MS:g} ms")

lines += [
    "",
    f"Targets against the floor: init, first response and peak RSS ≤ {RATIO:.2f}× the floor's, "
    f"warm p50 ≤ the floor's + {WARM_MARGIN_MS:g} ms. Absolute targets: init ≤ {INIT_MS:g} ms and first response ≤ {FIRST_MS:g} ms (medians over "
    f"{rows[0].get('cold_spawns', '?') if rows else '?'} spawns); warm p50 ≤ {WARM_MS:g} ms "
    f"(over {rows[0].get('warm_invocations', '?') if rows else '?'} invocations of one process, "
    f"no platform call in these events); peak RSS ≤ {RSS_MB:g} MB; stripped arm64 bootstrap ≤ "
    f"{ARM_MB:g} MB and zip ≤ {ZIP_MB:g} MB; warm invocations make no Secrets Manager call and "
    "at most two DynamoDB calls.",
    "",
]
if misses:
    lines.append("Missed:")
    lines.append("")
    lines += [f"- {m}" for m in misses]
else:
    lines.append("Every target is met.")
lines.append("<!-- bench:end -->")
table = "\n".join(lines)

text = open(readme_path).read()
start, end = "<!-- bench:start -->", "<!-- bench:end -->"
if start in text and end in text:
    before = text[: text.index(start)]
    after = text[text.index(end) + len(end):]
    text = before + table + after
else:
    sys.exit(f"{readme_path} has no {start} ... {end} markers")
open(readme_path, "w").write(text)
print(table)
