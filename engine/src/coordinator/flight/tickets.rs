//! Statement tickets are signed. Flight SQL hands a client a ticket with the statement in it
//! and the client brings it back to fetch the rows or cancel; shoal keeps no state in
//! between (a client that never comes back costs nothing). So the coordinator signs each
//! ticket with a key only it holds (HMAC-SHA256, ring's): a ticket it did not issue, or
//! one whose statement, id or owner a client changed, is refused, and a ticket works only
//! for the principal it was issued to. Ids from tickets are trusted only after that.

use crate::protocol::StatementHandle;
use crate::security::Principal;
use ring::hmac;
use tonic::Status;

pub struct TicketKey(hmac::Key);

impl std::fmt::Debug for TicketKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TicketKey(..)")
    }
}

impl TicketKey {
    /// A fresh key: tickets are valid until the coordinator restarts (a client then plans
    /// again, as it must anyway: the statement ran nowhere).
    pub fn random() -> crate::Result<Self> {
        let rng = ring::rand::SystemRandom::new();
        hmac::Key::generate(hmac::HMAC_SHA256, &rng)
            .map(Self)
            .map_err(|_| crate::Error::Security("no randomness for the ticket key".into()))
    }

    /// Signs `handle` for `owner`.
    pub fn seal(&self, mut handle: StatementHandle, owner: &Principal) -> StatementHandle {
        handle.owner = owner.owner();
        handle.mac = hex::encode(hmac::sign(&self.0, &signed_bytes(&handle)).as_ref());
        handle
    }

    /// Checks that this coordinator issued `handle`, unchanged (constant time).
    pub fn verify(&self, handle: &StatementHandle) -> Result<(), Status> {
        let tag = hex::decode(&handle.mac).map_err(|_| forged())?;
        hmac::verify(&self.0, &signed_bytes(handle), &tag).map_err(|_| forged())
    }

    /// Checks the signature and that `principal` may use the ticket: its owner, or an admin.
    pub fn open(&self, handle: &StatementHandle, principal: &Principal) -> Result<(), Status> {
        self.verify(handle)?;
        if handle.owner != principal.owner() && !principal.is_admin() {
            return Err(Status::permission_denied(
                "this ticket was issued to another client: plan the statement yourself",
            ));
        }
        Ok(())
    }
}

/// The fields a signature covers, each length-prefixed so no two handles share bytes.
fn signed_bytes(handle: &StatementHandle) -> Vec<u8> {
    let parameters = handle.parameters.as_deref().unwrap_or("");
    let partial = if handle.asks.partial { "partial" } else { "" };
    let fallback = if handle.asks.device_fallback {
        "device_fallback"
    } else {
        ""
    };
    let mut out = Vec::new();
    for field in [
        &handle.sql,
        &handle.query_id,
        parameters,
        &handle.owner,
        partial,
        &handle.asks.device,
        fallback,
    ] {
        out.extend_from_slice(&(field.len() as u64).to_le_bytes());
        out.extend_from_slice(field.as_bytes());
    }
    out
}

fn forged() -> Status {
    Status::permission_denied(
        "the ticket was not issued by this coordinator or was changed; plan the statement again",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, admin: bool) -> Principal {
        Principal::Client {
            user: name.into(),
            role: if admin {
                crate::security::Role::Admin
            } else {
                crate::security::Role::Trainer
            },
        }
    }

    #[test]
    fn only_unchanged_tickets_work_and_only_for_their_owner() {
        let key = TicketKey::random().unwrap();
        let handle = StatementHandle {
            asks: Default::default(),
            sql: "SELECT 1".into(),
            query_id: "q1".into(),
            parameters: None,
            owner: String::new(),
            mac: String::new(),
        };
        let sealed = key.seal(handle, &user("ana", false));
        assert!(key.open(&sealed, &user("ana", false)).is_ok());
        assert!(key.open(&sealed, &user("bo", true)).is_ok());
        let other = key.open(&sealed, &user("bo", false)).unwrap_err();
        assert_eq!(other.code(), tonic::Code::PermissionDenied);
        for change in [
            |h: &mut StatementHandle| h.query_id = "q2".into(),
            |h: &mut StatementHandle| h.sql = "SELECT 2".into(),
            |h: &mut StatementHandle| h.owner = "user:bo".into(),
            |h: &mut StatementHandle| h.mac = "00".into(),
        ] {
            let mut forged = sealed.clone();
            change(&mut forged);
            assert!(key.open(&forged, &user("ana", false)).is_err());
        }
        let elsewhere = TicketKey::random().unwrap();
        assert!(elsewhere.verify(&sealed).is_err());
    }
}
