//! The import's progress on stderr: a redrawn bar on a terminal, a line every few seconds
//! otherwise (logs of unattended runs), nothing when quiet.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use super::import::Summary;

pub struct Progress {
    total_bytes: u64,
    mode: Mode,
    last_line: Option<Instant>,
}

#[derive(PartialEq)]
enum Mode {
    Quiet,
    Bar,
    Lines,
}

const LINE_EVERY: Duration = Duration::from_secs(5);

impl Progress {
    /// Progress over an input of `total_bytes` (0: unknown).
    pub fn stderr(total_bytes: u64) -> Self {
        Progress {
            total_bytes,
            mode: if std::io::stderr().is_terminal() {
                Mode::Bar
            } else {
                Mode::Lines
            },
            last_line: None,
        }
    }

    pub fn quiet() -> Self {
        Progress {
            total_bytes: 0,
            mode: Mode::Quiet,
            last_line: None,
        }
    }

    fn text(&self, pos: u64, s: &Summary) -> String {
        let counts = format!(
            "{} rows, {} created, {} updated, {} unchanged, {} failed, {:.0} rows/s",
            s.rows(),
            s.created,
            s.updated,
            s.unchanged,
            s.failed,
            s.rows_per_second()
        );
        if self.total_bytes == 0 {
            return counts;
        }
        let frac = (pos as f64 / self.total_bytes as f64).clamp(0.0, 1.0);
        let width = 30;
        let filled = (frac * width as f64).round() as usize;
        format!(
            "[{}{}] {:>3.0}% {counts}",
            "#".repeat(filled),
            "-".repeat(width - filled),
            frac * 100.0
        )
    }

    /// Shows the state after reading up to byte `pos`.
    pub fn draw(&mut self, pos: u64, s: &Summary) {
        match self.mode {
            Mode::Quiet => {}
            Mode::Bar => {
                let mut err = std::io::stderr().lock();
                let _ = write!(err, "\r\x1b[2K{}", self.text(pos, s));
                let _ = err.flush();
            }
            Mode::Lines => {
                if self.last_line.is_none_or(|t| t.elapsed() >= LINE_EVERY) {
                    eprintln!("import: {}", self.text(pos, s));
                    self.last_line = Some(Instant::now());
                }
            }
        }
    }

    /// Ends the bar (the caller prints the summary).
    pub fn finish(&mut self, s: &Summary) {
        if self.mode == Mode::Bar {
            let total = self.total_bytes;
            let mut err = std::io::stderr().lock();
            let _ = writeln!(err, "\r\x1b[2K{}", self.text(total, s));
        }
    }
}
