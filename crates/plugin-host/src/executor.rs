//! The threads plugin code runs on.
//!
//! A plugin call is synchronous CPU work bounded only by its fuel (up to
//! the node's `max_fuel`, about 150 ms of a tight loop by default). Run on
//! an async worker, a few such calls at once would stall every connection
//! the worker serves, `/healthz` included. So calls and `init` run on a
//! small fixed set of OS threads of their own, fed by a bounded queue; the
//! async side awaits the answer on a oneshot channel and its worker serves
//! other tasks meanwhile.
//!
//! Why not `tokio::task::spawn_blocking`: its pool grows to hundreds of
//! threads and is shared with the node's other blocking work (store
//! syncs, plugin uploads). A fixed set of threads bounds the CPU plugins
//! can take and keeps them from crowding out that work.

use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};

use crate::PluginError;

type Job = Box<dyn FnOnce() + Send>;

/// Jobs waiting for a thread, at most (a caller beyond waits to enqueue).
/// Calls are bounded before that too: each binding runs at most
/// `max_instances` calls at once.
pub const QUEUE: usize = 1024;

/// A fixed set of threads running plugin code.
pub(crate) struct Executor {
    queue: mpsc::Sender<Job>,
    threads: usize,
}

impl Executor {
    /// Starts `threads` threads (at least one). They stop when the
    /// executor is dropped and the queue has drained.
    pub fn new(threads: usize) -> Result<Executor, PluginError> {
        let threads = threads.max(1);
        let (tx, rx) = mpsc::channel::<Job>(QUEUE);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("plugin-{i}"))
                .spawn(move || {
                    loop {
                        // One thread waits on the queue at a time; the
                        // others wait for the lock.
                        let job = rx.lock().blocking_recv();
                        let Some(job) = job else { break };
                        // A panic in host code must not take the thread:
                        // the caller sees its oneshot dropped.
                        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                    }
                })
                .map_err(|e| PluginError::Engine(format!("cannot start a plugin thread: {e}")))?;
        }
        Ok(Executor { queue: tx, threads })
    }

    /// How many threads run plugin code.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `f` on one of the threads and waits, without blocking the
    /// caller's thread, for its result.
    pub async fn run<R: Send + 'static>(
        &self,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> Result<R, PluginError> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(f());
        });
        self.queue
            .send(job)
            .await
            .map_err(|_| PluginError::Engine("the plugin threads have stopped".into()))?;
        rx.await
            .map_err(|_| PluginError::Engine("a plugin thread failed while running a call".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn runs_jobs_off_the_callers_thread() {
        let ex = Executor::new(2).unwrap();
        let here = std::thread::current().id();
        let there = ex.run(|| std::thread::current().id()).await.unwrap();
        assert_ne!(here, there);
        // A spinning job does not keep the caller's thread from working.
        let slow = ex.run(|| std::thread::sleep(std::time::Duration::from_millis(300)));
        let quick = async {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            std::time::Instant::now()
        };
        let start = std::time::Instant::now();
        let (r, t) = tokio::join!(slow, quick);
        r.unwrap();
        assert!(t - start < std::time::Duration::from_millis(200));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_panicking_job_is_an_error_and_the_thread_lives_on() {
        let ex = Executor::new(1).unwrap();
        let r = ex.run(|| -> u32 { panic!("boom") }).await;
        assert!(matches!(r, Err(PluginError::Engine(_))));
        assert_eq!(ex.run(|| 7).await.unwrap(), 7);
    }
}
