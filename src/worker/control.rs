//! The worker's end of the control channel: requests to the master and their answers.
//!
//! One request is in flight at a time. Each carries a fresh id that the master copies into its
//! answer ([`crate::ipc`] "Wire format"). An answer with any other id is one the worker gave up
//! on (it came after [`REPLY_TIMEOUT`]): it is dropped, with any descriptor attached, and never
//! handed to a later request.

use std::io::ErrorKind::{BrokenPipe, TimedOut};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Mutex};

use super::WorkerError;
use crate::ipc::{Channel, RequestId, ToMaster, ToWorker};

/// How long a request waits for the master's answer (binding a socket or registering a metric
/// is quick unless the master is stuck).
pub(super) const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// Answers the reader may hold while no request takes them (one per request at most).
const QUEUED_ANSWERS: usize = 4;

/// An answer from the master and the descriptors attached to it.
pub(super) type Answer = (ToWorker, Vec<OwnedFd>);

#[derive(Debug)]
struct Pending {
    answers: mpsc::Receiver<Answer>,
    last_id: RequestId,
}

/// Sends requests to the master and matches its answers by id.
#[derive(Debug)]
pub(super) struct Control {
    channel: Arc<Channel>,
    /// Held for a whole request: one in flight at a time.
    pending: Mutex<Pending>,
    timeout: Duration,
}

impl Control {
    /// A client on `channel`; feed what [`read_loop`] forwards into the returned sender.
    pub(super) fn new(channel: Arc<Channel>, timeout: Duration) -> (Self, mpsc::Sender<Answer>) {
        let (tx, answers) = mpsc::channel(QUEUED_ANSWERS);
        let pending = Mutex::new(Pending {
            answers,
            last_id: 0,
        });
        let control = Self {
            channel,
            pending,
            timeout,
        };
        (control, tx)
    }

    /// Sends a message that expects no answer.
    pub(super) async fn send(&self, msg: &ToMaster) -> Result<(), WorkerError> {
        self.channel
            .send(msg, None)
            .await
            .map_err(WorkerError::Channel)
    }

    /// Sends the request `build(id)` and waits for the answer carrying that id.
    ///
    /// # Errors
    /// [`WorkerError::Channel`] when the request cannot be sent, the master is gone, or no
    /// answer came within the timeout.
    pub(super) async fn ask(
        &self,
        build: impl FnOnce(Option<RequestId>) -> ToMaster,
    ) -> Result<Answer, WorkerError> {
        let mut pending = self.pending.lock().await;
        pending.last_id = pending.last_id.wrapping_add(1);
        let id = pending.last_id;
        self.send(&build(Some(id))).await?;
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            let answer = tokio::time::timeout_at(deadline, pending.answers.recv())
                .await
                .map_err(|_| channel_error(TimedOut, "the master did not answer in time"))?
                .ok_or_else(|| channel_error(BrokenPipe, "the master is gone"))?;
            if is_answer_to(id, &answer.0) {
                return Ok(answer);
            }
            tracing::debug!(
                waiting_for = id,
                answer_to = ?answer.0.reply_to(),
                "dropped an answer of the master to an earlier request (it came too late)"
            );
        }
    }
}

fn channel_error(kind: std::io::ErrorKind, what: &str) -> WorkerError {
    WorkerError::Channel(std::io::Error::new(kind, what))
}

/// Whether `msg` is the answer to request `id`.
pub(super) fn is_answer_to(id: RequestId, msg: &ToWorker) -> bool {
    msg.reply_to() == Some(id)
}

/// Reads `channel` until the master is gone: [`ToWorker::Shutdown`] calls `on_shutdown`, every
/// other message goes to `answers` (dropped when nobody takes answers: the reader never blocks,
/// so a shutdown is always seen).
pub(super) async fn read_loop(
    channel: &Channel,
    answers: &mpsc::Sender<Answer>,
    on_shutdown: impl Fn(),
) {
    loop {
        match channel.recv::<ToWorker>().await {
            Ok(Some((ToWorker::Shutdown, _))) => on_shutdown(),
            Ok(Some(answer)) => {
                if answers.try_send(answer).is_err() {
                    tracing::debug!("dropped an answer of the master that no request waits for");
                }
            }
            Ok(None) => return,
            Err(e) => {
                tracing::warn!("control channel: {e}");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipc;
    use crate::scoreboard::{MetricSpec, Registered};

    fn at(entry: usize) -> Registered {
        Registered {
            entry,
            cell: entry,
            cells: 1,
        }
    }

    fn registered(id: Option<RequestId>, entry: usize) -> ToWorker {
        ToWorker::Registered { id, at: at(entry) }
    }

    #[test]
    fn only_the_answer_with_the_awaited_id_matches() {
        assert!(is_answer_to(2, &registered(Some(2), 0)));
        for other in [
            registered(Some(1), 0),
            registered(Some(3), 0),
            registered(None, 0),
            ToWorker::Shutdown,
        ] {
            assert!(!is_answer_to(2, &other), "{other:?}");
        }
    }

    /// A client on one end of a real socketpair, with its reader running, and the other end
    /// for the test to play the master.
    fn client(timeout: Duration) -> (Arc<Control>, Channel) {
        let (worker_end, master_end) = ipc::pair().expect("socketpair");
        let channel = Arc::new(Channel::new(worker_end).expect("worker end"));
        let (control, answers) = Control::new(channel.clone(), timeout);
        tokio::spawn(async move { read_loop(&channel, &answers, || {}).await });
        let master = Channel::new(master_end).expect("master end");
        (Arc::new(control), master)
    }

    async fn register(control: &Control, name: &str) -> Result<Answer, WorkerError> {
        let spec = MetricSpec::counter(name, "test");
        control.ask(|id| ToMaster::Register { id, spec }).await
    }

    async fn next_request(master: &Channel) -> ToMaster {
        let (msg, _) = master
            .recv::<ToMaster>()
            .await
            .expect("recv")
            .expect("open");
        msg
    }

    #[tokio::test]
    async fn a_late_answer_is_dropped_not_given_to_the_next_request() {
        let (control, master) = client(Duration::from_millis(200));
        // Request A: the master stays silent until the worker gives up.
        let err = {
            let c = control.clone();
            let a = tokio::spawn(async move { register(&c, "a_total").await });
            let req_a = next_request(&master).await;
            let err = a.await.expect("join").expect_err("A timed out");
            // Only now does A's answer come: too late.
            let late = registered(req_a.id(), 1);
            master.send(&late, None).await.expect("send late");
            err
        };
        assert!(err.to_string().contains("did not answer in time"), "{err}");
        // Request B gets B's answer, not A's late one, which is still queued before it.
        let c = control.clone();
        let b = tokio::spawn(async move { register(&c, "b_total").await });
        let req_b = next_request(&master).await;
        assert_ne!(req_b.id(), None);
        master
            .send(&registered(None, 7), None)
            .await
            .expect("an answer without id");
        master
            .send(&registered(req_b.id(), 2), None)
            .await
            .expect("send B");
        let (answer, _) = b.await.expect("join").expect("B answered");
        assert_eq!(answer, registered(req_b.id(), 2));
    }

    #[tokio::test]
    async fn ids_differ_per_request_and_eof_ends_a_wait() {
        let (control, master) = client(Duration::from_secs(10));
        let c = control.clone();
        let first = tokio::spawn(async move { register(&c, "a_total").await });
        let req = next_request(&master).await;
        master
            .send(&registered(req.id(), 0), None)
            .await
            .expect("answer");
        first.await.expect("join").expect("answered");
        let c = control.clone();
        let second = tokio::spawn(async move { register(&c, "b_total").await });
        let req2 = next_request(&master).await;
        assert_ne!(req.id(), req2.id());
        drop(master);
        let err = second.await.expect("join").expect_err("master gone");
        assert!(err.to_string().contains("master is gone"), "{err}");
    }
}
