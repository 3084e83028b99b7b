// SPDX-License-Identifier: MPL-2.0
//! The inference thread of `pipelining=true`: runs the jobs of one buffer while the streaming
//! thread preprocesses the next, and hands the results back in the order they were given.

use std::sync::mpsc::{Receiver, Sender, channel};

use super::engine::{Job, Ran};

pub struct Worker {
    jobs: Option<Sender<Vec<Job>>>,
    done: Receiver<Vec<Ran>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Job lists given and not yet collected.
    in_flight: usize,
}

impl Worker {
    pub fn start() -> Result<Worker, String> {
        let (jobs_tx, jobs_rx) = channel::<Vec<Job>>();
        let (done_tx, done_rx) = channel();
        let thread = std::thread::Builder::new()
            .name("onnxinfer-infer".into())
            .spawn(move || {
                for jobs in jobs_rx {
                    let ran: Vec<Ran> = jobs.into_iter().map(Job::run).collect();
                    if done_tx.send(ran).is_err() {
                        break;
                    }
                }
            })
            .map_err(|e| format!("cannot start the inference thread: {e}"))?;
        Ok(Worker {
            jobs: Some(jobs_tx),
            done: done_rx,
            thread: Some(thread),
            in_flight: 0,
        })
    }

    /// Starts running `jobs`.
    pub fn submit(&mut self, jobs: Vec<Job>) -> Result<(), String> {
        let tx = self
            .jobs
            .as_ref()
            .ok_or("the inference thread has stopped")?;
        tx.send(jobs)
            .map_err(|_| "the inference thread has stopped".to_string())?;
        self.in_flight += 1;
        Ok(())
    }

    /// The results of the oldest jobs given, once they ran.
    pub fn wait(&mut self) -> Result<Vec<Ran>, String> {
        if self.in_flight == 0 {
            return Ok(Vec::new());
        }
        let ran = self
            .done
            .recv()
            .map_err(|_| "the inference thread has stopped".to_string())?;
        self.in_flight -= 1;
        Ok(ran)
    }

    /// Waits for whatever is running and forgets it (flush).
    pub fn discard(&mut self) {
        while self.in_flight > 0 && self.wait().is_ok() {}
        self.in_flight = 0;
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
