#!/usr/bin/env python3
"""Follows one LL-HLS media playlist with blocking reloads (as a player at the live edge
does) for SECS seconds and prints when each new part was first listed: one line per part,
`UNIX_TIME MSN INDEX DURATION URI I|-` (I: independent). Used by scripts/part-arrival.sh.

Usage: part-arrival.py PLAYLIST_URL SECS"""
import re
import sys
import time
import urllib.request


def get(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read().decode()


def parse(text):
    """The parts listed, and the (msn, index) a blocking reload asks for next."""
    msn, idx, parts = None, 0, []
    for line in text.splitlines():
        if line.startswith("#EXT-X-MEDIA-SEQUENCE:"):
            msn = int(line.split(":")[1])
        elif line.startswith("#EXT-X-PART:"):
            dur = float(re.search(r"DURATION=([0-9.]+)", line).group(1))
            uri = re.search(r'URI="([^"]+)"', line).group(1)
            parts.append((msn, idx, dur, uri, "INDEPENDENT=YES" in line))
            idx += 1
        elif line and not line.startswith("#"):
            msn, idx = msn + 1, 0
    return parts, msn, idx


def main():
    url, secs = sys.argv[1], float(sys.argv[2])
    text = get(url)
    seen = {p[3] for p in parse(text)[0]}
    end = time.time() + secs
    # Bounded by time; each request has a 10 s timeout.
    while time.time() < end:
        _, msn, idx = parse(text)
        text = get(f"{url}?_HLS_msn={msn}&_HLS_part={idx}")
        now = time.time()
        for msn_, idx_, dur, uri, ind in parse(text)[0]:
            if uri not in seen:
                seen.add(uri)
                print(f"{now:.3f} {msn_} {idx_} {dur:.3f} {uri} {'I' if ind else '-'}", flush=True)


if __name__ == "__main__":
    main()
