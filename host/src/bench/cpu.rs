//! CPU time, for figures that split a run's cost between threads or processes: the
//! evidence that says which stage a faster figure needs, measured in the same run as the
//! figure itself.

/// CPU time used so far by the calling thread and by its whole process, in seconds.
#[derive(Debug, Clone, Copy)]
pub struct CpuSpent {
    /// The calling thread's CPU time.
    pub thread: f64,
    /// The process's CPU time, every thread.
    pub process: f64,
}

impl CpuSpent {
    /// The clocks now.
    pub fn now() -> Self {
        Self {
            thread: seconds(rustix::time::ClockId::ThreadCPUTime),
            process: seconds(rustix::time::ClockId::ProcessCPUTime),
        }
    }

    /// CPU time spent since `self` was read.
    pub fn elapsed(&self) -> Self {
        let now = Self::now();
        Self {
            thread: now.thread - self.thread,
            process: now.process - self.process,
        }
    }

    /// The CPU time of the process's other threads.
    pub fn other_threads(&self) -> f64 {
        (self.process - self.thread).max(0.0)
    }
}

fn seconds(clock: rustix::time::ClockId) -> f64 {
    let spent = rustix::time::clock_gettime(clock);
    spent.tv_sec as f64 + spent.tv_nsec as f64 / 1e9
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_thread_is_charged_to_itself_and_a_helper_thread_to_the_others() {
        let started = CpuSpent::now();
        let spin = |until: f64| {
            let begun = CpuSpent::now().thread;
            let mut x = 0u64;
            while CpuSpent::now().thread - begun < until {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        };
        spin(0.05);
        std::thread::spawn(move || spin(0.05))
            .join()
            .expect("the helper thread ran");
        let spent = started.elapsed();
        assert!(spent.thread >= 0.05, "{spent:?}");
        assert!(spent.other_threads() >= 0.045, "{spent:?}");
        assert!(spent.process >= spent.thread + 0.045, "{spent:?}");
    }
}
