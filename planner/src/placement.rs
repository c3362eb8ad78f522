//! Which worker serves each file of a table when files are replicated: the same file (same
//! size and Parquet footer fingerprint) reported by several sites is read once, from a live
//! holder, preferring the least loaded one.

use crate::catalog::SiteFile;
use std::collections::{BTreeMap, HashMap};

/// A file no live worker holds, with the (down) sites that do.
#[derive(Debug, Clone)]
pub struct LostFile {
    pub file: SiteFile,
    pub holders: Vec<String>,
}

/// The outcome of placing a table's files.
#[derive(Debug, Clone, Default)]
pub struct Placement {
    /// (serving site, file), one entry per distinct file, in (site, path) order.
    pub files: Vec<(String, SiteFile)>,
    pub lost: Vec<LostFile>,
}

/// A file's checkpoint key in resumable runs: the same for every replica of it.
pub fn file_key(site: &str, file: &SiteFile) -> String {
    if file.fingerprint.len() >= 16 {
        // The same bytes in two partition folders are two files (see `identity`).
        let partitions: String = file
            .partition_values
            .iter()
            .flat_map(|v| std::iter::once('-').chain(v.chars()))
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        format!("f{}{partitions}", &file.fingerprint[..16])
    } else {
        let raw = format!("{site}-{}", file.path);
        raw.chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect()
    }
}

/// What makes two reports the same file: its footer, size and partition values (the same
/// bytes under `month=01` and `month=02` are two files of the table). Files whose footer
/// could not be read (no fingerprint) are never merged: each stays its own, with its own
/// error.
pub(crate) fn identity(site: &str, file: &SiteFile) -> (String, u64, String) {
    if file.fingerprint.is_empty() || file.error.is_some() {
        (
            format!("{site}/{}", file.path),
            file.size_bytes,
            String::new(),
        )
    } else {
        (
            file.fingerprint.clone(),
            file.size_bytes,
            format!("replica {:?}", file.partition_values),
        )
    }
}

/// Places every distinct file on one of its holders. `load` gives a live site's current
/// load (scans in flight, from its heartbeats) and None for a site that is down. Files with
/// the fewest live holders are placed first; each goes to the live holder with the lowest
/// (load, bytes placed on it so far, name), which spreads replicated files evenly.
pub fn place_files(
    reports: Vec<(String, SiteFile)>,
    load: impl Fn(&str) -> Option<u64>,
) -> Placement {
    let mut by_identity: BTreeMap<(String, u64, String), Vec<(String, SiteFile)>> = BTreeMap::new();
    for (site, file) in reports {
        by_identity
            .entry(identity(&site, &file))
            .or_default()
            .push((site, file));
    }
    let mut groups: Vec<Vec<(String, SiteFile)>> = by_identity.into_values().collect();
    let live_count =
        |g: &Vec<(String, SiteFile)>| g.iter().filter(|(s, _)| load(s).is_some()).count();
    groups.sort_by_key(|g| (live_count(g), std::cmp::Reverse(g[0].1.size_bytes)));

    let mut placed_bytes: HashMap<String, u64> = HashMap::new();
    let mut placement = Placement::default();
    for group in groups {
        let chosen = group
            .iter()
            .filter_map(|(site, file)| load(site).map(|l| (l, site, file)))
            .min_by_key(|(l, site, _)| (*l, placed_bytes.get(*site).copied().unwrap_or(0), *site))
            .map(|(_, site, file)| (site.clone(), file.clone()));
        match chosen {
            Some((site, file)) => {
                *placed_bytes.entry(site.clone()).or_default() += file.size_bytes;
                placement.files.push((site, file));
            }
            None => placement.lost.push(LostFile {
                file: group[0].1.clone(),
                holders: group.into_iter().map(|(site, _)| site).collect(),
            }),
        }
    }
    placement
        .files
        .sort_by(|a, b| (&a.0, &a.1.path).cmp(&(&b.0, &b.1.path)));
    placement
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, size: u64, fingerprint: &str) -> SiteFile {
        SiteFile {
            path: path.into(),
            size_bytes: size,
            rows: 1,
            error: None,
            fingerprint: fingerprint.into(),
            partition_values: Vec::new(),
            modified_micros: 0,
        }
    }

    #[test]
    fn a_replicated_file_is_read_once_from_the_least_loaded_live_holder() {
        let reports = vec![
            ("a".to_string(), file("t/x.parquet", 100, "fx")),
            ("b".to_string(), file("t/x.parquet", 100, "fx")),
            ("b".to_string(), file("t/y.parquet", 50, "fy")),
        ];
        // a is busier than b: x goes to b as well.
        let busy_a = place_files(reports.clone(), |s| Some(if s == "a" { 3 } else { 0 }));
        let sites: Vec<_> = busy_a
            .files
            .iter()
            .map(|(s, f)| (s.as_str(), f.path.as_str()))
            .collect();
        assert_eq!(sites, [("b", "t/x.parquet"), ("b", "t/y.parquet")]);
        // Equally loaded: y (only on b) is placed first, x then goes to a, the emptier one.
        let even = place_files(reports.clone(), |_| Some(0));
        let sites: Vec<_> = even
            .files
            .iter()
            .map(|(s, f)| (s.as_str(), f.path.as_str()))
            .collect();
        assert_eq!(sites, [("a", "t/x.parquet"), ("b", "t/y.parquet")]);
        // b down: x is served by a, y has no live holder.
        let b_down = place_files(reports, |s| (s == "a").then_some(0));
        assert_eq!(b_down.files.len(), 1);
        assert_eq!(b_down.lost.len(), 1);
        assert_eq!(b_down.lost[0].file.path, "t/y.parquet");
        assert_eq!(b_down.lost[0].holders, ["b"]);
    }

    #[test]
    fn files_that_only_share_a_name_are_different_files() {
        let reports = vec![
            ("a".to_string(), file("t/0.parquet", 100, "one")),
            ("b".to_string(), file("t/0.parquet", 100, "two")),
            ("c".to_string(), file("t/0.parquet", 100, "")),
            ("d".to_string(), file("t/0.parquet", 100, "")),
        ];
        assert_eq!(place_files(reports, |_| Some(0)).files.len(), 4);
    }
}
