//! Credentials checks. Secrets are compared as SHA-256 digests in constant time, so neither
//! a token's content nor its length leaks through timing.

use super::identity::SiteKeys;
use super::random_secret;
use base64::Engine;
use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;
use tonic::Status;

/// How long a token issued by the Basic handshake stays valid.
const ISSUED_TOKEN_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Bound on live issued tokens, so clients looping on the handshake cannot grow memory.
const MAX_ISSUED_TOKENS: usize = 10_000;
/// Live tokens one user may hold (one per connection of a client that logs in each time):
/// a user's next login past it retires that user's oldest token, so a user looping on the
/// handshake only ever ends their own sessions, never anyone else's logins.
pub const MAX_TOKENS_PER_USER: usize = 64;

type SecretDigest = [u8; 32];

fn digest(secret: &str) -> SecretDigest {
    Sha256::digest(secret.as_bytes()).into()
}

/// Who a request comes from, as the guard found it. Handlers read it from the request's
/// extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// No client authentication is configured (a loopback endpoint).
    Open,
    /// A client with a valid bearer token (static token `token-N`, N its place in the list,
    /// or issued by the handshake to `user`), with the role the auth file gives the user.
    Client { user: String, role: Role },
    /// At the coordinator: a worker that proved it is site `name` (see
    /// [`super::identity`]).
    Site { name: String },
    /// At a site: its coordinator.
    Coordinator,
    /// At a site: another site, fetching task outputs with the pass the coordinator issued it.
    Peer { site: String },
}

/// What a client may do. `analyst`: queries; `trainer` (the default, also written `user`):
/// queries and `CREATE MODEL`; `admin`: everything, everyone's work and shipped models.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Analyst,
    Trainer,
    Admin,
}

impl Role {
    /// The role an auth file names (`None`: the default).
    pub fn parse(name: Option<&str>) -> Option<Self> {
        match name {
            Some("analyst") => Some(Role::Analyst),
            None | Some("trainer" | "user") => Some(Role::Trainer),
            Some("admin") => Some(Role::Admin),
            Some(_) => None,
        }
    }
}

impl Principal {
    /// Whether it may train models (`CREATE MODEL`, a pipeline's train node).
    pub fn may_train(&self) -> bool {
        match self {
            Principal::Open | Principal::Coordinator => true,
            Principal::Client { role, .. } => *role != Role::Analyst,
            Principal::Site { .. } | Principal::Peer { .. } => false,
        }
    }

    /// Whose statements, prepared statements and reports a request may see: its own.
    pub fn owner(&self) -> String {
        match self {
            Principal::Open => "open".into(),
            Principal::Client { user, .. } => format!("user:{user}"),
            Principal::Site { name } => format!("site:{name}"),
            Principal::Coordinator => "coordinator".into(),
            Principal::Peer { site } => format!("peer:{site}"),
        }
    }

    /// Whether it may see and cancel everyone's work and train under a shipped model's
    /// name: the admin role, the coordinator (at a site), and the one principal of an
    /// endpoint with no client authentication (loopback, a single user). A site is not: its
    /// credential only lets it join the cluster.
    pub fn is_admin(&self) -> bool {
        match self {
            Principal::Open | Principal::Coordinator => true,
            Principal::Client { role, .. } => *role == Role::Admin,
            Principal::Site { .. } | Principal::Peer { .. } => false,
        }
    }
}

/// What the guard attaches to an admitted request.
#[derive(Debug, Clone)]
pub struct Admission {
    pub principal: Principal,
    /// Set on a successful Basic handshake: the bearer token to hand back.
    pub issued_token: Option<String>,
}

#[derive(Debug)]
struct Issued {
    user: String,
    expires: Instant,
}

#[derive(Debug, Default)]
pub struct Authenticator {
    static_tokens: Vec<SecretDigest>,
    /// user -> password digest, for the Basic handshake.
    users: HashMap<String, SecretDigest>,
    sites: SiteKeys,
    issued: Mutex<HashMap<SecretDigest, Issued>>,
    /// Users' roles (the others are trainers).
    roles: HashMap<String, Role>,
    /// Users' per-table grants (the others may read every table).
    grants: HashMap<String, std::sync::Arc<std::collections::BTreeSet<String>>>,
}

impl Authenticator {
    pub fn new(static_tokens: &[String], users: &[(String, String)], sites: SiteKeys) -> Self {
        Self {
            static_tokens: static_tokens.iter().map(|t| digest(t)).collect(),
            users: users
                .iter()
                .map(|(user, password)| (user.clone(), digest(password)))
                .collect(),
            sites,
            issued: Mutex::new(HashMap::new()),
            roles: HashMap::new(),
            grants: HashMap::new(),
        }
    }

    /// Narrows users to the tables granted them (user name -> tables).
    pub fn with_grants(mut self, grants: &[(String, Vec<String>)]) -> Self {
        self.grants = grants
            .iter()
            .map(|(user, tables)| {
                (
                    user.clone(),
                    std::sync::Arc::new(tables.iter().cloned().collect()),
                )
            })
            .collect();
        self
    }

    /// The tables `principal` may read, if grants narrow it (admins are never narrowed).
    pub fn tables_of(
        &self,
        principal: &Principal,
    ) -> Option<std::sync::Arc<std::collections::BTreeSet<String>>> {
        match principal {
            Principal::Client { user, role } if *role != Role::Admin => {
                self.grants.get(user).cloned()
            }
            _ => None,
        }
    }

    /// Gives users their roles (user name -> role; the others are trainers).
    pub fn with_roles(mut self, roles: &[(String, Role)]) -> Self {
        self.roles = roles.iter().cloned().collect();
        self
    }

    fn client(&self, user: String) -> Principal {
        let role = self.roles.get(&user).copied().unwrap_or(Role::Trainer);
        Principal::Client { user, role }
    }

    /// Whether clients must present credentials.
    pub fn requires_client_auth(&self) -> bool {
        !self.static_tokens.is_empty() || !self.users.is_empty()
    }

    /// The sites' secrets, as far as this coordinator knows them.
    pub fn sites(&self) -> &SiteKeys {
        &self.sites
    }

    /// Checks the `authorization` header of a request. `handshake` is true for the Flight
    /// Handshake call, the only one where Basic credentials are accepted (and exchanged for
    /// a bearer token).
    pub fn admit(&self, authorization: Option<&str>, handshake: bool) -> Result<Admission, Status> {
        let admitted = |principal| {
            Ok(Admission {
                principal,
                issued_token: None,
            })
        };
        match authorization.map(split_scheme) {
            Some(Some(("bearer", token))) => {
                if let Some(name) = self.sites.site_of(token) {
                    return admitted(Principal::Site { name });
                }
                if let Some(user) = self.client_for(token) {
                    return admitted(self.client(user));
                }
                if self.requires_client_auth() {
                    return Err(Status::unauthenticated(
                        "invalid or expired bearer token; log in again or check the token",
                    ));
                }
                admitted(Principal::Open)
            }
            Some(Some(("basic", encoded))) if handshake => {
                let (user, password) = decode_basic(encoded)?;
                if !self.requires_client_auth() {
                    // Clients that always log in still get a token; it carries nothing.
                    return Ok(Admission {
                        principal: Principal::Open,
                        issued_token: Some("open".into()),
                    });
                }
                let known = self
                    .users
                    .get(&user)
                    .is_some_and(|expected| bool::from(expected.ct_eq(&digest(&password))));
                if !known {
                    return Err(Status::unauthenticated(format!(
                        "wrong user name or password for '{user}'"
                    )));
                }
                let token = self.issue(&user)?;
                Ok(Admission {
                    principal: self.client(user),
                    issued_token: Some(token),
                })
            }
            Some(Some(("basic", _))) => Err(Status::unauthenticated(
                "Basic credentials are accepted only by the Handshake call; send the bearer token it returns",
            )),
            _ if !self.requires_client_auth() => admitted(Principal::Open),
            Some(_) => Err(Status::unauthenticated(
                "unsupported authorization header; send 'authorization: Bearer <token>'",
            )),
            None => Err(Status::unauthenticated(
                "this shoal endpoint requires authentication: send 'authorization: Bearer <token>' or log in with a user name and password (Flight handshake)",
            )),
        }
    }

    fn client_for(&self, token: &str) -> Option<String> {
        use subtle::ConditionallySelectable;
        let presented = digest(token);
        // Every static token is compared, with no early exit; each is its own principal.
        let mut matched = subtle::Choice::from(0);
        let mut place = 0u64;
        for (i, expected) in self.static_tokens.iter().enumerate() {
            let equal = expected.ct_eq(&presented);
            place = u64::conditional_select(&place, &(i as u64 + 1), equal);
            matched |= equal;
        }
        if bool::from(matched) {
            return Some(format!("token-{place}"));
        }
        // Looked up by digest: timing depends on the digest, not on the secret.
        let mut issued = self.issued.lock();
        match issued.get(&presented) {
            Some(entry) if entry.expires > Instant::now() => Some(entry.user.clone()),
            Some(_) => {
                issued.remove(&presented);
                None
            }
            None => None,
        }
    }

    fn issue(&self, user: &str) -> Result<String, Status> {
        let token = random_secret().map_err(|e| Status::internal(e.to_string()))?;
        let now = Instant::now();
        let mut issued = self.issued.lock();
        let mine: Vec<(SecretDigest, Instant)> = issued
            .iter()
            .filter(|(_, entry)| entry.user == user)
            .map(|(key, entry)| (*key, entry.expires))
            .collect();
        if mine.len() >= MAX_TOKENS_PER_USER
            && let Some((oldest, _)) = mine.iter().min_by_key(|(_, expires)| *expires)
        {
            tracing::info!(
                user,
                "login past {MAX_TOKENS_PER_USER} live tokens: the user's oldest token is retired"
            );
            issued.remove(oldest);
        }
        if issued.len() >= MAX_ISSUED_TOKENS {
            issued.retain(|_, entry| entry.expires > now);
        }
        if issued.len() >= MAX_ISSUED_TOKENS {
            return Err(Status::resource_exhausted(
                "too many live sessions; try again later",
            ));
        }
        issued.insert(
            digest(&token),
            Issued {
                user: user.to_string(),
                expires: now + ISSUED_TOKEN_LIFETIME,
            },
        );
        Ok(token)
    }
}

/// `"Bearer abc"` -> `("bearer", "abc")`.
fn split_scheme(header: &str) -> Option<(&str, &str)> {
    let (scheme, value) = header.trim().split_once(' ')?;
    let scheme = if scheme.eq_ignore_ascii_case("bearer") {
        "bearer"
    } else if scheme.eq_ignore_ascii_case("basic") {
        "basic"
    } else {
        return None;
    };
    Some((scheme, value.trim()))
}

fn decode_basic(encoded: &str) -> Result<(String, String), Status> {
    let bad = || {
        Status::unauthenticated("malformed Basic credentials (expected base64 of user:password)")
    };
    // Go's Flight client (ADBC) sends unpadded base64; pyarrow sends padded.
    let lenient = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    let bytes = lenient.decode(encoded).map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let (user, password) = text.split_once(':').ok_or_else(bad)?;
    Ok((user.to_string(), password.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user: &str, password: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        )
    }

    fn auth() -> Authenticator {
        Authenticator::new(
            &["static-token".into()],
            &[("ana".into(), "s3cret".into())],
            SiteKeys::new(Some("cluster-secret-0123456789"), None, &[]).unwrap(),
        )
    }

    #[test]
    fn static_tokens_and_site_credentials_are_recognised() {
        let a = auth();
        let client = a.admit(Some("Bearer static-token"), false).unwrap();
        assert!(matches!(client.principal, Principal::Client { .. }));
        let site = super::super::identity::SiteSecret::new("cluster-secret-0123456789")
            .site_credential("site-1");
        let worker = a.admit(Some(&format!("bearer {site}")), false).unwrap();
        assert_eq!(
            worker.principal,
            Principal::Site {
                name: "site-1".into()
            }
        );
        assert!(!worker.principal.is_admin() && !worker.principal.may_train());
        // The shared secret itself is not a credential.
        let raw = a.admit(Some("Bearer cluster-secret-0123456789"), false);
        assert!(raw.is_err());
        let wrong = a.admit(Some("Bearer nope"), false).unwrap_err();
        assert_eq!(wrong.code(), tonic::Code::Unauthenticated);
        let none = a.admit(None, false).unwrap_err();
        assert_eq!(none.code(), tonic::Code::Unauthenticated);
        assert!(none.message().contains("Bearer"), "{}", none.message());
    }

    #[test]
    fn handshake_exchanges_basic_for_a_working_bearer_token() {
        let a = auth();
        let login = a.admit(Some(&basic("ana", "s3cret")), true).unwrap();
        let token = login.issued_token.unwrap();
        let again = a.admit(Some(&format!("Bearer {token}")), false).unwrap();
        assert_eq!(
            again.principal,
            Principal::Client {
                user: "ana".into(),
                role: Role::Trainer
            }
        );
        let unpadded = basic("ana", "s3cret").trim_end_matches('=').to_string();
        assert!(a.admit(Some(&unpadded), true).is_ok());
        let wrong = a.admit(Some(&basic("ana", "guess")), true).unwrap_err();
        assert_eq!(wrong.code(), tonic::Code::Unauthenticated);
        // Basic credentials on any other call are refused.
        let elsewhere = a.admit(Some(&basic("ana", "s3cret")), false).unwrap_err();
        assert!(elsewhere.message().contains("Handshake"));
    }

    #[test]
    fn one_user_looping_on_the_handshake_retires_only_their_own_tokens() {
        let a = Authenticator::new(
            &[],
            &[
                ("ana".into(), "s3cret".into()),
                ("bo".into(), "other".into()),
            ],
            SiteKeys::default(),
        )
        .with_roles(&[("bo".into(), Role::Admin)]);
        let bo = a.admit(Some(&basic("bo", "other")), true).unwrap();
        let bo_token = format!("Bearer {}", bo.issued_token.unwrap());
        let first = a.admit(Some(&basic("ana", "s3cret")), true).unwrap();
        let first = format!("Bearer {}", first.issued_token.unwrap());
        for _ in 0..3 * MAX_TOKENS_PER_USER {
            a.admit(Some(&basic("ana", "s3cret")), true).unwrap();
        }
        assert_eq!(a.issued.lock().len(), MAX_TOKENS_PER_USER + 1);
        assert!(
            a.admit(Some(&first), false).is_err(),
            "the oldest was retired"
        );
        let bo = a.admit(Some(&bo_token), false).unwrap().principal;
        assert!(bo.is_admin() && bo.owner() == "user:bo");
        assert!(a.admit(Some(&basic("bo", "other")), true).is_ok());
    }

    #[test]
    fn each_static_token_is_its_own_principal() {
        let a = Authenticator::new(
            &["first-token".into(), "second-token".into()],
            &[],
            SiteKeys::default(),
        );
        let owner = |t: &str| {
            a.admit(Some(&format!("Bearer {t}")), false)
                .unwrap()
                .principal
                .owner()
        };
        assert_eq!(owner("first-token"), "user:token-1");
        assert_eq!(owner("second-token"), "user:token-2");
    }
}
