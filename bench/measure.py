#!/usr/bin/env python3
"""Runs a command and prints 'wall_seconds peak_rss_kib' (peak RSS of the command, as GNU time's %M).

Why not getrusage(RUSAGE_CHILDREN) here: on Linux a child's ru_maxrss includes the high-water RSS of
the image it had before exec, and a child of Python (fork, or vfork in posix_spawn) starts with
Python's ~14 MB, so every small command measured ~14 MB. GNU time forks a ~2 MB process that execs
the command, so its %M is the command's own peak (floor ~2 MB). Needs /usr/bin/time (package time).
"""
import os, subprocess, sys, tempfile, time

TIME = "/usr/bin/time"
if not os.access(TIME, os.X_OK):
    sys.exit(f"{TIME} not found: install the 'time' package (scripts/setup.sh)")
with tempfile.NamedTemporaryFile(mode="r", prefix="measure.", suffix=".rss") as out:
    t = time.monotonic()
    r = subprocess.run([TIME, "-f", "%M", "-o", out.name, "--", *sys.argv[1:]], stdout=subprocess.DEVNULL)
    wall = time.monotonic() - t
    lines = out.read().split()
if r.returncode != 0:
    sys.exit(f"command failed ({r.returncode}): {' '.join(sys.argv[1:])}")
print(f"{wall:.3f} {int(lines[-1])}")
