//! The conversions' turn at the cores, earliest deadline first. A FIFO semaphore would serve
//! jobs in the order this replica happened to take them: the jobs it took over from a dead
//! replica — the oldest in the system, closest to their deadline — would queue behind its own
//! newer ones.

use std::collections::BTreeMap;
use std::sync::Mutex;

use tokio::sync::oneshot;

pub struct Gate {
    state: Mutex<State>,
}

struct State {
    free: usize,
    /// Arrivals, to keep equal deadlines first come, first served.
    next: u64,
    waiting: BTreeMap<(i64, u64), oneshot::Sender<()>>,
}

/// A turn at the cores; the next waiter (earliest deadline) gets it when this is dropped.
pub struct Permit<'a> {
    gate: &'a Gate,
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.gate
            .release(&mut self.gate.state.lock().expect("gate lock"));
    }
}

/// A waiter's place in the queue: gives its place (or the turn it was handed meanwhile) back
/// when the waiting future is dropped.
struct Waiting<'a> {
    gate: &'a Gate,
    key: (i64, u64),
    granted: bool,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if self.granted {
            return;
        }
        let mut s = self.gate.state.lock().expect("gate lock");
        if s.waiting.remove(&self.key).is_none() {
            // Handed the turn just before being dropped: pass it on.
            self.gate.release(&mut s);
        }
    }
}

impl Gate {
    pub fn new(turns: usize) -> Self {
        Self {
            state: Mutex::new(State {
                free: turns,
                next: 0,
                waiting: BTreeMap::new(),
            }),
        }
    }

    /// Waits for a turn; among waiters, the earliest `deadline_ms` goes first.
    pub async fn acquire(&self, deadline_ms: i64) -> Permit<'_> {
        let (rx, key) = {
            let mut s = self.state.lock().expect("gate lock");
            if s.free > 0 && s.waiting.is_empty() {
                s.free -= 1;
                return Permit { gate: self };
            }
            let (tx, rx) = oneshot::channel();
            let key = (deadline_ms, s.next);
            s.next += 1;
            s.waiting.insert(key, tx);
            (rx, key)
        };
        let mut waiting = Waiting {
            gate: self,
            key,
            granted: false,
        };
        // The sender lives in the queue until it hands the turn over, so this only ends
        // with a turn.
        let _ = rx.await;
        waiting.granted = true;
        Permit { gate: self }
    }

    fn release(&self, s: &mut State) {
        while let Some((_, tx)) = s.waiting.pop_first() {
            if tx.send(()).is_ok() {
                return;
            }
        }
        s.free += 1;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn waiters_go_earliest_deadline_first_and_a_dropped_waiter_loses_no_turn() {
        let gate = Arc::new(Gate::new(1));
        let first = gate.acquire(50).await;
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for deadline in [30, 10, 20] {
            let (gate, order) = (gate.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let _turn = gate.acquire(deadline).await;
                order.lock().unwrap().push(deadline);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // A waiter that gives up while queued (earliest of all) must not keep a turn.
        let quitter = {
            let gate = gate.clone();
            tokio::spawn(async move {
                let _turn = gate.acquire(1).await;
                unreachable!("aborted while waiting");
            })
        };
        tokio::time::sleep(Duration::from_millis(5)).await;
        quitter.abort();
        let _ = quitter.await;
        drop(first);
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), vec![10, 20, 30]);
        // Every turn came back.
        let s = gate.state.lock().unwrap();
        assert_eq!((s.free, s.waiting.len()), (1, 0));
    }
}
