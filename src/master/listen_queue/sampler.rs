//! The sampler: a thread of its own reads every listener's accept queue ten times a second
//! and records it in the scoreboard (the master's memory and the segment's header). The
//! netlink exchange blocks (bounded, but blocking), so it never runs on the master's loop.

use std::io;
use std::os::fd::BorrowedFd;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{Probe, Reader};
use crate::scoreboard::{QueueSample, Scoreboard};

/// How often every listener is read.
pub const SAMPLE_INTERVAL: Duration = Duration::from_millis(100);

enum Msg {
    Watch(String, Probe),
    Stop,
}

/// The running sampler; stops its thread when dropped.
#[derive(Debug)]
pub struct Sampler {
    tx: mpsc::Sender<Msg>,
    thread: Option<JoinHandle<()>>,
}

impl Sampler {
    /// Opens the netlink socket and starts the thread.
    ///
    /// # Errors
    /// When the kernel refuses a sock_diag socket, or the thread cannot start.
    pub fn start(sb: Scoreboard) -> io::Result<Self> {
        let reader = Reader::new()?;
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("flora-queues".into())
            .spawn(move || run(reader, &sb, &rx))?;
        Ok(Self {
            tx,
            thread: Some(thread),
        })
    }

    /// Samples `fd`'s queue from now on, as `listener` (its address).
    pub fn watch(&self, listener: &str, fd: BorrowedFd<'_>) {
        match Probe::of(fd) {
            Ok(probe) => {
                let _ = self.tx.send(Msg::Watch(listener.to_string(), probe));
            }
            Err(e) => tracing::warn!("cannot sample the accept queue of {listener}: {e}"),
        }
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        let _ = self.tx.send(Msg::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(mut reader: Reader, sb: &Scoreboard, rx: &mpsc::Receiver<Msg>) {
    let mut watched: Vec<(String, Probe)> = Vec::new();
    let mut probes: Vec<Probe> = Vec::new();
    let mut failing = false;
    let mut next = Instant::now();
    loop {
        // Wait for the next sample time, taking new listeners meanwhile.
        loop {
            let wait = next.saturating_duration_since(Instant::now());
            match rx.recv_timeout(wait) {
                Ok(Msg::Watch(name, probe)) => {
                    if !watched.iter().any(|(n, _)| *n == name) {
                        watched.push((name, probe));
                        probes.push(probe);
                        next = Instant::now();
                    }
                }
                Ok(Msg::Stop) | Err(mpsc::RecvTimeoutError::Disconnected) => return,
                Err(mpsc::RecvTimeoutError::Timeout) => break,
            }
        }
        next = Instant::now() + SAMPLE_INTERVAL;
        if probes.is_empty() {
            continue;
        }
        match reader.read_all(&probes) {
            Ok(infos) => {
                if failing {
                    tracing::info!("accept queues readable again");
                    failing = false;
                }
                let samples: Vec<(String, QueueSample)> = watched
                    .iter()
                    .zip(infos)
                    .filter_map(|((name, _), info)| {
                        let info = info?;
                        Some((
                            name.clone(),
                            QueueSample {
                                length: info.length,
                                limit: info.limit,
                                // The kernel's counter is 32 bits wide.
                                drops: info.drops.map(|d| d as u32),
                            },
                        ))
                    })
                    .collect();
                sb.record_listen_queues(&samples);
            }
            Err(e) => {
                if !failing {
                    tracing::warn!("cannot read the accept queues (retrying): {e}");
                    failing = true;
                }
            }
        }
    }
}
