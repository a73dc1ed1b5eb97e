"""Seed a calbridge server with events through its API: N events, a fifth of them weekly series.

usage: seed_events.py BASE_URL API_KEY CALENDAR_ID COUNT [THREADS]
Deterministic (fixed seed), so every backend gets the same data.
"""
import http.client
import json
import random
import sys
import threading
import urllib.parse

base, key, calendar, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
threads = int(sys.argv[5]) if len(sys.argv) > 5 else 8
url = urllib.parse.urlparse(base)


def body(i: int) -> bytes:
    rnd = random.Random(i)
    day = rnd.randrange(0, 365)
    hour = rnd.randrange(7, 19)
    month, dom = 1, day + 1
    lengths = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]
    while dom > lengths[month - 1]:
        dom -= lengths[month - 1]
        month += 1
    start = f"2026-{month:02d}-{dom:02d}T{hour:02d}:00:00"
    end = f"2026-{month:02d}-{dom:02d}T{hour:02d}:45:00"
    event = {
        "calendar_id": calendar,
        "uid": f"bench-{i}",
        "summary": f"Event {i}",
        "location": "Room " + str(rnd.randrange(1, 40)),
        "start": start,
        "end": end,
        "time_zone": "Europe/Berlin",
    }
    if i % 5 == 0:
        event["rrule"] = "FREQ=WEEKLY;COUNT=26"
        event["summary"] = f"Weekly {i}"
    return json.dumps(event).encode()


errors = []


def worker(offset: int) -> None:
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    for i in range(offset, count, threads):
        conn.request("POST", "/v1/calendar/events", body=body(i), headers=headers)
        response = conn.getresponse()
        data = response.read()
        if response.status != 201:
            errors.append((i, response.status, data[:200]))
            return


pool = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
for t in pool:
    t.start()
for t in pool:
    t.join()
if errors:
    print("seeding failed:", errors[:3], file=sys.stderr)
    sys.exit(1)
