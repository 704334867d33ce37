//! Progress bars for long operations: shown on a terminal, silent in scripts.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};
use strata_vhd::ops::progress::Progress;

/// A progress bar on stderr when it is a terminal; nothing otherwise.
pub struct Bar(Option<ProgressBar>);

impl Bar {
    /// A bar labelled with the operation.
    pub fn new(label: &str) -> Bar {
        if !std::io::stderr().is_terminal() {
            return Bar(None);
        }
        let bar = ProgressBar::new(0);
        let style = ProgressStyle::with_template(
            "{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        bar.set_style(style);
        bar.set_message(label.to_string());
        Bar(Some(bar))
    }
}

impl Progress for Bar {
    fn start(&self, total: u64) {
        if let Some(b) = &self.0 {
            b.set_length(total);
        }
    }

    fn advance(&self, n: u64) {
        if let Some(b) = &self.0 {
            b.inc(n);
        }
    }

    fn finish(&self) {
        if let Some(b) = &self.0 {
            b.finish_and_clear();
        }
    }
}

/// A new [`Bar`] for each operation that starts (none until one does): for a library call that
/// may run the operation several times, or not at all.
pub struct EachBar {
    label: &'static str,
    bar: std::cell::RefCell<Option<Bar>>,
}

impl EachBar {
    /// Bars labelled with the operation.
    pub fn new(label: &'static str) -> EachBar {
        EachBar {
            label,
            bar: std::cell::RefCell::new(None),
        }
    }
}

impl Progress for EachBar {
    fn start(&self, total: u64) {
        let bar = Bar::new(self.label);
        bar.start(total);
        *self.bar.borrow_mut() = Some(bar);
    }

    fn advance(&self, n: u64) {
        if let Some(b) = self.bar.borrow().as_ref() {
            b.advance(n);
        }
    }

    fn finish(&self) {
        if let Some(b) = self.bar.borrow_mut().take() {
            b.finish();
        }
    }
}
