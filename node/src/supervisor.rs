//! Every long-lived task of a site runs under the [`Supervisor`]: a panic is logged as an
//! error naming the task, counted, and the task started again after a backoff; a task
//! that keeps failing makes the site stop, naming it, rather than run without it.
//!
//! A panic is a bug, but one bad value from a peer must not silently take automation or
//! the replicator away from a site that keeps answering and gossiping as if all were well.
//!
//! Test hook: `CAIRN_TEST_PANIC=TASK[:N]` (comma-separated for several tasks) makes the
//! first N runs of TASK (default 1) panic at once, so the restart path can be tested
//! against a real process.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How the supervisor restarts tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPolicy {
    /// The first wait before a restart; it doubles with each failure in a row.
    pub first_backoff: Duration,
    /// The longest wait.
    pub max_backoff: Duration,
    /// This many failures, each within `window` of the one before, stop the site.
    pub max_failures: u32,
    /// A task that ran this long without failing starts its count afresh.
    pub window: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            first_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            max_failures: 5,
            window: Duration::from_secs(60),
        }
    }
}

/// Runs a site's tasks, restarting them when they panic.
#[derive(Debug)]
pub struct Supervisor {
    policy: RestartPolicy,
    restarts: Mutex<BTreeMap<&'static str, u64>>,
    /// Test hook: runs still to make panic, by task.
    panics: Mutex<BTreeMap<String, u32>>,
    fatal: watch::Sender<Option<String>>,
}

/// Aborts the task it holds when dropped, so aborting a supervised task's outer handle
/// also stops the task itself.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Supervisor {
    /// A supervisor with `policy`; the test hook is read from `CAIRN_TEST_PANIC`.
    pub fn new(policy: RestartPolicy) -> Arc<Self> {
        let hook = std::env::var("CAIRN_TEST_PANIC").unwrap_or_default();
        Self::with_panics(policy, &hook)
    }

    /// A supervisor whose tasks panic as `hook` says (`TASK[:N],…`; see the module doc).
    pub fn with_panics(policy: RestartPolicy, hook: &str) -> Arc<Self> {
        let mut panics = BTreeMap::new();
        for part in hook.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (task, times) = match part.split_once(':') {
                Some((task, n)) => (task, n.parse().unwrap_or(1)),
                None => (part, 1),
            };
            panics.insert(task.to_owned(), times);
        }
        let (fatal, _) = watch::channel(None);
        Arc::new(Self { policy, restarts: Mutex::default(), panics: Mutex::new(panics), fatal })
    }

    /// Runs `make()` as task `name` until it returns, starting it again (after the
    /// backoff) each time it panics. The returned handle's abort stops it for good.
    pub fn spawn<F, Fut>(self: &Arc<Self>, name: &'static str, make: F) -> JoinHandle<()>
    where
        F: Fn() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let this = self.clone();
        tokio::spawn(async move {
            let mut failures = 0u32;
            let mut backoff = this.policy.first_backoff;
            loop {
                let started = Instant::now();
                let hooked = this.take_panic(name);
                let run = make();
                let mut task = AbortOnDrop(tokio::spawn(async move {
                    if hooked {
                        panic!("test hook CAIRN_TEST_PANIC: task {name} made to panic");
                    }
                    run.await;
                }));
                let outcome = (&mut task.0).await;
                match outcome {
                    Ok(()) => return,
                    Err(error) if error.is_cancelled() => return,
                    Err(error) => {
                        let why = panic_message(error.into_panic());
                        if started.elapsed() > this.policy.window {
                            failures = 0;
                            backoff = this.policy.first_backoff;
                        }
                        failures += 1;
                        *this
                            .restarts
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .entry(name)
                            .or_default() += 1;
                        if failures >= this.policy.max_failures {
                            tracing::error!(task = name, failures, %why, "task keeps failing; stopping the site");
                            this.fail(format!("task {name} failed {failures} times in a row, last: {why}"));
                            return;
                        }
                        tracing::error!(task = name, failures, %why, ?backoff, "task panicked; restarting it");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(this.policy.max_backoff);
                    }
                }
            }
        })
    }

    /// Says the site cannot go on (a task that keeps failing, named in `why`).
    pub fn fail(&self, why: String) {
        self.fatal.send_if_modified(|slot| {
            let first = slot.is_none();
            if first {
                *slot = Some(why);
            }
            first
        });
    }

    /// Restarts so far, by task.
    pub fn restarts(&self) -> Vec<(&'static str, u64)> {
        let restarts = self.restarts.lock().unwrap_or_else(PoisonError::into_inner);
        restarts.iter().map(|(k, v)| (*k, *v)).collect()
    }

    /// Set once a task has failed too often: why the site must stop.
    pub fn fatal(&self) -> watch::Receiver<Option<String>> {
        self.fatal.subscribe()
    }

    fn take_panic(&self, name: &str) -> bool {
        let mut panics = self.panics.lock().unwrap_or_else(PoisonError::into_inner);
        match panics.get_mut(name) {
            Some(left) if *left > 0 => {
                *left -= 1;
                true
            }
            _ => false,
        }
    }
}

/// Runs blocking `f` on tokio's blocking pool; a panic in it carries on in the calling
/// task, so the supervisor of that task sees and counts it.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(value) => value,
        Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
        // Only a runtime shutting down cancels a blocking task: nothing is left to do.
        Err(_) => std::future::pending().await,
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(text) => *text,
        Err(payload) => match payload.downcast::<&'static str>() {
            Ok(text) => (*text).to_owned(),
            Err(_) => "a panic without a message".to_owned(),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn quick() -> RestartPolicy {
        RestartPolicy {
            first_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(4),
            max_failures: 4,
            window: Duration::from_secs(60),
        }
    }

    #[tokio::test]
    async fn a_panicking_task_is_restarted_and_counted() {
        let supervisor = Supervisor::with_panics(quick(), "");
        let runs = Arc::new(AtomicU32::new(0));
        let r = runs.clone();
        let task = supervisor.spawn("flaky", move || {
            let r = r.clone();
            async move {
                if r.fetch_add(1, Ordering::SeqCst) < 2 {
                    panic!("boom");
                }
            }
        });
        task.await.unwrap();
        assert_eq!(runs.load(Ordering::SeqCst), 3, "two panics, then a clean end");
        assert_eq!(supervisor.restarts(), vec![("flaky", 2)]);
        assert!(supervisor.fatal().borrow().is_none());
    }

    #[tokio::test]
    async fn a_task_that_keeps_failing_stops_the_site_naming_it() {
        let supervisor = Supervisor::with_panics(quick(), "");
        let task = supervisor.spawn("broken", || async { panic!("always") });
        task.await.unwrap();
        let why = supervisor.fatal().borrow().clone().expect("fatal");
        assert!(why.contains("task broken failed 4 times") && why.contains("always"), "{why}");
    }

    #[tokio::test]
    async fn the_test_hook_panics_the_named_task_as_often_as_asked() {
        let supervisor = Supervisor::with_panics(quick(), "other, hooked:2");
        let runs = Arc::new(AtomicU32::new(0));
        let r = runs.clone();
        supervisor
            .spawn("hooked", move || {
                let r = r.clone();
                async move {
                    r.fetch_add(1, Ordering::SeqCst);
                }
            })
            .await
            .unwrap();
        assert_eq!(runs.load(Ordering::SeqCst), 1, "the body ran once, after two hooked panics");
        assert_eq!(supervisor.restarts(), vec![("hooked", 2)]);
    }

    #[tokio::test]
    async fn aborting_the_handle_stops_the_task_itself() {
        let supervisor = Supervisor::with_panics(quick(), "");
        let (alive, mut watch) = tokio::sync::mpsc::channel::<()>(1);
        let task = supervisor.spawn("forever", move || {
            let alive = alive.clone();
            async move {
                let _alive = alive;
                std::future::pending::<()>().await;
            }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        task.abort();
        let _ = task.await;
        // Every sender is gone once the inner task was dropped.
        assert!(tokio::time::timeout(Duration::from_secs(2), watch.recv()).await.unwrap().is_none());
    }
}
