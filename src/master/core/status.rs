//! The master's view for the `status` request.

use super::Core;

impl Core {
    /// Phase, generation, target, the reload under way and the last one, the recycles under
    /// way and the workers by slot.
    pub(super) fn status(&self) -> serde_json::Value {
        let workers: Vec<_> = self
            .workers
            .iter()
            .map(|(slot, w)| {
                serde_json::json!({
                    "slot": slot,
                    "pid": w.pid.unwrap_or(0),
                    "generation": w.generation,
                    "state": w.state(),
                })
            })
            .collect();
        let recycles: Vec<_> = self
            .recycles
            .iter()
            .map(|(slot, r)| {
                serde_json::json!({
                    "slot": slot,
                    "replacement": r.replacement,
                    "reason": r.reason.as_str(),
                })
            })
            .collect();
        // The reload under way: its generation and, rolling, how many of its workers serve.
        let reload = self.reload.as_ref().map(|tx| {
            let mut doc = serde_json::json!({
                "generation": tx.generation,
                "batch": tx.batch,
                "serving": tx.done.len(),
                "of": self.target,
            });
            // A canary reload: its size, window, the generation it is compared with.
            if let Some(c) = &tx.canary {
                doc["canary"] = serde_json::json!({
                    "workers": c.spec.workers,
                    "secs": c.spec.secs,
                    "compared_with": c.old,
                    "observing": tx.observing(),
                });
            }
            doc
        });
        serde_json::json!({
            "instance": self.cfg.name,
            "master_pid": self.cfg.master_pid,
            "phase": format!("{:?}", self.phase).to_lowercase(),
            "generation": self.generation,
            "target_workers": self.target,
            "reload_in_progress": self.reload.is_some(),
            "upgrade_in_progress": self.upgrade.is_some(),
            "version": env!("CARGO_PKG_VERSION"),
            "reload_batch": self.cfg.reload_batch,
            "reload": reload,
            "last_reload": self.last_reload,
            "last_canary": self.last_canary,
            "canary_verdicts": self.canary_counts,
            "recycles": recycles,
            "autoscale": self.autoscale_status(),
            "workers": workers,
        })
    }
}
