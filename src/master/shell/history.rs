//! The master's history in the control socket's `status` answer, so `flora-cluster status
//! --json` in another process carries it too.

use super::guards::GUARDS_REPLY_BYTES;
use super::Shell;

impl Shell {
    /// Adds `history` to a `status` answer: the newest samples that fit in what the line
    /// limit leaves after the rest of the answer (all 900 usually do).
    pub(super) fn with_history(&self, mut reply: crate::control::Reply) -> crate::control::Reply {
        let Some(serde_json::Value::Object(doc)) = &mut reply.status else {
            return reply;
        };
        let rest = serde_json::to_vec(&*doc).map_or(usize::MAX, |v| v.len());
        // The key and its punctuation.
        let budget = GUARDS_REPLY_BYTES.saturating_sub(rest + 16);
        let history = self.sb.history().fit(budget);
        if let Ok(value) = serde_json::to_value(history) {
            doc.insert("history".into(), value);
        }
        reply
    }
}
