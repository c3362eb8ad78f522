//! A model registry read from a directory of `<name>.onnx` files: the coordinator's source
//! of truth, and the single-process session's.
//!
//! Trained models are registered in versions: `<name>@v<N>.onnx` (never overwritten) with
//! its training metadata in `<name>@v<N>.json`, and `<name>.onnx` a copy of the latest, so
//! `predict('name', ...)` uses the latest and `predict('name@v1', ...)` a fixed version.
//!
//! A model the operator put in the folder (a `<name>.onnx` with no trained versions) is
//! *shipped*: version 0 of its name, `name@v0`. Only an admin may train under a shipped
//! name (the engine checks the role), and the first such training keeps the operator's
//! bytes as `<name>@v0.onnx` before `<name>.onnx` moves on, so the shipped version is
//! never lost.

use super::{LoadedModel, ModelInfo, ModelProvider};
use crate::error::{Error, Result};
use parking_lot::RwLock;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What of a sibling file's text becomes the property.
type ValueOf = fn(&str) -> &str;

/// `bytes` of the model at `path` with the files beside it attached as properties, when
/// there are: `<name>.tokenizer.json` (see [`super::tokenizer`]), `<name>.device`, the
/// device kind the registry pins it to (`cpu`, `cuda`; see [`super::loaded::DEVICE_KEY`]),
/// and `<name>.batch_rows`, the most rows one run of it takes (see
/// [`super::loaded::BATCH_ROWS_KEY`]). Each set is then one version of the model.
fn with_siblings(path: &Path, name: &str, bytes: Vec<u8>) -> Result<Vec<u8>> {
    // The tokenizer as the file has it; a device or a number ends before its line end.
    let siblings: [(String, &str, ValueOf); 3] = [
        (
            format!("{name}.tokenizer.json"),
            super::tokenizer::TOKENIZER_KEY,
            |value| value,
        ),
        (
            format!("{name}.device"),
            super::loaded::DEVICE_KEY,
            str::trim,
        ),
        (
            format!("{name}.batch_rows"),
            super::loaded::BATCH_ROWS_KEY,
            str::trim,
        ),
    ];
    let mut bytes = bytes;
    for (file, key, value_of) in siblings {
        let sibling = path.with_file_name(file);
        match std::fs::read_to_string(&sibling) {
            Ok(value) => bytes = super::metadata::attach(&bytes, key, value_of(&value)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(Error::Io {
                    path: sibling,
                    source,
                });
            }
        }
    }
    Ok(bytes)
}

/// sha256 of model bytes, hex: the identity a worker fetches and caches a model by.
pub fn content_hash(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[derive(Debug, Default)]
pub struct DirectoryModels {
    dir: Option<PathBuf>,
    models: RwLock<BTreeMap<String, Arc<LoadedModel>>>,
    /// Shipped models by name, as the operator shipped them (served as `name@v0`).
    shipped: BTreeMap<String, Arc<LoadedModel>>,
    registering: parking_lot::Mutex<()>,
}

/// A version just registered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredVersion {
    /// `<name>@v<N>`: the name that always means this version.
    pub versioned_name: String,
    pub version: u64,
    pub hash: String,
    pub path: PathBuf,
}

impl DirectoryModels {
    /// Loads every `*.onnx` in `dir`. A file that is not a valid model fails the whole load
    /// with an error naming it: a registry that silently skips a model would make `predict`
    /// fail later with a misleading "unknown model".
    pub fn load(dir: &Path) -> Result<Self> {
        let io = |source| Error::Io {
            path: dir.to_path_buf(),
            source,
        };
        let mut models = BTreeMap::new();
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(io)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "onnx"))
            .collect();
        paths.sort();
        for path in paths {
            let Some(name) = path.file_stem().and_then(|s| s.to_str()) else {
                continue;
            };
            let bytes = std::fs::read(&path).map_err(|source| Error::Io {
                path: path.clone(),
                source,
            })?;
            let bytes = with_siblings(&path, name, bytes)?;
            let model = LoadedModel::from_bytes(name, &path.display().to_string(), bytes)?;
            models.insert(name.to_string(), Arc::new(model));
        }
        let shipped = shipped_models(&models);
        Ok(Self {
            dir: Some(dir.to_path_buf()),
            models: RwLock::new(models),
            shipped,
            registering: Default::default(),
        })
    }

    /// Whether `name` is a model the operator shipped (version 0 of its name).
    pub fn is_shipped(&self, name: &str) -> bool {
        self.shipped.contains_key(name)
    }

    /// Stores the next version of `name`, made by `make(version)` as (ONNX bytes, metadata
    /// JSON), and makes it the one `name` means. Files are written under temporary names and
    /// renamed, so a crash leaves either the old registry or the new one.
    pub fn register(
        &self,
        name: &str,
        make: impl FnOnce(u64) -> (Vec<u8>, String),
    ) -> Result<RegisteredVersion> {
        // One registration at a time: two must not take the same version number.
        let _registering = self.registering.lock();
        let dir = self.dir.as_ref().ok_or_else(|| Error::NoRegistryFolder {
            model: name.to_string(),
        })?;
        check_model_name(name)?;
        self.keep_shipped_version(dir, name)?;
        let version = self.next_version(dir, name)?;
        let (bytes, metadata) = make(version);
        let versioned_name = format!("{name}@v{version}");
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| Error::Io { path, source }
        };
        let write = |path: &Path, contents: &[u8]| -> Result<()> {
            let tmp = dir.join(format!(
                ".{}.tmp",
                path.file_name().and_then(|n| n.to_str()).unwrap_or("model")
            ));
            std::fs::write(&tmp, contents).map_err(io(&tmp))?;
            std::fs::rename(&tmp, path).map_err(io(path))
        };
        let path = dir.join(format!("{versioned_name}.onnx"));
        let model = Arc::new(LoadedModel::from_bytes(
            name,
            &path.display().to_string(),
            bytes.clone(),
        )?);
        let versioned = Arc::new(LoadedModel::from_bytes(
            &versioned_name,
            &path.display().to_string(),
            bytes.clone(),
        )?);
        write(
            &dir.join(format!("{versioned_name}.json")),
            metadata.as_bytes(),
        )?;
        write(&path, &bytes)?;
        write(&dir.join(format!("{name}.onnx")), &bytes)?;
        let hash = model.hash.clone();
        let mut models = self.models.write();
        models.insert(name.to_string(), model);
        models.insert(versioned_name.clone(), versioned);
        Ok(RegisteredVersion {
            versioned_name,
            version,
            hash,
            path,
        })
    }

    /// Before the first training under a shipped name: the operator's bytes as
    /// `<name>@v0.onnx` (written beside, under a temporary name first; never over a file).
    fn keep_shipped_version(&self, dir: &Path, name: &str) -> Result<()> {
        let Some(shipped) = self.shipped.get(name) else {
            return Ok(());
        };
        let path = dir.join(format!("{name}@v0.onnx"));
        if path.exists() {
            return Ok(());
        }
        let tmp = dir.join(format!(".{name}@v0.onnx.tmp"));
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| Error::Io { path, source }
        };
        std::fs::write(&tmp, &shipped.bytes[..]).map_err(io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io(&path))
    }

    /// One more than the highest `<name>@v<N>.onnx` in the folder.
    fn next_version(&self, dir: &Path, name: &str) -> Result<u64> {
        let prefix = format!("{name}@v");
        let highest = std::fs::read_dir(dir)
            .map_err(|source| Error::Io {
                path: dir.to_path_buf(),
                source,
            })?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter_map(|f| {
                f.strip_prefix(&prefix)?
                    .strip_suffix(".onnx")?
                    .parse::<u64>()
                    .ok()
            })
            .max()
            .unwrap_or(0);
        Ok(highest + 1)
    }

    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    pub fn by_hash(&self, hash: &str) -> Option<Arc<LoadedModel>> {
        self.models
            .read()
            .values()
            .find(|m| m.hash == hash)
            .cloned()
    }

    pub fn unknown(&self, name: &str) -> Error {
        Error::UnknownModel {
            name: name.to_string(),
            known: self
                .models
                .read()
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", "),
        }
    }
}

/// The shipped models among `models` (a folder's files by name): each `<name>` with no
/// trained version `<name>@v<N>` (N >= 1), or with a kept `<name>@v0`, which then holds
/// the shipped bytes.
fn shipped_models(
    models: &BTreeMap<String, Arc<LoadedModel>>,
) -> BTreeMap<String, Arc<LoadedModel>> {
    let mut shipped = BTreeMap::new();
    for (name, model) in models {
        if name.contains('@') {
            continue;
        }
        let prefix = format!("{name}@v");
        let trained = models
            .keys()
            .filter_map(|k| k.strip_prefix(&prefix))
            .any(|v| v != "0");
        match models.get(&format!("{name}@v0")) {
            Some(kept) => shipped.insert(name.clone(), kept.clone()),
            None if !trained => shipped.insert(name.clone(), model.clone()),
            None => None,
        };
    }
    shipped
}

/// Names a registered model may have: letters, digits, `_` and `-` (they become file
/// names, and `@` separates the version).
pub fn check_model_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidModelName {
            name: name.to_string(),
        })
    }
}

/// Whether `name` could name a registered model: `name` or `name@v<N>`. Anything else (a
/// path, a URL) is refused as a name rather than looked up.
fn servable_name(name: &str) -> bool {
    let (base, version) = match name.rsplit_once("@v") {
        Some((base, version)) => (base, Some(version)),
        None => (name, None),
    };
    check_model_name(base).is_ok()
        && version.is_none_or(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
}

impl ModelProvider for DirectoryModels {
    fn model(&self, name: &str, pinned_hash: Option<&str>) -> Result<Arc<LoadedModel>> {
        let shipped = name
            .strip_suffix("@v0")
            .and_then(|base| self.shipped.get(base))
            .cloned();
        let model = self
            .models
            .read()
            .get(name)
            .cloned()
            .or(shipped)
            .ok_or_else(|| match servable_name(name) {
                true => self.unknown(name),
                false => Error::InvalidModelName {
                    name: name.to_string(),
                },
            })?;
        match pinned_hash {
            // Re-registered since the statement was planned: keep scoring with the planned
            // version (registered versions stay in the registry as `name@vN`).
            Some(pin) if pin != model.hash => {
                self.by_hash(pin).ok_or_else(|| Error::PinnedVersionGone {
                    model: name.to_string(),
                    pinned: pin.to_string(),
                    current: model.hash.clone(),
                })
            }
            _ => Ok(model),
        }
    }

    fn list(&self) -> Vec<ModelInfo> {
        self.models.read().values().map(|m| m.info()).collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn test_model(file: &str) -> Vec<u8> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/models");
        std::fs::read(dir.join(file)).unwrap()
    }

    /// `<name>.batch_rows` beside a model bounds the rows of each run: a batch of 10 rows is
    /// run in 4 slices of at most 3, with the same answers; a count out of range is an error
    /// naming the model.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_rows_file_bounds_the_rows_of_each_run() {
        use datafusion::arrow::array::{ArrayRef, Float32Array, RecordBatch};
        let dir = tempfile::tempdir().unwrap();
        let bytes = test_model("price.onnx");
        std::fs::write(dir.path().join("whole.onnx"), &bytes).unwrap();
        std::fs::write(dir.path().join("sliced.onnx"), &bytes).unwrap();
        std::fs::write(dir.path().join("sliced.batch_rows"), "3\n").unwrap();
        let registry = Arc::new(DirectoryModels::load(dir.path()).unwrap());
        assert_eq!(registry.model("sliced", None).unwrap().batch_rows, Some(3));
        assert_eq!(registry.model("whole", None).unwrap().batch_rows, None);

        let mut builder = datafusion::execution::SessionStateBuilder::new().with_default_features();
        builder
            .scalar_functions()
            .get_or_insert_with(Vec::new)
            .extend(crate::ml_udfs(registry));
        let ctx = datafusion::prelude::SessionContext::new_with_state(builder.build());
        let column = |scale: f32| -> ArrayRef {
            Arc::new(Float32Array::from_iter_values(
                (0..10).map(|i| i as f32 * scale),
            ))
        };
        let batch = RecordBatch::try_from_iter([("a", column(1.0)), ("b", column(0.5))]).unwrap();
        ctx.register_batch("t", batch).unwrap();
        let scores = |model: &'static str| {
            let ctx = ctx.clone();
            async move {
                let sql = format!("SELECT predict('{model}', a, b) AS p FROM t");
                let batches = ctx.sql(&sql).await.unwrap().collect().await.unwrap();
                datafusion::arrow::util::pretty::pretty_format_batches(&batches)
                    .unwrap()
                    .to_string()
            }
        };
        let before = crate::udf::inference::model_runs();
        let whole = scores("whole").await;
        let after_whole = crate::udf::inference::model_runs();
        let sliced = scores("sliced").await;
        let after_sliced = crate::udf::inference::model_runs();
        assert_eq!(whole, sliced);
        assert!(after_whole - before >= 1);
        assert!(
            after_sliced - after_whole >= 4,
            "{}",
            after_sliced - after_whole
        );

        std::fs::write(dir.path().join("sliced.batch_rows"), "0").unwrap();
        let err = DirectoryModels::load(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("'sliced'") && err.contains("'0' is not a row count"),
            "{err}"
        );
    }

    /// `<name>.device` beside a model pins it to a device kind: inside its bytes (so its
    /// hash and every worker's copy carry it), listed, and a device that is not one is an
    /// error naming the model.
    #[test]
    fn a_device_file_pins_the_model_to_a_device_kind() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = test_model("price.onnx");
        std::fs::write(dir.path().join("plain.onnx"), &bytes).unwrap();
        std::fs::write(dir.path().join("gpu.onnx"), &bytes).unwrap();
        std::fs::write(dir.path().join("gpu.device"), "cuda:1\n").unwrap();
        let registry = DirectoryModels::load(dir.path()).unwrap();
        let (plain, gpu) = (
            registry.model("plain", None).unwrap(),
            registry.model("gpu", None).unwrap(),
        );
        assert_eq!(plain.device, None);
        assert_eq!(
            gpu.device,
            Some(crate::device::DeviceRequest::Cuda(Some(1)))
        );
        assert_ne!(plain.hash, gpu.hash);
        let listed: Vec<(String, String)> = registry
            .list()
            .into_iter()
            .map(|m| (m.name, m.device))
            .collect();
        assert_eq!(
            listed,
            vec![
                ("gpu".into(), "cuda:1".into()),
                ("plain".into(), String::new())
            ]
        );
        // A worker loading the bytes alone finds the same pin.
        let copy = LoadedModel::from_bytes("gpu", "cache", gpu.bytes.to_vec()).unwrap();
        assert_eq!(copy.device, gpu.device);

        std::fs::write(dir.path().join("gpu.device"), "tpu").unwrap();
        let err = DirectoryModels::load(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("'gpu'") && err.contains("'tpu' is not a device"),
            "{err}"
        );
    }

    #[test]
    fn a_pinned_version_is_served_after_the_name_moves_on() {
        let dir = tempfile::tempdir().unwrap();
        let registry = DirectoryModels::load(dir.path()).unwrap();
        let first = registry
            .register("m", |_| (test_model("price.onnx"), "{}".into()))
            .unwrap();
        let second = registry
            .register("m", |_| (test_model("return_risk.onnx"), "{}".into()))
            .unwrap();
        assert_eq!((first.version, second.version), (1, 2));
        assert_ne!(first.hash, second.hash);

        assert_eq!(registry.model("m", None).unwrap().hash, second.hash);
        assert_eq!(
            registry.model("m", Some(&second.hash)).unwrap().hash,
            second.hash
        );
        // A statement planned before the second registration keeps the first version.
        assert_eq!(
            registry.model("m", Some(&first.hash)).unwrap().hash,
            first.hash
        );
        let err = registry.model("m", Some("0000")).unwrap_err().to_string();
        assert!(err.contains("changed during the query"), "{err}");
        let err = registry.model("../m", None).unwrap_err();
        assert!(matches!(err, Error::InvalidModelName { .. }), "{err}");
        assert!(servable_name("m@v12") && !servable_name("m@v") && !servable_name("/etc/m"));
    }

    #[test]
    fn a_shipped_model_is_version_0_and_its_file_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let shipped_bytes = test_model("price.onnx");
        std::fs::write(dir.path().join("m.onnx"), &shipped_bytes).unwrap();
        let registry = DirectoryModels::load(dir.path()).unwrap();
        assert!(registry.is_shipped("m"));
        let shipped = registry.model("m", None).unwrap().hash.clone();
        assert_eq!(registry.model("m@v0", None).unwrap().hash, shipped);
        let trained = registry
            .register("m", |_| (test_model("return_risk.onnx"), "{}".into()))
            .unwrap();
        assert_eq!(trained.version, 1);
        assert_eq!(registry.model("m", None).unwrap().hash, trained.hash);
        assert_eq!(registry.model("m@v0", None).unwrap().hash, shipped);
        let kept = std::fs::read(dir.path().join("m@v0.onnx")).unwrap();
        assert_eq!(kept, shipped_bytes, "the operator's bytes are kept as v0");
        // After a restart the name is still the operator's, and v0 still the shipped model.
        let reloaded = DirectoryModels::load(dir.path()).unwrap();
        assert!(reloaded.is_shipped("m"));
        assert_eq!(reloaded.model("m@v0", None).unwrap().hash, shipped);
        // A name only ever trained is not shipped.
        registry
            .register("fresh", |_| (test_model("price.onnx"), "{}".into()))
            .unwrap();
        assert!(
            !DirectoryModels::load(dir.path())
                .unwrap()
                .is_shipped("fresh")
        );
    }
}
