//! Metadata: the cached tree and the thread that refreshes it. LIST and INFO are blocking
//! calls to vlmcd (through an `archip-client` on a port of its own), so FUSE threads never
//! make them: a lookup, getattr or open that the cache cannot answer becomes a job for the
//! metadata thread, which replies when it is done (jobs are served in order; a job finds the
//! listing another job fetched after it was queued fresh enough and does not ask again).
//!
//! While vlmcd is away (restarting), a refresh that fails with a transient error answers
//! from the last listing instead of waiting: metadata keeps working from the cache, and
//! the data path does the waiting (see `engine`).

use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use archip_client::{Client, ClientError, VolumeInfo};

use crate::tree::Tree;

/// How long one metadata call may wait for vlmcd.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A job for the metadata thread.
pub type Job = Box<dyn FnOnce(&mut Worker) + Send>;

/// The tree and the way to the metadata thread.
pub struct Meta {
    tree: Mutex<Tree>,
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
}

impl Meta {
    pub fn new() -> Meta {
        Meta { tree: Mutex::new(Tree::new()), jobs: Mutex::new(None) }
    }

    pub fn tree(&self) -> MutexGuard<'_, Tree> {
        self.tree.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts the metadata thread with `client`.
    pub fn start(self: &Arc<Self>, client: Client) -> std::io::Result<std::thread::JoinHandle<()>> {
        let (tx, rx) = mpsc::channel::<Job>();
        *self.jobs.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
        let mut worker = Worker { client, meta: self.clone() };
        std::thread::Builder::new().name("archip-meta".into()).spawn(move || {
            while let Ok(job) = rx.recv() {
                job(&mut worker);
            }
        })
    }

    /// Stops the metadata thread after the jobs already queued.
    pub fn stop(&self) {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    /// Queues `job`; false if the thread is gone (the caller's reply is then dropped, which
    /// answers EIO).
    pub fn submit(&self, job: Job) -> bool {
        let jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        jobs.as_ref().is_some_and(|tx| tx.send(job).is_ok())
    }
}

/// The metadata thread's state.
pub struct Worker {
    client: Client,
    meta: Arc<Meta>,
}

/// vlmcd is away: a stale answer is better than waiting.
fn transient(e: &ClientError) -> bool {
    matches!(e.errno(), libc::ENOTCONN | libc::ECONNABORTED | libc::EAGAIN | libc::ETIMEDOUT)
}

impl Worker {
    pub fn meta(&self) -> &Arc<Meta> {
        &self.meta
    }

    /// Makes sure the tree was fetched at or after `after` (or at all, with `None`). A
    /// transient failure keeps the old listing if there is one; otherwise the errno.
    pub fn refresh(&mut self, after: Option<Instant>) -> Result<(), i32> {
        let fetched = self.meta.tree().fetched_at();
        if fetched.is_some_and(|t| after.is_none_or(|a| t >= a)) {
            return Ok(());
        }
        let started = Instant::now();
        self.client.set_timeout(CALL_TIMEOUT);
        match self.client.list() {
            Ok(list) => {
                self.meta.tree().apply(&list, started);
                Ok(())
            }
            Err(e) if transient(&e) && fetched.is_some() => {
                tracing::debug!("listing volumes: {e}; answering from the cache");
                Ok(())
            }
            Err(e) => {
                tracing::warn!("listing volumes: {e}");
                Err(e.errno())
            }
        }
    }

    /// What vlmcd knows of `name` now.
    pub fn info(&mut self, name: &str) -> Result<VolumeInfo, ClientError> {
        self.client.set_timeout(CALL_TIMEOUT);
        self.client.info(name)
    }

    /// Whether an error of [`Worker::info`] only means vlmcd is away.
    pub fn is_transient(e: &ClientError) -> bool {
        transient(e)
    }
}
