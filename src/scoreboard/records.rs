//! The master's writes of header fields: generation, target, reload outcomes, OTLP pushes, the
//! listen queues, the status address. Each changes the creator's truth first and then the
//! segment's copy (no-ops in a process that did not create the segment).

use super::{segment, unix_ms, Scoreboard};

impl Scoreboard {
    /// Changes the creator's header truth and rewrites the header.
    pub(super) fn update_header(&self, f: impl FnOnce(&mut segment::HeaderTruth)) {
        if let Some(t) = &self.inner.truth {
            f(&mut t.header());
            self.inner.restamp();
        }
    }

    /// Sets the generation now serving (master).
    pub(crate) fn set_generation(&self, generation: u64) {
        self.update_header(|t| t.generation = generation);
    }

    /// Sets the number of workers the master wants (master).
    pub(crate) fn set_target_workers(&self, n: usize) {
        self.update_header(|t| t.target_workers = n as u64);
    }

    /// Records a reload's outcome (master).
    pub(crate) fn record_reload(&self, success: bool, generation: u64, reason: Option<&str>) {
        self.update_header(|t| {
            if success {
                t.reloads_success += 1;
            } else {
                t.reloads_rollback += 1;
            }
            let outcome = if success { 1 } else { 2 };
            let reason = reason.unwrap_or("").to_string();
            t.last_reload = Some((outcome, generation, unix_ms(), reason));
        });
    }

    /// Counts one OTLP push (master).
    pub(crate) fn record_otlp_export(&self, ok: bool) {
        self.update_header(|t| {
            if ok {
                t.otlp_ok += 1;
            } else {
                t.otlp_failed += 1;
            }
        });
    }

    /// Records one sample of listeners' accept queues (master; the sampler's thread) and
    /// writes them into the header's table.
    pub(crate) fn record_listen_queues(&self, samples: &[(String, segment::QueueSample)]) {
        if let Some(t) = &self.inner.truth {
            let mut q = t.queues();
            for (listener, sample) in samples {
                q.observe(listener, *sample);
            }
            if !t.header_frozen() {
                q.stamp(&self.inner.header().listen_queues);
            }
        }
    }

    /// A scrape of `/metrics` showed the queues' peaks: each starts again from the current
    /// length (master).
    pub(crate) fn listen_queues_scraped(&self) {
        if let Some(t) = &self.inner.truth {
            let mut q = t.queues();
            q.scraped();
            if !t.header_frozen() {
                q.stamp(&self.inner.header().listen_queues);
            }
        }
    }

    /// Publishes the management HTTP address (master).
    pub(crate) fn set_status_addr(&self, addr: &str) {
        self.update_header(|t| t.status_addr = addr.to_string());
    }
}
