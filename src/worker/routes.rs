//! Route templates from axum (feature `axum`): the route a request matched (axum's
//! [`MatchedPath`], e.g. `/users/{id}`) is recorded on the request, so the status page, the
//! JSON and `status` show it next to the path and `--route-metrics` counts by it.
//!
//! An `axum::Router` handed to [`crate::Worker::serve`] gets [`RouteLayer`] as a route layer
//! by itself. A router wrapped into another service first (`ServiceBuilder::new().service(router)`)
//! is not seen as a router: add the layer yourself with `router.route_layer(RouteLayer)`.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::extract::MatchedPath;
use hyper::Request;

use super::RequestInfo;

/// A [`tower_layer::Layer`] that records the matched route of each request on it
/// ([`RequestInfo::set_route`]). Use it with `Router::route_layer` (it needs the
/// [`MatchedPath`] axum sets while routing); `Worker::serve` adds it to a plain `Router`
/// itself.
///
/// ```
/// use axum::{routing::get, Router};
/// use flora_cluster::worker::RouteLayer;
///
/// let app: Router = Router::new()
///     .route("/users/{id}", get(|| async { "user" }))
///     .route_layer(RouteLayer);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct RouteLayer;

impl<S> tower_layer::Layer<S> for RouteLayer {
    type Service = RouteService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RouteService { inner }
    }
}

/// The service of [`RouteLayer`].
#[derive(Debug, Clone)]
pub struct RouteService<S> {
    inner: S,
}

impl<S, B> tower_service::Service<Request<B>> for RouteService<S>
where
    S: tower_service::Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = RouteFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let route = req.extensions().get::<MatchedPath>().cloned();
        RouteFuture {
            inner: self.inner.call(req),
            route,
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`RouteService`]: records the route on its first poll, when
    /// the request's handler is current ([`RequestInfo::current`]).
    pub struct RouteFuture<F> {
        #[pin]
        inner: F,
        route: Option<MatchedPath>,
    }
}

impl<F: Future> Future for RouteFuture<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Some(route) = this.route.take() {
            if let Some(info) = RequestInfo::current() {
                info.set_route(route.as_str());
            }
        }
        this.inner.poll(cx)
    }
}

/// `svc` with [`RouteLayer`] added when it is a plain `axum::Router` with routes.
pub(crate) fn with_routes<S: 'static>(mut svc: S) -> S {
    let any: &mut dyn std::any::Any = &mut svc;
    if let Some(router) = any.downcast_mut::<axum::Router>() {
        if router.has_routes() {
            *router = std::mem::take(router).route_layer(RouteLayer);
        }
    }
    svc
}
