//! The bounded pool: at most `max_running` jobs run at once, the rest wait in FIFO
//! order. Pure bookkeeping; the registry spawns what it hands out.

use std::collections::VecDeque;

#[derive(Debug)]
pub struct Scheduler {
    queue: VecDeque<String>,
    running: usize,
    max_running: usize,
}

impl Scheduler {
    pub fn new(max_running: usize) -> Scheduler {
        Scheduler {
            queue: VecDeque::new(),
            running: 0,
            max_running: max_running.max(1),
        }
    }

    pub fn enqueue(&mut self, id: String) {
        self.queue.push_back(id);
    }

    /// Takes a job out of the queue (paused or terminated before it ran).
    pub fn dequeue(&mut self, id: &str) -> bool {
        match self.queue.iter().position(|q| q == id) {
            Some(i) => self.queue.remove(i).is_some(),
            None => false,
        }
    }

    /// The next job to run, taking a slot, if one is free.
    pub fn take_next(&mut self) -> Option<String> {
        if self.running >= self.max_running {
            return None;
        }
        let id = self.queue.pop_front()?;
        self.running += 1;
        Some(id)
    }

    /// Takes a slot for a job that is not in this queue (claimed from a shared
    /// store), if one is free.
    pub fn occupy(&mut self) -> bool {
        if self.running >= self.max_running {
            return false;
        }
        self.running += 1;
        true
    }

    pub fn max_running(&self) -> usize {
        self.max_running
    }

    /// A running job released its slot.
    pub fn release(&mut self) {
        self.running = self.running.saturating_sub(1);
    }

    pub fn running(&self) -> usize {
        self.running
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_within_the_bound() {
        let mut s = Scheduler::new(2);
        for id in ["a", "b", "c", "d"] {
            s.enqueue(id.into());
        }
        assert!(s.dequeue("b"));
        assert_eq!(s.take_next().as_deref(), Some("a"));
        assert_eq!(s.take_next().as_deref(), Some("c"));
        assert_eq!(s.take_next(), None);
        s.release();
        assert_eq!(s.take_next().as_deref(), Some("d"));
    }
}
