"""The peer side of scripts/bench-ical.sh: python icalendar parse (Calendar.from_ical) and write (to_ical)
throughput on the same file, best of ROUNDS.

usage: icalendar-peer.py FILE [ROUNDS]
"""
import sys, time
from icalendar import Calendar
data = open(sys.argv[1], "rb").read()
best_p = best_w = 1e9
for _ in range(int(sys.argv[2]) if len(sys.argv) > 2 else 1):
    t = time.perf_counter(); cal = Calendar.from_ical(data); best_p = min(best_p, time.perf_counter() - t)
    t = time.perf_counter(); out = cal.to_ical(); best_w = min(best_w, time.perf_counter() - t)
print(f"parse_mb_s={len(data)/1e6/best_p:.2f}")
print(f"write_mb_s={len(out)/1e6/best_w:.2f}")
