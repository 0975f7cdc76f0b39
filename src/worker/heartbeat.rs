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

/// Sends a heartbeat every `every` (the first at once) until a send fails; `requests` gives
/// the count each one carries.
pub(super) async fn run(control: &Control, every: Duration, requests: impl Fn() -> u64) {
    let mut ticks = tokio::time::interval(every);
    // After a stall: one late tick (it tells the lag), then the schedule restarts from it
    // (no burst of catch-up ticks).
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        let scheduled = ticks.tick().await;
        let lag = Instant::now().saturating_duration_since(scheduled);
        let beat = ToMaster::Heartbeat {
            lag_us: u64::try_from(lag.as_micros()).unwrap_or(u64::MAX),
            requests: requests(),
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
    struct Beat {
        at: StdInstant,
        lag: Duration,
        requests: u64,
    }

    /// Plays the master: receives heartbeats on its own runtime until `until` have come, or
    /// the channel ends, or 10 s passed.
    fn receive(master: OwnedFd, until: usize) -> std::thread::JoinHandle<Vec<Beat>> {
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
                        beats.push(Beat {
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
            let beats = tokio::spawn(async move { run(&control, every, || 42).await });
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
        let (before, after): (Vec<&Beat>, Vec<&Beat>) =
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
    async fn a_failed_send_ends_the_task() {
        let (worker_end, master_end) = ipc::pair().expect("socketpair");
        drop(master_end);
        let channel = Arc::new(Channel::new(worker_end).expect("worker end"));
        let (control, _answers) = Control::new(channel, Duration::from_secs(1));
        let ended = tokio::time::timeout(
            Duration::from_secs(5),
            run(&control, Duration::from_millis(10), || 0),
        )
        .await;
        assert!(ended.is_ok(), "the heartbeat ends when the master is gone");
    }
}
