#!/usr/bin/env python3
"""Writes a deterministic multi-MB iCalendar file shaped like a busy shared calendar export:
VTIMEZONEs, single and recurring events with overrides, attendees, alarms, folded non-ASCII text, X- props.

usage: gen-ical.py OUT [EVENTS]   (default 5000 series, about 8.5 MB)
"""
import random
import sys

out_path = sys.argv[1]
series_count = int(sys.argv[2]) if len(sys.argv) > 2 else 5000
rng = random.Random(20261121)


def fold(line: str) -> bytes:
    data = line.encode()
    parts, first = [], True
    while True:
        budget = 75 if first else 74
        if len(data) <= budget:
            parts.append(data)
            break
        cut = budget
        while (data[cut] & 0xC0) == 0x80:
            cut -= 1
        parts.append(data[:cut])
        data, first = data[cut:], False
    return b"\r\n ".join(parts) + b"\r\n"


ZONES = ["Europe/Berlin", "America/New_York", "Asia/Tokyo", "W. Europe Standard Time"]
WORDS = ["planning", "review", "Kaffee", "réunion", "定例会議", "sync", "Übergabe", "retro", "demo", "1:1",
         "budget", "hiring", "Launch 🚀", "design", "ops", "café"]
lines = ["BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//calbridge bench//generated//EN", "CALSCALE:GREGORIAN",
         "X-WR-CALNAME:Benchmark calendar"]
for tz in ZONES:
    lines += ["BEGIN:VTIMEZONE", f"TZID:{tz}", "BEGIN:STANDARD", "DTSTART:19701025T030000",
              "TZOFFSETFROM:+0200", "TZOFFSETTO:+0100", "RRULE:FREQ=YEARLY;BYMONTH=10;BYDAY=-1SU", "END:STANDARD",
              "BEGIN:DAYLIGHT", "DTSTART:19700329T020000", "TZOFFSETFROM:+0100", "TZOFFSETTO:+0200",
              "RRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=-1SU", "END:DAYLIGHT", "END:VTIMEZONE"]


def event(uid, day, hour, tz, recurring, rid=None):
    words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 6)))
    desc = "\\n".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 15))) for _ in range(rng.randint(1, 4)))
    ev = ["BEGIN:VEVENT", f"UID:{uid}", "DTSTAMP:20261101T120000Z"]
    start = f"2026{1 + day // 28:02d}{1 + day % 28:02d}T{hour:02d}{rng.choice([0, 15, 30, 45]):02d}00"
    end = f"2026{1 + day // 28:02d}{1 + day % 28:02d}T{hour + 1:02d}0000"
    if rid:
        ev.append(f"RECURRENCE-ID;TZID={tz}:{rid}")
    ev += [f"DTSTART;TZID={tz}:{start}", f"DTEND;TZID={tz}:{end}", f"SUMMARY:{words}",
           f"DESCRIPTION:{desc}\\, with details\\; see notes", f"LOCATION:Room {rng.randint(1, 40)}\\, floor {rng.randint(1, 9)}",
           "STATUS:CONFIRMED", "TRANSP:OPAQUE", f"SEQUENCE:{rng.randint(0, 4)}",
           "ORGANIZER;CN=Organizer Name:mailto:organizer@example.com"]
    for a in range(rng.randint(0, 6)):
        ps = rng.choice(["ACCEPTED", "DECLINED", "TENTATIVE", "NEEDS-ACTION"])
        ev.append(f"ATTENDEE;CUTYPE=INDIVIDUAL;ROLE=REQ-PARTICIPANT;PARTSTAT={ps};RSVP=TRUE;CN=\"Person, {a}\";X-NUM-GUESTS=0:mailto:person{a}@example.com")
    if recurring and not rid:
        ev.append(f"RRULE:FREQ=WEEKLY;BYDAY=MO,WE,FR;COUNT={rng.randint(10, 60)}")
        ev.append(f"EXDATE;TZID={tz}:" + ",".join(f"2026{m:02d}1{d}T{hour:02d}0000" for m, d in [(3, 1), (4, 2)]))
    ev += ["X-MICROSOFT-CDO-BUSYSTATUS:BUSY", f"X-CUSTOM-ID:{rng.getrandbits(64):016x}",
           "BEGIN:VALARM", "ACTION:DISPLAY", "DESCRIPTION:Reminder", "TRIGGER:-PT15M", "END:VALARM", "END:VEVENT"]
    return ev


for i in range(series_count):
    tz = rng.choice(ZONES)
    day, hour = rng.randint(0, 300), rng.randint(7, 18)
    recurring = rng.random() < 0.3
    uid = f"bench-{i:06d}@example.com"
    lines += event(uid, day, hour, tz, recurring)
    if recurring:
        for k in range(rng.randint(0, 3)):
            lines += event(uid, day, hour, tz, False, rid=f"2026{1 + k:02d}{10 + k:02d}T{hour:02d}0000")
lines.append("END:VCALENDAR")
with open(out_path, "wb") as f:
    for line in lines:
        f.write(fold(line))
