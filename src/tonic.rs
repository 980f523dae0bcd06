//! tonic (feature `tonic`): the session in a gRPC handler, and the crate's errors as gRPC
//! statuses.
//!
//! The layer goes in front of a tonic server (`Server::builder().layer(kratos_layer)`) or of one
//! generated service; it reads the credential from the call's metadata (`x-session-token`,
//! `authorization: Bearer`, `cookie`: HTTP/2 headers, in Kratos's precedence) and refuses calls
//! in gRPC's own terms (see [`DefaultRejection`](crate::rejection::DefaultRejection)). Handlers read the
//! session with [`KratosRequestExt`]:
//!
//! ```
//! use tonic::{Request, Response, Status};
//! use tower_kratos::tonic::KratosRequestExt;
//!
//! async fn who_am_i(request: Request<()>) -> Result<Response<String>, Status> {
//!     let session = request.kratos_session()?;
//!     Ok(Response::new(session.identity_id().unwrap_or_default().to_owned()))
//! }
//! # #[tokio::main] async fn main() {
//! # let status = who_am_i(Request::new(())).await.unwrap_err();
//! # assert_eq!(status.code(), tonic::Code::Internal, "no layer ran");
//! # }
//! ```
//!
//! The lifecycle helpers take the call's metadata as their [`Caller`],
//! and their errors become statuses with `?`:
//!
//! ```
//! use tonic::{Request, Response, Status};
//! use tower_kratos::lifecycle::SessionLifecycle;
//!
//! async fn sign_out_other_devices(
//!     sessions: &SessionLifecycle,
//!     request: Request<()>,
//! ) -> Result<Response<u64>, Status> {
//!     let count = sessions.revoke_other_sessions(request.metadata()).await?;
//!     Ok(Response::new(count))
//! }
//! ```

use tonic::{metadata::MetadataMap, Code, Request, Status};

use crate::{
    client::LifecycleError,
    lifecycle::{sealed, Caller},
    outcome::Outcome,
    rejection::{grpc_code, grpc_metadata},
    response::Refusal,
    session::{KratosIdentity, KratosSession},
};

const MISSING_LAYER: &str = "tower-kratos: no session information on this call. Is KratosLayer \
     applied to this service? Add `.layer(kratos_layer)` to the `Server::builder()`, or wrap \
     the service in it.";

/// The session and identity [`KratosLayer`](crate::KratosLayer) put in a tonic request.
///
/// The required forms answer `UNAUTHENTICATED` when the layer let the call on without a session
/// (optional mode), and `INTERNAL` naming the missing layer when no layer ran, so that mistake
/// shows in the first test; the optional forms are `None` in both cases.
pub trait KratosRequestExt {
    /// The call's session.
    ///
    /// # Errors
    /// No session: `UNAUTHENTICATED` (or the step-up's `PERMISSION_DENIED`, Kratos's outage's
    /// `UNAVAILABLE`), with the outcome's reason and metadata; `INTERNAL` without the layer.
    fn kratos_session(&self) -> Result<KratosSession, Status>;

    /// The identity of the call's session.
    ///
    /// # Errors
    /// As [`kratos_session`](Self::kratos_session); `UNAUTHENTICATED` for a session without an
    /// identity.
    fn kratos_identity(&self) -> Result<KratosIdentity, Status>;

    /// The call's session, if it has one.
    fn optional_kratos_session(&self) -> Option<KratosSession>;

    /// The identity of the call's session, if it has one.
    fn optional_kratos_identity(&self) -> Option<KratosIdentity>;

    /// The call's tokenized session, verified by [`JwtLayer`](crate::jwt::JwtLayer) (feature
    /// `jwt`).
    ///
    /// # Errors
    /// No verified token: `UNAUTHENTICATED` (or `UNAVAILABLE` without signing keys) with the
    /// outcome's reason; `INTERNAL` without the layer.
    #[cfg(feature = "jwt")]
    fn tokenized_session(&self) -> Result<crate::jwt::TokenizedSession, Status>;
}

impl<T> KratosRequestExt for Request<T> {
    fn kratos_session(&self) -> Result<KratosSession, Status> {
        from_layer(self.extensions())
    }

    fn kratos_identity(&self) -> Result<KratosIdentity, Status> {
        let session = self.kratos_session()?;
        KratosIdentity::of(&session)
            .ok_or_else(|| Status::unauthenticated("The session carries no identity."))
    }

    fn optional_kratos_session(&self) -> Option<KratosSession> {
        self.extensions().get::<KratosSession>().cloned()
    }

    fn optional_kratos_identity(&self) -> Option<KratosIdentity> {
        self.optional_kratos_session()
            .as_ref()
            .and_then(KratosIdentity::of)
    }

    #[cfg(feature = "jwt")]
    fn tokenized_session(&self) -> Result<crate::jwt::TokenizedSession, Status> {
        from_layer(self.extensions())
    }
}

/// What a layer put in the call's extensions: its value, or the status of its outcome, or
/// `INTERNAL` when no layer ran.
fn from_layer<T: Clone + Send + Sync + 'static>(
    extensions: &http::Extensions,
) -> Result<T, Status> {
    if let Some(value) = extensions.get::<T>() {
        return Ok(value.clone());
    }
    match extensions.get::<Outcome>() {
        Some(outcome) => Err(status_of(outcome)),
        None => {
            tracing::error!("{MISSING_LAYER}");
            Err(Status::internal(MISSING_LAYER))
        }
    }
}

/// A refusal as a gRPC status: the code for its HTTP status, its reason as the message, the
/// step-up page and the retry delay in the metadata the layer's own answers carry.
pub fn status_of(refusal: &dyn Refusal) -> Status {
    let code = Code::from(i32::from(grpc_code(refusal.status())));
    let metadata = MetadataMap::from_headers(grpc_metadata(refusal).into_iter().collect());
    Status::with_metadata(code, refusal.reason(), metadata)
}

impl From<LifecycleError> for Status {
    fn from(error: LifecycleError) -> Self {
        status_of(&error)
    }
}

impl sealed::Sealed for MetadataMap {}

impl Caller for MetadataMap {
    fn credential(
        &self,
        cookie_names: &crate::credentials::CookieNames,
    ) -> Result<std::borrow::Cow<'_, crate::credentials::Credential>, LifecycleError> {
        self.as_ref().credential(cookie_names)
    }
}

/// A generated service behind the layer keeps its gRPC name, so tonic's
/// `Server::builder().add_service(...)` routes to it: the layer can wrap one service
/// (`kratos.required().layer(IdentityServer::new(...))`) as well as the whole server.
impl<S: tonic::server::NamedService, R> tonic::server::NamedService
    for crate::authenticate::KratosService<S, R>
{
    const NAME: &'static str = S::NAME;
}

/// A service behind a route's [`Requirement`](crate::require::Requirement) keeps its gRPC name
/// too: `kratos.required().layer(kratos.require(..).layer(BillingServer::new(...)))`.
impl<S: tonic::server::NamedService, R> tonic::server::NamedService
    for crate::require::RequireService<S, R>
{
    const NAME: &'static str = S::NAME;
}

/// The same for [`JwtLayer`](crate::jwt::JwtLayer) around one generated service.
#[cfg(feature = "jwt")]
impl<S: tonic::server::NamedService, R> tonic::server::NamedService
    for crate::jwt::JwtService<S, R>
{
    const NAME: &'static str = S::NAME;
}
