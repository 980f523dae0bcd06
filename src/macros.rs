//! What every middleware of the crate writes the same way, written once.

/// For a service that wraps an `inner: S` beside its layer's shared `$shared` (an `Arc` or a
/// layer holding one): `get_ref`, `get_mut` and `into_inner`, as each tower-http middleware has
/// them, its `new`, and `Clone` for any cloneable inner service (a derive would ask `R: Clone`).
macro_rules! wrapping_service {
    ($service:ident, $shared:ident: $shared_type:ty) => {
        impl<S, R> $service<S, R> {
            pub(crate) fn new(inner: S, $shared: $shared_type) -> Self {
                Self { inner, $shared }
            }
        }

        impl<S: Clone, R> Clone for $service<S, R> {
            fn clone(&self) -> Self {
                Self {
                    inner: self.inner.clone(),
                    $shared: self.$shared.clone(),
                }
            }
        }

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
