//! The shell's side of a master upgrade: the old master starts the new one and runs the
//! handover (`crate::upgrade`); the core decides.

use super::Shell;
use crate::master::core::{Action, Event};

impl Shell {
    /// Carries out an upgrade action.
    pub(super) fn upgrade_action(&mut self, action: Action) -> Option<Event> {
        match action {
            Action::SpawnUpgrade { .. } => Some(Event::UpgradeFailed {
                reason: "not built yet".into(),
            }),
            _ => None,
        }
    }
}
