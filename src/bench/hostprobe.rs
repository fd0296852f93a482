//! How fast the machine's CPUs ran during a benchmark, measured beside it.
//!
//! On a virtual machine the host can slow a vCPU down for tens of milliseconds (other guests,
//! power management) without the guest being told: no steal time is reported, and a thread the
//! guest thinks is running simply gets less done. Seen here: a fixed piece of arithmetic took
//! 4–11× its usual CPU time in bursts of 20–50 ms, on both vCPUs at once, about once a second.
//! A fan-out update delivered during such a burst arrives whole-late, and one such update in 50
//! sets a run's p99.
//!
//! A probe thread on each CPU wakes every few milliseconds and times the same small piece of
//! arithmetic (about 50 µs) by its own CPU time. Time the guest gives to other threads does not
//! count in it (that is the benchmark's own contention, not the host's); only the host's
//! slowdown does. Its cost is about 1 % of each core.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often the probe looks.
pub const EVERY: Duration = Duration::from_millis(5);

/// A probe whose work took at least this many times its fastest was slowed by the host: above
/// what one busy core does to the other, far below what the bursts do.
pub const SLOWED: f32 = 3.0;

/// The arithmetic one look times: about this much CPU on an unhurried core.
const LOOK: Duration = Duration::from_micros(50);

/// One look: when (since the probe's `start`) and how many times its fastest look it took.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub at_us: u64,
    pub slowdown: f32,
}

/// A running probe; [`HostProbe::finish`] stops it and returns what it saw.
pub struct HostProbe {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Vec<Sample>>>,
}

impl HostProbe {
    /// Starts looking every `every` on each CPU (one thread kept on each), timing samples from
    /// `start`. `None` where a thread's own CPU time cannot be read.
    pub fn start(start: Instant, every: Duration) -> Option<HostProbe> {
        thread_cpu()?;
        let stop = Arc::new(AtomicBool::new(false));
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut threads = Vec::with_capacity(cpus);
        for cpu in 0..cpus {
            let stop = stop.clone();
            let thread = std::thread::Builder::new()
                .name(format!("host-probe-{cpu}"))
                .spawn(move || {
                    // Unpinned, the look runs wherever the scheduler puts it; still a look.
                    keep_on(cpu);
                    probe(start, every, &stop)
                });
            match thread {
                Ok(t) => threads.push(t),
                Err(_) => break,
            }
        }
        (!threads.is_empty()).then_some(HostProbe { stop, threads })
    }

    /// Stops the probe: every look of every thread in time order, each against its thread's
    /// fastest look.
    pub fn finish(mut self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        let mut all: Vec<Sample> = self
            .threads
            .drain(..)
            .filter_map(|t| t.join().ok())
            .flatten()
            .collect();
        all.sort_by_key(|s| s.at_us);
        all
    }
}

/// Keeps this thread on `cpu`, where the system allows it.
#[cfg(target_os = "linux")]
fn keep_on(cpu: usize) {
    let mut set = nix::sched::CpuSet::new();
    if set.set(cpu).is_ok() {
        let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set);
    }
}

#[cfg(not(target_os = "linux"))]
fn keep_on(_cpu: usize) {}

impl Drop for HostProbe {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn probe(start: Instant, every: Duration, stop: &AtomicBool) -> Vec<Sample> {
    let rounds = calibrate();
    let mut raw: Vec<(u64, Duration)> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(every);
        let at_us = start.elapsed().as_micros() as u64;
        let Some(took) = timed(rounds) else { break };
        raw.push((at_us, took));
    }
    slowdowns(&raw)
}

/// Each look's CPU time against the fastest of them (the fastest is the machine unhurried,
/// as near as the run shows it).
fn slowdowns(raw: &[(u64, Duration)]) -> Vec<Sample> {
    let Some(fastest) = raw.iter().map(|&(_, took)| took).min() else {
        return Vec::new();
    };
    let fastest = fastest.as_secs_f64().max(1e-9);
    raw.iter()
        .map(|&(at_us, took)| Sample {
            at_us,
            slowdown: (took.as_secs_f64() / fastest) as f32,
        })
        .collect()
}

/// Rounds of [`work`] that take about [`LOOK`] of CPU.
fn calibrate() -> u64 {
    let mut rounds = 1_000u64;
    for _ in 0..30 {
        let Some(took) = timed(rounds) else { break };
        if took >= LOOK / 4 {
            let scale = LOOK.as_secs_f64() / took.as_secs_f64().max(1e-9);
            return ((rounds as f64 * scale) as u64).max(1);
        }
        rounds *= 2;
    }
    rounds
}

/// The CPU time this thread spent on `rounds` of [`work`].
fn timed(rounds: u64) -> Option<Duration> {
    let before = thread_cpu()?;
    std::hint::black_box(work(std::hint::black_box(rounds)));
    Some(thread_cpu()?.saturating_sub(before))
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

/// This thread's CPU time so far.
#[cfg(target_os = "linux")]
fn thread_cpu() -> Option<Duration> {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID).ok()?;
    Some(Duration::from(t))
}

#[cfg(not(target_os = "linux"))]
fn thread_cpu() -> Option<Duration> {
    None
}

/// Whether any look from `from_us` to `to_us` (inclusive) was slowed by the host.
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
        let got = slowdowns(&[(0, ms(2)), (5, ms(1)), (10, ms(4))]);
        let s: Vec<f32> = got.iter().map(|s| s.slowdown).collect();
        assert_eq!(s, vec![2.0, 1.0, 4.0]);
        assert_eq!(got[2].at_us, 10);
        assert!(slowdowns(&[]).is_empty());
    }

    #[test]
    fn a_window_is_slowed_only_by_a_slowed_look_inside_it() {
        let at = |at_us, slowdown| Sample { at_us, slowdown };
        let samples = [at(0, 1.0), at(5_000, 3.5), at(10_000, 1.2), at(15_000, 2.9)];
        assert!(slowed_between(&samples, 5_000, 5_000), "ends count");
        assert!(slowed_between(&samples, 1_000, 9_000));
        assert!(
            !slowed_between(&samples, 5_001, 20_000),
            "2.9 is under the line"
        );
        assert!(!slowed_between(&samples, 0, 4_999));
        assert!(!slowed_between(&[], 0, u64::MAX));
        assert_eq!(slowed_share(&samples), Some(0.25));
        assert_eq!(slowed_share(&[]), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_probe_looks_until_stopped_and_its_fastest_look_is_one() {
        let probe = HostProbe::start(Instant::now(), Duration::from_millis(1)).expect("linux");
        std::thread::sleep(Duration::from_millis(60));
        let samples = probe.finish();
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert!(
            samples.len() >= 5 * cpus,
            "{} looks in 60 ms on {cpus} CPUs",
            samples.len()
        );
        let fastest = samples.iter().map(|s| s.slowdown).fold(f32::MAX, f32::min);
        assert_eq!(fastest, 1.0);
        assert!(samples.windows(2).all(|w| w[0].at_us <= w[1].at_us));
    }
}
