//! Where secrets come from: a TOML file or environment variables, never command-line
//! arguments (those show in `ps`).

use crate::error::{Error, Result};
use crate::security::Role;
use crate::security::identity::{MIN_SECRET_CHARS, SiteKeys};
use std::path::Path;

/// Comma-separated static bearer tokens the coordinator accepts from clients.
pub const TOKENS_ENV: &str = "SHOAL_TOKENS";
/// At the coordinator: one secret shared by every site. At a worker: the site's own secret
/// (whichever way the coordinator knows it).
pub const CLUSTER_SECRET_ENV: &str = "SHOAL_CLUSTER_SECRET";

/// The coordinator's `--auth-file`:
///
/// ```toml
/// tokens = ["a-long-random-token"]      # static bearer tokens for clients
/// site_key = "an-enrollment-key"        # each site's secret is derived from it (shoal enroll)
///
/// [[sites]]                             # or: a site's own secret, given by its operator
/// name = "site-3"
/// secret = "..."
///
/// [[users]]                             # user names for the Basic handshake
/// name = "analyst"
/// password = "..."
/// role = "admin"                        # optional: sees and cancels everyone's work
/// tables = ["lineitem"]                 # optional: the only tables the user may read
/// ```
///
/// `cluster_secret = "..."` instead of `site_key`/`[[sites]]` gives every site the same
/// secret: one trust domain, in which any site can act as any other.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthFile {
    #[serde(default)]
    pub tokens: Vec<String>,
    #[serde(default)]
    pub users: Vec<User>,
    pub cluster_secret: Option<String>,
    pub site_key: Option<String>,
    #[serde(default)]
    pub sites: Vec<SiteEntry>,
}

#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteEntry {
    pub name: String,
    pub secret: String,
}

#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub name: String,
    pub password: String,
    /// `"analyst"` (queries), `"trainer"` (queries and `CREATE MODEL`; the default, also
    /// written `"user"`) or `"admin"`.
    #[serde(default)]
    pub role: Option<String>,
    /// The tables the user may read (a per-table grant narrowing the role); none: all.
    #[serde(default)]
    pub tables: Option<Vec<String>>,
}

impl AuthFile {
    /// The file's settings plus the environment's (`SHOAL_TOKENS`, `SHOAL_CLUSTER_SECRET`).
    pub fn with_environment(mut self) -> Result<Self> {
        if let Ok(tokens) = std::env::var(TOKENS_ENV) {
            self.tokens.extend(
                tokens
                    .split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(str::to_string),
            );
        }
        if let Ok(secret) = std::env::var(CLUSTER_SECRET_ENV)
            && !secret.trim().is_empty()
        {
            if self.cluster_secret.is_some() {
                return Err(Error::Security(format!(
                    "the cluster secret is given twice: in the auth file and in {CLUSTER_SECRET_ENV}"
                )));
            }
            self.cluster_secret = Some(secret.trim().to_string());
        }
        self.validate()?;
        Ok(self)
    }

    fn validate(&self) -> Result<()> {
        if let Some(short) = self.tokens.iter().find(|t| t.len() < 16) {
            return Err(Error::Security(format!(
                "token '{}…' is too short: use at least 16 characters",
                short.chars().take(3).collect::<String>()
            )));
        }
        if self
            .cluster_secret
            .as_ref()
            .is_some_and(|s| s.len() < MIN_SECRET_CHARS)
        {
            return Err(Error::Security(
                "the cluster secret is too short: use at least 16 characters".into(),
            ));
        }
        if self
            .site_key
            .as_ref()
            .is_some_and(|s| s.len() < MIN_SECRET_CHARS)
        {
            return Err(Error::Security(
                "site_key is too short: use at least 16 characters".into(),
            ));
        }
        let mut names = std::collections::BTreeSet::new();
        for site in &self.sites {
            shoal_planner::catalog::validate_site_name(&site.name)?;
            if site.secret.len() < MIN_SECRET_CHARS {
                return Err(Error::Security(format!(
                    "[[sites]] '{}': the secret is too short: use at least 16 characters",
                    site.name
                )));
            }
            if !names.insert(&site.name) {
                return Err(Error::Security(format!(
                    "[[sites]] '{}' is listed twice",
                    site.name
                )));
            }
        }
        self.site_keys()?;
        if let Some(user) = self
            .users
            .iter()
            .find(|u| Role::parse(u.role.as_deref()).is_none())
        {
            return Err(Error::Security(format!(
                "user '{}' has role '{}': use \"analyst\", \"trainer\" or \"admin\"",
                user.name,
                user.role.as_deref().unwrap_or_default()
            )));
        }
        if let Some(user) = self.users.iter().find(|u| u.password.is_empty()) {
            return Err(Error::Security(format!(
                "user '{}' has an empty password",
                user.name
            )));
        }
        Ok(())
    }

    /// The sites' secrets as the file gives them.
    pub fn site_keys(&self) -> Result<SiteKeys> {
        SiteKeys::new(
            self.cluster_secret.as_deref(),
            self.site_key.as_deref(),
            &self.site_pairs(),
        )
    }

    pub fn site_pairs(&self) -> Vec<(String, String)> {
        self.sites
            .iter()
            .map(|s| (s.name.clone(), s.secret.clone()))
            .collect()
    }

    /// The users whose tables are granted one by one: user -> tables.
    pub fn grants(&self) -> Vec<(String, Vec<String>)> {
        self.users
            .iter()
            .filter_map(|u| Some((u.name.clone(), u.tables.clone()?)))
            .collect()
    }

    /// Each user's role.
    pub fn roles(&self) -> Vec<(String, Role)> {
        self.users
            .iter()
            .filter_map(|u| Some((u.name.clone(), Role::parse(u.role.as_deref())?)))
            .collect()
    }

    pub fn user_pairs(&self) -> Vec<(String, String)> {
        self.users
            .iter()
            .map(|u| (u.name.clone(), u.password.clone()))
            .collect()
    }
}

pub fn load_auth_file(path: &Path) -> Result<AuthFile> {
    let text = read_private(path)?;
    toml::from_str(&text)
        .map_err(|e| Error::Security(format!("--auth-file {}: {e}", path.display())))
}

/// A file holding one secret (the worker's `--site-secret-file`).
pub fn read_secret_file(path: &Path) -> Result<String> {
    let secret = read_private(path)?.trim().to_string();
    if secret.len() < 16 {
        return Err(Error::Security(format!(
            "{}: the secret must have at least 16 characters",
            path.display()
        )));
    }
    Ok(secret)
}

/// Reads a file of secrets, refusing one that other users may read or write (as ssh does
/// with a private key): its secrets would already be everyone's on the host.
fn read_private(path: &Path) -> Result<String> {
    use std::os::unix::fs::PermissionsExt;
    let io = |e| Error::Io {
        path: path.to_path_buf(),
        source: e,
    };
    let mode = std::fs::metadata(path).map_err(io)?.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(Error::Security(format!(
            "{} holds secrets but other users can read or write it (mode {:o}): chmod 600 it",
            path.display(),
            mode & 0o777
        )));
    }
    std::fs::read_to_string(path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_named_with_their_line() {
        let err = toml::from_str::<AuthFile>("tokens = []\ntoken = \"x\"\n").unwrap_err();
        let message = err.to_string();
        assert!(message.contains("token"), "{message}");
        assert!(message.contains("line 2"), "{message}");
    }

    #[test]
    fn short_tokens_are_refused() {
        let file = AuthFile {
            tokens: vec!["short".into()],
            ..Default::default()
        };
        assert!(
            file.validate()
                .unwrap_err()
                .to_string()
                .contains("too short")
        );
    }

    #[test]
    fn a_secrets_file_others_can_read_is_refused_and_roles_are_checked() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("auth.toml");
        std::fs::write(
            &path,
            "[[users]]\nname = \"root\"\npassword = \"pw\"\nrole = \"admin\"\n",
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = load_auth_file(&path).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let file = load_auth_file(&path).unwrap();
        assert_eq!(file.roles(), vec![("root".to_string(), Role::Admin)]);
        let bad_role = AuthFile {
            users: vec![User {
                name: "x".into(),
                password: "pw".into(),
                role: Some("root".into()),
                tables: None,
            }],
            ..Default::default()
        };
        assert!(
            bad_role
                .validate()
                .unwrap_err()
                .to_string()
                .contains("role")
        );
    }
}
