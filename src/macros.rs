//! What every middleware of the crate writes the same way, written once.

/// `get_ref`, `get_mut` and `into_inner` for a service that wraps an `inner: S`, as each
/// tower-http middleware has them.
macro_rules! inner_service_accessors {
    ($service:ident) => {
        impl<S, R> $service<S, R> {
            /// The inner service.
            pub fn get_ref(&self) -> &S {
                &self.inner
            }

            /// The inner service, mutably.
            pub fn get_mut(&mut self) -> &mut S {
                &mut self.inner
            }

            /// The inner service, consuming the wrapper.
            pub fn into_inner(self) -> S {
                self.inner
            }
        }
    };
}
