#!/usr/bin/env python3
"""Differential test of `calbridge ics expand` against python-dateutil, an independent RRULE engine.

    differential_dateutil.py generate OUT_DIR [--seed N] [--count N]
        writes OUT_DIR/cases.ics (one VCALENDAR, one series per case) and OUT_DIR/expected.tsv
        (the occurrences dateutil computes, in the CLI's output format), and OUT_DIR/args (the CLI's
        window and --tz arguments).
    differential_dateutil.py compare EXPECTED ACTUAL
        exits 1 and prints the differing series when the two outputs differ.

Recurrence expansion (RRULE, RDATE, EXDATE, COUNT, UNTIL, BYxxx) is dateutil's `rruleset`. Zone math is the
standard library's zoneinfo (PEP 495: fold=0, which is RFC 5545 §3.3.5's rule for gaps and folds).
Overrides by RECURRENCE-ID (which dateutil does not model) are applied here as RFC 5545 §3.8.4.4 says.
Every place where calbridge deliberately differs from what dateutil yields is listed in
scripts/differential-dateutil-allowed.txt with its RFC reference, and applied here only by that name.
"""
import argparse
import json
import time
import calendar
import datetime as dt
import os
import random
import signal
import sys
from zoneinfo import ZoneInfo

from dateutil.rrule import rrulestr, rruleset

UTC = dt.timezone.utc
FLOAT_TZ = "America/New_York"
WINDOW_FROM = dt.datetime(2010, 1, 1, tzinfo=UTC)
WINDOW_TO = dt.datetime(2032, 1, 1, tzinfo=UTC)
ZONES = ["Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Pacific/Apia", "UTC"]
DAYS = ["MO", "TU", "WE", "TH", "FR", "SA", "SU"]
ALLOWED = set()
ALLOWED_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "differential-dateutil-allowed.txt")


def allowed_differences():
    names = set()
    with open(ALLOWED_FILE, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                names.add(line.split()[0])
    return names


class Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise Timeout()


def fmt_utc(t):
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def fmt_local(t):
    return t.strftime("%Y%m%dT%H%M%S")


def to_utc(naive, zone):
    """A wall-clock time in `zone` → aware UTC, fold=0 (gap: offset before; fold: first occurrence)."""
    return naive.replace(tzinfo=zone, fold=0).astimezone(UTC)


def pick(rng, values, lo, hi):
    return sorted(set(rng.choice(values) for _ in range(rng.randint(lo, hi))))


def signed(rng, lo, hi, neg_chance=0.3):
    n = rng.randint(lo, hi)
    return -n if rng.random() < neg_chance else n


def make_rule(rng, freq, all_day):
    parts = [f"FREQ={freq}"]
    sub_daily = freq in ("HOURLY", "MINUTELY", "SECONDLY")
    interval = rng.choice([1, 1, 1, 2, 3, 4]) if not sub_daily else rng.choice([1, 2, 5, 15, 45, 90])
    if interval != 1:
        parts.append(f"INTERVAL={interval}")
    r = rng.random
    if freq == "YEARLY":
        mode = rng.choice(["month", "monthday", "nth", "weekno", "yearday", "plain", "setpos"])
        if mode == "month":
            parts.append("BYMONTH=" + ",".join(map(str, pick(rng, range(1, 13), 1, 3))))
        elif mode == "monthday":
            parts.append("BYMONTH=" + ",".join(map(str, pick(rng, range(1, 13), 1, 2))))
            parts.append("BYMONTHDAY=" + ",".join(str(signed(rng, 1, 28)) for _ in range(rng.randint(1, 2))))
        elif mode == "nth":
            if r() < 0.6:
                parts.append("BYMONTH=" + ",".join(map(str, pick(rng, range(1, 13), 1, 2))))
                parts.append("BYDAY=" + ",".join(f"{signed(rng, 1, 4)}{rng.choice(DAYS)}" for _ in range(rng.randint(1, 2))))
            else:
                parts.append("BYDAY=" + ",".join(f"{signed(rng, 1, 52)}{rng.choice(DAYS)}" for _ in range(rng.randint(1, 2))))
        elif mode == "weekno":
            parts.append("BYWEEKNO=" + ",".join(str(signed(rng, 1, 52)) for _ in range(rng.randint(1, 2))))
            parts.append("BYDAY=" + ",".join(pick(rng, DAYS, 1, 3)))
            if r() < 0.5:
                parts.append("WKST=" + rng.choice(DAYS))
        elif mode == "yearday":
            parts.append("BYYEARDAY=" + ",".join(str(signed(rng, 1, 365)) for _ in range(rng.randint(1, 3))))
        elif mode == "setpos":
            parts.append("BYMONTH=" + ",".join(map(str, pick(rng, range(1, 13), 1, 3))))
            parts.append("BYDAY=" + ",".join(pick(rng, DAYS, 2, 5)))
            parts.append("BYSETPOS=" + ",".join(str(signed(rng, 1, 3, 0.5)) for _ in range(rng.randint(1, 2))))
    elif freq == "MONTHLY":
        mode = rng.choice(["monthday", "nth", "setpos", "plain", "both"])
        if mode == "monthday":
            parts.append("BYMONTHDAY=" + ",".join(str(signed(rng, 1, 31)) for _ in range(rng.randint(1, 3))))
        elif mode == "nth":
            parts.append("BYDAY=" + ",".join(f"{signed(rng, 1, 5 if r() < 0.2 else 4)}{rng.choice(DAYS)}" for _ in range(rng.randint(1, 2))))
        elif mode == "setpos":
            parts.append("BYDAY=" + ",".join(pick(rng, DAYS, 1, 5)))
            parts.append("BYSETPOS=" + ",".join(str(signed(rng, 1, 4, 0.5)) for _ in range(rng.randint(1, 2))))
        elif mode == "both":
            parts.append("BYDAY=" + rng.choice(DAYS))
            parts.append("BYMONTHDAY=" + ",".join(map(str, range(d0 := rng.choice([1, 8, 13, 15, 22]), d0 + 7))))
        if r() < 0.3:
            parts.append("BYMONTH=" + ",".join(map(str, pick(rng, range(1, 13), 2, 6))))
    elif freq == "WEEKLY":
        if r() < 0.7:
            parts.append("BYDAY=" + ",".join(pick(rng, DAYS, 1, 4)))
        if r() < 0.4:
            parts.append("WKST=" + rng.choice(DAYS))
        if r() < 0.2:
            parts.append("BYMONTH=" + ",".join(map(str, pick(rng, range(1, 13), 3, 8))))
        if r() < 0.15 and any(p.startswith("BYDAY") for p in parts):
            parts.append("BYSETPOS=" + str(signed(rng, 1, 2, 0.5)))
    elif freq == "DAILY":
        if r() < 0.4:
            parts.append("BYDAY=" + ",".join(pick(rng, DAYS, 1, 5)))
        if r() < 0.3:
            parts.append("BYMONTH=" + ",".join(map(str, pick(rng, range(1, 13), 2, 8))))
        if r() < 0.2:
            parts.append("BYMONTHDAY=" + ",".join(str(signed(rng, 1, 28)) for _ in range(rng.randint(1, 4))))
    else:
        if r() < 0.4:
            parts.append("BYHOUR=" + ",".join(map(str, pick(rng, range(0, 24), 2, 8))))
        if freq in ("MINUTELY", "SECONDLY") and r() < 0.4:
            parts.append("BYMINUTE=" + ",".join(map(str, pick(rng, range(0, 60), 2, 10))))
        if freq == "SECONDLY" and r() < 0.4:
            parts.append("BYSECOND=" + ",".join(map(str, pick(rng, range(0, 60), 2, 10))))
        if r() < 0.2:
            parts.append("BYDAY=" + ",".join(pick(rng, DAYS, 2, 5)))
    if not all_day and not sub_daily and r() < 0.15:
        parts.append("BYHOUR=" + ",".join(map(str, pick(rng, range(0, 24), 1, 3))))
        if r() < 0.5:
            parts.append("BYMINUTE=" + ",".join(map(str, pick(rng, [0, 15, 30, 45], 1, 2))))
    return parts


class Case:
    pass


def seed_start(rng, kind):
    year = rng.randint(2010, 2029)
    if rng.random() < 0.5:
        # Near the DST changes of the zones under test (and Apia's skipped day, 2011-12-30).
        month, day = rng.choice([(3, rng.randint(5, 31)), (10, rng.randint(1, 31)), (11, rng.randint(1, 8)),
                                 (4, rng.randint(1, 8)), (9, rng.randint(20, 30)), (12, rng.randint(25, 31))])
        if rng.random() < 0.1:
            year, month, day = 2011, 12, rng.randint(27, 31)
    else:
        month, day = rng.randint(1, 12), rng.randint(1, 28)
    if kind == "date":
        return dt.datetime(year, month, day)
    hour = rng.choice([0, 1, 1, 2, 2, 2, 3, 9, 12, 17, 23]) if rng.random() < 0.7 else rng.randint(0, 23)
    minute = rng.choice([0, 0, 30, 15, 45])
    return dt.datetime(year, month, day, hour, minute, rng.choice([0, 0, 0, 30]))


def weekno_previous_year_differs(parts):
    """True when dateutil's week count for the previous year (rrule.py `lnumweeks`, computed from the
    current year's length) differs from the ISO-style count RFC 5545 §3.3.10 uses, in a way that changes
    whether the first days of some year match the rule's BYWEEKNO."""
    by = dict(p.split("=", 1) for p in parts)
    if "BYWEEKNO" not in by:
        return False
    weeknos = {int(x) for x in by["BYWEEKNO"].split(",")}
    if -1 in weeknos:
        return False
    wkst = DAYS.index(by.get("WKST", "MO"))
    for year in range(2005, 2036):
        yearweekday = dt.date(year, 1, 1).weekday()
        no1wkst = (7 - yearweekday + wkst) % 7
        if no1wkst >= 4 or no1wkst == 0:
            continue
        yearlen = 366 if calendar.isleap(year) else 365
        lyearweekday = dt.date(year - 1, 1, 1).weekday()
        lno1wkst = (7 - lyearweekday + wkst) % 7
        lyearlen = 366 if calendar.isleap(year - 1) else 365
        if lno1wkst >= 4:
            theirs = 52 + (lyearlen + (lyearweekday - wkst) % 7) % 7 // 4
        else:
            theirs = 52 + (yearlen - no1wkst) % 7 // 4
        # The true count: weeks between week 1 of the previous year and week 1 of this one.
        def week1(y):
            jan1 = dt.date(y, 1, 1)
            off = (jan1.weekday() - wkst) % 7
            return jan1 - dt.timedelta(days=off) if 7 - off >= 4 else jan1 + dt.timedelta(days=7 - off)
        true = (week1(year) - week1(year - 1)).days // 7
        if (theirs in weeknos) != (true in weeknos):
            return True
    return False


def weekno_negative_next_year_differs(parts):
    """True when a negative BYWEEKNO names week 1 of the next year (e.g. -52 in a 52-week year) and that
    week starts in December: dateutil only looks at those December days for BYWEEKNO=1 (rrule.py: "TODO:
    Check -numweeks for next year"), RFC 5545 §3.3.10 counts them in that week."""
    by = dict(p.split("=", 1) for p in parts)
    if "BYWEEKNO" not in by:
        return False
    weeknos = {int(x) for x in by["BYWEEKNO"].split(",")}
    if 1 in weeknos:
        return False
    wkst = DAYS.index(by.get("WKST", "MO"))

    def week1(y):
        jan1 = dt.date(y, 1, 1)
        off = (jan1.weekday() - wkst) % 7
        return jan1 - dt.timedelta(days=off) if 7 - off >= 4 else jan1 + dt.timedelta(days=7 - off)

    for year in range(2005, 2036):
        if week1(year + 1) < dt.date(year + 1, 1, 1):
            weeks = (week1(year + 2) - week1(year + 1)).days // 7
            if -weeks in weeknos:
                return True
    return False


def build_case(rng, idx):
    c = Case()
    c.uid = f"case-{idx:05d}@calbridge-differential"
    c.kind = rng.choice(["zoned"] * 5 + ["floating", "date", "utc"])
    c.zone_name = rng.choice(ZONES[:4]) if c.kind == "zoned" else None
    all_day = c.kind == "date"
    freqs = ["YEARLY", "MONTHLY", "WEEKLY", "DAILY"] * 4 + ([] if all_day else ["HOURLY", "MINUTELY", "SECONDLY"])
    c.freq = rng.choice(freqs)
    c.parts = make_rule(rng, c.freq, all_day)
    c.start_seed = seed_start(rng, "date" if all_day else "time")
    sub_daily = c.freq in ("HOURLY", "MINUTELY", "SECONDLY")
    end = rng.random()
    c.count = c.until = None
    if end < 0.5 or (sub_daily and end < 0.8) or (c.freq == "DAILY" and end >= 0.85):
        c.count = rng.randint(1, 40)
    elif end < 0.85 or sub_daily:
        c.until_delta = dt.timedelta(hours=rng.randint(1, 72)) if sub_daily else dt.timedelta(days=rng.randint(20, 1500))
        c.until = True
    c.duration_kind = rng.choice(["dtend", "duration", "none"]) if not all_day else rng.choice(["dtend", "duration", "none"])
    if all_day:
        c.days = rng.randint(1, 3)
    else:
        c.minutes = rng.choice([0, 15, 30, 60, 90, 120, 24 * 60 + 30, 25 * 60])
    return c


def zone_of(c):
    if c.kind == "zoned":
        return ZoneInfo(c.zone_name)
    if c.kind == "utc":
        return UTC
    return ZoneInfo(FLOAT_TZ)


def rule_text(c, dtstart):
    parts = list(c.parts)
    if c.count is not None:
        parts.append(f"COUNT={c.count}")
    if c.until:
        u = dtstart + c.until_delta
        if c.kind == "date":
            parts.append("UNTIL=" + u.strftime("%Y%m%d"))
        elif c.kind == "floating":
            parts.append("UNTIL=" + fmt_local(u))
        else:
            parts.append("UNTIL=" + fmt_utc(to_utc(u, zone_of(c))).replace("-", "").replace(":", ""))
    return ";".join(parts)


def aware(c, naive):
    """The value dateutil iterates with: aware for zoned/UTC series (so UNTIL compares instants)."""
    if c.kind in ("zoned", "utc"):
        return naive.replace(tzinfo=zone_of(c))
    return naive


def dateutil_set(c, dtstart_naive, with_extras=True):
    rs = rruleset()
    rs.rrule(rrulestr(rule_text(c, dtstart_naive), dtstart=aware(c, dtstart_naive)))
    if with_extras:
        for r in c.rdates:
            rs.rdate(aware(c, r[0]))
        for e in c.exdates:
            if not (exdate_by_instant(c, e) and "exdate-by-instant" in ALLOWED):
                rs.exdate(aware(c, e))
    return rs


def exdate_in_utc(c, e):
    """Which EXDATEs the generator writes as UTC values (the rest use the series' own TZID)."""
    return c.kind == "zoned" and e.minute % 2 == 1


def exdate_by_instant(c, e):
    """EXDATEs the oracle applies by instant itself (see exdate-by-instant in the allowed list)."""
    return c.kind == "zoned"


def position(c, value):
    """Where an occurrence start sits on the timeline (UTC), and its printed form."""
    if c.kind == "date":
        d = value.date() if isinstance(value, dt.datetime) else value
        return to_utc(dt.datetime(d.year, d.month, d.day), ZoneInfo(FLOAT_TZ)), d.isoformat()
    naive = value.replace(tzinfo=None)
    if c.kind == "utc":
        t = naive.replace(tzinfo=UTC)
    else:
        t = to_utc(naive, zone_of(c))
    return t, fmt_utc(t)


def end_of(c, start_naive, length):
    """The end of an instance that starts at `start_naive` (wall clock) with `length`."""
    if c.kind == "date":
        return (start_naive + dt.timedelta(days=length[1])).date().isoformat()
    kind, val = length
    z = zone_of(c)
    if kind == "exact":
        start = position(c, start_naive)[0]
        return fmt_utc(start + val)
    days, exact = val
    if c.kind != "utc":
        # Nominal days count from the start as resolved (a start in a gap has moved past it).
        start_naive = position(c, start_naive)[0].astimezone(z).replace(tzinfo=None)
    local_end = start_naive + dt.timedelta(days=days)
    return fmt_utc(to_utc(local_end, z) + exact if c.kind != "utc" else local_end.replace(tzinfo=UTC) + exact)


def generate(out_dir, seed, count, bench=False):
    rng = random.Random(seed)
    allowed = allowed_differences()
    ALLOWED.update(allowed)
    signal.signal(signal.SIGALRM, _alarm)
    cases, lines, expected = [], [], []
    idx = 0
    attempts = 0
    skipped_allowed = 0
    while len(cases) < count:
        attempts += 1
        idx += 1
        c = build_case(rng, idx)
        if "weekno-previous-year" in allowed and weekno_previous_year_differs(c.parts):
            skipped_allowed += 1
            continue
        if "weekno-negative-next-year" in allowed and weekno_negative_next_year_differs(c.parts):
            skipped_allowed += 1
            continue
        c.rdates, c.exdates, c.overrides = [], [], []
        try:
            signal.setitimer(signal.ITIMER_REAL, 0.5)
            probe = rrulestr(";".join(c.parts), dtstart=c.start_seed)
            first = probe.after(c.start_seed, inc=True)
            if first is None:
                continue
            c.dtstart = first
            head = list(dateutil_set(c, c.dtstart, with_extras=False).xafter(aware(c, c.dtstart), count=25, inc=True))
            signal.setitimer(signal.ITIMER_REAL, 0)
        except (Timeout, ValueError):
            continue
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        if not head or head[0].replace(tzinfo=None) != c.dtstart:
            continue
        head = [h.replace(tzinfo=None) for h in head]
        # EXDATEs among the first instances; RDATEs near them (some as PERIODs).
        for _ in range(rng.choice([0, 0, 1, 2, 3])):
            c.exdates.append(rng.choice(head))
        for _ in range(rng.choice([0, 0, 1, 2])):
            base = rng.choice(head)
            shift = dt.timedelta(days=rng.randint(1, 40)) if c.kind == "date" else dt.timedelta(hours=rng.randint(1, 400), minutes=rng.choice([0, 30]))
            period = None
            if c.kind != "date" and rng.random() < 0.4:
                period = dt.timedelta(minutes=rng.choice([30, 45, 120]))
            c.rdates.append((base + shift, period))
        if c.duration_kind == "none":
            length = ("days", 1) if c.kind == "date" else ("exact", dt.timedelta(0))
        elif c.kind == "date":
            length = ("days", c.days)
        elif c.duration_kind == "dtend":
            local_end = c.dtstart + dt.timedelta(minutes=c.minutes)
            length = ("exact", position(c, local_end)[0] - position(c, c.dtstart)[0])
        else:
            length = ("nominal", (c.minutes // (24 * 60), dt.timedelta(minutes=c.minutes % (24 * 60))))
        c.length = length
        rs = dateutil_set(c, c.dtstart)
        try:
            signal.setitimer(signal.ITIMER_REAL, 2.0)
            instances = []
            for occ in rs:
                naive = occ.replace(tzinfo=None)
                pos, _ = position(c, naive)
                if pos >= WINDOW_TO + dt.timedelta(days=60):
                    break
                instances.append(naive)
                if len(instances) > 20000:
                    raise Timeout()
        except (Timeout, ValueError):
            continue
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        if "exdate-by-instant" in allowed:
            gone = {position(c, e)[0] for e in c.exdates if exdate_by_instant(c, e)}
            instances = [i for i in instances if position(c, i)[0] not in gone]
        if "duplicate-instants" in allowed and c.kind != "date":
            seen, deduped = set(), []
            for i in instances:
                p = position(c, i)[0]
                if p not in seen:
                    seen.add(p)
                    deduped.append(i)
            instances = deduped
        # Overrides: a moved (or cancelled) instance, sometimes THISANDFUTURE.
        for _ in range(rng.choice([0, 0, 0, 1, 1, 2])):
            if not instances:
                break
            rid = rng.choice(instances[:30])
            if any(o["rid"] == rid for o in c.overrides):
                continue
            o = {"rid": rid, "future": rng.random() < 0.25, "cancelled": False}
            o["cancelled"] = (not o["future"]) and rng.random() < 0.15
            if c.kind == "date":
                o["start"] = rid + dt.timedelta(days=rng.randint(-3, 3))
                o["length"] = ("days", rng.randint(1, 2))
            else:
                o["start"] = rid + dt.timedelta(minutes=rng.choice([-90, -30, 30, 60, 120, 24 * 60]))
                o["minutes"] = rng.choice([30, 60, 180])
                o["length"] = ("exact", dt.timedelta(minutes=o["minutes"]))
            c.overrides.append(o)
        rid_map = {position(c, o["rid"])[0]: o for o in c.overrides}
        futures = sorted((position(c, o["rid"])[0], o) for o in c.overrides if o["future"])
        rdate_len = {}
        for r, period in c.rdates:
            if period is not None:
                rdate_len[position(c, r)[0]] = ("exact", period)
        out = []
        for inst in instances:
            pos, rid_text = position(c, inst)
            if pos in rid_map:
                continue
            fut = [o for p, o in futures if p < pos]
            start_naive, length = inst, rdate_len.get(pos, c.length)
            if fut:
                o = fut[-1]
                if c.kind == "date":
                    start_naive = inst + (o["start"] - o["rid"])
                    length = o["length"]
                else:
                    delta = position(c, o["start"])[0] - position(c, o["rid"])[0]
                    start_utc = pos + delta
                    if WINDOW_FROM <= start_utc < WINDOW_TO:
                        end_utc = start_utc + o["length"][1]
                        out.append((start_utc, c.uid, rid_text, fmt_utc(start_utc), fmt_utc(end_utc)))
                    continue
            spos, stext = position(c, start_naive)
            if WINDOW_FROM <= spos < WINDOW_TO:
                out.append((spos, c.uid, rid_text, stext, end_of(c, start_naive, length)))
        for o in c.overrides:
            if o["cancelled"]:
                continue
            spos, stext = position(c, o["start"])
            if WINDOW_FROM <= spos < WINDOW_TO:
                out.append((spos, c.uid, position(c, o["rid"])[1], stext, end_of(c, o["start"], o["length"])))
        expected.extend(out)
        cases.append(c)
        lines.extend(ics_lines(c))
    expected.sort(key=lambda e: (e[0], e[1], e[2]))
    os.makedirs(out_dir, exist_ok=True)
    if bench:
        # The same work `ics expand` does per series (rule expansion and conversion to UTC, up to the
        # window's end), timed alone: generation and override bookkeeping above are not part of it.
        best = None
        for _ in range(3):
            started = time.perf_counter()
            produced = 0
            for c in cases:
                for occ in dateutil_set(c, c.dtstart):
                    pos, _ = position(c, occ.replace(tzinfo=None))
                    if pos >= WINDOW_TO:
                        break
                    produced += 1
            elapsed = time.perf_counter() - started
            best = elapsed if best is None else min(best, elapsed)
        with open(os.path.join(out_dir, "dateutil-bench.json"), "w", encoding="utf-8") as f:
            json.dump({"series": len(cases), "occurrences": produced, "seconds": best}, f)
    with open(os.path.join(out_dir, "cases.ics"), "w", encoding="utf-8", newline="") as f:
        f.write("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//calbridge//differential//EN\r\n")
        f.write("".join(line + "\r\n" for line in lines))
        f.write("END:VCALENDAR\r\n")
    with open(os.path.join(out_dir, "expected.tsv"), "w", encoding="utf-8") as f:
        for e in expected:
            f.write("\t".join(e[1:]) + "\n")
    with open(os.path.join(out_dir, "args"), "w", encoding="utf-8") as f:
        f.write(f"--from {fmt_utc(WINDOW_FROM)} --to {fmt_utc(WINDOW_TO)} --tz {FLOAT_TZ}\n")
    kinds = {}
    for c in cases:
        kinds[c.freq] = kinds.get(c.freq, 0) + 1
    print(f"generated {len(cases)} series ({attempts} drawn), {len(expected)} occurrences; "
          f"freqs {dict(sorted(kinds.items()))}; {skipped_allowed} drawn series left out under "
          f"weekno-previous-year / weekno-negative-next-year", file=sys.stderr)


def value(c, naive, prop):
    if c.kind == "date":
        return f"{prop};VALUE=DATE:{naive.strftime('%Y%m%d')}"
    if c.kind == "utc":
        return f"{prop}:{fmt_local(naive)}Z"
    if c.kind == "floating":
        return f"{prop}:{fmt_local(naive)}"
    return f"{prop};TZID={c.zone_name}:{fmt_local(naive)}"


def ics_lines(c):
    out = ["BEGIN:VEVENT", f"UID:{c.uid}", "DTSTAMP:20240101T000000Z", value(c, c.dtstart, "DTSTART")]
    kind, val = c.length
    if c.duration_kind == "dtend":
        if c.kind == "date":
            out.append(value(c, c.dtstart + dt.timedelta(days=c.days), "DTEND"))
        else:
            out.append(value(c, c.dtstart + dt.timedelta(minutes=c.minutes), "DTEND"))
    elif c.duration_kind == "duration":
        if c.kind == "date":
            out.append(f"DURATION:P{c.days}D")
        else:
            d, rest = divmod(c.minutes, 24 * 60)
            text = "P" + (f"{d}D" if d else "") + (f"T{rest // 60}H{rest % 60}M" if rest else "")
            out.append("DURATION:" + (text if text != "P" else "PT0S"))
    out.append("RRULE:" + rule_text(c, c.dtstart))
    for r, period in c.rdates:
        if period is not None:
            minutes = int(period.total_seconds() // 60)
            v = value(c, r, "RDATE")
            head, _, val_text = v.rpartition(":")
            head = head.replace("RDATE", "RDATE;VALUE=PERIOD", 1)
            out.append(f"{head}:{val_text}/PT{minutes}M")
        else:
            out.append(value(c, r, "RDATE"))
    for e in c.exdates:
        if exdate_in_utc(c, e):
            out.append(f"EXDATE:{fmt_utc(position(c, e)[0]).replace('-', '').replace(':', '')}")
        else:
            out.append(value(c, e, "EXDATE"))
    out.append("END:VEVENT")
    for o in c.overrides:
        rid = value(c, o["rid"], "RECURRENCE-ID")
        if o["future"]:
            rid = rid.replace("RECURRENCE-ID", "RECURRENCE-ID;RANGE=THISANDFUTURE", 1)
        out += ["BEGIN:VEVENT", f"UID:{c.uid}", "DTSTAMP:20240101T000000Z", rid, value(c, o["start"], "DTSTART")]
        if c.kind == "date":
            out.append(f"DURATION:P{o['length'][1]}D")
        else:
            out.append(f"DURATION:PT{o['minutes']}M")
        if o["cancelled"]:
            out.append("STATUS:CANCELLED")
        out.append("END:VEVENT")
    return out


def compare(expected_path, actual_path):
    with open(expected_path, encoding="utf-8") as f:
        expected = f.read().splitlines()
    with open(actual_path, encoding="utf-8") as f:
        actual = f.read().splitlines()
    if expected == actual:
        print(f"differential: {len(set(l.split(chr(9))[0] for l in expected))} series, {len(expected)} occurrences: identical",
              file=sys.stderr)
        return 0
    by_uid = {}
    for tag, rows in (("dateutil", expected), ("calbridge", actual)):
        for row in rows:
            by_uid.setdefault(row.split("\t")[0], {"dateutil": [], "calbridge": []})[tag].append(row)
    bad = [u for u, v in by_uid.items() if sorted(v["dateutil"]) != sorted(v["calbridge"])]
    order_only = not bad
    print(f"differential: {len(bad)} series differ" + (" (order only)" if order_only else ""), file=sys.stderr)
    for u in bad[:15]:
        v = by_uid[u]
        only_e = sorted(set(v["dateutil"]) - set(v["calbridge"]))
        only_a = sorted(set(v["calbridge"]) - set(v["dateutil"]))
        print(f"--- {u}: {len(v['dateutil'])} by dateutil, {len(v['calbridge'])} by calbridge", file=sys.stderr)
        for row in only_e[:5]:
            print(f"  only dateutil:  {row}", file=sys.stderr)
        for row in only_a[:5]:
            print(f"  only calbridge: {row}", file=sys.stderr)
    return 1


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate")
    g.add_argument("out_dir")
    g.add_argument("--seed", type=int, default=20261121)
    g.add_argument("--count", type=int, default=2000)
    g.add_argument("--bench", action="store_true", help="also time dateutil alone on the same series")
    c = sub.add_parser("compare")
    c.add_argument("expected")
    c.add_argument("actual")
    a = p.parse_args()
    if a.cmd == "generate":
        generate(a.out_dir, a.seed, a.count, a.bench)
        return 0
    return compare(a.expected, a.actual)


if __name__ == "__main__":
    sys.exit(main())
