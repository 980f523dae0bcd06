//! The state the handle and the server tasks share: fixed configuration plus four locks.
//!
//! Locks are never held across an `.await`, and a poisoned lock is used as is: the data stays
//! consistent because no code panics while holding one. The tokenizers' lock may be taken while
//! the store's is held (whoami signs with the session in hand), never the other way round.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use super::fault::Knobs;
use super::record::Journal;
use super::store::Store;
use super::tokenizer::Tokenizers;

/// Settings fixed at start.
#[derive(Debug)]
pub(crate) struct Config {
    /// `http://127.0.0.1:PORT` or `https://...`, no trailing slash.
    pub(crate) public_url: String,
    pub(crate) cookie_name: String,
    pub(crate) lifespan: Duration,
    pub(crate) earliest_possible_extend: Duration,
    pub(crate) admin_token: Option<String>,
    /// Served over TLS, so issued cookies carry `Secure`.
    pub(crate) tls: bool,
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: Config,
    store: Mutex<Store>,
    knobs: Mutex<Knobs>,
    journal: Mutex<Journal>,
    /// The `tokenize_as` templates and their keys.
    tokenizers: Mutex<Tokenizers>,
}

impl Shared {
    pub(crate) fn new(config: Config, knobs: Knobs) -> Self {
        Self {
            config,
            store: Mutex::new(Store::default()),
            knobs: Mutex::new(knobs),
            journal: Mutex::new(Journal::default()),
            tokenizers: Mutex::new(Tokenizers::default()),
        }
    }

    /// The same state with these templates (and keys) for `tokenize_as`.
    pub(crate) fn with_tokenizers(mut self, tokenizers: Tokenizers) -> Self {
        self.tokenizers = Mutex::new(tokenizers);
        self
    }

    pub(crate) fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn knobs(&self) -> MutexGuard<'_, Knobs> {
        self.knobs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn journal(&self) -> MutexGuard<'_, Journal> {
        self.journal.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn tokenizers(&self) -> MutexGuard<'_, Tokenizers> {
        self.tokenizers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}
