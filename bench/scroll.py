#!/usr/bin/env python3
"""Scrolling cost in a real terminal (tmux), pairedit beside vim in the same run.

Opens FILE (a copy of it per program) in a 120x40 tmux pane, moves the cursor to the bottom
row, then sends Down N times 20 ms apart (each scrolls one line in). Per key it reports the
program's CPU time (all its threads, /proc/PID/task/*/schedstat), the bytes it wrote
(/proc/PID/io wchar: the terminal output, plus any file it writes meanwhile) and the tmux
server's CPU time for the same keys (what drawing those bytes cost the terminal).

Usage: bench/scroll.py FILE [--keys 200] [--bin target/release/pairedit] [--ab OTHER_BIN]
Needs tmux; vim is measured when installed.
"""
import argparse
import os
import shutil
import subprocess
import tempfile
import time

SOCKET = f"pairedit-scroll-{os.getpid()}"


def tm(*args):
    return subprocess.run(["tmux", "-L", SOCKET, *args], capture_output=True, text=True).stdout


def cpu_ns(pid):
    total = 0
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{t}/schedstat") as f:
                total += int(f.read().split()[0])
        except OSError:
            pass
    return total


def wchar(pid):
    with open(f"/proc/{pid}/io") as f:
        for line in f:
            if line.startswith("wchar"):
                return int(line.split()[1])
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("file")
    ap.add_argument("--keys", type=int, default=200)
    ap.add_argument("--bin", default="target/release/pairedit")
    ap.add_argument("--ab", action="append", default=[], metavar="BIN")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp()
    ext = os.path.splitext(a.file)[1]
    programs = []
    if shutil.which("vim"):
        copy = os.path.join(tmp, "vim" + ext)
        shutil.copy(a.file, copy)
        programs.append(("vim -u NONE, syntax on", f"vim -u NONE -N -c 'syntax on' {copy}"))
    for i, binary in enumerate([a.bin] + a.ab):
        copy = os.path.join(tmp, f"pe{i}{ext}")
        shutil.copy(a.file, copy)
        binary = os.path.abspath(binary)
        programs.append((f"pairedit ({binary})",
                         f"{binary} host {copy} --log-file {tmp}/pe{i}.log"))
    tm("new-session", "-d", "-s", "s", "-x", "120", "-y", "40")
    server = int(tm("display", "-p", "#{pid}").strip())
    print(f"{a.keys} Down keys at the bottom of a 120x40 pane, 20 ms apart; {a.file}\n")
    print("| program | CPU per key µs | bytes written per key | tmux server CPU per key µs |")
    print("|---|---|---|---|")
    try:
        for n, (name, command) in enumerate(programs):
            target = f"s:w{n}"
            tm("new-window", "-t", "s", "-n", f"w{n}", command)
            time.sleep(1.5)
            tm("send-keys", "-t", target, "Escape")
            time.sleep(0.3)
            for _ in range(45):
                tm("send-keys", "-t", target, "Down")
            time.sleep(0.5)
            pid = int(tm("display", "-p", "-t", target, "#{pane_pid}").strip())
            c0, w0, s0 = cpu_ns(pid), wchar(pid), cpu_ns(server)
            for _ in range(a.keys):
                tm("send-keys", "-t", target, "Down")
                time.sleep(0.02)
            time.sleep(0.3)
            c1, w1, s1 = cpu_ns(pid), wchar(pid), cpu_ns(server)
            k = a.keys
            print(f"| {name} | {(c1 - c0) / k / 1000:.0f} | {(w1 - w0) / k:.0f} "
                  f"| {(s1 - s0) / k / 1000:.0f} |")
    finally:
        subprocess.run(["tmux", "-L", SOCKET, "kill-server"], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
