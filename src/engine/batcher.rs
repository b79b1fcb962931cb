//! The batcher thread: groups queued jobs into batches of at most `max_batch_tokens` real
//! tokens and prepares them (padding, masks, tensors) while the model thread runs the last.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::time::Instant;

use crate::embed::Prepared;
use crate::Embedder;

use super::{EngineError, EngineOptions, Job};

pub(super) fn run(
    embedder: &Embedder,
    queued: Receiver<Job>,
    to_model: crossbeam_channel::Sender<(Vec<Job>, Prepared)>,
    incoming: &AtomicUsize,
    options: &EngineOptions,
) {
    let mut carried: Option<Job> = None;
    loop {
        let first = match carried.take() {
            Some(job) => job,
            None => match queued.recv() {
                Ok(job) => job,
                Err(_) => return,
            },
        };
        let deadline = Instant::now() + options.max_batch_wait;
        let mut tokens = first.token_count;
        let mut jobs = vec![first];
        while tokens < options.max_batch_tokens {
            let next = match queued.try_recv() {
                Ok(job) => job,
                Err(TryRecvError::Disconnected) => break,
                Err(TryRecvError::Empty) => {
                    // Only wait for requests already on their way.
                    let now = Instant::now();
                    if incoming.load(Ordering::Acquire) == 0 || now >= deadline {
                        break;
                    }
                    match queued.recv_timeout(deadline - now) {
                        Ok(job) => job,
                        Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
                    }
                }
            };
            let size = next.token_count;
            if tokens + size > options.max_batch_tokens {
                carried = Some(next);
                break;
            }
            tokens += size;
            jobs.push(next);
        }
        let texts = jobs
            .iter_mut()
            .flat_map(|job| job.tokens.drain(..))
            .collect();
        match embedder.prepare(texts) {
            Ok(prepared) => {
                if let Err(crossbeam_channel::SendError((jobs, _))) =
                    to_model.send((jobs, prepared))
                {
                    fail_all(jobs, EngineError::Stopped);
                    return;
                }
            }
            Err(e) => fail_all(jobs, EngineError::Failed(e.to_string())),
        }
    }
}

pub(super) fn fail_all(jobs: Vec<Job>, error: EngineError) {
    for job in jobs {
        job.work.fail(error.clone());
    }
}
