//! The coordinator's catalog: which site (worker) holds which files of which table.
//! Built only from what workers report; the coordinator never lists or reads site files.

use crate::error::{Error, Result};
use crate::placement::{LostFile, identity, place_files};
use crate::recent::Recent;
use crate::report::Coverage;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use parking_lot::RwLock;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use url::Url;

/// One file as its site reports it; `path` is relative to the site's data folder (or prefix).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SiteFile {
    pub path: String,
    pub size_bytes: u64,
    pub rows: u64,
    /// Set when the site could not read the footer: queries on the table fail naming it.
    pub error: Option<String>,
    /// SHA-256 of the Parquet footer (hex): with the size, what makes two sites' reports
    /// the same file (a replica). Empty when unknown (other formats): never merged.
    #[serde(default)]
    pub fingerprint: String,
    /// Its Hive partition values, one per [`SiteTableReport::partition_columns`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partition_values: Vec<String>,
    /// Its modification time, in microseconds since the epoch: a files table's `modified`.
    #[serde(default)]
    pub modified_micros: i64,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SiteTableReport {
    pub name: String,
    /// Arrow schema of the files (partition columns not included), as serialized by
    /// arrow's serde support.
    pub schema: Schema,
    pub files: Vec<SiteFile>,
    /// `parquet`, `csv`, `json` or `arrow` (see `shoal_sql::file_formats`).
    #[serde(default = "parquet")]
    pub format: String,
    /// Hive partition columns (`year=2024/...` folders), in folder order; Utf8.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partition_columns: Vec<String>,
}

fn parquet() -> String {
    "parquet".into()
}

/// What a worker sends when it registers.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SiteReport {
    pub name: String,
    /// The worker's datafusion-distributed endpoint, e.g. `http://127.0.0.1:50061`.
    pub url: String,
    pub tables: Vec<SiteTableReport>,
    /// The egress policy the site says it enforces: what `EXPLAIN` previews. The site
    /// enforces its own file whatever this says.
    #[serde(default)]
    pub policy: Option<crate::policy::SitePolicy>,
    /// The devices the site scores on: `cpu`, then each GPU it checked at start
    /// (`cuda:0`, ...).
    #[serde(default)]
    pub devices: Vec<String>,
}

#[derive(Debug)]
struct SiteState {
    report: SiteReport,
    url: Url,
    last_seen: Instant,
    /// Scans in flight on the worker, as of its last heartbeat.
    active_scans: u64,
    /// The worker is stopping: it finishes its running tasks but gets no new ones.
    draining: bool,
}

/// A table as the cluster holds it: one schema, files spread over sites.
#[derive(Debug, Clone)]
pub struct ClusterTable {
    pub name: String,
    /// The files' schema (without the partition columns).
    pub schema: SchemaRef,
    pub format: String,
    pub partition_columns: Vec<String>,
    /// (serving site, file) pairs in site-name order: each distinct file once, placed on
    /// a live holder (see [`crate::placement`]).
    pub files: Vec<(String, SiteFile)>,
    /// Files only down sites hold.
    pub lost: Vec<LostFile>,
}

#[derive(Debug)]
pub struct SiteCatalog {
    sites: RwLock<BTreeMap<String, SiteState>>,
    heartbeat_timeout: Duration,
    /// What recent statements answered from the live sites did not read, by statement key.
    coverage: Recent<Coverage>,
}

/// Statements whose coverage is kept (the report reads it right after the statement).
const KEPT_COVERAGE: usize = 256;

pub fn validate_site_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name != "cluster"
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidSiteName {
            name: name.to_string(),
        })
    }
}

impl SiteCatalog {
    pub fn new(heartbeat_timeout: Duration) -> Self {
        Self {
            sites: RwLock::new(BTreeMap::new()),
            heartbeat_timeout,
            coverage: Recent::new(KEPT_COVERAGE),
        }
    }

    pub fn heartbeat_timeout(&self) -> Duration {
        self.heartbeat_timeout
    }

    /// Adds or replaces a site. Fails when a table's schema differs from another site's.
    pub fn register(&self, report: SiteReport) -> Result<()> {
        validate_site_name(&report.name)?;
        validate_devices(&report)?;
        let url = Url::parse(&report.url).map_err(|e| Error::InvalidUrl {
            url: report.url.clone(),
            message: e.to_string(),
        })?;
        let mut sites = self.sites.write();
        // One site per address: the coordinator picks the credential it presents at a URL
        // by the site that serves there. A site that stopped answering gives its address up.
        let holder = sites
            .iter()
            .find(|(name, other)| **name != report.name && other.url == url)
            .map(|(name, other)| {
                (
                    name.clone(),
                    other.last_seen.elapsed() <= self.heartbeat_timeout,
                )
            });
        match holder {
            Some((other, true)) => {
                return Err(Error::AddressTaken {
                    url: report.url.clone(),
                    site: report.name.clone(),
                    other,
                });
            }
            Some((other, false)) => {
                sites.remove(&other);
            }
            None => {}
        }
        for table in &report.tables {
            for (other_name, other) in sites.iter() {
                if *other_name == report.name {
                    continue;
                }
                if let Some(theirs) = other.report.tables.iter().find(|t| t.name == table.name)
                    && (!same_columns(&theirs.schema, &table.schema)
                        || theirs.format != table.format
                        || theirs.partition_columns != table.partition_columns)
                {
                    return Err(Error::SchemaMismatch {
                        table: table.name.clone(),
                        site: report.name.clone(),
                        other: other_name.clone(),
                        detail: format!("[{}] vs [{}]", describe(table), describe(theirs)),
                    });
                }
            }
        }
        sites.insert(
            report.name.clone(),
            SiteState {
                report,
                url,
                last_seen: Instant::now(),
                active_scans: 0,
                draining: false,
            },
        );
        Ok(())
    }

    /// Records a heartbeat and the scans the site has in flight; false when the site is
    /// unknown (it must register again, e.g. after the coordinator restarted).
    pub fn heartbeat(&self, site: &str, active_scans: u64) -> bool {
        match self.sites.write().get_mut(site) {
            Some(state) => {
                state.last_seen = Instant::now();
                state.active_scans = active_scans;
                true
            }
            None => false,
        }
    }

    /// Treats a site as down now (a query found it unreachable), without waiting for its
    /// heartbeat timeout. Its next heartbeat or registration brings it back.
    pub fn mark_down(&self, site: &str) {
        if let Some(state) = self.sites.write().get_mut(site) {
            let expired = self.heartbeat_timeout + Duration::from_millis(1);
            state.last_seen = Instant::now()
                .checked_sub(expired)
                .unwrap_or(state.last_seen);
        }
    }

    /// A stopping site: no new tasks are planned on it (it is not live), while the tasks it
    /// runs may finish.
    pub fn set_draining(&self, site: &str) {
        if let Some(state) = self.sites.write().get_mut(site) {
            state.draining = true;
        }
    }

    /// Whether `site` has sent a heartbeat within the timeout (draining or not): what a
    /// running query watches to tell a lost worker from a slow one.
    pub fn is_responsive(&self, site: &str) -> bool {
        self.sites
            .read()
            .get(site)
            .is_some_and(|state| state.last_seen.elapsed() <= self.heartbeat_timeout)
    }

    /// (name, url) of the live sites.
    pub fn live_sites(&self) -> Vec<(String, Url)> {
        self.sites
            .read()
            .iter()
            .filter(|(_, s)| self.is_live(s))
            .map(|(name, s)| (name.clone(), s.url.clone()))
            .collect()
    }

    pub fn remove(&self, site: &str) {
        self.sites.write().remove(site);
    }

    /// Live: may be given new tasks.
    fn is_live(&self, state: &SiteState) -> bool {
        !state.draining && state.last_seen.elapsed() <= self.heartbeat_timeout
    }

    /// URLs of the live sites, in site-name order.
    pub fn live_urls(&self) -> Vec<Url> {
        self.sites
            .read()
            .values()
            .filter(|s| self.is_live(s))
            .map(|s| s.url.clone())
            .collect()
    }

    /// The policy `site` published when it registered.
    pub fn policy_of(&self, site: &str) -> Option<crate::policy::SitePolicy> {
        self.sites
            .read()
            .get(site)
            .and_then(|s| s.report.policy.clone())
    }

    /// The site that serves at `url`.
    pub fn site_at(&self, url: &Url) -> Option<String> {
        self.sites
            .read()
            .iter()
            .find(|(_, s)| s.url == *url)
            .map(|(name, _)| name.clone())
    }

    pub fn url_of(&self, site: &str) -> Result<Url> {
        self.sites
            .read()
            .get(site)
            .map(|s| s.url.clone())
            .ok_or_else(|| Error::UnknownSite {
                site: site.to_string(),
            })
    }

    /// (name, url, live, tables) of every site.
    pub fn sites(&self) -> Vec<(String, Url, bool, usize)> {
        self.sites
            .read()
            .values()
            .map(|s| {
                (
                    s.report.name.clone(),
                    s.url.clone(),
                    self.is_live(s),
                    s.report.tables.len(),
                )
            })
            .collect()
    }

    /// The devices site `name` declared at registration (empty when unknown; each one
    /// checked at registration by [`validate_devices`]).
    pub fn devices_of(&self, name: &str) -> Vec<String> {
        self.sites
            .read()
            .get(name)
            .map(|s| s.report.devices.clone())
            .unwrap_or_default()
    }

    pub fn table_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .sites
            .read()
            .values()
            .flat_map(|s| s.report.tables.iter().map(|t| t.name.clone()))
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// The table as the cluster holds it, or None when no site reports it.
    pub fn table(&self, name: &str) -> Option<ClusterTable> {
        let sites = self.sites.read();
        let mut first: Option<&SiteTableReport> = None;
        let mut files = Vec::new();
        for (site, state) in sites.iter() {
            if let Some(t) = state.report.tables.iter().find(|t| t.name == name) {
                first.get_or_insert(t);
                files.extend(t.files.iter().map(|f| (site.clone(), f.clone())));
            }
        }
        let placement = place_files(files, |site| {
            sites
                .get(site)
                .filter(|state| self.is_live(state))
                .map(|state| state.active_scans)
        });
        let first = first?;
        Some(ClusterTable {
            name: name.to_string(),
            schema: Arc::new(first.schema.clone()),
            format: first.format.clone(),
            partition_columns: first.partition_columns.clone(),
            files: placement.files,
            lost: placement.lost,
        })
    }

    /// `files` of `table`, each read instead from a live site with a GPU that holds the same
    /// file, where the site serving it has none: data never moves for a GPU, but where a
    /// GPU site already holds a copy, the statement's models run there. Of several such
    /// sites, each file goes to the one given the fewest bytes so far.
    pub fn onto_gpu_holders(
        &self,
        table: &str,
        files: Vec<(String, SiteFile)>,
    ) -> Vec<(String, SiteFile)> {
        let sites = self.sites.read();
        let has_gpu = |site: &str| {
            sites.get(site).is_some_and(|state| {
                self.is_live(state) && state.report.devices.iter().any(|d| d != "cpu")
            })
        };
        // Each file a GPU site holds, by what makes two reports the same file.
        let mut gpu_copies: BTreeMap<(String, u64, String), Vec<(String, SiteFile)>> =
            BTreeMap::new();
        for (site, state) in sites.iter().filter(|(site, _)| has_gpu(site)) {
            let reported = state.report.tables.iter().filter(|t| t.name == table);
            for file in reported.flat_map(|t| &t.files) {
                gpu_copies
                    .entry(identity(site, file))
                    .or_default()
                    .push((site.clone(), file.clone()));
            }
        }
        if gpu_copies.is_empty() {
            return files;
        }
        let mut given: BTreeMap<String, u64> = BTreeMap::new();
        for (site, file) in files.iter().filter(|(site, _)| has_gpu(site)) {
            *given.entry(site.clone()).or_default() += file.size_bytes;
        }
        files
            .into_iter()
            .map(|(site, file)| {
                if has_gpu(&site) {
                    return (site, file);
                }
                let copies = gpu_copies.get(&identity(&site, &file));
                let Some((gpu_site, copy)) = copies.and_then(|copies| {
                    copies
                        .iter()
                        .min_by_key(|(s, _)| (given.get(s).copied().unwrap_or(0), s.clone()))
                }) else {
                    return (site, file);
                };
                *given.entry(gpu_site.clone()).or_default() += copy.size_bytes;
                (gpu_site.clone(), copy.clone())
            })
            .collect()
    }

    /// Fails, naming the sites and the files, when some of `table`'s files are held only by
    /// sites that are down, or a site reported a file it could not read: answering without
    /// them would silently drop rows.
    pub fn check_servable(&self, table: &ClusterTable) -> Result<()> {
        self.check_readable(table)?;
        if table.lost.is_empty() {
            return Ok(());
        }
        self.site_down(table)
    }

    /// Records that statement `key` answers from the live sites without `table`'s lost
    /// files (see `shoal.query.partial`); what [`SiteCatalog::coverage_of`] reports.
    pub fn note_not_read(&self, key: &str, table: &ClusterTable) {
        self.coverage
            .update(key, |coverage| coverage.add_table(table));
    }

    /// What statement `key` did not read, if it skipped anything.
    pub fn coverage_of(&self, key: &str) -> Option<Coverage> {
        self.coverage.get(key)
    }

    /// Fails, naming the site and the file, when a site reported a file it could not read.
    pub fn check_readable(&self, table: &ClusterTable) -> Result<()> {
        for (site, file) in &table.files {
            if let Some(message) = &file.error {
                return Err(Error::BadFile {
                    table: table.name.clone(),
                    site: site.clone(),
                    file: file.path.clone(),
                    message: message.clone(),
                });
            }
        }
        Ok(())
    }

    fn site_down(&self, table: &ClusterTable) -> Result<()> {
        let sites = self.sites.read();
        let mut down: Vec<&str> = table
            .lost
            .iter()
            .flat_map(|l| l.holders.iter().map(String::as_str))
            .collect();
        down.sort();
        down.dedup();
        let urls: Vec<String> = down
            .iter()
            .filter_map(|s| sites.get(*s).map(|state| state.url.to_string()))
            .collect();
        let silent_ms = down
            .iter()
            .filter_map(|s| sites.get(*s))
            .map(|state| state.last_seen.elapsed().as_millis() as u64)
            .min()
            .unwrap_or(0);
        Err(Error::SiteDown {
            table: table.name.clone(),
            site: down.join("', '"),
            url: urls.join(", "),
            files: table.lost.len(),
            examples: table
                .lost
                .iter()
                .take(3)
                .map(|l| l.file.path.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            silent_ms,
            timeout_ms: self.heartbeat_timeout.as_millis() as u64,
        })
    }
}

fn same_columns(a: &Schema, b: &Schema) -> bool {
    a.fields().len() == b.fields().len()
        && a.fields()
            .iter()
            .zip(b.fields())
            .all(|(x, y)| x.name() == y.name() && x.data_type() == y.data_type())
}

/// `a Int64, b Utf8` (and `as csv`, `partitioned by year` where not plain Parquet).
fn describe(table: &SiteTableReport) -> String {
    let mut text = describe_schema(&table.schema);
    if table.format != "parquet" {
        text.push_str(&format!(" as {}", table.format));
    }
    if !table.partition_columns.is_empty() {
        text.push_str(&format!(
            " partitioned by {}",
            table.partition_columns.join(", ")
        ));
    }
    text
}

fn describe_schema(schema: &Schema) -> String {
    schema
        .fields()
        .iter()
        .map(|f| format!("{} {}", f.name(), f.data_type()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Devices a site may report: what `shoal sites` prints and the operator reads, so only
/// `cpu` and `cuda:N`, each once, at most [`MAX_DEVICES`] (a site's report is its own word,
/// and a hostile one must not fill the listing).
fn validate_devices(report: &SiteReport) -> Result<()> {
    let invalid = |message: String| Error::InvalidDevices {
        site: report.name.clone(),
        message,
    };
    if report.devices.len() > MAX_DEVICES {
        return Err(invalid(format!(
            "{} devices, more than {MAX_DEVICES}",
            report.devices.len()
        )));
    }
    let mut seen = std::collections::BTreeSet::new();
    for text in &report.devices {
        let device: shoal_operators::device::Device = text
            .parse()
            .map_err(|e: shoal_operators::Error| invalid(e.to_string()))?;
        if !seen.insert(device) {
            return Err(invalid(format!("{device} twice")));
        }
    }
    Ok(())
}

/// Most devices one site may report (a machine with more GPUs than this does not exist).
const MAX_DEVICES: usize = 65;

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::{DataType, Field};

    #[test]
    fn a_site_reports_only_devices_it_could_have() {
        let catalog = SiteCatalog::new(Duration::from_secs(5));
        let mut ok = report("gpu-site", DataType::Int64);
        ok.devices = vec!["cpu".into(), "cuda:0".into(), "cuda:1".into()];
        catalog.register(ok).unwrap();
        assert_eq!(catalog.devices_of("gpu-site"), ["cpu", "cuda:0", "cuda:1"]);
        for devices in [
            vec!["cpu".to_string(), "<script>".to_string()],
            vec!["cuda:0".to_string(), "cuda:0".to_string()],
            (0..100).map(|i| format!("cuda:{i}")).collect(),
        ] {
            let mut bad = report("bad-site", DataType::Int64);
            bad.devices = devices;
            let err = catalog.register(bad).unwrap_err().to_string();
            assert!(err.contains("site 'bad-site' reports devices"), "{err}");
        }
    }

    fn report(name: &str, col_type: DataType) -> SiteReport {
        SiteReport {
            policy: None,
            devices: vec!["cpu".into()],
            name: name.into(),
            url: format!("http://127.0.0.1:1/{name}"),
            tables: vec![SiteTableReport {
                name: "t".into(),
                schema: Schema::new(vec![Field::new("a", col_type, true)]),
                files: vec![SiteFile {
                    path: "t/0.parquet".into(),
                    size_bytes: 10,
                    rows: 1,
                    error: None,
                    fingerprint: format!("{name}-file"),
                    partition_values: Vec::new(),
                    modified_micros: 0,
                }],
                format: "parquet".into(),
                partition_columns: Vec::new(),
            }],
        }
    }

    #[test]
    fn sites_holding_the_same_table_merge_and_mismatches_are_refused() {
        let catalog = SiteCatalog::new(Duration::from_secs(5));
        catalog.register(report("w1", DataType::Int64)).unwrap();
        catalog.register(report("w2", DataType::Int64)).unwrap();
        assert_eq!(catalog.table("t").unwrap().files.len(), 2);
        let err = catalog.register(report("w3", DataType::Utf8)).unwrap_err();
        assert!(err.to_string().contains("worker 'w3'"), "{err}");
    }

    #[test]
    fn a_silent_site_makes_its_tables_unservable() {
        let catalog = SiteCatalog::new(Duration::from_millis(1));
        catalog.register(report("w1", DataType::Int64)).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        let table = catalog.table("t").unwrap();
        let err = catalog.check_servable(&table).unwrap_err().to_string();
        assert!(
            err.contains("worker 'w1'") && err.contains("t/0.parquet"),
            "{err}"
        );
        assert!(catalog.live_urls().is_empty());
    }

    #[test]
    fn a_file_a_gpu_site_holds_a_copy_of_is_read_there_and_no_other_moves() {
        let catalog = SiteCatalog::new(Duration::from_secs(5));
        // cpu-a holds f1 and f2, gpu-1 and gpu-2 each a copy of f1 and f2, cpu-b only f3.
        let site = |name: &str, gpu: bool, files: &[&str]| {
            let mut r = report(name, DataType::Int64);
            if gpu {
                r.devices.push("cuda:0".into());
            }
            let template = r.tables[0].files[0].clone();
            r.tables[0].files = files
                .iter()
                .map(|f| SiteFile {
                    path: format!("t/{f}.parquet"),
                    fingerprint: format!("footer-{f}"),
                    ..template.clone()
                })
                .collect();
            r
        };
        catalog
            .register(site("cpu-a", false, &["f1", "f2"]))
            .unwrap();
        catalog
            .register(site("gpu-1", true, &["f1", "f2"]))
            .unwrap();
        catalog
            .register(site("gpu-2", true, &["f1", "f2"]))
            .unwrap();
        catalog.register(site("cpu-b", false, &["f3"])).unwrap();
        let served = |files: &[(String, SiteFile)]| {
            let mut v: Vec<(String, String)> = files
                .iter()
                .map(|(s, f)| (s.clone(), f.path.clone()))
                .collect();
            v.sort();
            v
        };
        let as_placed = vec![
            (
                "cpu-a".to_string(),
                site("x", false, &["f1"]).tables[0].files[0].clone(),
            ),
            (
                "cpu-a".to_string(),
                site("x", false, &["f2"]).tables[0].files[0].clone(),
            ),
            (
                "cpu-b".to_string(),
                site("x", false, &["f3"]).tables[0].files[0].clone(),
            ),
        ];
        // f1 and f2 go to the GPU sites, one each; f3 has no GPU copy and stays.
        assert_eq!(
            served(&catalog.onto_gpu_holders("t", as_placed.clone())),
            [
                ("cpu-b".to_string(), "t/f3.parquet".to_string()),
                ("gpu-1".to_string(), "t/f1.parquet".to_string()),
                ("gpu-2".to_string(), "t/f2.parquet".to_string()),
            ]
        );
        // A GPU site that is down serves nothing.
        catalog.mark_down("gpu-1");
        catalog.mark_down("gpu-2");
        assert_eq!(
            served(&catalog.onto_gpu_holders("t", as_placed.clone())),
            served(&as_placed)
        );
    }

    #[test]
    fn a_replicated_file_is_served_by_a_live_holder_until_none_is_left() {
        let catalog = SiteCatalog::new(Duration::from_secs(5));
        for site in ["w1", "w2"] {
            let mut copy = report(site, DataType::Int64);
            copy.tables[0].files[0].fingerprint = "same-footer".into();
            catalog.register(copy).unwrap();
        }
        let table = catalog.table("t").unwrap();
        assert_eq!(table.files.len(), 1, "one file, held twice");
        catalog.mark_down("w1");
        let table = catalog.table("t").unwrap();
        assert_eq!(table.files[0].0, "w2");
        assert!(catalog.check_servable(&table).is_ok());
        // A draining site answers heartbeats but takes no new work.
        catalog.set_draining("w2");
        assert!(catalog.is_responsive("w2") && catalog.live_sites().is_empty());
        let table = catalog.table("t").unwrap();
        let err = catalog.check_servable(&table).unwrap_err().to_string();
        assert!(
            err.contains("'w1', 'w2'") && err.contains("t/0.parquet"),
            "{err}"
        );
        // A heartbeat brings a marked-down site back.
        assert!(catalog.heartbeat("w1", 0));
        assert_eq!(catalog.table("t").unwrap().files[0].0, "w1");
    }

    #[test]
    fn site_names_are_host_safe() {
        assert!(validate_site_name("site-1").is_ok());
        for bad in ["", "Site", "a_b", "cluster", "-a"] {
            assert!(validate_site_name(bad).is_err(), "{bad}");
        }
    }
}
