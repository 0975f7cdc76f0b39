//! Work the shell runs off the loop for the core: program copies and hooks.

use std::time::Duration;

use super::{Shell, TaskEvent};
use crate::master::core::{Event, Hook};
use crate::master::spawn::SpawnSpec;
use crate::master::{program, HookFn};

impl Shell {
    /// Copies the program for `generation` on a blocking thread; [`TaskEvent::Prepared`]
    /// reports back.
    pub(super) fn prepare(&self, generation: u64) {
        let program = self.program.clone();
        let (dir, name) = (self.dir.clone(), self.name.clone());
        let base = SpawnSpec {
            exe: std::path::PathBuf::new(),
            copied: false,
            argv0: String::new(),
            args: Vec::new(),
            instance: self.name.clone(),
            shutdown_timeout: self.shutdown_timeout,
            show_query: self.show_query,
            credentials: self.credentials,
            tls: self.tls.clone(),
            request_timeout: self.request_timeout,
            heartbeat_interval: self.heartbeat_interval,
            max_requests: self.max_requests,
        };
        let tasks = self.tasks.clone();
        tokio::spawn(async move {
            let job = tokio::task::spawn_blocking(move || {
                let (argv0, args) = program.split_first().ok_or("no program")?;
                let prepared = program::prepare(argv0, &dir, &name, generation, base.credentials)
                    .map_err(|e| format!("cannot prepare program {argv0:?}: {e}"))?;
                Ok(SpawnSpec {
                    exe: prepared.exe,
                    copied: prepared.copied,
                    argv0: argv0.clone(),
                    args: args.to_vec(),
                    ..base
                })
            });
            let result = job
                .await
                .unwrap_or_else(|e| Err(format!("program copy failed: {e}")));
            let _ = tasks.send(TaskEvent::Prepared { generation, result });
        });
    }

    /// Forgets `generation`'s program, removing our copy of it.
    pub(super) fn drop_generation(&mut self, generation: u64) {
        if let Some(spec) = self.specs.remove(&generation) {
            if spec.copied {
                program::remove(&self.dir, &spec.exe);
            }
        }
    }

    /// Runs `hook` in a task; [`TaskEvent::HookDone`] reports back. Without such a hook,
    /// answers at once.
    pub(super) fn run_hook(&self, hook: Hook, timeout: Duration) -> Option<Event> {
        let (f, arg) = match hook {
            Hook::BeforeReload { generation } => (self.hooks.before_reload.clone(), generation),
            Hook::BeforeShutdown => (self.hooks.before_shutdown.clone(), 0),
        };
        let Some(f) = f else {
            return Some(Event::HookDone {
                hook,
                result: Ok(()),
            });
        };
        let tasks = self.tasks.clone();
        tokio::spawn(async move {
            let result = bounded(f, arg, timeout).await;
            let _ = tasks.send(TaskEvent::HookDone { hook, result });
        });
        None
    }
}

/// Runs a hook in its own task (a panic becomes an error) with a timeout.
async fn bounded(hook: HookFn, arg: u64, timeout: Duration) -> Result<(), String> {
    let task = tokio::spawn(hook(arg));
    match tokio::time::timeout(timeout, task).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => Err(format!("hook panicked: {e}")),
        Err(_) => Err(format!("timed out after {timeout:?}")),
    }
}
