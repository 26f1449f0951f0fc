#!/usr/bin/env python3
"""Checks one `ntp-query --json` report of the compose chain (tests/compose.sh).

    ntp-query --json ... | compose_check.py stratum1=1 stratum3=3 [--follows stratum3=stratum2b] [--fresh stratum3=10]

Each NAME=N: the server queried as NAME:12300 answered, synchronized, at
stratum N, and its offset is within 1 ms of stratum1's (every container
reads the host's one clock, so the offsets compare directly). --follows
A=B: A's reference ID names B (A's system peer is B): B's address on port
123 of another host, elsewhere the first four bytes of the MD5 of B's
address and port, as
docs/chain.md says (computed here independently of the Rust code). --fresh A=S: A's clock was last updated (its
reference time) at most S seconds before it answered: it is being steered
now, not coasting on holdover. Prints one
line per server; exits 0 when every check holds, 1 otherwise.
"""

import hashlib
import json
import sys
from datetime import datetime

TOLERANCE = 1e-3


def main(argv):
    expected, follows, fresh = {}, {}, {}
    args = iter(argv)
    for arg in args:
        if arg == "--follows":
            server, upstream = next(args).split("=")
            follows[server] = upstream
        elif arg == "--fresh":
            server, seconds = next(args).split("=")
            fresh[server] = float(seconds)
        else:
            name, stratum = arg.split("=")
            expected[name] = int(stratum)
    report = json.load(sys.stdin)
    by_name = {s["server"].rsplit(":", 1)[0]: s for s in report["servers"]}
    failures, summary = [], []
    reference = by_name.get("stratum1", {}).get("offset")
    if reference is None:
        failures.append("stratum1 gave no offset to compare with")
    for name, stratum in expected.items():
        server = by_name.get(name)
        if server is None:
            failures.append(f"{name}: not in the report")
            continue
        relative = None if reference is None or server["offset"] is None else server["offset"] - reference
        summary.append(f"{name} st {server['stratum']} refid {server['refid']} {fmt(relative)}")
        if server["error"] is not None or server["offset"] is None:
            failures.append(f"{name}: {server['error'] or 'no offset'}")
            continue
        if server["stratum"] != stratum:
            failures.append(f"{name}: stratum {server['stratum']}, expected {stratum}")
        if reference is not None and abs(server["offset"] - reference) >= TOLERANCE:
            failures.append(f"{name}: {fmt(server['offset'] - reference)} from stratum1, not within 1 ms")
    for name, upstream in follows.items():
        address = (by_name.get(upstream) or {}).get("address") or "?"
        refid = (by_name.get(name) or {}).get("refid")
        if address == "?" or refid != reference_id_of(address):
            failures.append(f"{name}: refid {refid}, not {upstream} ({address})")
    for name, limit in fresh.items():
        server = by_name.get(name) or {}
        if server.get("reference_time") is None or server.get("server_time") is None:
            failures.append(f"{name}: no reference or server time")
            continue
        age = (parse(server["server_time"]) - parse(server["reference_time"])).total_seconds()
        summary.append(f"{name} updated {age:.1f} s ago")
        if age > limit:
            failures.append(f"{name}: last clock update {age:.1f} s before it answered, not within {limit:g} s")
    print("  " + " | ".join(summary))
    for failure in failures:
        print(f"  not yet: {failure}")
    return 1 if failures else 0


def reference_id_of(address):
    """The reference ID, as ntp-query prints it, of a server synchronized
    to the IPv4 upstream at ADDRESS ("a.b.c.d:port")."""
    ip, port = address.rsplit(":", 1)
    octets = bytes(int(part) for part in ip.split("."))
    if int(port) != 123 or octets[0] == 127:
        octets = hashlib.md5(octets + int(port).to_bytes(2, "big")).digest()[:4]
    return ".".join(str(b) for b in octets)


def parse(rfc3339):
    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00"))


def fmt(seconds):
    return "-" if seconds is None else f"{seconds * 1e6:+.1f}us"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
