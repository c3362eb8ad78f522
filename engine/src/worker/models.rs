//! A worker's models: fetched from the coordinator by content hash, cached on disk and in
//! memory. A model is registered once on the coordinator, never copied to sites by hand.

use crate::client;
use crate::protocol::{ACTION_FETCH_MODEL, FetchModel};
use crate::security::Connector;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryPool, MemoryReservation};
use parking_lot::{Mutex, RwLock};
use shoal_operators::model::content_hash;
use shoal_operators::{Error, LoadedModel, ModelInfo, ModelProvider, Result};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Debug)]
pub struct RemoteModels {
    coordinator: String,
    connector: Connector,
    cache_dir: PathBuf,
    runtime: tokio::runtime::Handle,
    /// Latest registry listing from the coordinator (name -> info).
    names: RwLock<BTreeMap<String, ModelInfo>>,
    loaded: Mutex<HashMap<String, Arc<LoadedModel>>>,
    /// The worker's memory pool: every loaded model holds a reservation in it, so model
    /// sessions and query operators share one limit.
    memory: Option<Arc<dyn MemoryPool>>,
    reservations: Mutex<HashMap<String, MemoryReservation>>,
}

/// What a loaded model is taken to occupy, as a multiple of its file size: the bytes kept
/// for new sessions, ONNX Runtime's optimised graph and its buffers (an estimate; ORT does
/// not report its own use).
const MODEL_MEMORY_FACTOR: usize = 3;

impl RemoteModels {
    pub fn new(
        coordinator: String,
        connector: Connector,
        cache_dir: PathBuf,
        runtime: tokio::runtime::Handle,
    ) -> Self {
        Self {
            coordinator,
            connector,
            cache_dir,
            runtime,
            names: RwLock::new(BTreeMap::new()),
            loaded: Mutex::new(HashMap::new()),
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
        reservation
            .try_grow(model_bytes * MODEL_MEMORY_FACTOR)
            .map_err(|e| {
                Error::Store(format!(
                    "model '{name}' does not fit in the worker's memory limit (--memory-limit): {e}"
                ))
            })?;
        self.reservations
            .lock()
            .insert(hash.to_string(), reservation);
        Ok(())
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
            if self.cache_path(&hash).is_file() {
                continue;
            }
            if let Err(e) = self.fetch_to_cache(&hash).await {
                tracing::warn!("prefetching model {hash}: {e}");
            }
        }
    }

    async fn fetch_to_cache(&self, hash: &str) -> Result<Vec<u8>> {
        let store = |m: String| {
            Error::Store(format!(
                "fetching model {hash} from {}: {m}",
                self.coordinator
            ))
        };
        let body = serde_json::to_vec(&FetchModel {
            hash: hash.to_string(),
        })
        .map_err(|e| store(e.to_string()))?;
        let bytes = client::action(&self.connector, &self.coordinator, ACTION_FETCH_MODEL, body)
            .await
            .map_err(|e| store(e.to_string()))?;
        if content_hash(&bytes) != hash {
            return Err(store("the bytes received do not match the hash".into()));
        }
        std::fs::create_dir_all(&self.cache_dir).map_err(|e| store(e.to_string()))?;
        // Write then rename: a crash never leaves a truncated model in the cache, and
        // workers sharing the cache folder never see each other's partial writes.
        let tmp = self.cache_dir.join(format!(
            ".{hash}.{}.{:?}.tmp",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::write(&tmp, &bytes).map_err(|e| store(e.to_string()))?;
        if let Err(e) = std::fs::rename(&tmp, self.cache_path(hash)) {
            let _ = std::fs::remove_file(&tmp);
            return Err(store(e.to_string()));
        }
        Ok(bytes)
    }

    fn bytes_for(&self, hash: &str) -> Result<Vec<u8>> {
        if let Ok(bytes) = std::fs::read(self.cache_path(hash))
            && content_hash(&bytes) == hash
        {
            return Ok(bytes);
        }
        // Not cached yet: fetch now. This runs inside a model call (sync), so hand the
        // thread over while waiting on the network.
        let fetch = self.fetch_to_cache(hash);
        let on_multi_thread = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        if on_multi_thread {
            tokio::task::block_in_place(|| self.runtime.block_on(fetch))
        } else {
            self.runtime.block_on(fetch)
        }
    }
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
        if let Some(model) = self.loaded.lock().get(&hash) {
            return Ok(model.clone());
        }
        let bytes = self.bytes_for(&hash)?;
        self.reserve(name, &hash, bytes.len())?;
        let model = Arc::new(LoadedModel::from_bytes(
            name,
            "the coordinator's registry",
            bytes,
        )?);
        self.loaded.lock().insert(hash, model.clone());
        Ok(model)
    }

    fn list(&self) -> Vec<ModelInfo> {
        self.names.read().values().cloned().collect()
    }
}
