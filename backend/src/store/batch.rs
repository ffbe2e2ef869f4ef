//! Concurrent store calls of one kind made into one statement (PostgreSQL's lookups) or one
//! transaction (SQLite's token writes). While a batch is in the database, the calls that arrive
//! meanwhile queue and go together as the next one: a call alone goes at once, and under load the
//! round trip — on PostgreSQL a network hop and a wake-up of the database server; on SQLite a commit —
//! is paid once per batch instead of once per call. Each call's answer is exactly what it would have
//! been alone; the batch's statement or transaction is written to make that so.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use super::{StoreError, StoreResult};

/// Calls taken into one statement at most (PostgreSQL's arrays have no small limit; this bounds
/// how long the last call of a batch waits for the others' rows).
const MAX_BATCH: usize = 64;

type Reply<O> = oneshot::Sender<StoreResult<O>>;
type Run<I, O> = Box<dyn Fn(Vec<I>) -> Pin<Box<dyn Future<Output = StoreResult<Vec<O>>> + Send>> + Send + Sync>;

/// Queues calls with input `I` and answers each with its `O` from one run over the whole batch.
pub(super) struct Batcher<I, O> {
    queue: Mutex<Queue<I, O>>,
    /// Answers a batch: one output per input, in the inputs' order.
    run: Run<I, O>,
}

struct Queue<I, O> {
    calls: Vec<(I, Reply<O>)>,
    /// Whether a task is running batches, one at a time. (Measured: two or more batches in flight
    /// at once split the queue into smaller batches and lose more than they overlap.)
    flushing: bool,
}

impl<I: Send + 'static, O: Send + 'static> Batcher<I, O> {
    /// A batcher whose batches `run` answers.
    pub(super) fn new<F, Fut>(run: F) -> Arc<Self>
    where
        F: Fn(Vec<I>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = StoreResult<Vec<O>>> + Send + 'static,
    {
        Arc::new(Self {
            queue: Mutex::new(Queue { calls: Vec::new(), flushing: false }),
            run: Box::new(move |inputs| Box::pin(run(inputs))),
        })
    }

    /// Answers `input`, in the next batch.
    pub(super) async fn call(self: &Arc<Self>, input: I) -> StoreResult<O> {
        let (reply, answer) = oneshot::channel();
        let start = {
            let mut queue = self.queue.lock().expect("not poisoned");
            queue.calls.push((input, reply));
            !std::mem::replace(&mut queue.flushing, true)
        };
        if start {
            tokio::spawn(Arc::clone(self).flush());
        }
        answer.await.unwrap_or_else(|_| Err(StoreError::Database("the batch was dropped unanswered".into())))
    }

    /// Runs batches until none is waiting.
    async fn flush(self: Arc<Self>) {
        // Should a batch panic or the runtime drop this task, calls left queued get a new flusher.
        let mut guard = Restart(Some(Arc::clone(&self)));
        loop {
            let calls = {
                let mut queue = self.queue.lock().expect("not poisoned");
                if queue.calls.is_empty() {
                    queue.flushing = false;
                    guard.0 = None;
                    return;
                }
                let taken = queue.calls.len().min(MAX_BATCH);
                let rest = queue.calls.split_off(taken);
                std::mem::replace(&mut queue.calls, rest)
            };
            let (inputs, replies): (Vec<I>, Vec<Reply<O>>) = calls.into_iter().unzip();
            match (self.run)(inputs).await {
                Ok(outputs) if outputs.len() == replies.len() => {
                    for (reply, output) in replies.into_iter().zip(outputs) {
                        let _ = reply.send(Ok(output));
                    }
                }
                Ok(outputs) => {
                    let message = format!("a batch of {} calls got {} answers", replies.len(), outputs.len());
                    for reply in replies {
                        let _ = reply.send(Err(StoreError::Database(message.clone().into())));
                    }
                }
                Err(e) => {
                    let shared = Arc::new(e);
                    for reply in replies {
                        let _ = reply.send(Err(StoreError::Database(Box::new(Shared(Arc::clone(&shared))))));
                    }
                }
            }
        }
    }
}

/// On an unwinding flusher: hands the queue to a new one, or marks it idle.
struct Restart<I: Send + 'static, O: Send + 'static>(Option<Arc<Batcher<I, O>>>);

impl<I: Send + 'static, O: Send + 'static> Drop for Restart<I, O> {
    fn drop(&mut self) {
        let Some(batcher) = self.0.take() else { return };
        let mut queue = batcher.queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if queue.calls.is_empty() {
            queue.flushing = false;
        } else if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            drop(queue);
            runtime.spawn(Arc::clone(&batcher).flush());
        } else {
            // No runtime left to run them: their callers are gone with it.
            queue.calls.clear();
            queue.flushing = false;
        }
    }
}

/// One batch's error, given to each of its calls.
#[derive(Debug)]
pub(super) struct Shared(pub(super) Arc<StoreError>);

impl std::fmt::Display for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for Shared {}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn calls_arriving_during_a_batch_go_together_in_the_next() {
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let batches = Arc::new(Mutex::new(Vec::new()));
        let doubler = Batcher::new({
            let (gate, batches) = (Arc::clone(&gate), Arc::clone(&batches));
            move |inputs: Vec<u32>| {
                batches.lock().unwrap().push(inputs.clone());
                let gate = Arc::clone(&gate);
                async move {
                    gate.acquire().await.unwrap().forget();
                    Ok(inputs.into_iter().map(|i| i * 2).collect())
                }
            }
        });
        let call = |i: u32| {
            let doubler = Arc::clone(&doubler);
            tokio::spawn(async move { doubler.call(i).await.unwrap() })
        };
        let first = call(0);
        while batches.lock().unwrap().is_empty() {
            tokio::task::yield_now().await;
        }
        let rest: Vec<_> = (1..10).map(call).collect();
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        gate.add_permits(2);
        assert_eq!(first.await.unwrap(), 0);
        for (i, call) in rest.into_iter().enumerate() {
            assert_eq!(call.await.unwrap(), (i as u32 + 1) * 2);
        }
        assert_eq!(*batches.lock().unwrap(), vec![vec![0], (1..10).collect::<Vec<_>>()]);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_failed_batch_fails_each_call_and_the_next_batch_runs() {
        let failing = Batcher::new(|inputs: Vec<u32>| async move {
            if inputs.contains(&0) {
                Err(StoreError::NotFound("zero"))
            } else {
                Ok(inputs)
            }
        });
        let error = failing.call(0).await.unwrap_err();
        assert_eq!(error.to_string(), "database error: zero not found");
        assert_eq!(failing.call(7).await.unwrap(), 7);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_panicking_batch_leaves_the_queue_working() {
        let touchy = Batcher::new(|inputs: Vec<u32>| async move {
            assert!(!inputs.contains(&13), "unlucky");
            Ok(inputs)
        });
        assert!(touchy.call(13).await.is_err());
        assert_eq!(touchy.call(12).await.unwrap(), 12);
    }
}
