//! Where a site's data lives: a local folder, or a bucket prefix (`s3://`, `gs://`, `az://`,
//! `http(s)://`) read through `object_store`'s cloud stores. Either way the worker sees one
//! [`ObjectStore`] rooted at its data, which it registers as `shoal://<site>/`: the only
//! place its scans read from, so locality is the same for a folder and a prefix.

use crate::error::{Error, Result};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::http::HttpBuilder;
use object_store::local::LocalFileSystem;
use object_store::prefix::PrefixStore;
use object_store::{ClientConfigKey, ClientOptions, ObjectStore, ObjectStoreScheme, RetryConfig};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// A site's `--data`: a folder, or the URL of a bucket prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataLocation {
    Local(PathBuf),
    Store(url::Url),
}

impl DataLocation {
    /// `s3://b/p`, `gs://...`, `az://...`, `http(s)://...` and `file:///...` are URLs;
    /// anything else is a folder.
    pub fn parse(text: &str) -> Result<Self> {
        if !text.contains("://") {
            return Ok(Self::Local(PathBuf::from(text)));
        }
        let url = url::Url::parse(text).map_err(|e| Error::DataLocation {
            location: text.to_string(),
            message: e.to_string(),
        })?;
        if url.scheme() == "file" {
            let path = url.to_file_path().map_err(|_| Error::DataLocation {
                location: text.to_string(),
                message: "not a local path".into(),
            })?;
            return Ok(Self::Local(path));
        }
        Ok(Self::Store(url))
    }

    /// The local folder, if the data is one (audit logs and outputs default beside it).
    pub fn local_dir(&self) -> Option<&std::path::Path> {
        match self {
            Self::Local(path) => Some(path),
            Self::Store(_) => None,
        }
    }
}

impl From<PathBuf> for DataLocation {
    fn from(path: PathBuf) -> Self {
        Self::Local(path)
    }
}

impl fmt::Display for DataLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Local(path) => write!(f, "{}", path.display()),
            Self::Store(url) => write!(f, "{url}"),
        }
    }
}

/// Bounds on every request to a remote store: a stalled server fails the read naming the
/// object after `timeout` (and a few retries), instead of holding the statement.
#[derive(Debug, Clone, Copy)]
pub struct StoreLimits {
    /// One request, from sending it to the last byte of its answer.
    pub timeout: Duration,
    /// Retries of a failed or timed-out request (object_store backs off between them).
    pub retries: usize,
}

impl Default for StoreLimits {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30),
            retries: 3,
        }
    }
}

impl StoreLimits {
    fn retry(&self) -> RetryConfig {
        RetryConfig {
            max_retries: self.retries,
            // All tries of one request end within this, whatever the backoff.
            retry_timeout: self.timeout * (self.retries as u32 + 1),
            ..RetryConfig::default()
        }
    }

    fn client_settings(&self) -> [(ClientConfigKey, String); 2] {
        let connect = self.timeout.min(Duration::from_secs(5));
        [
            (
                ClientConfigKey::Timeout,
                humantime::format_duration(self.timeout).to_string(),
            ),
            (
                ClientConfigKey::ConnectTimeout,
                humantime::format_duration(connect).to_string(),
            ),
        ]
    }
}

/// The store rooted at a site's data; the folder is canonical for a local site.
#[derive(Debug, Clone)]
pub struct SiteData {
    pub location: DataLocation,
    pub store: Arc<dyn ObjectStore>,
}

impl SiteData {
    /// Opens `location`. Credentials, region and endpoint of a cloud store come from the
    /// standard environment variables its builder reads (`AWS_ENDPOINT_URL`,
    /// `AWS_ACCESS_KEY_ID`, `AWS_ALLOW_HTTP`, `GOOGLE_SERVICE_ACCOUNT`,
    /// `AZURE_STORAGE_ACCOUNT_NAME`, ...), as every other tool on the machine reads them.
    pub fn open(location: &DataLocation, limits: StoreLimits) -> Result<Self> {
        match location {
            DataLocation::Local(dir) => {
                let dir = dir
                    .canonicalize()
                    .map_err(|_| Error::MissingDataDir { path: dir.clone() })?;
                if !dir.is_dir() {
                    return Err(Error::MissingDataDir { path: dir });
                }
                let store = LocalFileSystem::new_with_prefix(&dir).map_err(|e| Error::Io {
                    path: dir.clone(),
                    source: std::io::Error::other(e.to_string()),
                })?;
                Ok(Self {
                    location: DataLocation::Local(dir),
                    store: Arc::new(store),
                })
            }
            DataLocation::Store(url) => Ok(Self {
                location: location.clone(),
                store: remote_store(url, limits)?,
            }),
        }
    }
}

fn remote_store(url: &url::Url, limits: StoreLimits) -> Result<Arc<dyn ObjectStore>> {
    let refused = |message: String| Error::DataLocation {
        location: url.to_string(),
        message,
    };
    let (scheme, prefix) = ObjectStoreScheme::parse(url).map_err(|e| refused(e.to_string()))?;
    let client = limits.client_settings();
    // `with_config` per key, not `with_client_options`: the latter would replace what the
    // builder read from the environment (AWS_ALLOW_HTTP, proxies).
    let store: Arc<dyn ObjectStore> = match scheme {
        ObjectStoreScheme::AmazonS3 => {
            let mut builder = AmazonS3Builder::from_env().with_url(url.as_str());
            for (key, value) in client {
                builder = builder.with_config(AmazonS3ConfigKey::Client(key), value);
            }
            Arc::new(
                builder
                    .with_retry(limits.retry())
                    .build()
                    .map_err(|e| refused(e.to_string()))?,
            )
        }
        ObjectStoreScheme::GoogleCloudStorage => {
            let mut builder = GoogleCloudStorageBuilder::from_env().with_url(url.as_str());
            for (key, value) in client {
                builder = builder.with_config(GoogleConfigKey::Client(key), value);
            }
            Arc::new(
                builder
                    .with_retry(limits.retry())
                    .build()
                    .map_err(|e| refused(e.to_string()))?,
            )
        }
        ObjectStoreScheme::MicrosoftAzure => {
            let mut builder = MicrosoftAzureBuilder::from_env().with_url(url.as_str());
            for (key, value) in client {
                builder = builder.with_config(AzureConfigKey::Client(key), value);
            }
            Arc::new(
                builder
                    .with_retry(limits.retry())
                    .build()
                    .map_err(|e| refused(e.to_string()))?,
            )
        }
        ObjectStoreScheme::Http => {
            // The HTTP store is rooted at the server; the URL's path is the prefix below.
            let mut root = url.clone();
            root.set_path("/");
            let mut options = ClientOptions::new();
            for (key, value) in client {
                options = options.with_config(key, value);
            }
            Arc::new(
                HttpBuilder::new()
                    .with_url(root.as_str())
                    .with_client_options(options)
                    .with_retry(limits.retry())
                    .build()
                    .map_err(|e| refused(e.to_string()))?,
            )
        }
        other => return Err(refused(format!("{other:?} is not a store a site can read"))),
    };
    if prefix.as_ref().is_empty() {
        Ok(store)
    } else {
        Ok(Arc::new(PrefixStore::new(store, prefix)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_and_urls_are_told_apart() {
        assert_eq!(
            DataLocation::parse("data/site-1").unwrap(),
            DataLocation::Local("data/site-1".into())
        );
        assert_eq!(
            DataLocation::parse("file:///srv/site").unwrap(),
            DataLocation::Local("/srv/site".into())
        );
        let s3 = DataLocation::parse("s3://bucket/sites/a").unwrap();
        assert_eq!(s3.to_string(), "s3://bucket/sites/a");
        assert!(s3.local_dir().is_none());
    }

    #[test]
    fn a_store_a_site_cannot_read_is_named() {
        let err = SiteData::open(
            &DataLocation::parse("memory:///x").unwrap(),
            StoreLimits::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("memory:///x"), "{err}");
    }

    #[test]
    fn a_missing_folder_is_named() {
        let err = SiteData::open(
            &DataLocation::Local("/no/such/site".into()),
            StoreLimits::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("/no/such/site"), "{err}");
    }
}
