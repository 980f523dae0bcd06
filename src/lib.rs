//! Ory Kratos sessions for any tower service.
#![forbid(unsafe_code)]

#[cfg(feature = "test-util")]
#[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
pub mod testing;
