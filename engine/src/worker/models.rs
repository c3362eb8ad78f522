//! A worker's models: fetched from the coordinator by content hash, cached on disk and in
//! memory. A model is registered once on the coordinator, never copied to sites by hand.
//!
//! Nothing here blocks inside an operator: before a task runs, the worker's session builder
//! calls [`RemoteModels::preload`] with the versions the statement pinned, which fetches
//! them over the network (async) and builds their ONNX Runtime sessions on tokio's blocking
//! pool. `predict` then only looks them up ([`ModelProvider::model`] never fetches or loads).
//!
//! Loaded models stay in memory between statements, each counted in the worker's memory
//! pool. When the pool is full (a new model, a sort, a hash table), the models no task holds
//! are let go, least recently used first ([`Reclaim`]): a task holds the models it calls
//! through the [`ModelLease`] its session carries, so a model is never dropped under a
//! running task, and one dropped is loaded again from the disk cache when next asked for.

use crate::client;
use crate::memory::Reclaim;
use crate::protocol::{ACTION_FETCH_MODEL, FetchModel};
use crate::security::Connector;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryPool, MemoryReservation};
use parking_lot::{Mutex, RwLock};
use shoal_operators::model::content_hash;
use shoal_operators::udf::model_pins::Pins;
use shoal_operators::{Error, ErrorExt, LoadedModel, ModelInfo, ModelProvider, Result, StatusCode};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug)]
pub struct RemoteModels {
    coordinator: String,
    connector: Connector,
    cache_dir: PathBuf,
    /// Latest registry listing from the coordinator (name -> info).
    names: RwLock<BTreeMap<String, ModelInfo>>,
    /// Loaded models by content hash.
    loaded: Mutex<HashMap<String, Cached>>,
    /// Ticks once per look-up: what "least recently used" counts in.
    clock: AtomicU64,
    /// Held while `preload` loads: one load of a model, whoever asks.
    preloading: tokio::sync::Mutex<()>,
    /// The worker's memory pool: every loaded model holds a reservation in it, so model
    /// sessions and query operators share one limit.
    memory: Option<Arc<dyn MemoryPool>>,
    reservations: Mutex<HashMap<String, MemoryReservation>>,
}

/// A loaded model and when it was last asked for (a tick of [`RemoteModels::clock`]).
#[derive(Debug)]
struct Cached {
    model: Arc<LoadedModel>,
    last_used: u64,
}

/// The models a task calls, held for as long as the task runs (its session carries this as
/// an extension): a model someone holds is never let go under memory pressure.
#[derive(Debug, Default)]
pub struct ModelLease {
    models: Vec<Arc<LoadedModel>>,
}

impl ModelLease {
    /// The content hashes of the models held.
    pub fn hashes(&self) -> Vec<&str> {
        self.models.iter().map(|m| m.hash.as_str()).collect()
    }
}

/// What a loaded model is taken to occupy before its sessions, as a multiple of its file
/// size: the bytes kept for building sessions. Each session is counted when it is built
/// (`SessionPool`, [`shoal_operators::model::SESSION_MEMORY_FACTOR`] times the size).
const MODEL_MEMORY_FACTOR: usize = 1;

impl RemoteModels {
    pub fn new(coordinator: String, connector: Connector, cache_dir: PathBuf) -> Self {
        Self {
            coordinator,
            connector,
            cache_dir,
            names: RwLock::new(BTreeMap::new()),
            loaded: Mutex::new(HashMap::new()),
            clock: AtomicU64::new(0),
            preloading: tokio::sync::Mutex::new(()),
            memory: None,
            reservations: Mutex::new(HashMap::new()),
        }
    }

    /// Accounts loaded models in `pool` (the worker's memory limit).
    pub fn with_memory_pool(mut self, pool: Arc<dyn MemoryPool>) -> Self {
        self.memory = Some(pool);
        self
    }

    /// Reserves a model's memory before loading it; fails with a resources-exhausted
    /// error naming the model when the worker's limit cannot hold it.
    fn reserve(&self, name: &str, hash: &str, model_bytes: usize) -> Result<()> {
        let Some(pool) = &self.memory else {
            return Ok(());
        };
        if self.reservations.lock().contains_key(hash) {
            return Ok(());
        }
        let reservation = MemoryConsumer::new(format!("model '{name}'")).register(pool);
        let bytes = model_bytes * MODEL_MEMORY_FACTOR;
        reservation
            .try_grow(bytes)
            .map_err(|e| Error::model_too_large(name, bytes, pool.as_ref(), e))?;
        self.reservations
            .lock()
            .insert(hash.to_string(), reservation);
        Ok(())
    }

    /// The content hash the coordinator's registry lists under `name` (e.g. `m@v3`).
    pub fn registered_hash(&self, name: &str) -> Option<String> {
        self.names.read().get(name).map(|m| m.hash.clone())
    }

    pub fn set_registry(&self, models: Vec<ModelInfo>) {
        *self.names.write() = models.into_iter().map(|m| (m.name.clone(), m)).collect();
    }

    fn cache_path(&self, hash: &str) -> PathBuf {
        self.cache_dir.join(format!("{hash}.onnx"))
    }

    /// Downloads every registered model not yet in the disk cache (called from the
    /// heartbeat task, so queries rarely wait for a fetch).
    pub async fn prefetch(&self) {
        let wanted: Vec<String> = self.names.read().values().map(|m| m.hash.clone()).collect();
        for hash in wanted {
            if tokio::fs::try_exists(self.cache_path(&hash))
                .await
                .unwrap_or(false)
            {
                continue;
            }
            if let Err(e) = self.fetch_to_cache(&hash).await {
                tracing::warn!("prefetching model {hash}: {e}");
            }
        }
    }

    async fn fetch_to_cache(&self, hash: &str) -> Result<Vec<u8>> {
        let failed = |message: String| Error::ModelFetch {
            hash: hash.to_string(),
            source_url: self.coordinator.clone(),
            message,
            unreachable: false,
        };
        let body = serde_json::to_vec(&FetchModel {
            hash: hash.to_string(),
        })
        .map_err(|e| failed(e.to_string()))?;
        let bytes = client::action(&self.connector, &self.coordinator, ACTION_FETCH_MODEL, body)
            .await
            .map_err(|e| Error::ModelFetch {
                hash: hash.to_string(),
                source_url: self.coordinator.clone(),
                unreachable: e.status_code() == StatusCode::Unavailable,
                message: e.to_string(),
            })?;
        // Hashing and file writes are blocking work: off the runtime threads.
        let (dir, path, expected) = (
            self.cache_dir.clone(),
            self.cache_path(hash),
            hash.to_string(),
        );
        blocking(hash, move || store_verified(&dir, &path, &expected, bytes))
            .await?
            .map_err(failed)
    }

    /// Makes every model `pins` names ready before a task that calls them runs: read from
    /// the cache or fetched, its memory reserved, its sessions built off the runtime
    /// threads. One load at a time: the tasks of one statement arrive together and must not
    /// each load (and reserve memory for) the same model. The lease returned holds them
    /// until the task drops it.
    pub async fn preload(&self, pins: &Pins) -> Result<ModelLease> {
        let _one_at_a_time = self.preloading.lock().await;
        let mut lease = ModelLease::default();
        for (name, hash) in &pins.versions {
            // The hash names a file in the cache: a site takes no path from a request.
            if !is_content_hash(hash) {
                return Err(Error::ModelPins {
                    key: "shoal.models.versions".into(),
                    message: format!("'{hash}' (for model '{name}') is not a sha256 hex digest"),
                });
            }
            if let Some(model) = self.touch(hash) {
                lease.models.push(model);
                continue;
            }
            let (path, expected) = (self.cache_path(hash), hash.clone());
            let cached = blocking(hash, move || {
                std::fs::read(&path)
                    .ok()
                    .filter(|bytes| content_hash(bytes) == expected)
            })
            .await?;
            let bytes = match cached {
                Some(bytes) => bytes,
                None => self.fetch_to_cache(hash).await?,
            };
            self.reserve(name, hash, bytes.len())?;
            let model_name = name.clone();
            let model = blocking(hash, move || {
                LoadedModel::from_bytes(&model_name, "the coordinator's registry", bytes)
            })
            .await??;
            let model = Arc::new(model);
            lease.models.push(model.clone());
            let last_used = self.tick();
            self.loaded
                .lock()
                .insert(hash.clone(), Cached { model, last_used });
        }
        Ok(lease)
    }

    fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::Relaxed)
    }

    /// The loaded model `hash`, marked as used now.
    fn touch(&self, hash: &str) -> Option<Arc<LoadedModel>> {
        let now = self.tick();
        let mut loaded = self.loaded.lock();
        let cached = loaded.get_mut(hash)?;
        cached.last_used = now;
        Some(cached.model.clone())
    }

    /// The memory model `hash` holds in the pool: its own reservation and its sessions'.
    fn held_bytes(&self, model: &LoadedModel) -> usize {
        let own = self
            .reservations
            .lock()
            .get(&model.hash)
            .map_or(0, MemoryReservation::size);
        own + model.sessions.sessions_built().1
    }

    /// Lets go of loaded models no task holds, least recently used first, until at least
    /// `wanted` bytes are free or none is left to let go. Returns the bytes freed.
    fn evict_idle(&self, wanted: usize) -> usize {
        let mut victims = Vec::new();
        let mut freed = 0;
        {
            let mut loaded = self.loaded.lock();
            let mut idle: Vec<(u64, String)> = loaded
                .iter()
                // Only the map holds it: no task, no lease, no batch is using it.
                .filter(|(_, c)| Arc::strong_count(&c.model) == 1)
                .map(|(hash, c)| (c.last_used, hash.clone()))
                .collect();
            idle.sort();
            for (_, hash) in idle {
                if freed >= wanted {
                    break;
                }
                if let Some(cached) = loaded.remove(&hash) {
                    freed += self.held_bytes(&cached.model);
                    victims.push(cached.model);
                }
            }
        }
        // Dropped outside the lock: dropping returns their memory to the pool.
        for model in victims {
            tracing::info!(
                model = %model.name,
                hash = %model.hash,
                "model let go to free memory (unused, least recently used); loaded again from the cache when asked for"
            );
            self.reservations.lock().remove(&model.hash);
        }
        freed
    }

    /// The content hashes of the models loaded now.
    pub fn loaded_hashes(&self) -> Vec<String> {
        let mut hashes: Vec<String> = self.loaded.lock().keys().cloned().collect();
        hashes.sort();
        hashes
    }
}

impl Reclaim for RemoteModels {
    fn reclaim(&self, wanted: usize) -> usize {
        self.evict_idle(wanted)
    }
}

/// Runs blocking work (hashing, files, ONNX Runtime session set-up) on tokio's blocking
/// pool.
async fn blocking<T: Send + 'static>(
    hash: &str,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::ModelLoad {
            hash: hash.to_string(),
            message: e.to_string(),
        })
}

/// `bytes` written to `path` in the (private) cache folder if their sha256 is `expected`:
/// written under a fresh temporary name and renamed, so a crash never leaves a truncated
/// model and workers sharing the folder never see each other's partial writes.
fn store_verified(
    dir: &Path,
    path: &Path,
    expected: &str,
    bytes: Vec<u8>,
) -> std::result::Result<Vec<u8>, String> {
    if content_hash(&bytes) != expected {
        return Err("the bytes received do not match the hash".into());
    }
    super::private_dir::ensure_private_dir(dir)?;
    super::private_dir::write_private(dir, path, &bytes)?;
    Ok(bytes)
}

/// A content hash as the registry writes them: 64 lowercase hex digits.
fn is_content_hash(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl ModelProvider for RemoteModels {
    fn model(&self, name: &str, pinned_hash: Option<&str>) -> Result<Arc<LoadedModel>> {
        let hash = match pinned_hash {
            Some(h) => h.to_string(),
            None => self
                .names
                .read()
                .get(name)
                .map(|m| m.hash.clone())
                .ok_or_else(|| Error::UnknownModel {
                    name: name.to_string(),
                    known: self
                        .names
                        .read()
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", "),
                })?,
        };
        // Loaded by `preload` before the task started; loading here would block an
        // operator on the network and on ONNX Runtime.
        self.touch(&hash).ok_or_else(|| Error::ModelNotLoaded {
            model: name.to_string(),
            hash,
        })
    }

    fn list(&self) -> Vec<ModelInfo> {
        self.names.read().values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `RemoteModels` over a cache that already holds `models` (tests/data/models files),
    /// its memory in a pool of `limit` bytes: nothing is fetched.
    fn cached(
        models: &[&str],
        limit: usize,
    ) -> (
        tempfile::TempDir,
        Arc<RemoteModels>,
        BTreeMap<String, String>,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut hashes = BTreeMap::new();
        for name in models {
            let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join(format!("../tests/data/models/{name}.onnx"));
            let bytes = std::fs::read(path).unwrap();
            let hash = content_hash(&bytes);
            std::fs::write(dir.path().join(format!("{hash}.onnx")), bytes).unwrap();
            hashes.insert(name.to_string(), hash);
        }
        let pool = Arc::new(crate::memory::ReclaimingPool::new(Arc::new(
            datafusion::execution::memory_pool::GreedyMemoryPool::new(limit),
        )));
        let connector = Connector::new(None, None).unwrap();
        let remote = Arc::new(
            RemoteModels::new(
                "http://127.0.0.1:1".into(),
                connector,
                dir.path().to_path_buf(),
            )
            .with_memory_pool(pool.clone()),
        );
        let reclaimer: Arc<dyn Reclaim> = remote.clone();
        pool.reclaim_from(Arc::downgrade(&reclaimer));
        (dir, remote, hashes)
    }

    fn pins(hashes: &BTreeMap<String, String>, names: &[&str]) -> Pins {
        Pins {
            versions: names
                .iter()
                .map(|n| (n.to_string(), hashes[*n].clone()))
                .collect(),
            ..Pins::default()
        }
    }

    #[tokio::test]
    async fn idle_models_are_let_go_least_recently_used_first_and_held_ones_never() {
        // ship_mode 598 bytes, price 245, two_inputs 132: two fit in 900, not three.
        let (_dir, models, hashes) = cached(&["ship_mode", "price", "two_inputs"], 900);
        drop(
            models
                .preload(&pins(&hashes, &["ship_mode"]))
                .await
                .unwrap(),
        );
        drop(models.preload(&pins(&hashes, &["price"])).await.unwrap());
        // ship_mode used since: price is the least recently used.
        models
            .model("ship_mode", Some(&hashes["ship_mode"]))
            .unwrap();
        let lease = models
            .preload(&pins(&hashes, &["two_inputs"]))
            .await
            .unwrap();
        let mut expected = vec![hashes["ship_mode"].clone(), hashes["two_inputs"].clone()];
        expected.sort();
        assert_eq!(models.loaded_hashes(), expected);
        assert_eq!(lease.hashes(), [hashes["two_inputs"].as_str()]);

        // With both loaded models held by running tasks, nothing can be let go: price does
        // not fit and the error names it.
        let held = models
            .preload(&pins(&hashes, &["ship_mode"]))
            .await
            .unwrap();
        let err = models
            .preload(&pins(&hashes, &["price"]))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("'price'"), "{err}");
        assert_eq!(models.loaded_hashes(), expected);

        // Once a task ends its models can go: price is loaded again from the cache.
        drop(held);
        models.preload(&pins(&hashes, &["price"])).await.unwrap();
        let mut expected = vec![hashes["price"].clone(), hashes["two_inputs"].clone()];
        expected.sort();
        assert_eq!(models.loaded_hashes(), expected);
        drop(lease);
    }

    #[test]
    fn only_a_sha256_names_a_cache_file() {
        assert!(is_content_hash(&"ab".repeat(32)));
        for bad in ["../../etc/passwd", "", &"AB".repeat(32), &"ab".repeat(33)] {
            assert!(!is_content_hash(bad), "{bad}");
        }
    }

    #[test]
    fn the_cache_keeps_only_bytes_that_match_their_hash() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = b"model bytes".to_vec();
        let hash = content_hash(&bytes);
        let path = dir.path().join(format!("{hash}.onnx"));
        assert!(store_verified(dir.path(), &path, &"0".repeat(64), bytes.clone()).is_err());
        assert!(!path.exists());
        assert_eq!(
            store_verified(dir.path(), &path, &hash, bytes.clone()),
            Ok(bytes)
        );
        assert!(path.is_file());
    }
}
