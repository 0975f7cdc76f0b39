//! The terminal while `top` runs: raw mode (nix termios), the alternate screen, the cursor
//! hidden; all restored on every way out (drop, a panic, a fatal signal the loop turns into
//! an exit). Plain ANSI escapes, so it works on any terminal and over ssh.

use std::io::{self, Write};
use std::os::fd::AsFd;
use std::sync::Mutex;

use nix::sys::termios::{self, OutputFlags, SetArg, Termios};

/// Alternate screen on, cursor hidden.
const ENTER: &str = "\x1b[?1049h\x1b[?25l";
/// Cursor shown, alternate screen off.
const LEAVE: &str = "\x1b[?25h\x1b[?1049l";

/// The settings to put back (set while the screen is ours).
static SAVED: Mutex<Option<Termios>> = Mutex::new(None);

/// Owns the terminal until dropped.
#[derive(Debug)]
pub(super) struct Screen {
    _private: (),
}

impl Screen {
    /// Saves the settings of stdin's terminal, switches it to raw mode (output processing
    /// kept, so `\n` still returns the carriage) and enters the alternate screen.
    pub(super) fn enter() -> io::Result<Self> {
        let stdin = io::stdin();
        let saved = termios::tcgetattr(stdin.as_fd())?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        raw.output_flags |= OutputFlags::OPOST | OutputFlags::ONLCR;
        *SAVED.lock().unwrap_or_else(|e| e.into_inner()) = Some(saved);
        install_panic_hook();
        termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw)?;
        let mut out = io::stdout().lock();
        out.write_all(ENTER.as_bytes())?;
        out.flush()?;
        Ok(Self { _private: () })
    }

    /// Draws `lines` from the top left, clearing what the last frame left.
    pub(super) fn draw(&self, lines: &[String]) -> io::Result<()> {
        let mut frame = String::from("\x1b[H");
        for (i, line) in lines.iter().enumerate() {
            if i > 0 {
                frame.push('\n');
            }
            frame.push_str(line);
            frame.push_str("\x1b[K");
        }
        frame.push_str("\x1b[J");
        let mut out = io::stdout().lock();
        out.write_all(frame.as_bytes())?;
        out.flush()
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        restore();
    }
}

/// Puts the terminal back as it was (once; later calls do nothing).
pub(super) fn restore() {
    let saved = SAVED.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(saved) = saved {
        let _ = termios::tcsetattr(io::stdin().as_fd(), SetArg::TCSANOW, &saved);
        let mut out = io::stdout();
        let _ = out.write_all(LEAVE.as_bytes());
        let _ = out.flush();
    }
}

/// A panic restores the terminal before its message is printed.
fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            previous(info);
        }));
    });
}
