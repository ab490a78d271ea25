//! The in-memory gallery index of a replica: per gallery, the opened templates of the served
//! model (still under their gallery transform, `dvsp_custody::protect`), kept as one contiguous
//! matrix per transform epoch, so 1:N identification is one pass over memory instead of a
//! read and an opening of every template in the store per call. `sync.rs` loads it and keeps
//! it fresh from the store's change feed.
//!
//! Layout: templates in blocks of `LANES`, each block column-major (`LANES` values of
//! dimension 0, then of dimension 1, ...), so the scan multiplies `LANES` templates at once
//! by one probe value. Each dot product is summed in f64 in dimension order, the products of
//! two f32 being exact in f64: the distances are bit for bit those of `dvsp_core::metrics::distance`
//! (eq. 1), and so is the ranking.
mod sync;

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::sync::{Arc, RwLock};

/// Templates multiplied at once by the scan.
const LANES: usize = 16;
/// Templates of one epoch from which a search uses every core.
const PARALLEL_FROM: usize = 65_536;

/// The templates of one epoch.
#[derive(Debug, Default)]
struct Matrix {
    d: usize,
    len: usize,
    /// Blocks of `LANES` templates, column-major within a block; the last block is padded.
    data: Vec<f32>,
    /// The subject slot of each template.
    slot: Vec<u32>,
    /// The id of each template.
    ids: Vec<Arc<str>>,
}

impl Matrix {
    fn at(&self, i: usize, j: usize) -> usize {
        (i / LANES) * LANES * self.d + j * LANES + i % LANES
    }

    fn write(&mut self, i: usize, f: &[f32]) {
        for (j, x) in f.iter().enumerate() {
            let a = self.at(i, j);
            self.data[a] = *x;
        }
    }

    fn read(&self, i: usize) -> Vec<f32> {
        (0..self.d).map(|j| self.data[self.at(i, j)]).collect()
    }

    fn push(&mut self, id: Arc<str>, slot: u32, f: &[f32]) -> usize {
        let i = self.len;
        if i.is_multiple_of(LANES) {
            self.data.resize(self.data.len() + LANES * self.d, 0.0);
        }
        self.len += 1;
        self.write(i, f);
        self.slot.push(slot);
        self.ids.push(id);
        i
    }

    /// Removes template `i` by moving the last one into its place: the id moved, if any.
    fn swap_remove(&mut self, i: usize) -> Option<Arc<str>> {
        let last = self.len - 1;
        if i != last {
            let f = self.read(last);
            self.write(i, &f);
        }
        self.write(last, &vec![0.0; self.d]);
        self.len = last;
        if last.is_multiple_of(LANES) {
            self.data.truncate(self.data.len() - LANES * self.d);
        }
        self.slot.swap_remove(i);
        self.ids.swap_remove(i);
        (i != last).then(|| self.ids[i].clone())
    }

    /// The cosine distance D = 1 - q.t_i (eq. 1) of every template, the blocks split across
    /// the cores when there are at least `PARALLEL_FROM` templates.
    fn distances(&self, q: &[f32]) -> Vec<f64> {
        let q: Vec<f64> = q.iter().map(|x| *x as f64).collect();
        let blocks = self.len.div_ceil(LANES);
        let mut out = vec![0.0; blocks * LANES];
        let threads = match self.len >= PARALLEL_FROM {
            true => std::thread::available_parallelism().map_or(1, |n| n.get()),
            false => 1,
        };
        let per_thread = blocks.div_ceil(threads).max(1);
        let stride = LANES * self.d;
        if threads == 1 {
            scan(&self.data, &q, &mut out);
        } else {
            std::thread::scope(|s| {
                for (data, out) in self
                    .data
                    .chunks(per_thread * stride)
                    .zip(out.chunks_mut(per_thread * LANES))
                {
                    let q = &q;
                    s.spawn(move || scan(data, q, out));
                }
            });
        }
        out.truncate(self.len);
        out
    }

    fn bytes(&self) -> usize {
        self.data.capacity() * 4 + self.slot.capacity() * 4 + self.ids.capacity() * 16
    }
}

/// `out[i] = 1 - q.t_i` for the templates of `data` (whole blocks), each dot product summed
/// in f64 in dimension order.
fn scan(data: &[f32], q: &[f64], out: &mut [f64]) {
    let stride = LANES * q.len();
    for (block, out) in data.chunks_exact(stride).zip(out.chunks_exact_mut(LANES)) {
        let mut acc = [0.0f64; LANES];
        for (col, qj) in block.chunks_exact(LANES).zip(q) {
            let col: &[f32; LANES] = col.try_into().expect("a block column");
            for (a, t) in acc.iter_mut().zip(col) {
                *a += *t as f64 * qj;
            }
        }
        for (o, a) in out.iter_mut().zip(acc) {
            *o = 1.0 - a;
        }
    }
}

/// A subject with templates in the index.
#[derive(Debug)]
struct SubjectEntry {
    id: Arc<str>,
    templates: Vec<Arc<str>>,
}

/// The index of one gallery.
#[derive(Debug, Default)]
pub struct Shard {
    /// The gallery version (store change feed) the shard reflects.
    version: i64,
    /// Whether a full load has happened (an empty shard is not yet a loaded one).
    loaded: bool,
    epochs: BTreeMap<i64, Matrix>,
    /// Where each template is: (epoch, position).
    place: HashMap<Arc<str>, (i64, usize)>,
    /// Subjects by slot; a freed slot is `None` until reused.
    subjects: Vec<Option<SubjectEntry>>,
    free: Vec<u32>,
    slot_of: HashMap<Arc<str>, u32>,
    /// Bytes of the template ids and of the subject ids held (for `bytes` without a walk).
    id_bytes: usize,
    subject_bytes: usize,
}

/// A subject's distance to the probe: its best template's.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub subject_id: Arc<str>,
    pub distance: f64,
}

/// The ranking order: closer first, then by subject id.
fn rank(a: &Hit, b: &Hit) -> Ordering {
    a.distance
        .total_cmp(&b.distance)
        .then_with(|| a.subject_id.cmp(&b.subject_id))
}

/// A max-heap entry under `rank`, so the heap's top is the worst of the best k.
struct Worst(Hit);

impl PartialEq for Worst {
    fn eq(&self, o: &Self) -> bool {
        rank(&self.0, &o.0) == Ordering::Equal
    }
}
impl Eq for Worst {}
impl PartialOrd for Worst {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Worst {
    fn cmp(&self, o: &Self) -> Ordering {
        rank(&self.0, &o.0)
    }
}

impl Shard {
    /// Adds or replaces template `id` of `subject`, under `epoch`.
    pub fn upsert(&mut self, id: &str, subject: &str, epoch: i64, feature: &[f32]) {
        self.remove(id);
        self.id_bytes += id.len();
        let id: Arc<str> = id.into();
        let slot = match self.slot_of.get(subject) {
            Some(s) => *s,
            None => {
                let entry = SubjectEntry {
                    id: subject.into(),
                    templates: Vec::new(),
                };
                let s = match self.free.pop() {
                    Some(s) => {
                        self.subjects[s as usize] = Some(entry);
                        s
                    }
                    None => {
                        self.subjects.push(Some(entry));
                        (self.subjects.len() - 1) as u32
                    }
                };
                self.slot_of.insert(subject.into(), s);
                self.subject_bytes += subject.len();
                s
            }
        };
        if let Some(e) = self.subjects[slot as usize].as_mut() {
            e.templates.push(id.clone());
        }
        let m = self.epochs.entry(epoch).or_insert_with(|| Matrix {
            d: feature.len(),
            ..Matrix::default()
        });
        let i = m.push(id.clone(), slot, feature);
        self.place.insert(id, (epoch, i));
    }

    /// Removes template `id` if the shard has it.
    pub fn remove(&mut self, id: &str) {
        let Some((epoch, i)) = self.place.remove(id) else {
            return;
        };
        self.id_bytes -= id.len();
        let m = self
            .epochs
            .get_mut(&epoch)
            .expect("a placed template's epoch");
        let slot = m.slot[i];
        if let Some(moved) = m.swap_remove(i) {
            self.place.insert(moved, (epoch, i));
        }
        if m.len == 0 {
            self.epochs.remove(&epoch);
        }
        let entry = self.subjects[slot as usize]
            .as_mut()
            .expect("a placed template's subject");
        entry.templates.retain(|t| &**t != id);
        if entry.templates.is_empty() {
            self.slot_of.remove(&entry.id);
            self.subject_bytes -= entry.id.len();
            self.subjects[slot as usize] = None;
            self.free.push(slot);
        }
    }

    /// Templates in the shard.
    pub fn count(&self) -> usize {
        self.place.len()
    }

    /// The epochs the shard's templates are under.
    pub fn epochs(&self) -> Vec<i64> {
        self.epochs.keys().copied().collect()
    }

    /// The templates of `subject` as (epoch, feature); empty if it has none here.
    pub fn subject_templates(&self, subject: &str) -> Vec<(i64, Vec<f32>)> {
        let Some(slot) = self.slot_of.get(subject) else {
            return Vec::new();
        };
        let entry = self.subjects[*slot as usize].as_ref().expect("a live slot");
        entry
            .templates
            .iter()
            .map(|t| {
                let (epoch, i) = self.place[t];
                (epoch, self.epochs[&epoch].read(i))
            })
            .collect()
    }

    /// The `k` subjects closest to the probe, by their best template, closest first (ties by
    /// subject id). `probes[e]` is the probe under epoch e's transform; an epoch of the shard
    /// without one is the error (the shard changed since the caller read `epochs`).
    pub fn search(&self, probes: &HashMap<i64, Vec<f32>>, k: usize) -> Result<Vec<Hit>, i64> {
        let mut best = vec![f64::INFINITY; self.subjects.len()];
        for (epoch, m) in &self.epochs {
            let q = probes.get(epoch).ok_or(*epoch)?;
            for (d, slot) in m.distances(q).into_iter().zip(&m.slot) {
                let b = &mut best[*slot as usize];
                *b = b.min(d);
            }
        }
        let mut heap: BinaryHeap<Worst> = BinaryHeap::with_capacity(k + 1);
        for (slot, d) in best.iter().enumerate() {
            let Some(entry) = &self.subjects[slot] else {
                continue;
            };
            if heap.len() == k
                && heap
                    .peek()
                    .is_some_and(|w| d.total_cmp(&w.0.distance).is_gt())
            {
                continue;
            }
            heap.push(Worst(Hit {
                subject_id: entry.id.clone(),
                distance: *d,
            }));
            if heap.len() > k {
                heap.pop();
            }
        }
        let mut hits: Vec<Hit> = heap.into_iter().map(|w| w.0).collect();
        hits.sort_by(rank);
        Ok(hits)
    }

    /// An estimate of the shard's memory: matrices, ids and maps (counted as they change, so
    /// this does not walk the templates).
    pub fn bytes(&self) -> usize {
        // Per template: its id's Arc header and its entry in its subject's list; per subject:
        // its id's Arc header, its entry and list header.
        let per_template = 16 + 16;
        let per_subject = 16 + 48;
        self.epochs.values().map(Matrix::bytes).sum::<usize>()
            + self.id_bytes
            + self.count() * per_template
            + self.subject_bytes
            + self.slot_of.len() * per_subject
            + self.place.capacity() * 40
            + self.slot_of.capacity() * 28
            + self.subjects.capacity() * 8
    }
}

/// A gallery's shard and the lock its synchronisation holds (one catch-up at a time).
#[derive(Debug, Default)]
pub struct Cell {
    pub shard: RwLock<Shard>,
    sync: tokio::sync::Mutex<()>,
}

/// The index of every gallery this replica has served.
#[derive(Debug, Default)]
pub struct Index {
    cells: RwLock<HashMap<String, Arc<Cell>>>,
}

impl Index {
    /// The cell of `gallery`, made empty (not loaded) if it has none yet.
    fn cell(&self, gallery: &str) -> Arc<Cell> {
        if let Some(c) = self.cells.read().expect("index").get(gallery) {
            return c.clone();
        }
        self.cells
            .write()
            .expect("index")
            .entry(gallery.to_string())
            .or_default()
            .clone()
    }

    fn cells(&self) -> Vec<(String, Arc<Cell>)> {
        let cells = self.cells.read().expect("index");
        cells.iter().map(|(g, c)| (g.clone(), c.clone())).collect()
    }

    /// Templates and estimated bytes over every gallery.
    pub fn size(&self) -> (usize, usize) {
        self.cells().iter().fold((0, 0), |(n, b), (_, c)| {
            let s = c.shard.read().expect("shard");
            (n + s.count(), b + s.bytes())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn unit(rng: &mut impl Rng, d: usize) -> Vec<f32> {
        let v: Vec<f32> = (0..d).map(|_| rng.random::<f32>() - 0.5).collect();
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.into_iter().map(|x| x / n).collect()
    }

    /// The exhaustive search identify did before the index: every template's distance,
    /// the best per subject, fully sorted.
    fn exhaustive(
        templates: &HashMap<String, (String, i64, Vec<f32>)>,
        probes: &HashMap<i64, Vec<f32>>,
        k: usize,
    ) -> Vec<(String, f64)> {
        let mut best: HashMap<&str, f64> = HashMap::new();
        for (subject, epoch, f) in templates.values() {
            let d = dvsp_core::metrics::distance(&probes[epoch], f);
            let e = best.entry(subject).or_insert(f64::INFINITY);
            *e = e.min(d);
        }
        let mut ranked: Vec<(String, f64)> =
            best.into_iter().map(|(s, d)| (s.to_string(), d)).collect();
        ranked.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
        ranked.truncate(k);
        ranked
    }

    #[test]
    fn search_is_the_exhaustive_ranking_through_inserts_replacements_and_deletes() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let d = 32;
        let mut shard = Shard::default();
        let mut truth: HashMap<String, (String, i64, Vec<f32>)> = HashMap::new();
        for round in 0..6 {
            for i in 0..700 {
                let id = format!("t{round}-{i}");
                let subject = format!("s{}", rng.random_range(0..400));
                let epoch = rng.random_range(1..=3);
                let f = unit(&mut rng, d);
                shard.upsert(&id, &subject, epoch, &f);
                truth.insert(id, (subject, epoch, f));
            }
            // Delete a third, and move some templates to another epoch (a renewal).
            let ids: Vec<String> = truth.keys().cloned().collect();
            for id in ids.iter().filter(|_| rng.random_bool(0.33)) {
                shard.remove(id);
                truth.remove(id);
            }
            let kept: Vec<String> = ids
                .into_iter()
                .filter(|id| truth.contains_key(id))
                .take(50)
                .collect();
            for id in &kept {
                let (subject, _, _) = truth[id].clone();
                let f = unit(&mut rng, d);
                shard.upsert(id, &subject, 4, &f);
                truth.insert(id.clone(), (subject, 4, f));
            }
            assert_eq!(shard.count(), truth.len());
            let probes: HashMap<i64, Vec<f32>> = (1..=4).map(|e| (e, unit(&mut rng, d))).collect();
            let partial: HashMap<i64, Vec<f32>> = probes
                .iter()
                .filter(|(e, _)| **e != 4)
                .map(|(e, q)| (*e, q.clone()))
                .collect();
            assert_eq!(shard.search(&partial, 5), Err(4));
            for k in [1, 5, 100, 1000] {
                let want = exhaustive(&truth, &probes, k);
                let got: Vec<(String, f64)> = shard
                    .search(&probes, k)
                    .unwrap()
                    .into_iter()
                    .map(|h| (h.subject_id.to_string(), h.distance))
                    .collect();
                // Bit for bit: the same distances in the same order.
                assert_eq!(got, want, "round {round}, k {k}");
            }
        }
        // A subject's templates are exactly its own.
        let (id, (subject, epoch, f)) = truth.iter().next().unwrap();
        let mine = shard.subject_templates(subject);
        assert!(mine.contains(&(*epoch, f.clone())), "{id}");
        let n = truth.values().filter(|t| &t.0 == subject).count();
        assert_eq!(mine.len(), n);
        // Everything removed: nothing left, and nothing found.
        for id in truth.keys() {
            shard.remove(id);
        }
        assert_eq!(shard.count(), 0);
        assert_eq!((shard.id_bytes, shard.subject_bytes), (0, 0));
        assert_eq!(shard.search(&HashMap::new(), 5), Ok(Vec::new()));
        assert!(shard.subject_templates(subject).is_empty());
    }

    #[test]
    fn a_search_split_across_the_cores_is_the_exhaustive_ranking() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let d = 32;
        let mut shard = Shard::default();
        let mut truth: HashMap<String, (String, i64, Vec<f32>)> = HashMap::new();
        // Past PARALLEL_FROM, and not a whole number of blocks.
        for i in 0..PARALLEL_FROM + 1_001 {
            let subject = format!("s{}", rng.random_range(0..20_000));
            let f = unit(&mut rng, d);
            shard.upsert(&format!("t{i}"), &subject, 1, &f);
            truth.insert(format!("t{i}"), (subject, 1, f));
        }
        let probes = HashMap::from([(1, unit(&mut rng, d))]);
        let got: Vec<(String, f64)> = shard
            .search(&probes, 20)
            .unwrap()
            .into_iter()
            .map(|h| (h.subject_id.to_string(), h.distance))
            .collect();
        assert_eq!(got, exhaustive(&truth, &probes, 20));
    }
}
