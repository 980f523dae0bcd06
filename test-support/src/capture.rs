//! Capturing what the layer (and everything under it) logs, for tests that read the log.

use std::{
    io,
    sync::{Arc, Mutex, OnceLock, PoisonError},
};

use tracing_subscriber::fmt::MakeWriter;

/// Everything the fmt subscriber writes, kept in memory.
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    /// What was written since the last call.
    pub fn take(&self) -> String {
        let bytes = std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner));
        String::from_utf8(bytes).expect("UTF-8 log output")
    }
}

impl io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Self;

    fn make_writer(&'a self) -> Self {
        self.clone()
    }
}

/// Installs a fmt subscriber at `level` writing into `Captured` for this thread, until the guard
/// drops. `log` records (reqwest and rustls log through `log`) are forwarded to it too.
///
/// `#[tokio::test]` runs a current-thread runtime, so the layer's lookup tasks and the stand-in
/// log on this thread.
///
/// tracing-core caches each callsite's interest process-wide, and while exactly one dispatcher
/// exists it asks only the *calling thread's* default: a callsite first hit on a thread without a
/// subscriber (another test) would be cached as "never" and vanish from this thread's capture too.
/// A second, permanent dispatcher makes it ask every live dispatcher instead.
pub fn capture(level: tracing::Level) -> (Captured, tracing::subscriber::DefaultGuard) {
    static SECOND_DISPATCHER: OnceLock<tracing::Dispatch> = OnceLock::new();
    SECOND_DISPATCHER
        .get_or_init(|| tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default()));
    static LOG_BRIDGE: OnceLock<()> = OnceLock::new();
    LOG_BRIDGE.get_or_init(|| {
        // Another logger may already be set in this binary; then `log` records are its business.
        let _ = tracing_log::LogTracer::init();
    });
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(captured.clone())
        .with_max_level(level)
        .with_ansi(false)
        .finish();
    let guard = tracing::subscriber::set_default(subscriber);
    (captured, guard)
}
