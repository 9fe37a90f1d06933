//! Queues whose items go out in batches: whoever takes the next item also takes every item
//! queued behind it, up to a cap. The fan-out to a peer (`replica::fanout::PeerLink`), the
//! order service's calls to another service (`crate::client::Batcher`) and the MongoDB
//! writer batch this way.

use std::future::Future;
use std::sync::Arc;
use tokio::sync::mpsc;

/// `first` and every item already queued behind it, up to a weight (`decide::batch`).
pub fn take_queued<T>(
    first: T,
    rx: &mut mpsc::UnboundedReceiver<T>,
    cap: usize,
    weight: impl Fn(&T) -> usize,
) -> Vec<T> {
    decide::batch::take_queued(first, || rx.try_recv().ok(), cap, weight)
}

/// A queue served by a few sender tasks, which start on the first use, on the runtime of the
/// task that uses it first: in a node that is the HTTP worker thread, so a request, its batch
/// and the batch's connection all run on one thread and wake no other (a perf profile counted
/// about 40 thread switches per checkout when the senders ran on a separate runtime). Give
/// the senders an HTTP client of their own: a pooled connection is driven by the runtime that
/// opened it.
pub struct BatchQueue<T> {
    queue: mpsc::UnboundedSender<T>,
    rx: std::sync::Mutex<Option<mpsc::UnboundedReceiver<T>>>,
}

impl<T: Send + 'static> Default for BatchQueue<T> {
    fn default() -> Self {
        let (queue, rx) = mpsc::unbounded_channel();
        BatchQueue { queue, rx: std::sync::Mutex::new(Some(rx)) }
    }
}

impl<T: Send + 'static> BatchQueue<T> {
    /// Queues `item` for the senders; gives it back if they are gone. Starts the senders
    /// first if they have not started: `senders` tasks, each taking a batch (at most `cap`
    /// in weight, see [`take_queued`]) and awaiting `make()`'s function on it before it
    /// takes the next. `make` runs once, at the start.
    pub fn push<F, Fut>(
        &self,
        item: T,
        senders: usize,
        cap: usize,
        weight: fn(&T) -> usize,
        make: impl FnOnce() -> F,
    ) -> Result<(), T>
    where
        F: Fn(Vec<T>) -> Fut + Clone + Send + 'static,
        Fut: Future<Output = ()> + Send,
    {
        if let Some(rx) = self.rx.lock().unwrap().take() {
            let rx = Arc::new(tokio::sync::Mutex::new(rx));
            let send = make();
            for _ in 0..senders {
                let (rx, send) = (rx.clone(), send.clone());
                tokio::spawn(async move {
                    loop {
                        let batch = {
                            let mut rx = rx.lock().await;
                            let Some(first) = rx.recv().await else { return };
                            take_queued(first, &mut rx, cap, weight)
                        };
                        send(batch).await;
                    }
                });
            }
        }
        self.queue.send(item).map_err(|e| e.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn senders_start_once_and_take_batches() {
        let q: BatchQueue<u32> = BatchQueue::default();
        let (seen, mut batches) = mpsc::unbounded_channel::<Vec<u32>>();
        let mut started = 0;
        for i in 0..3 {
            q.push(
                i,
                1,
                10,
                |_| 1,
                || {
                    started += 1;
                    let seen = seen.clone();
                    move |b: Vec<u32>| {
                        let seen = seen.clone();
                        async move { seen.send(b).unwrap() }
                    }
                },
            )
            .unwrap();
        }
        assert_eq!(started, 1);
        // Pushed before the sender ran: one batch of all three.
        assert_eq!(batches.recv().await.unwrap(), vec![0, 1, 2]);
    }
}
