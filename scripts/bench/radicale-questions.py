"""What each question a CalDAV client can ask costs Radicale, on one calendar of N events (default
storage, default configuration, loopback): the floor under any client's incremental sync.

usage: radicale-questions.py [N] [ROUNDS]   (run with the project's venv: .venv/bin/python)

Seeds N events straight into the storage folder (as scripts/bench-vdirsyncer.sh does), warms Radicale's
item cache with one full sync-collection REPORT, then times, ROUNDS times each, quiet and with 10
events edited through PUT before each round:
  - sync-collection REPORT with the last token (what calbridge sends: the only answer that says *what*
    changed without listing every item);
  - PROPFIND Depth 1 with getetag (what vdirsyncer lists every run);
  - PROPFIND Depth 0 with getctag (says only *whether* something changed);
  - PROPFIND Depth 0 with getlastmodified (the collection date calbridge's probe reads).
Prints the median of each in ms. Nothing here depends on calbridge.
"""
import base64
import datetime
import http.client
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

N = int(sys.argv[1]) if len(sys.argv) > 1 else 10000
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 5

root = tempfile.mkdtemp(prefix="calbridge-radicale-questions-")
sock = socket.socket()
sock.bind(("127.0.0.1", 0))
port = sock.getsockname()[1]
sock.close()
with open(f"{root}/users", "w") as f:
    f.write("bench:bench\n")
with open(f"{root}/radicale.conf", "w") as f:
    f.write(
        f"[server]\nhosts = 127.0.0.1:{port}\n[auth]\ntype = htpasswd\nhtpasswd_filename = {root}/users\n"
        f"htpasswd_encryption = plain\ndelay = 0\n[rights]\ntype = owner_only\n[storage]\n"
        f"filesystem_folder = {root}/collections\n[logging]\nlevel = warning\n"
    )
collection = f"{root}/collections/collection-root/bench/work"
os.makedirs(collection)
with open(f"{collection}/.Radicale.props", "w") as f:
    f.write('{"tag": "VCALENDAR"}')
today = datetime.date.today()


def event(n, summary):
    day = (today + datetime.timedelta(days=1 + n % 80)).strftime("%Y%m%d")
    return (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//calbridge bench//EN\r\nBEGIN:VEVENT\r\n"
        f"UID:bench-{n}\r\nDTSTAMP:20260101T000000Z\r\nDTSTART:{day}T{8 + n % 9:02}0000Z\r\n"
        f"DURATION:PT1H\r\nSUMMARY:{summary}\r\nLOCATION:Room {n % 40}\r\n"
        f"DESCRIPTION:Benchmark event number {n}\\, seeded for the comparison.\r\n"
        "END:VEVENT\r\nEND:VCALENDAR\r\n"
    )


for n in range(N):
    with open(f"{collection}/bench-{n}.ics", "w") as f:
        f.write(event(n, f"Event {n}"))

server = subprocess.Popen(
    [sys.executable, "-m", "radicale", "--config", f"{root}/radicale.conf"],
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
)
AUTH = "Basic " + base64.b64encode(b"bench:bench").decode()


def ask(method, body, depth, path="/bench/work/", kind="application/xml; charset=utf-8"):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    started = time.perf_counter()
    connection.request(
        method, path, body=body, headers={"Authorization": AUTH, "Depth": depth, "Content-Type": kind}
    )
    response = connection.getresponse()
    text = response.read().decode()
    elapsed = time.perf_counter() - started
    if response.status not in (201, 204, 207):
        raise SystemExit(f"{method} {path}: {response.status} {text[:300]}")
    return elapsed, text


def sync_collection(token):
    token = f"<D:sync-token>{token}</D:sync-token>" if token else "<D:sync-token/>"
    elapsed, text = ask(
        "REPORT",
        '<?xml version="1.0" encoding="utf-8"?><D:sync-collection xmlns:D="DAV:">'
        f"{token}<D:sync-level>1</D:sync-level><D:prop><D:getetag/></D:prop></D:sync-collection>",
        "1",
    )
    return elapsed, re.search(r"sync-token>([^<]+)<", text).group(1)


def propfind(prop, depth):
    return ask(
        "PROPFIND",
        '<?xml version="1.0" encoding="utf-8"?><D:propfind xmlns:D="DAV:" '
        f'xmlns:CS="http://calendarserver.org/ns/"><D:prop><{prop}/></D:prop></D:propfind>',
        depth,
    )[0]


try:
    started = time.monotonic()
    while True:
        try:
            socket.create_connection(("127.0.0.1", port)).close()
            break
        except OSError:
            if time.monotonic() - started > 30:
                raise SystemExit("Radicale did not start")
            time.sleep(0.05)
    warm, token = sync_collection(None)
    print(f"events={N} rounds={ROUNDS} warm-up REPORT (cache build, not measured): {warm * 1000:.0f} ms")

    def edit(round_no):
        for n in range(10):
            ask("PUT", event(n, f"Edited {round_no}"), "0", path=f"/bench/work/bench-{n}.ics",
                kind="text/calendar")

    def measure(label, edits):
        global token
        times = {"REPORT sync-collection with token": [], "PROPFIND depth 1 getetag": [],
                 "PROPFIND depth 0 getctag": [], "PROPFIND depth 0 getlastmodified": []}
        for round_no in range(ROUNDS):
            if edits:
                edit(round_no)
            elapsed, token = sync_collection(token)
            times["REPORT sync-collection with token"].append(elapsed)
            times["PROPFIND depth 1 getetag"].append(propfind("D:getetag", "1"))
            times["PROPFIND depth 0 getctag"].append(propfind("CS:getctag", "0"))
            times["PROPFIND depth 0 getlastmodified"].append(propfind("D:getlastmodified", "0"))
        for question, values in times.items():
            print(f"{label:<12} {question:<36} median {statistics.median(values) * 1000:7.0f} ms  "
                  f"(min {min(values) * 1000:.0f}, max {max(values) * 1000:.0f})")

    measure("quiet", edits=False)
    # Each round edits 10 events through PUT first, so every REPORT has changes to report (and pays
    # Radicale's cache update of the edited items, as a client's incremental sync does).
    measure("after edits", edits=True)
finally:
    server.terminate()
    server.wait()
    shutil.rmtree(root, ignore_errors=True)
