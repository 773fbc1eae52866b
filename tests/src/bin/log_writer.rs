//! A log writer for the concurrent-writer test: appends `EVENTS` JSON lines to `PATH` in random-sized writes (so
//! lines and UTF-8 characters are cut between writes), rotates the file (renames it to `PATH.1` and starts a new one)
//! at 30% of the events and truncates it at 60%, then exits.
//!
//! Usage: `log_writer PATH EVENTS SEED SECONDS`: the writes are spread over about SECONDS. Line `i` is
//! [`kappa_tests::writer_line`]`(i)`.

use std::io::Write as _;
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, path, events, seed, seconds] = args.as_slice() else {
        eprintln!("usage: log_writer PATH EVENTS SEED SECONDS");
        std::process::exit(2);
    };
    let path = std::path::PathBuf::from(path);
    let events: usize = events.parse().expect("EVENTS is a number");
    let seconds: f64 = seconds.parse().expect("SECONDS is a number");
    let started = Instant::now();
    let mut state: u64 = seed.parse::<u64>().expect("SEED is a number") | 1;
    let mut random = move |below: usize| {
        // xorshift64*: deterministic for a seed, no dependency.
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % below.max(1)
    };
    let open = |path: &std::path::Path| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("open the log")
    };
    let mut file = open(&path);
    let (rotate_at, truncate_at) = kappa_tests::writer_phases(events);
    let mut pending: Vec<u8> = Vec::new();
    let mut written = 0_usize;
    let mut flush = |file: &mut std::fs::File, pending: &mut Vec<u8>, all: bool, done: usize| {
        while !pending.is_empty() {
            let n = (1 + random(4096)).min(pending.len());
            if !all && n == pending.len() && pending.len() < 4096 {
                return; // keep a small remainder for the next event's bytes
            }
            file.write_all(&pending[..n]).expect("write");
            pending.drain(..n);
            written += 1;
            // Keep to the schedule, so the reader catches the file between writes, half-written lines and all.
            let due = Duration::from_secs_f64(seconds * done as f64 / events as f64);
            if let Some(ahead) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(ahead);
            }
        }
    };
    for i in 0..events {
        if i == rotate_at {
            flush(&mut file, &mut pending, true, i);
            let mut rotated = path.clone().into_os_string();
            rotated.push(".1");
            std::fs::rename(&path, &rotated).expect("rotate");
            file = open(&path);
        }
        if i == truncate_at {
            flush(&mut file, &mut pending, true, i);
            file.set_len(0).expect("truncate");
        }
        pending.extend_from_slice(kappa_tests::writer_line(i).as_bytes());
        flush(&mut file, &mut pending, false, i);
    }
    flush(&mut file, &mut pending, true, events);
    eprintln!("{written} writes");
}
