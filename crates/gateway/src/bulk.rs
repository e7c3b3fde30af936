//! Threads for bulk work (decoding large batch bodies) at a lower CPU
//! priority than the async workers, so that a node busy with bulk loads
//! still answers single publishes, subscriptions and health checks on
//! time: under contention the scheduler gives these threads about a tenth
//! of the share of a normal one, and bulk requests slow down instead.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

/// How much lower the pool's threads run than the rest of the node
/// (`nice` steps; 10 gives a thread about a tenth of a normal one's share
/// when both want the CPU).
const NICE: i32 = 10;

type Job = Box<dyn FnOnce() + Send>;

/// A fixed set of low-priority threads taking jobs from one queue.
pub(crate) struct BulkPool {
    tx: mpsc::Sender<Job>,
}

impl BulkPool {
    /// Starts `threads` threads (at least one). The queue holds at most
    /// `queue` jobs; callers wait for room.
    pub(crate) fn start(threads: usize, queue: usize) -> std::io::Result<BulkPool> {
        let (tx, rx) = mpsc::channel::<Job>(queue.max(1));
        let rx = Arc::new(parking_lot::Mutex::new(rx));
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("bulk-{i}"))
                .spawn(move || {
                    // On Linux the nice value is the calling thread's own.
                    if let Err(e) = rustix::process::nice(NICE) {
                        tracing::debug!(error = %e, "bulk thread keeps the normal priority");
                    }
                    loop {
                        let job = rx.lock().blocking_recv();
                        match job {
                            Some(job) => job(),
                            None => break,
                        }
                    }
                })?;
        }
        Ok(BulkPool { tx })
    }

    /// Runs `f` on the pool and waits for its result; `None` when the
    /// pool has stopped or `f` panicked.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        let (reply, rx) = oneshot::channel();
        let job: Job = Box::new(move || {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
            if let Ok(r) = r {
                let _ = reply.send(r);
            }
        });
        self.tx.send(job).await.ok()?;
        rx.await.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_jobs_on_threads_of_lower_priority() {
        let pool = BulkPool::start(2, 4).expect("pool starts");
        let ours = rustix::process::getpriority_process(None).expect("own priority");
        let theirs = pool
            .run(|| rustix::process::getpriority_process(None).expect("priority"))
            .await
            .expect("the job ran");
        assert_eq!(theirs, (ours + NICE).min(19));
        assert_eq!(pool.run(|| 6 * 7).await, Some(42));
        // A job that panics answers None; the thread goes on.
        assert_eq!(pool.run(|| -> u8 { panic!("boom") }).await, None);
        assert_eq!(pool.run(|| "still here").await, Some("still here"));
    }
}
