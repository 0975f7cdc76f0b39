//! What [`crate::Worker::serve`] accepts: a hyper service (`service_fn`) or a tower service
//! (an `axum::Router`, anything built with tower layers).

use hyper::body::{Body, Incoming};
use hyper::{Request, Response};
use hyper_util::service::TowerToHyperService;

/// Boxed error, as hyper and tower use it.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Marker for [`ServeService`]: the service is a hyper 1 [`hyper::service::Service`].
#[derive(Debug)]
pub enum HyperMarker {}

/// Marker for [`ServeService`]: the service is a [`tower_service::Service`]; its `poll_ready`
/// is honoured (each request calls a clone of it once it is ready, as axum's own server does).
#[derive(Debug)]
pub enum TowerMarker {}

mod sealed {
    pub trait Sealed<M> {}
}

/// A service [`crate::Worker::serve`] can run: implemented for hyper services
/// (`hyper::service::service_fn`) and for tower services such as an `axum::Router`. The
/// marker `M` only tells the two apart; it is inferred.
///
/// ```no_run
/// use flora_cluster::worker::Worker;
/// use http_body_util::Full;
/// use hyper::{body::Bytes, service::service_fn, Response};
///
/// # async fn app(worker: Worker) -> Result<(), flora_cluster::Error> {
/// let listener = worker.listen("127.0.0.1:1337").await?;
/// // A hyper service; an `axum::Router` (a tower service) goes in the same way.
/// let svc = service_fn(|_req| async {
///     Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from("hi\n"))))
/// });
/// worker.serve(listener, svc).await?;
/// # Ok(()) }
/// ```
pub trait ServeService<M>: sealed::Sealed<M> + Sized {
    /// The response body.
    type Body: Body<Data: Send, Error: Into<BoxError>> + Send + 'static;
    /// The service's error.
    type Error: Into<BoxError>;
    /// The hyper service this becomes.
    #[doc(hidden)]
    type Service: hyper::service::Service<
            Request<Incoming>,
            Response = Response<Self::Body>,
            Error = Self::Error,
            Future: Send + 'static,
        > + Clone
        + Send
        + 'static;
    /// Turns it into the hyper service the connections run.
    #[doc(hidden)]
    fn into_service(self) -> Self::Service;
}

impl<S, B> sealed::Sealed<HyperMarker> for S where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>>
{
}

impl<S, B> ServeService<HyperMarker> for S
where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body<Data: Send, Error: Into<BoxError>> + Send + 'static,
{
    type Body = B;
    type Error = S::Error;
    type Service = S;

    fn into_service(self) -> S {
        self
    }
}

impl<S, B> sealed::Sealed<TowerMarker> for S where
    S: tower_service::Service<Request<Incoming>, Response = Response<B>>
{
}

impl<S, B> ServeService<TowerMarker> for S
where
    S: tower_service::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body<Data: Send, Error: Into<BoxError>> + Send + 'static,
{
    type Body = B;
    type Error = S::Error;
    type Service = TowerToHyperService<S>;

    fn into_service(self) -> Self::Service {
        TowerToHyperService::new(self)
    }
}
