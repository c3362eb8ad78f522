//! How a coordinator is set up: every knob `shoal coordinator` exposes, with its default.

use crate::security::ServerTls;
use shoal_sql::statement::StatementLimits;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct CoordinatorOptions {
    /// Folder of `<name>.onnx` files; none means an empty registry.
    pub models_dir: Option<PathBuf>,
    pub heartbeat_interval: Duration,
    /// A worker silent for longer is considered down.
    pub heartbeat_timeout: Duration,
    /// Static bearer tokens clients may present.
    pub tokens: Vec<String>,
    /// (user, password) pairs for the Basic-to-Bearer handshake.
    pub users: Vec<(String, String)>,
    /// Users' roles (see [`Role`]; users not listed are trainers): admins see and cancel
    /// everyone's statements and may train under a shipped model's name; analysts only
    /// query.
    pub roles: Vec<(String, crate::security::Role)>,
    /// Users' per-table grants (user -> the only tables they may read).
    pub grants: Vec<(String, Vec<String>)>,
    /// One secret shared by every site: one trust domain (any holder may act as any site).
    /// Excludes `site_key` and `sites`.
    pub cluster_secret: Option<String>,
    /// The enrollment key: site S's own secret is derived from it (`shoal enroll`), so each
    /// site proves only itself, and plans reach a site only from this coordinator.
    pub site_key: Option<String>,
    /// (site, secret) pairs: sites whose secrets are given one by one.
    pub sites: Vec<(String, String)>,
    /// Serve Flight SQL over TLS with this certificate.
    pub tls: Option<ServerTls>,
    /// CA that signed the workers' certificates (for `https://` workers).
    pub tls_ca: Option<PathBuf>,
    /// Allow listening beyond loopback without client authentication.
    pub insecure: bool,
    /// A statement running longer is cancelled on every worker.
    pub query_timeout: Duration,
    /// A statement returning more rows fails (add a LIMIT or aggregate on the cluster).
    pub max_result_rows: u64,
    /// Times a statement is planned again and re-run when a worker is lost mid-query.
    pub task_retries: u32,
    /// A statement during which no worker scans a row and no batch arrives for this long
    /// fails with a no-progress error.
    pub stall_timeout: Duration,
    /// Input files each site reads per wave of a resumable run; 0: as many as a site reads
    /// in parallel (the core count). Smaller waves checkpoint more often.
    pub wave_files: usize,
    /// Partitions a site's scan is split into (DataFusion's target partitions); none: the
    /// coordinator's core count. Fixing it makes plans the same on every machine.
    pub target_partitions: Option<usize>,
    /// Size and nesting a client's statement may have.
    pub statement_limits: StatementLimits,
    /// Trials a `CREATE MODEL` search may run (a larger grid is refused naming its size).
    pub max_search_trials: usize,
    /// Memory the coordinator's statements may hold (its share of final aggregations,
    /// sorts, joins and kernels); none: unbounded.
    pub memory_limit: Option<usize>,
}

impl CoordinatorOptions {
    /// The sites' secrets these options give.
    pub fn site_keys(&self) -> crate::error::Result<crate::security::SiteKeys> {
        crate::security::SiteKeys::new(
            self.cluster_secret.as_deref(),
            self.site_key.as_deref(),
            &self.sites,
        )
    }

    /// The secret site `site` must hold to join, if these options name one.
    pub fn secret_for_site(&self, site: &str) -> crate::error::Result<Option<String>> {
        if let Some((_, secret)) = self.sites.iter().find(|(name, _)| name == site) {
            return Ok(Some(secret.clone()));
        }
        if let Some(key) = &self.site_key {
            return crate::security::identity::enroll(key, site).map(Some);
        }
        Ok(self.cluster_secret.clone())
    }
}

impl Default for CoordinatorOptions {
    fn default() -> Self {
        Self {
            models_dir: None,
            heartbeat_interval: Duration::from_secs(1),
            heartbeat_timeout: Duration::from_secs(5),
            tokens: Vec::new(),
            users: Vec::new(),
            roles: Vec::new(),
            grants: Vec::new(),
            cluster_secret: None,
            site_key: None,
            sites: Vec::new(),
            tls: None,
            tls_ca: None,
            insecure: false,
            query_timeout: Duration::from_secs(3600),
            max_result_rows: 100_000_000,
            task_retries: 2,
            stall_timeout: Duration::from_secs(300),
            wave_files: 0,
            target_partitions: None,
            statement_limits: StatementLimits::default(),
            max_search_trials: shoal_sql::train::options::DEFAULT_MAX_SEARCH_TRIALS,
            memory_limit: crate::memory::default_memory_limit(),
        }
    }
}
