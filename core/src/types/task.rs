//! [`Task<T>`]: the future of one remote call.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::task::JoinHandle;

use crate::error::{Error, ErrorKind, Result};

/// The result of one remote call, as a future. The task is submitted when the `Task` is made;
/// dropping it does not cancel the remote work.
#[derive(Debug)]
pub struct Task<T> {
    handle: JoinHandle<Result<T>>,
}

impl<T: Send + 'static> Task<T> {
    pub(crate) fn spawn(work: impl Future<Output = Result<T>> + Send + 'static) -> Self {
        Task {
            handle: tokio::spawn(work),
        }
    }
}

impl<T> Future for Task<T> {
    type Output = Result<T>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.handle)
            .poll(cx)
            .map(|joined| match joined {
                Ok(result) => result,
                Err(e) => Err(Error::new(
                    ErrorKind::Unexpected,
                    "the task's submission was aborted",
                )
                .with_source(e)),
            })
    }
}
