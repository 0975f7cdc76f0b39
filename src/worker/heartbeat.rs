//! The heartbeat (`--heartbeat-timeout`): once the worker is ready, a task on its runtime sends
//! [`ToMaster::Heartbeat`] every `FLORA_HEARTBEAT_MS` over the control channel. A runtime
//! blocked by a synchronous call or a deadlock sends none, and the master replaces the worker.
//!
//! Each heartbeat says how late its timer fired (`lag_us`, the event loop's lag) and how many
//! requests this process finished (its own count in process memory, never the slot's). It
//! keeps going while the worker drains, and ends quietly when a send fails (the master is
//! gone). Nothing is done per request.

use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};

use super::control::Control;
use crate::ipc::ToMaster;

/// How often the count is checked once it reached `--max-requests`.
const PROMPT_STEP: Duration = Duration::from_millis(50);

/// What the heartbeat is told by the master.
#[derive(Debug, Clone, Copy)]
pub(super) struct Beat {
    /// The regular interval.
    pub(super) every: Duration,
    /// `--max-requests`: from this count on, a beat also goes out within [`PROMPT_STEP`] of
    /// the count growing (the master recycles on a count it was told).
    pub(super) prompt_from: Option<u64>,
}

/// Sends a heartbeat every `beat.every` (the first at once), and promptly once the count is
/// past `beat.prompt_from`, until a send fails; `requests` gives the count each one carries.
pub(super) async fn run(control: &Control, beat: Beat, requests: impl Fn() -> u64) {
    let step = match beat.prompt_from {
        Some(_) => beat.every.min(PROMPT_STEP),
        None => beat.every,
    };
    let mut ticks = tokio::time::interval(step);
    // After a stall: one late tick (it tells the lag), then the schedule restarts from it
    // (no burst of catch-up ticks).
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last: Option<(Instant, u64)> = None;
    // The largest lag of the ticks since the last beat (a tick that sends nothing still
    // tells a stall).
    let mut worst = Duration::ZERO;
    loop {
        let scheduled = ticks.tick().await;
        let now = Instant::now();
        worst = worst.max(now.saturating_duration_since(scheduled));
        let count = requests();
        let regular = last.is_none_or(|(at, _)| now.duration_since(at) + step / 2 >= beat.every);
        let prompt = beat
            .prompt_from
            .is_some_and(|from| count >= from && last.is_none_or(|(_, sent)| count > sent));
        if !(regular || prompt) {
            continue;
        }
        last = Some((now, count));
        let lag = std::mem::take(&mut worst);
        let beat = ToMaster::Heartbeat {
            lag_us: u64::try_from(lag.as_micros()).unwrap_or(u64::MAX),
            requests: count,
        };
        if let Err(e) = control.send(&beat).await {
            tracing::debug!("heartbeat stopped: {e}");
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::OwnedFd;
    use std::sync::Arc;
    use std::time::Instant as StdInstant;

    use super::*;
    use crate::ipc::{self, Channel};

    /// A heartbeat as the master receives it, with its time of arrival.
    #[derive(Debug, Clone, Copy)]
    struct Received {
        at: StdInstant,
        lag: Duration,
        requests: u64,
    }

    /// Plays the master: receives heartbeats on its own runtime until `until` have come, or
    /// the channel ends, or 10 s passed.
    fn receive(master: OwnedFd, until: usize) -> std::thread::JoinHandle<Vec<Received>> {
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let channel = Channel::new(master).expect("master end");
                let mut beats = Vec::new();
                let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
                while beats.len() < until {
                    let got = tokio::time::timeout_at(deadline, channel.recv::<ToMaster>()).await;
                    let Ok(Ok(Some((msg, _)))) = got else { break };
                    if let ToMaster::Heartbeat { lag_us, requests } = msg {
                        beats.push(Received {
                            at: StdInstant::now(),
                            lag: Duration::from_micros(lag_us),
                            requests,
                        });
                    }
                }
                beats
            })
        })
    }

    #[test]
    fn a_turning_runtime_beats_on_time_and_a_blocked_one_not_at_all() {
        let (worker_end, master_end) = ipc::pair().expect("socketpair");
        let master = receive(master_end, 12);
        let every = Duration::from_millis(100);
        let block = Duration::from_millis(800);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let blocked_at = rt.block_on(async move {
            let channel = Arc::new(Channel::new(worker_end).expect("worker end"));
            let (control, _answers) = Control::new(channel, Duration::from_secs(1));
            let beat = Beat {
                every,
                prompt_from: None,
            };
            let beats = tokio::spawn(async move { run(&control, beat, || 42).await });
            tokio::time::sleep(every * 5).await;
            // A handler that blocks the (only) runtime thread.
            let blocked_at = StdInstant::now();
            std::thread::sleep(block);
            tokio::time::sleep(every * 5).await;
            beats.abort();
            blocked_at
        });
        drop(rt); // closes the worker end: the receiver ends
        let beats = master.join().expect("master thread");
        assert!(beats.len() >= 8, "beats: {beats:?}");
        assert!(beats.iter().all(|b| b.requests == 42));
        let (before, after): (Vec<&Received>, Vec<&Received>) =
            beats.iter().partition(|b| b.at < blocked_at);
        assert!(before.len() >= 3, "beats before the block: {before:?}");
        // None arrived while the runtime was blocked.
        let first_after = after.first().expect("a beat after the block");
        let silent = first_after.at.duration_since(blocked_at);
        assert!(silent >= block - Duration::from_millis(50), "{silent:?}");
        // The first one after it tells the stall; the others at most the lag of a busy
        // machine, far below it.
        assert!(first_after.lag >= block - every * 2, "{first_after:?}");
        let on_time = before.iter().chain(after.iter().skip(1));
        for b in on_time {
            assert!(b.lag < block / 3, "{b:?}");
        }
    }

    #[tokio::test]
    async fn past_max_requests_a_grown_count_is_told_at_once() {
        use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
        let (worker_end, master_end) = ipc::pair().expect("socketpair");
        let master = Channel::new(master_end).expect("master end");
        let channel = Arc::new(Channel::new(worker_end).expect("worker end"));
        let (control, _answers) = Control::new(channel, Duration::from_secs(1));
        let count = Arc::new(AtomicU64::new(0));
        let seen = count.clone();
        let beat = Beat {
            every: Duration::from_secs(30),
            prompt_from: Some(5),
        };
        let task =
            tokio::spawn(async move { run(&control, beat, move || seen.load(Relaxed)).await });
        let next = |wait| tokio::time::timeout(wait, master.recv::<ToMaster>());
        let requests = |got: Result<_, _>| match got {
            Ok(Ok(Some((ToMaster::Heartbeat { requests, .. }, _)))) => Some(requests),
            _ => None,
        };
        // The first beat at once; the regular ones are 30 s apart.
        assert_eq!(requests(next(Duration::from_secs(5)).await), Some(0));
        count.store(3, Relaxed);
        assert!(
            next(Duration::from_millis(300)).await.is_err(),
            "under the limit: quiet"
        );
        count.store(6, Relaxed);
        assert_eq!(requests(next(Duration::from_secs(2)).await), Some(6));
        // Unchanged: quiet again; grown: told again.
        assert!(
            next(Duration::from_millis(300)).await.is_err(),
            "same count: quiet"
        );
        count.store(9, Relaxed);
        assert_eq!(requests(next(Duration::from_secs(2)).await), Some(9));
        task.abort();
    }

    #[tokio::test]
    async fn a_failed_send_ends_the_task() {
        let (worker_end, master_end) = ipc::pair().expect("socketpair");
        drop(master_end);
        let channel = Arc::new(Channel::new(worker_end).expect("worker end"));
        let (control, _answers) = Control::new(channel, Duration::from_secs(1));
        let ended = tokio::time::timeout(
            Duration::from_secs(5),
            run(
                &control,
                Beat {
                    every: Duration::from_millis(10),
                    prompt_from: None,
                },
                || 0,
            ),
        )
        .await;
        assert!(ended.is_ok(), "the heartbeat ends when the master is gone");
    }
}
