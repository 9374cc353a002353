//! [`ResponseFuture`]: the future returned by the bridge's `Service::call`.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Response;

use crate::body::Body;

/// The response future of [`RequestBridge`](super::RequestBridge). Dropping it before it
/// resolves cancels the interception (its records are still written).
#[must_use = "futures do nothing unless polled"]
pub struct ResponseFuture {
    inner: Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>,
}

impl ResponseFuture {
    pub(crate) fn new(fut: impl Future<Output = Response<Body>> + Send + 'static) -> Self {
        Self {
            inner: Box::pin(async move { Ok(fut.await) }),
        }
    }
}

impl Future for ResponseFuture {
    type Output = Result<Response<Body>, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

impl fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
