//! Packet delay and loss without netem: a kernel built without the netem qdisc (this
//! CI's) can still hand packets to user space through NFQUEUE. A [`Delayer`] is a
//! thread that enters one network namespace, takes the packets an iptables `NFQUEUE`
//! rule queues there, drops each with the given probability and lets the rest go after
//! the given delay, in order. It stops (and lets everything still held go) on drop.

use std::collections::VecDeque;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nfq::{Queue, Verdict};
use rand::Rng;

/// The NFQUEUE number the rules use (queues are per network namespace).
pub const QUEUE: u16 = 0;
/// Packets the kernel holds for us at most before it drops more.
const MAX_HELD: u32 = 65_536;

/// What a delayer did.
#[derive(Debug, Default)]
pub struct DelayCounts {
    /// Packets let through (after the delay).
    pub passed: AtomicU64,
    /// Packets dropped on purpose.
    pub dropped: AtomicU64,
}

/// A running delay/loss thread for one network namespace.
#[derive(Debug)]
pub struct Delayer {
    stop: Arc<AtomicBool>,
    counts: Arc<DelayCounts>,
    thread: Option<JoinHandle<()>>,
}

impl Delayer {
    /// Starts holding each packet queued in namespace `netns` for `delay`, dropping it
    /// instead with probability `loss` (0..=1). Answers once the queue is bound, or why
    /// it could not be.
    pub fn start(netns: &str, delay: Duration, loss: f64) -> Result<Self, String> {
        let stop = Arc::new(AtomicBool::new(false));
        let counts = Arc::new(DelayCounts::default());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (s, c, netns) = (stop.clone(), counts.clone(), netns.to_owned());
        let thread = std::thread::spawn(move || {
            let bound =
                enter(&netns).and_then(|()| bind().map_err(|e| format!("NFQUEUE {QUEUE} in {netns}: {e}")));
            match bound {
                Ok(queue) => {
                    let _ = ready_tx.send(Ok(()));
                    run(queue, delay, loss, &s, &c);
                }
                Err(why) => {
                    let _ = ready_tx.send(Err(why));
                }
            }
        });
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Self { stop, counts, thread: Some(thread) }),
            Ok(Err(why)) => {
                let _ = thread.join();
                Err(why)
            }
            Err(_) => Err("the delay thread ended before binding its queue".into()),
        }
    }

    /// What it did so far.
    pub fn counts(&self) -> &DelayCounts {
        &self.counts
    }
}

impl Drop for Delayer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Moves the calling thread into network namespace `netns` (made by `ip netns add`):
/// sockets it opens from then on live there.
pub fn enter(netns: &str) -> Result<(), String> {
    let path = format!("/var/run/netns/{netns}");
    let ns = File::open(&path).map_err(|e| format!("{path}: {e}"))?;
    // SAFETY: setns changes only this thread's namespace; the fd is valid while `ns` lives.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(format!("setns {netns}: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

fn bind() -> std::io::Result<Queue> {
    let mut queue = Queue::open()?;
    queue.bind(QUEUE)?;
    // Metadata only: the verdict needs the packet id, not its bytes.
    queue.set_copy_range(QUEUE, 0)?;
    queue.set_queue_max_len(QUEUE, MAX_HELD)?;
    queue.set_nonblocking(true);
    Ok(queue)
}

fn run(mut queue: Queue, delay: Duration, loss: f64, stop: &AtomicBool, counts: &DelayCounts) {
    let mut held: VecDeque<(Instant, nfq::Message)> = VecDeque::new();
    let mut rng = rand::rng();
    while !stop.load(Ordering::Relaxed) {
        let mut idle = true;
        // Take what arrived.
        loop {
            match queue.recv() {
                Ok(mut msg) => {
                    idle = false;
                    if rng.random_bool(loss) {
                        msg.set_verdict(Verdict::Drop);
                        counts.dropped.fetch_add(1, Ordering::Relaxed);
                        let _ = queue.verdict(msg);
                    } else {
                        held.push_back((Instant::now() + delay, msg));
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(_) => break,
            }
        }
        // Let go what is due (same delay for all: the oldest first).
        let now = Instant::now();
        while held.front().is_some_and(|(at, _)| *at <= now) {
            let (_, mut msg) = held.pop_front().expect("checked");
            msg.set_verdict(Verdict::Accept);
            counts.passed.fetch_add(1, Ordering::Relaxed);
            let _ = queue.verdict(msg);
            idle = false;
        }
        if idle {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    for (_, mut msg) in held {
        msg.set_verdict(Verdict::Accept);
        let _ = queue.verdict(msg);
    }
    let _ = queue.unbind(QUEUE);
}
