//! Where log lines go: stderr, written in batches.
//!
//! One `write(2)` per log line (the access-log line every request writes) measured about a
//! tenth of chatd's per-request CPU under load (bench/README.md). Lines are therefore appended to an in-memory buffer and
//! written out together: when [`FLUSH_DELAY`] has passed since the first unwritten line, when
//! the buffer holds [`FLUSH_BYTES`], at once for warnings and errors, before a panic message,
//! and when the [`LogGuard`] is dropped at exit. A crash that kills the process outright
//! (SIGKILL, abort) can lose at most the last [`FLUSH_DELAY`] of info lines, the same trade
//! nginx's `access_log ... buffer=` and Envoy's access-log flush interval make.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;

/// Longest time a line waits in the buffer.
pub const FLUSH_DELAY: Duration = Duration::from_millis(50);
/// Buffered bytes that trigger a write at once.
pub const FLUSH_BYTES: usize = 32 * 1024;

/// A [`MakeWriter`] for `tracing_subscriber::fmt` that batches lines into one write.
#[derive(Clone)]
pub struct BufferedOutput {
    shared: Arc<Shared>,
}

/// Writes out what is buffered when dropped; keep it alive for as long as the process logs.
#[must_use = "dropping the guard flushes and stops the background writer"]
pub struct LogGuard {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    /// Wakes the flusher when the buffer goes from empty to non-empty (or on close).
    pending: Condvar,
}

struct State {
    buf: Vec<u8>,
    out: Box<dyn Write + Send>,
    closed: bool,
}

impl State {
    fn flush(&mut self) {
        if !self.buf.is_empty() {
            // A log write that fails (stderr closed, disk full) has nowhere to be reported;
            // the lines are dropped rather than kept growing.
            let _ = self.out.write_all(&self.buf);
            let _ = self.out.flush();
            self.buf.clear();
        }
    }
}

impl BufferedOutput {
    /// Batches lines to `out`, written by a background thread named `chatd-log`.
    pub fn new(out: impl Write + Send + 'static) -> std::io::Result<(BufferedOutput, LogGuard)> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                buf: Vec::with_capacity(FLUSH_BYTES),
                out: Box::new(out),
                closed: false,
            }),
            pending: Condvar::new(),
        });
        let flusher = shared.clone();
        std::thread::Builder::new()
            .name("chatd-log".into())
            .spawn(move || flusher.run())?;
        Ok((
            BufferedOutput {
                shared: shared.clone(),
            },
            LogGuard { shared },
        ))
    }

    /// Writes out what is buffered now.
    pub fn flush(&self) {
        self.shared.lock().flush();
    }

    /// Flushes before the panic message is printed, so lines logged before a panic come out
    /// before it.
    pub fn flush_on_panic(&self) {
        let shared = self.shared.clone();
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            // try_lock: a panic while the buffer is locked must not deadlock here.
            if let Ok(mut state) = shared.state.try_lock() {
                state.flush();
            }
            previous(info);
        }));
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves a usable buffer: at worst a partial line.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The flusher: sleeps until a line arrives, lets more gather for [`FLUSH_DELAY`], writes
    /// them out. Idle, it makes no wake-ups at all.
    fn run(&self) {
        loop {
            let mut state = self.lock();
            while state.buf.is_empty() && !state.closed {
                state = self.pending.wait(state).unwrap_or_else(|p| p.into_inner());
            }
            if state.closed {
                state.flush();
                return;
            }
            drop(state);
            std::thread::sleep(FLUSH_DELAY);
            self.lock().flush();
        }
    }
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.flush();
        state.closed = true;
        self.shared.pending.notify_one();
    }
}

/// The writer of one log event (one line).
pub struct EventWriter<'a> {
    shared: &'a Shared,
    urgent: bool,
    state: Option<MutexGuard<'a, State>>,
    was_empty: bool,
}

impl Write for EventWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let shared = self.shared;
        let state = self.state.get_or_insert_with(|| shared.lock());
        if state.closed {
            // After the guard is gone (very late lines at exit) write straight through.
            let _ = state.out.write_all(bytes);
            return Ok(bytes.len());
        }
        self.was_empty |= state.buf.is_empty();
        state.buf.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for EventWriter<'_> {
    fn drop(&mut self) {
        let Some(mut state) = self.state.take() else {
            return;
        };
        if self.urgent || state.buf.len() >= FLUSH_BYTES {
            state.flush();
        } else if self.was_empty {
            drop(state);
            self.shared.pending.notify_one();
        }
    }
}

impl<'a> MakeWriter<'a> for BufferedOutput {
    type Writer = EventWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        EventWriter {
            shared: &self.shared,
            urgent: false,
            state: None,
            was_empty: false,
        }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Self::Writer {
        let mut writer = self.make_writer();
        // Warnings and errors are rare and are what an operator tails for: never delayed.
        writer.urgent = *meta.level() <= Level::WARN;
        writer
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// A cloneable in-memory sink that counts the writes it gets.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<(Vec<u8>, usize)>>);

    impl Write for Sink {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            let mut s = self.0.lock().unwrap();
            s.0.extend_from_slice(bytes);
            s.1 += 1;
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Sink {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().0.clone()).unwrap()
        }
        fn writes(&self) -> usize {
            self.0.lock().unwrap().1
        }
    }

    /// Logs through a real `fmt` subscriber writing to `output`, as chatd's does.
    fn log(output: &BufferedOutput, f: impl FnOnce()) {
        let subscriber = tracing_subscriber::fmt()
            .with_writer(output.clone())
            .without_time()
            .with_target(false)
            .with_level(false)
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, f);
    }

    fn wait_for(sink: &Sink, text: &str) {
        let start = Instant::now();
        while !sink.text().contains(text) {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "{text:?} never written; got {:?}",
                sink.text()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn info_lines_are_batched_and_written_in_order() {
        let sink = Sink::default();
        let (output, _guard) = BufferedOutput::new(sink.clone()).unwrap();
        log(&output, || {
            for i in 0..100 {
                tracing::info!("line {i}");
            }
        });
        wait_for(&sink, "line 99\n");
        let expected: String = (0..100).map(|i| format!("line {i}\n")).collect();
        assert_eq!(sink.text(), expected);
        assert!(sink.writes() < 10, "{} writes for 100 lines", sink.writes());
    }

    #[test]
    fn warnings_flush_everything_before_them_at_once() {
        let sink = Sink::default();
        let (output, _guard) = BufferedOutput::new(sink.clone()).unwrap();
        log(&output, || {
            tracing::info!("first");
            tracing::warn!("careful");
        });
        // No waiting: the warning wrote itself and the line before it.
        assert_eq!(sink.text(), "first\ncareful\n");
    }

    #[test]
    fn a_full_buffer_is_written_at_once_and_the_guard_flushes_the_rest() {
        let sink = Sink::default();
        let (output, guard) = BufferedOutput::new(sink.clone()).unwrap();
        let big = "x".repeat(FLUSH_BYTES);
        log(&output, || tracing::info!("{big}"));
        assert_eq!(sink.text(), format!("{big}\n"));
        log(&output, || tracing::info!("tail"));
        drop(guard);
        assert!(sink.text().ends_with("x\ntail\n"));
        // After the guard, lines go straight through.
        log(&output, || tracing::info!("late"));
        assert!(sink.text().ends_with("tail\nlate\n"));
    }
}
