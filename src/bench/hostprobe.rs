//! How fast the machine's CPUs ran during a benchmark, measured beside it.
//!
//! On a virtual machine the host can slow a vCPU down for tens of milliseconds (other guests,
//! power management) without the guest being told: no steal time is reported, and a thread the
//! guest thinks is running simply gets less done. Seen here: a fixed piece of arithmetic took
//! 4–11× its usual CPU time in bursts of 20–50 ms, on both vCPUs at once, about once a second.
//! A fan-out update delivered during such a burst arrives whole-late, and one such update in 50
//! sets a run's p99.
//!
//! A probe thread on each CPU the process may use wakes every few milliseconds and times the
//! same small piece of arithmetic (about 50 µs) by its own CPU time. Time the guest gives to
//! other threads does not count in it (that is the benchmark's own contention, not the host's);
//! a slowdown the host does not report as steal time does. Its cost is about 1 % of each core,
//! more while the host is slow (a look then takes longer), for whichever server runs: a server on
//! one thread feels the probe on its core a little more than one that can use both.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often each probe thread looks.
pub const EVERY: Duration = Duration::from_millis(5);

/// A look that took at least this many times its thread's fastest was slowed by the host. The
/// other core kept busy (copying memory, making system calls, or spinning) leaves a look's
/// median at 1.2–1.3× and its p90 under 2× here (BENCHMARKS.md, section 1); the host's bursts
/// reach 4–20×.
pub const SLOWED: f32 = 3.0;

/// The arithmetic one look times: about this much CPU on an unhurried core.
const LOOK: Duration = Duration::from_micros(50);

/// Calibration gives up beyond this many rounds (a clock that hardly moves).
const MAX_ROUNDS: u64 = 1 << 24;

/// One look: when (µs since the probe's `start`), on which CPU, and how many times that
/// thread's fastest look it took.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub at_us: u64,
    pub cpu: usize,
    pub slowdown: f32,
}

/// A running probe; [`HostProbe::finish`] stops it and returns what it saw.
pub struct HostProbe {
    stop: Arc<AtomicBool>,
    threads: Vec<(usize, JoinHandle<Vec<Sample>>)>,
}

impl HostProbe {
    /// Starts a thread on each CPU this process may use (kept there), each looking every
    /// `every` and timing its looks from `start`. `None` where a thread's own CPU time cannot
    /// be read to the microsecond, or no thread could be started.
    pub fn start(start: Instant, every: Duration) -> Option<HostProbe> {
        if os::resolution(os::THREAD_CPU)? > Duration::from_micros(1) {
            return None;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for cpu in os::usable_cpus() {
            let spawned = std::thread::Builder::new()
                .name(format!("host-probe-{cpu}"))
                .spawn({
                    let stop = stop.clone();
                    move || {
                        // Unpinned, it still looks, wherever the scheduler puts it.
                        os::keep_on(cpu);
                        probe(start, every, cpu, &stop)
                    }
                });
            match spawned {
                Ok(t) => threads.push((cpu, t)),
                Err(e) => eprintln!("host probe: no thread for CPU {cpu}: {e}"),
            }
        }
        (!threads.is_empty()).then_some(HostProbe { stop, threads })
    }

    fn stop(&mut self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Vec::new();
        for (cpu, thread) in self.threads.drain(..) {
            match thread.join() {
                Ok(samples) => all.extend(samples),
                Err(_) => eprintln!("host probe: the thread for CPU {cpu} failed"),
            }
        }
        all.sort_by_key(|s| s.at_us);
        all
    }

    /// Stops the probe: every look of every thread in time order (as
    /// [`slowed_between`] wants them), each against its own thread's fastest look.
    pub fn finish(mut self) -> Vec<Sample> {
        self.stop()
    }
}

impl Drop for HostProbe {
    fn drop(&mut self) {
        self.stop();
    }
}

fn probe(start: Instant, every: Duration, cpu: usize, stop: &AtomicBool) -> Vec<Sample> {
    let Some(rounds) = calibrate() else {
        eprintln!("host probe: the CPU clock of CPU {cpu}'s thread hardly moves; no looks");
        return Vec::new();
    };
    let mut raw: Vec<(u64, Duration)> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(every);
        let at_us = start.elapsed().as_micros() as u64;
        let Some(took) = timed(rounds) else { break };
        raw.push((at_us, took));
    }
    slowdowns(&raw, cpu)
}

/// Each look's CPU time against the fastest of them (the machine unhurried, as near as the
/// run shows it). Nothing if the fastest read zero: the clock is too coarse to compare.
fn slowdowns(raw: &[(u64, Duration)], cpu: usize) -> Vec<Sample> {
    let Some(fastest) = raw.iter().map(|&(_, took)| took).min() else {
        return Vec::new();
    };
    if fastest.is_zero() {
        return Vec::new();
    }
    raw.iter()
        .map(|&(at_us, took)| Sample {
            at_us,
            cpu,
            slowdown: (took.as_secs_f64() / fastest.as_secs_f64()) as f32,
        })
        .collect()
}

/// Rounds of [`work`] that take about [`LOOK`] of CPU; `None` if even [`MAX_ROUNDS`] do not
/// take a measurable part of it.
fn calibrate() -> Option<u64> {
    let mut rounds = 1_000u64;
    while rounds <= MAX_ROUNDS {
        let took = timed(rounds)?;
        if took >= LOOK / 4 {
            let scale = LOOK.as_secs_f64() / took.as_secs_f64();
            return Some(((rounds as f64 * scale) as u64).max(1));
        }
        rounds *= 2;
    }
    None
}

/// The CPU time this thread spent on `rounds` of [`work`].
fn timed(rounds: u64) -> Option<Duration> {
    let before = os::now(os::THREAD_CPU)?;
    std::hint::black_box(work(std::hint::black_box(rounds)));
    Some(os::now(os::THREAD_CPU)?.saturating_sub(before))
}

/// Arithmetic that touches no memory (so caches and the other core's traffic do not change
/// its speed) and that the compiler cannot fold away.
fn work(rounds: u64) -> u64 {
    let mut x = 1u64;
    for _ in 0..rounds {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
    }
    x
}

/// What the probe needs of the system: clocks and CPU affinity. Linux has them; elsewhere
/// there is nothing to read, and the probe does not start.
#[cfg(target_os = "linux")]
mod os {
    use std::time::Duration;

    use nix::sched::CpuSet;
    use nix::time::ClockId;
    use nix::unistd::Pid;

    /// The calling thread's CPU time.
    pub const THREAD_CPU: ClockId = ClockId::CLOCK_THREAD_CPUTIME_ID;
    /// What `Instant` and Python's `time.perf_counter()` read.
    pub const MONOTONIC: ClockId = ClockId::CLOCK_MONOTONIC;

    pub fn now(clock: ClockId) -> Option<Duration> {
        nix::time::clock_gettime(clock).ok().map(Duration::from)
    }

    pub fn resolution(clock: ClockId) -> Option<Duration> {
        nix::time::clock_getres(clock).ok().map(Duration::from)
    }

    /// The CPUs this process may run on.
    pub fn usable_cpus() -> Vec<usize> {
        match nix::sched::sched_getaffinity(Pid::from_raw(0)) {
            Ok(set) => (0..CpuSet::count())
                .filter(|&cpu| set.is_set(cpu).unwrap_or(false))
                .collect(),
            Err(_) => (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect(),
        }
    }

    /// Keeps this thread on `cpu`, where the system allows it.
    pub fn keep_on(cpu: usize) {
        let mut set = CpuSet::new();
        if set.set(cpu).is_ok() {
            let _ = nix::sched::sched_setaffinity(Pid::from_raw(0), &set);
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod os {
    use std::time::Duration;

    pub const THREAD_CPU: () = ();
    pub const MONOTONIC: () = ();

    pub fn now(_clock: ()) -> Option<Duration> {
        None
    }

    pub fn resolution(_clock: ()) -> Option<Duration> {
        None
    }

    pub fn usable_cpus() -> Vec<usize> {
        Vec::new()
    }

    pub fn keep_on(_cpu: usize) {}
}

/// `pairedit bench probe`: looks until standard input closes, then prints each look as
/// `MICROS CPU SLOWDOWN`, MICROS on the monotonic clock.
pub fn run_until_stdin_closes() -> anyhow::Result<()> {
    use std::io::Write as _;
    let start = Instant::now();
    let base_us = os::now(os::MONOTONIC)
        .ok_or_else(|| anyhow::anyhow!("no monotonic clock here"))?
        .as_micros() as u64;
    let probe = HostProbe::start(start, EVERY)
        .ok_or_else(|| anyhow::anyhow!("the host probe cannot run here (no thread CPU clock)"))?;
    // Whatever comes in is ignored: the end of it is the signal to stop.
    std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink())?;
    let samples = probe.finish();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for s in samples {
        writeln!(out, "{} {} {:.3}", base_us + s.at_us, s.cpu, s.slowdown)?;
    }
    out.flush()?;
    Ok(())
}

/// Whether any look from `from_us` to `to_us` (inclusive) was slowed by the host. `samples`
/// must be in time order, as [`HostProbe::finish`] returns them.
pub fn slowed_between(samples: &[Sample], from_us: u64, to_us: u64) -> bool {
    let first = samples.partition_point(|s| s.at_us < from_us);
    samples[first..]
        .iter()
        .take_while(|s| s.at_us <= to_us)
        .any(|s| s.slowdown >= SLOWED)
}

/// The share of looks the host slowed (0 to 1); `None` without looks.
pub fn slowed_share(samples: &[Sample]) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    let slowed = samples.iter().filter(|s| s.slowdown >= SLOWED).count();
    Some(slowed as f64 / samples.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slowdowns_are_against_the_fastest_look() {
        let ms = Duration::from_millis;
        let got = slowdowns(&[(0, ms(2)), (5, ms(1)), (10, ms(4))], 3);
        let s: Vec<f32> = got.iter().map(|s| s.slowdown).collect();
        assert_eq!(s, vec![2.0, 1.0, 4.0]);
        assert_eq!((got[2].at_us, got[2].cpu), (10, 3));
        assert!(slowdowns(&[], 0).is_empty());
        assert!(
            slowdowns(&[(0, Duration::ZERO), (5, ms(1))], 0).is_empty(),
            "a look that read zero: the clock cannot compare"
        );
    }

    #[test]
    fn a_window_is_slowed_only_by_a_slowed_look_inside_it() {
        let at = |at_us, slowdown| Sample {
            at_us,
            cpu: 0,
            slowdown,
        };
        let samples = [
            at(0, 1.0),
            at(5_000, 3.5),
            at(10_000, 1.2),
            at(15_000, 2.9),
            at(20_000, 3.0),
        ];
        assert!(slowed_between(&samples, 5_000, 5_000), "ends count");
        assert!(slowed_between(&samples, 1_000, 9_000));
        assert!(
            !slowed_between(&samples, 5_001, 19_999),
            "2.9 is under the line"
        );
        assert!(slowed_between(&samples, 19_000, 21_000), "3.0 is on it");
        assert!(!slowed_between(&samples, 0, 4_999));
        assert!(!slowed_between(&[], 0, u64::MAX));
        assert_eq!(slowed_share(&samples), Some(0.4));
        assert_eq!(slowed_share(&[]), None);
    }

    /// Every usable CPU gets a thread that looks until stopped, each against its own fastest.
    /// Tried a few times: a loaded machine may not run a thread within one short try.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_thread_on_each_cpu_looks_until_stopped() {
        let cpus = os::usable_cpus();
        assert!(!cpus.is_empty());
        let mut last = String::new();
        for _ in 0..10 {
            let probe = HostProbe::start(Instant::now(), Duration::from_millis(1)).expect("linux");
            std::thread::sleep(Duration::from_millis(100));
            let samples = probe.finish();
            assert!(samples.windows(2).all(|w| w[0].at_us <= w[1].at_us));
            let per_cpu: Vec<Vec<f32>> = cpus
                .iter()
                .map(|&c| {
                    let of_cpu = samples.iter().filter(|s| s.cpu == c);
                    of_cpu.map(|s| s.slowdown).collect()
                })
                .collect();
            if per_cpu.iter().all(|s| s.len() >= 5) {
                for s in &per_cpu {
                    assert_eq!(s.iter().copied().fold(f32::MAX, f32::min), 1.0);
                }
                return;
            }
            last = format!("{:?}", per_cpu.iter().map(Vec::len).collect::<Vec<_>>());
        }
        panic!("looks per CPU in 100 ms, last try: {last}");
    }
}
