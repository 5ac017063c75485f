//! `join_all` without the `futures` crate, so the contract crate stays light.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

/// Runs every future concurrently on the current task and returns their outputs in order.
pub(crate) async fn join_all<F: Future>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let mut pending: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut done: Vec<Option<F::Output>> = pending.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut waiting = false;
        for (f, slot) in pending.iter_mut().zip(done.iter_mut()) {
            if slot.is_none() {
                match f.as_mut().poll(cx) {
                    Poll::Ready(v) => *slot = Some(v),
                    Poll::Pending => waiting = true,
                }
            }
        }
        if waiting {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    done.into_iter()
        .map(|o| o.expect("every future finished"))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn runs_concurrently_and_keeps_order() {
        let started = tokio::time::Instant::now();
        let out = super::join_all([3u64, 1, 2].map(|s| async move {
            tokio::time::sleep(Duration::from_secs(s)).await;
            s
        }))
        .await;
        assert_eq!(out, [3, 1, 2]);
        assert_eq!(started.elapsed(), Duration::from_secs(3));
    }
}
