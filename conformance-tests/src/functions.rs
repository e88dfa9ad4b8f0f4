//! The remote functions the conformance cases call.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redwood::{Broadcast, ResultRef};
use serde::{Deserialize, Serialize};

/// A nested struct to check that serde types of any shape travel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// A name.
    pub label: String,
    /// Coordinates.
    pub coords: Vec<(i32, i32)>,
    /// An optional child.
    pub child: Option<Box<Point>>,
}

/// Arity 0.
#[redwood::remote]
pub fn zero() -> u32 {
    42
}

/// Arity 1, and the bare-argument form of `map`.
#[redwood::remote]
pub fn square(x: u64) -> u64 {
    x * x
}

/// Arity 2 with strings.
#[redwood::remote]
pub fn concat(a: String, b: String) -> String {
    format!("{a}{b}")
}

/// Arity 3 with mixed types.
#[redwood::remote]
pub fn mix(a: i8, b: f32, c: bool) -> (i8, f32, bool) {
    (a.wrapping_neg(), b * 2.0, !c)
}

/// Arity 8.
#[redwood::remote]
#[allow(clippy::too_many_arguments)]
pub fn eight(a: u8, b: u16, c: u32, d: u64, e: i8, f: i16, g: i32, h: i64) -> i128 {
    a as i128 + b as i128 + c as i128 + d as i128 + e as i128 + f as i128 + g as i128 + h as i128
}

/// Unit in, unit out.
#[redwood::remote]
pub fn unit(_: ()) {}

/// Nested structs.
#[redwood::remote]
pub fn mirror(p: Point) -> Point {
    Point {
        label: p.label.chars().rev().collect(),
        coords: p.coords.iter().map(|&(x, y)| (y, x)).collect(),
        child: p.child.map(|c| Box::new(mirror(*c))),
    }
}

/// A large vector in and out.
#[redwood::remote]
pub fn scale(v: Vec<f64>, k: f64) -> Vec<f64> {
    v.into_iter().map(|x| x * k).collect()
}

/// Sleeps, then returns its input: for ordering, streaming and cancellation.
#[redwood::remote]
pub fn sleep_echo(ms: u64, value: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    value
}

/// Waits until the file `gate` exists (at most a minute), then returns `value`: for a test
/// that must act while tasks are surely running (a node lost under them, say).
#[redwood::remote]
pub fn wait_for_gate(gate: String, value: u64) -> Result<u64, String> {
    let path = std::path::Path::new(&gate);
    for _ in 0..3000 {
        if path.exists() {
            return Ok(value);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(format!("the gate {gate} was not opened within a minute"))
}

/// Writes the worker's pid into `dir`, then sleeps: for checking that workers die with a
/// killed client.
#[redwood::remote]
pub fn pid_then_sleep(dir: String, ms: u64) -> u32 {
    let pid = std::process::id();
    let _ = std::fs::write(std::path::Path::new(&dir).join(pid.to_string()), b"");
    std::thread::sleep(Duration::from_millis(ms));
    pid
}

/// Sleeps and reports when it ran (microseconds since the epoch): for concurrency limits.
#[redwood::remote]
pub fn timed_sleep(ms: u64) -> (u64, u64) {
    let now = || {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0)
    };
    let start = now();
    std::thread::sleep(Duration::from_millis(ms));
    (start, now())
}

/// Panics with a known message.
#[redwood::remote]
pub fn panics(x: u32) -> u32 {
    if x < 1000 {
        panic!("conformance panic for input {x}");
    }
    x
}

/// Returns `Err` for odd inputs.
#[redwood::remote]
pub fn fails_on_odd(x: u32) -> Result<u32, String> {
    if x % 2 == 1 {
        Err(format!("odd input {x} is not allowed"))
    } else {
        Ok(x / 2)
    }
}

/// Kills its own worker process.
#[redwood::remote]
pub fn abort_worker(x: u32) -> u32 {
    eprintln!("conformance: worker about to abort for input {x}");
    std::process::abort()
}

/// Fails until attempt `succeed_on` (1 is the first), then returns the attempt number.
#[redwood::remote]
pub fn flaky(succeed_on: u32) -> Result<u32, String> {
    let attempt = redwood::context::attempt();
    if attempt < succeed_on {
        Err(format!("transient failure on attempt {attempt}"))
    } else {
        Ok(attempt)
    }
}

/// Aborts its worker on the first attempt, succeeds on a retry.
#[redwood::remote]
pub fn crash_once(x: u32) -> u32 {
    if redwood::context::attempt() == 1 {
        std::process::abort();
    }
    x + 1
}

/// Reads a broadcast vector and returns its length and sum.
#[redwood::remote]
pub fn bcast_sum(table: Broadcast<Vec<u64>>, offset: u64) -> Result<(u64, u64), redwood::Error> {
    let table = table.get()?;
    Ok((table.len() as u64, table.iter().sum::<u64>() + offset))
}

/// Reads a broadcast byte vector without decoding it; returns its length and byte sum.
#[redwood::remote]
pub fn bytes_sum(data: Broadcast<Vec<u8>>) -> Result<(u64, u64), redwood::Error> {
    let bytes = data.get_bytes()?;
    Ok((bytes.len() as u64, bytes.iter().map(|&b| b as u64).sum()))
}

/// Adds one to an earlier task's result, read from storage.
#[redwood::remote]
pub fn add_one(earlier: ResultRef<u64>) -> Result<u64, redwood::Error> {
    Ok(earlier.get()? + 1)
}

/// Writes a lot to stdout and stderr, which must not disturb the worker protocol.
#[redwood::remote]
pub fn noisy(lines: u32) -> u32 {
    for i in 0..lines {
        println!("noisy stdout line {i}");
        eprintln!("noisy stderr line {i}");
    }
    lines
}

/// Does nothing: the throughput probe.
#[redwood::remote]
pub fn noop(x: u64) -> u64 {
    x
}

/// Kills its own worker with SIGKILL (what the kernel's OOM killer does).
#[redwood::remote]
pub fn sigkill_self(x: u32) -> u32 {
    let pid = std::process::id().to_string();
    let _ = std::process::Command::new("kill")
        .args(["-9", &pid])
        .status();
    std::thread::sleep(std::time::Duration::from_secs(30));
    x
}

/// One rank of an MPI task: leaves a marker in the working folder, and rank 0 waits (up to
/// 20 s) for every rank's marker, proving all ranks ran. Returns (rank, size, hosts, ranks
/// seen). `fail_rank` makes that rank fail.
#[redwood::remote]
pub fn mpi_world(
    tag: String,
    fail_rank: Option<u32>,
) -> Result<(u32, u32, usize, Vec<u32>), String> {
    let world = redwood::context::mpi().ok_or("not an MPI task")?;
    if fail_rank == Some(world.rank) {
        return Err(format!("rank {} fails on purpose", world.rank));
    }
    let marker = |rank: u32| std::path::PathBuf::from(format!("redwood-rank-{tag}-{rank}"));
    std::fs::write(marker(world.rank), b"").map_err(|e| e.to_string())?;
    let mut seen = Vec::new();
    if world.is_root() && fail_rank.is_none() {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            seen = (0..world.size).filter(|&r| marker(r).exists()).collect();
            if seen.len() == world.size as usize || std::time::Instant::now() > deadline {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
    Ok((world.rank, world.size, world.hosts.len(), seen))
}

/// Counts pseudo-random points of the unit square inside the quarter circle (as `pi` does): the
/// real-Azure smoke tests' job.
#[redwood::remote]
pub fn hits(samples: u64, seed: u64) -> u64 {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    };
    (0..samples)
        .filter(|_| {
            let (x, y) = (next(), next());
            x * x + y * y <= 1.0
        })
        .count() as u64
}
