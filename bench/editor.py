#!/usr/bin/env python3
"""Editor benchmarks in real terminals (tmux), pairedit beside vim and nvim in the same run.

  keystroke: time from `send-keys` of one character until it is on the pane, over one tmux
             control-mode connection (no fork per poll); `cat` is the floor. Two clocks:
             - exact: tmux tells a control client each piece of output a pane writes
               (`%output`), as it reads it. After each piece the pane is captured; the key's
               time is that of the last piece tmux had read before the capture that first
               shows it. No polling step. A program that draws a key in several pieces may be
               timed a little early (to a piece that came before the capture, not to the one
               that drew the key), never late.
             - polled: `capture-pane` 0.5 ms apart until the key shows (steps of ~0.65 ms).
             The programs are all open at once and typed into key by key in turn (the same
             keys, the order shuffled for each key), so a busy moment of the machine falls
             on all of them alike.
             While they type, `pairedit bench probe` times a fixed piece of arithmetic on
             each core (as `bench fanout` does): keys sent while the virtual machine's host
             had slowed the cores are counted, and a p99 over the other keys is given beside
             the p99 over all (`--no-probe` to run without it).
  bigfile:   time from starting the editor on a big file until its first line is on screen,
             and the editor's peak RSS (VmHWM) once it has settled.

Usage: bench/editor.py [--keys N] [--bigfile PATH] [--bin target/release/pairedit] [--ab OTHER_BIN]
Needs tmux; vim/nvim are measured when installed (apt-get install vim-nox neovim).
"""
import argparse
import bisect
import os
import random
import shutil
import statistics
import subprocess
import sys
import select
import tempfile
import time

SOCKET = f"pairedit-bench-{os.getpid()}"


class Control:
    """One tmux control-mode client: commands in, their output blocks out."""

    def __init__(self):
        subprocess.run(["tmux", "-L", SOCKET, "new-session", "-d", "-s", "b", "-x", "120", "-y", "40"], check=True)
        self.p = subprocess.Popen(["tmux", "-L", SOCKET, "-C", "attach", "-t", "b"],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE)

        # (when read, pane id) of each `%output` notification read so far, oldest first.
        self.outputs = []
        # The control client's output, read straight from its pipe (select can then time a
        # wait out), and when the last piece of it was read.
        self.fd = self.p.stdout.fileno()
        self.buf = b""
        self.read_at = 0.0
        # Attaching answers with an empty block of its own: consume it, or every reply is late by one.
        self._block("attach")

    def cmd(self, command):
        self.p.stdin.write((command + "\n").encode())
        self.p.stdin.flush()
        return self._block(command)

    def _line(self, timeout=30.0):
        """The next line the control client printed; `%output` lines are noted with when they
        were read. Raises TimeoutError after `timeout` seconds without a line."""
        deadline = time.perf_counter() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.perf_counter()
            if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                raise TimeoutError("tmux control client said nothing")
            chunk = os.read(self.fd, 1 << 16)
            if not chunk:
                raise RuntimeError("tmux control client ended")
            self.buf += chunk
            self.read_at = time.perf_counter()
        raw, self.buf = self.buf.split(b"\n", 1)
        line = raw.decode("utf-8", errors="replace")
        if line.startswith("%output "):
            self.outputs.append((self.read_at, line.split(" ", 2)[1]))
        return line

    def wait_output(self, pane, after, deadline):
        """Reads until a `%output` of `pane` read after `after` is known; returns its time.
        Gives up at `deadline` (perf_counter time): a key that draws nothing must not hang."""
        while True:
            for t, p in self.outputs:
                if p == pane and t > after:
                    return t
            self._line(timeout=max(0.0, deadline - time.perf_counter()))

    def _block(self, command):
        """The reply to `command`. Sets `self.before`: how many `%output`s came before it."""
        out, inside = [], False
        while True:
            line = self._line()
            if line.startswith("%begin"):
                self.before = len(self.outputs)
                inside, out = True, []
            elif line.startswith("%end") or line.startswith("%error"):
                if inside:
                    if line.startswith("%error"):
                        raise RuntimeError(f"tmux: {command}: {out}")
                    return out
            elif inside:
                out.append(line)

    def screen(self, target):
        return "\n".join(self.cmd(f"capture-pane -p -t {target}"))

    def wait(self, target, pred, timeout=30.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            s = self.screen(target)
            if pred(s):
                return s
        raise TimeoutError(f"{target}: condition not met; screen:\n{self.screen(target)}")

    def close(self):
        try:
            self.p.stdin.close()
        except OSError:
            pass
        subprocess.run(["tmux", "-L", SOCKET, "kill-server"], capture_output=True)


def shell_quote(s):
    return "'" + s.replace("'", "'\\''") + "'"


def window(ctl, name, command):
    ctl.cmd(f"new-window -d -n {name} {shell_quote('exec ' + command)}")
    return f"b:{name}"


def pane_pid(ctl, target):
    return int(ctl.cmd(f"display -p -t {target} '#{{pane_pid}}'")[0])


def vm(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def one_key(ctl, target, pane, c, tail, exact, i):
    """Sends key `c` to `target`; returns when it was sent (perf_counter seconds) and the ms
    until `tail` (the line's end, the key included) was on its screen."""
    # Let the last key's output settle, so none of it is taken for this key's.
    time.sleep(0.002)
    ctl.outputs.clear()
    t0 = time.perf_counter()
    ctl.cmd(f"send-keys -t {target} -l {c}")
    if exact:
        seen = t0
        while True:
            try:
                seen = ctl.wait_output(pane, seen, t0 + 5)
            except TimeoutError:
                raise TimeoutError(f"key {i} ({c!r}) never showed in {target}: no {tail!r} on\n"
                                   + ctl.screen(target)) from None
            screen = ctl.screen(target)
            # The last piece tmux had read when it captured: the key was on screen then.
            last = max((t for t, p in ctl.outputs[:ctl.before] if p == pane), default=seen)
            if tail in screen:
                done = last
                break
            if time.perf_counter() - t0 > 5:
                raise TimeoutError(f"key {i} never showed in {target}")
    else:
        while tail not in ctl.screen(target):
            time.sleep(0.0005)
            if time.perf_counter() - t0 > 5:
                raise TimeoutError(f"key {i} never showed in {target}")
        done = time.perf_counter()
    ms = (done - t0) * 1000
    if os.environ.get("BENCH_DEBUG") and ms > 20:
        print(f"slow key {i} {c!r} in {target} took {ms:.1f} ms", file=sys.stderr)
    return t0, ms


def keystrokes(ctl, targets, n, exact, enter_first=False):
    """Types the same n random letters into every target, interleaved: key i goes to each
    program in turn, in an order shuffled for each key (so no program is always measured
    right after the same other one), before key i + 1 goes to any; a busy moment of the
    machine falls on all of them alike. Every line starts with a marker (`007:`, typed and
    waited for, not timed), so the letters looked for on screen are never already there.
    Returns, for each target, each key's send time (perf_counter seconds) and latency in ms
    (see the module doc for the two clocks)."""
    panes = {t: ctl.cmd(f"display -p -t {t} '#{{pane_id}}'")[0] for t in targets}
    rng = random.Random(7)
    keys = [rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(n)]
    lat = {t: [] for t in targets}
    typed, line = "", 0

    def new_line():
        nonlocal typed, line
        line += 1
        typed = f"{line:03d}:"
        if line > 1 or enter_first:
            for t in targets:
                ctl.cmd(f"send-keys -t {t} Enter")
            # Let the line break land first (cat prints the line back after it).
            time.sleep(0.05)
        for t in targets:
            ctl.cmd(f"send-keys -t {t} -l {typed}")
        for t in targets:
            ctl.wait(t, lambda s: typed in s)
        time.sleep(0.05)

    new_line()
    for i, c in enumerate(keys):
        if len(typed) >= 64:
            new_line()
        typed += c
        tail = typed[-12:]
        order = targets[:]
        rng.shuffle(order)
        for t in order:
            lat[t].append(one_key(ctl, t, panes[t], c, tail, exact, i))
    return lat


# A key has the host against it if a look of the host probe (`pairedit bench probe`) at
# SLOWED times its fastest or more fell from SLOWED_BEFORE before it was sent to SLOWED_AFTER
# after: the same window for every program, whatever its key took.
SLOWED = 3.0
SLOWED_BEFORE = 0.006
SLOWED_AFTER = 0.005


def start_probe(pe_bin):
    """`pairedit bench probe` in the background (it looks until its stdin closes), or None."""
    try:
        return subprocess.Popen([pe_bin, "bench", "probe"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
    except OSError as e:
        print(f"host probe not started: {e}", file=sys.stderr)
        return None


def finish_probe(probe):
    """Every look as (perf_counter seconds, slowdown), in time order; [] without a probe."""
    if probe is None:
        return []
    out, _ = probe.communicate(timeout=30)
    if probe.returncode != 0:
        print("host probe failed: no figures without its looks", file=sys.stderr)
        return []
    looks = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3:
            looks.append((int(parts[0]) / 1e6, float(parts[2])))
    looks.sort()
    return looks


def slowed_near(slowed_times, t0):
    """Whether a slowed look fell near a key sent at t0 (slowed_times sorted)."""
    i = bisect.bisect_left(slowed_times, t0 - SLOWED_BEFORE)
    return i < len(slowed_times) and slowed_times[i] <= t0 + SLOWED_AFTER


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p / 100))]


def open_editors(ctl, editors, prefix, timeout=30.0):
    """Starts each (name, command, ready) in a window of its own and waits until `ready` holds
    for its screen (pairedit's join codes are closed with Escape first). Returns the targets."""
    targets = []
    for i, (name, command, ready) in enumerate(editors):
        target = window(ctl, f"{prefix}{i}", command)
        if name.startswith("pairedit"):
            ctl.wait(target, lambda s: "join codes" in s, timeout=timeout)
            ctl.cmd(f"send-keys -t {target} Escape")
        ctl.wait(target, ready, timeout=timeout)
        targets.append(target)
    time.sleep(0.5)
    return targets


def time_keys(ctl, editors, targets, n, exact, use_probe, pe_bin, heading, enter_first=False):
    """Types n keys into the open editors (the first is the floor, `cat`), prints the table
    under `heading`, and closes their windows."""
    probe = start_probe(pe_bin) if use_probe else None
    timed = keystrokes(ctl, targets, n, exact, enter_first)
    looks = finish_probe(probe)
    slowed_times = [t for t, x in looks if x >= SLOWED]
    rows = []
    for (name, _, _), target in zip(editors, targets):
        xs = [ms for _, ms in timed[target]]
        calm = [ms for t0, ms in timed[target] if not slowed_near(slowed_times, t0)]
        rows.append((name, statistics.median(xs), pct(xs, 99), max(xs),
                     pct(calm, 99) if looks and calm else None, len(xs) - len(calm)))
        if os.environ.get("BENCH_DEBUG"):
            slow = sorted(range(len(xs)), key=lambda i: -xs[i])[:8]
            print(name, "slowest keys:", [(i, round(xs[i], 1)) for i in slow], file=sys.stderr)
        ctl.cmd(f"kill-window -t {target}")
    floor = rows[0][1]
    vim_p99 = next((r[2] for r in rows if r[0].startswith("vim")), None)
    vim_calm = next((r[4] for r in rows if r[0].startswith("vim")), None)
    clock = ("exact: the last %output before the capture that shows the key" if exact
             else "polled: capture-pane 0.5 ms apart")
    print(f"\n## {heading} ({n} keys to each program, interleaved key by key; "
          f"tmux control mode, {clock})\n")
    if looks:
        share = sum(1 for _, x in looks if x >= SLOWED) / len(looks)
        print(f"host probe: {share * 100:.1f} % of {len(looks)} looks ran at {SLOWED:g}x their "
              f"fastest or slower; a key with one from {SLOWED_BEFORE * 1000:g} ms before it "
              f"was sent to {SLOWED_AFTER * 1000:g} ms after is left out of the last columns\n")
    print("| program | p50 ms | p99 ms | max ms | p50 − floor ms | p99 ÷ vim's "
          "| keys with a slowed look | p99 of the others ms | ÷ vim's |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, p50, p99, mx, calm99, slowed in rows:
        ratio = f"{p99 / vim_p99:.2f}" if vim_p99 else "–"
        calm_ratio = f"{calm99 / vim_calm:.2f}" if calm99 and vim_calm else "–"
        calm_col = f"{calm99:.2f}" if calm99 is not None else "–"
        print(f"| {name} | {p50:.2f} | {p99:.2f} | {mx:.2f} | {p50 - floor:.2f} | {ratio} "
              f"| {slowed if looks else '–'} | {calm_col} | {calm_ratio} |")


def bench_keys(ctl, pe_bins, n, exact, use_probe=True):
    tmp = tempfile.mkdtemp()
    empty = os.path.join(tmp, "empty.txt")
    open(empty, "w").close()
    editors = [("floor (cat)", "cat", lambda s: True)]
    if shutil.which("vim"):
        # vim shows the file message, then "-- INSERT --" over it: either means it is up.
        editors.append(("vim -u NONE", f"vim -u NONE -N -c startinsert {empty}",
                        lambda s: "0L, 0B" in s or "-- INSERT --" in s))
    if shutil.which("nvim"):
        editors.append(("nvim --clean", f"nvim --clean -c startinsert {empty}", lambda s: "INSERT" in s))
    for j, pe_bin in enumerate(pe_bins):
        pe_file = os.path.join(tmp, f"pe{j}.txt")
        open(pe_file, "w").close()
        name = "pairedit host" if j == 0 else f"pairedit host ({pe_bin})"
        editors.append((name, f"{pe_bin} host {pe_file} --log-file {tmp}/pe{j}.log {os.environ.get('PE_ARGS', '')}",
                        lambda s: "connected" in s))
    targets = open_editors(ctl, editors, "k")
    time_keys(ctl, editors, targets, n, exact, use_probe, pe_bins[0], "Keystroke to screen")
    shutil.rmtree(tmp, ignore_errors=True)


def bench_bigfile_keys(ctl, pe_bins, path, n, use_probe=True, at_end=False):
    """Keystroke to screen with each editor holding the big file, typing at its top (or at its
    end): what a file of that size costs a key (a recovery copy, a swap file, an index over the
    text; at the end, whatever a CRDT pays to append to one long item). Each editor gets its own
    hard link to the file in a directory of its own, so their swap and recovery files never
    meet and the file itself is never written."""
    tmp = tempfile.mkdtemp(dir=os.path.dirname(os.path.abspath(path)))
    name = os.path.basename(path)

    def link(who):
        os.mkdir(os.path.join(tmp, who))
        dest = os.path.join(tmp, who, name)
        try:
            os.link(path, dest)
        except OSError:
            shutil.copyfile(path, dest)
        return dest

    # vim shows the file's size, then "-- INSERT --" over it (or not, for a big one): either.
    loaded = f"{os.path.getsize(path)}B"
    editors = [("floor (cat)", "cat", lambda s: True)]
    # At the end: the last line (`+`), appending (`startinsert!`).
    # (No comment leader carried onto the new line: nvim's Rust ftplugin would add one.)
    start = "+ -c 'set fo=' -c 'startinsert!'" if at_end else "-c startinsert"
    if shutil.which("vim"):
        editors.append(("vim -u NONE", f"vim -u NONE -N {start} {link('vim')}",
                        lambda s: "-- INSERT --" in s or loaded in s))
    if shutil.which("nvim"):
        editors.append(("nvim --clean", f"nvim --clean {start} {link('nvim')}",
                        lambda s: "INSERT" in s))
    for i, pe in enumerate(pe_bins):
        label = "pairedit host" if i == 0 else f"pairedit host ({os.path.basename(pe)})"
        editors.append((label, f"{pe} host {link(f'pe{i}')} --log-file {tmp}/pe{i}.log",
                        lambda s: "connected" in s))
    try:
        targets = open_editors(ctl, editors, "bk", timeout=120)
        if at_end:
            for (name, _, _), target in zip(editors, targets):
                if name.startswith("pairedit"):
                    ctl.cmd(f"send-keys -t {target} C-End")
            time.sleep(0.5)
        where = "end" if at_end else "top"
        time_keys(ctl, editors, targets, n, True, use_probe, pe_bins[0],
                  f"Keystroke to screen in {path} ({os.path.getsize(path) / 1e6:.0f} MB), "
                  f"typed at its {where}", enter_first=at_end)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def bench_bigfile(ctl, pe_bin, path, runs):
    with open(path, "rb") as f:
        first_line = f.readline().decode().strip()[:30]
    size_mb = os.path.getsize(path) / 1e6
    editors = []
    if shutil.which("vim"):
        editors.append(("vim -u NONE", f"vim -u NONE -N {path}"))
    if shutil.which("nvim"):
        editors.append(("nvim --clean", f"nvim --clean {path}"))
    editors.append(("pairedit host", f"{pe_bin} host {path} --log-file /tmp/pairedit-bench.log"))
    print(f"\n## Big file: {path} ({size_mb:.0f} MB), first frame and peak RSS (median of {runs})\n")
    print("| program | first frame s | peak RSS MiB | RSS after 3 s MiB |")
    print("|---|---|---|---|")
    for name, command in editors:
        frames, peaks, settled = [], [], []
        for r in range(runs):
            t0 = time.perf_counter()
            target = window(ctl, f"big{r}", command)
            ctl.wait(target, lambda s: first_line in s, timeout=120)
            frames.append(time.perf_counter() - t0)
            pid = pane_pid(ctl, target)
            time.sleep(3)
            peaks.append(vm(pid, "VmHWM") / 1024)
            settled.append(vm(pid, "VmRSS") / 1024)
            ctl.cmd(f"kill-window -t {target}")
            time.sleep(0.5)
        print(f"| {name} | {statistics.median(frames):.3f} | {statistics.median(peaks):.0f} | {statistics.median(settled):.0f} |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--keys", type=int, default=300)
    ap.add_argument("--bigfile")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--bin", default="target/release/pairedit")
    ap.add_argument("--ab", metavar="BIN", action="append", default=[],
                    help="another pairedit binary to type into in the same run (an A/B comparison)")
    ap.add_argument("--no-probe", action="store_true",
                    help="run without the host probe (`pairedit bench probe`, ~1 %% of each core)")
    ap.add_argument("--at-end", action="store_true",
                    help="with --bigfile: also time keys typed at the big file's end")
    ap.add_argument("--polled", action="store_true",
                    help="also time keys by polling capture-pane (the clock used before 2026-11-27)")
    a = ap.parse_args()
    if not shutil.which("tmux"):
        sys.exit("tmux is required")
    pe_bin = os.path.abspath(a.bin)
    pe_bins = [pe_bin] + [os.path.abspath(b) for b in a.ab]
    ctl = Control()
    try:
        print(f"machine: {os.cpu_count()} cores; {time.strftime('%Y-%m-%d')}; tmux {subprocess.run(['tmux', '-V'], capture_output=True, text=True).stdout.strip()}")
        bench_keys(ctl, pe_bins, a.keys, exact=True, use_probe=not a.no_probe)
        if a.polled:
            bench_keys(ctl, pe_bins, a.keys, exact=False, use_probe=not a.no_probe)
        if a.bigfile:
            bench_bigfile(ctl, pe_bin, a.bigfile, a.runs)
            bench_bigfile_keys(ctl, pe_bins, a.bigfile, a.keys, use_probe=not a.no_probe)
            if a.at_end:
                bench_bigfile_keys(ctl, pe_bins, a.bigfile, a.keys, use_probe=not a.no_probe,
                                   at_end=True)
    finally:
        ctl.close()


if __name__ == "__main__":
    main()
