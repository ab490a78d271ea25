//! The inference worker: the model lives on one thread (tch tensors are not shared across
//! threads); handlers send jobs over a bounded channel and the worker forms micro-batches
//! run without gradients, one pass of the network giving feature and quality. Batching is
//! adaptive: a job that finds the queue empty runs at once; when others are queued, the
//! batch takes them all and then waits up to `max_wait` for more (up to `max_batch` images). A full queue is refused at once (503) instead of
//! growing memory.
use std::sync::mpsc::{sync_channel, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tch::Tensor;
use tokio::sync::oneshot;

use super::error::ApiError;
use super::metrics::Metrics;
use dvsp_core::artifact::Model;
use dvsp_core::model::unit;

/// The embedding of one probe: unit-norm feature and, for variational models, the posterior
/// spread r(x) of eq. 14.
#[derive(Debug, Clone)]
pub struct Embedding {
    pub feature: Vec<f32>,
    pub spread: Option<f64>,
}

struct Job {
    /// `[C, H, W]` images in [0, 1].
    images: Vec<Tensor>,
    reply: oneshot::Sender<Result<Vec<Embedding>, String>>,
}

#[derive(Clone)]
pub struct Worker {
    tx: SyncSender<Job>,
    metrics: Arc<Metrics>,
}

impl Worker {
    pub fn start(
        model: Model,
        max_batch: usize,
        max_wait: Duration,
        queue: usize,
        metrics: Arc<Metrics>,
    ) -> Worker {
        let (tx, rx) = sync_channel::<Job>(queue);
        let m = metrics.clone();
        let label = [model.card.model_id.clone()];
        std::thread::Builder::new()
            .name("dvsp-inference".into())
            .spawn(move || {
                let device = model.vs.device();
                while let Ok(first) = rx.recv() {
                    m.queue_depth.dec();
                    let mut n = first.images.len();
                    let mut jobs = vec![first];
                    let take = |j: Job, n: &mut usize, jobs: &mut Vec<Job>| {
                        m.queue_depth.dec();
                        *n += j.images.len();
                        jobs.push(j);
                    };
                    while n < max_batch {
                        match rx.try_recv() {
                            Ok(j) => take(j, &mut n, &mut jobs),
                            Err(_) => break,
                        }
                    }
                    // Others were waiting: more are likely on their way, for at most
                    // `max_wait` from now.
                    let deadline = Instant::now() + max_wait;
                    while jobs.len() > 1 && n < max_batch {
                        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                            Ok(j) => take(j, &mut n, &mut jobs),
                            Err(RecvTimeoutError::Timeout)
                            | Err(RecvTimeoutError::Disconnected) => break,
                        }
                    }
                    let start = Instant::now();
                    // A panic inside libtorch fails this batch's jobs, not the worker.
                    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        run_batch(&model, &jobs, device)
                    }))
                    .unwrap_or_else(|_| Err("inference panicked on this batch".to_string()));
                    m.batch_size.with_label_values(&label).observe(n as f64);
                    m.inference_seconds
                        .with_label_values(&label)
                        .observe(start.elapsed().as_secs_f64());
                    let mut result = result.map(|v| v.into_iter());
                    for job in jobs {
                        let reply = match &mut result {
                            Ok(it) => Ok(it.by_ref().take(job.images.len()).collect()),
                            Err(e) => Err(e.clone()),
                        };
                        let _ = job.reply.send(reply);
                    }
                }
            })
            .expect("spawn inference thread");
        Worker { tx, metrics }
    }

    /// Embeds `images` (each `[C, H, W]` in [0, 1]) in the next micro-batch.
    pub async fn embed(&self, images: Vec<Tensor>) -> Result<Vec<Embedding>, ApiError> {
        let (reply, rx) = oneshot::channel();
        self.metrics.queue_depth.inc();
        match self.tx.try_send(Job { images, reply }) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.metrics.queue_depth.dec();
                return Err(ApiError::Busy);
            }
            Err(TrySendError::Disconnected(_)) => {
                self.metrics.queue_depth.dec();
                return Err(ApiError::Internal("inference worker stopped".into()));
            }
        }
        rx.await
            .map_err(|_| ApiError::Internal("inference worker dropped a job".into()))?
            .map_err(ApiError::Internal)
    }
}

fn run_batch(model: &Model, jobs: &[Job], device: tch::Device) -> Result<Vec<Embedding>, String> {
    let _guard = tch::no_grad_guard();
    let all: Vec<&Tensor> = jobs.iter().flat_map(|j| j.images.iter()).collect();
    let x = Tensor::f_stack(&all, 0)
        .map_err(|e| e.to_string())?
        .to_device(device);
    let (f, spread) = model.net.embed(&x);
    let f = unit(&f).to_device(tch::Device::Cpu);
    let spread: Option<Vec<f64>> =
        spread.map(|r| Vec::<f64>::try_from(r.to_kind(tch::Kind::Double)).unwrap_or_default());
    let k = f.size()[1] as usize;
    let flat: Vec<f32> = Vec::<f32>::try_from(f.flatten(0, -1)).map_err(|e| e.to_string())?;
    Ok(flat
        .chunks_exact(k)
        .enumerate()
        .map(|(i, c)| Embedding {
            feature: c.to_vec(),
            spread: spread.as_ref().and_then(|s| s.get(i).copied()),
        })
        .collect())
}
