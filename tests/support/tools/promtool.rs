//! `promtool`: the one runner and the one assertion on `/metrics` text that every test uses.

use std::process::Command;

use super::{require_tool, run_tool, ToolOutput, TOOL_TIMEOUT};

/// Runs `promtool ARGS` in the repository (paths in `args` are relative to it) with `input`
/// on stdin.
pub fn promtool(args: &[&str], input: &[u8]) -> ToolOutput {
    let bin = require_tool("promtool", "prometheus");
    run_tool(
        Command::new(bin)
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR")),
        input,
        TOOL_TIMEOUT,
    )
}

/// What `promtool check metrics` may report besides a clean pass (exit 0). A parse error
/// (exit 1) always fails.
#[derive(Clone, Copy)]
pub enum Lints<'a> {
    /// No lint problem: exit 0 only.
    None,
    /// Any lint problem (exit 3: camel case, colons, …).
    Any,
    /// Lint problems (exit 3) whose every non-empty output line `accept` accepts.
    Only(&'a dyn Fn(&str) -> bool),
}

impl Lints<'_> {
    fn pass(&self, out: &ToolOutput) -> bool {
        match (self, out.status.code()) {
            (_, Some(0)) => true,
            (Self::Any, Some(3)) => true,
            (Self::Only(accept), Some(3)) => out
                .stdout
                .lines()
                .chain(out.stderr.lines())
                .all(|l| l.trim().is_empty() || accept(l)),
            _ => false,
        }
    }
}

/// Checks `text` with `promtool check metrics` (exit 0 clean, 3 lint problems, 1 parse error);
/// panics with promtool's output, `context` and the text unless `lints` lets it pass.
pub fn assert_promtool(text: &str, lints: Lints<'_>, context: &str) -> ToolOutput {
    let out = promtool(&["check", "metrics"], text.as_bytes());
    assert!(
        lints.pass(&out),
        "promtool check metrics: {}\n----- promtool stdout -----\n{}----- promtool stderr \
         -----\n{}----- {context} -----\n{text}",
        out.status,
        out.stdout,
        out.stderr,
    );
    out
}
