//! A task on a thread with a tokio runtime of its own, for the hot UDP paths (DHCP, each DNS
//! socket): receiving, deciding and sending then hand work from task to task on one thread
//! instead of waking other runtime threads per datagram. Neutral.

use std::future::Future;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("{name}: cannot start its runtime: {source}")]
    Start { name: &'static str, source: std::io::Error },
    #[error("{name}: its thread ended abnormally: {message}")]
    Thread { name: &'static str, message: String },
}

/// Runs the future `make` returns to completion on a blocking-pool thread with a current-thread
/// runtime of its own (the future is made on that thread, so sockets it registers belong to
/// that runtime), and returns its output.
pub async fn dedicated<F, Fut>(name: &'static str, make: F) -> Result<Fut::Output, RuntimeError>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future + 'static,
    Fut::Output: Send + 'static,
{
    // The caller's span (the service's) stays the parent of everything logged on that thread.
    let span = tracing::Span::current();
    let thread = tokio::task::spawn_blocking(move || {
        let _entered = span.enter();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| RuntimeError::Start { name, source })?;
        Ok(runtime.block_on(make()))
    });
    match thread.await {
        Ok(result) => result,
        Err(e) => Err(RuntimeError::Thread { name, message: e.to_string() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_future_runs_on_its_own_thread_and_returns_its_output() {
        let caller = std::thread::current().id();
        let (thread, value) = dedicated("test", || async { (std::thread::current().id(), 42) }).await.expect("runs");
        assert_ne!(thread, caller);
        assert_eq!(value, 42);
        let failed = dedicated("test", || async { panic!("boom") }).await;
        assert!(matches!(failed, Err(RuntimeError::Thread { name: "test", .. })), "{failed:?}");
    }
}
