//! Exactly-once client sessions (Raft thesis §6.3), replicated with the
//! state.
//!
//! A client has an id (random, non-zero) and numbers its requests 1, 2, 3…,
//! sending request `n + 1` only once request `n` was answered (one request
//! in flight per session; a client that pipelines uses several ids). Each
//! session records the last sequence applied and the response it got:
//!
//! ```text
//!  request (client c, sequence s)      session of c           outcome
//!  ─────────────────────────────────── ────────────────────── ────────────────────────────
//!  s == last                           recorded response       duplicate: answered, not applied
//!  s >  last                           applied, recorded       the next request
//!  s <  last                           —                       refused: StaleSequence
//!  s == 1                              none                    new session, applied
//!  s != 1                              none                    refused: SessionExpired
//! ```
//!
//! A session is created only by sequence 1: a higher sequence from an
//! unknown client means its session was evicted, and applying the request
//! could apply a retry twice, so it is refused instead.
//!
//! A client told `SessionExpired` opens a new session: a new id, sequence
//! 1 (the client library does). That also covers a session whose first
//! request never applied: its second request is refused, not applied
//! without a session.
//!
//! The guarantee, exactly: a retry is answered from the record, never
//! applied twice, while its session lives — that is, when it arrives within
//! [`SESSION_EXPIRY_MS`] of log time after the session's last request and
//! fewer than [`SESSIONS_MAX`] other sessions were active since. Past that,
//! a retry numbered above 1 is refused (`SessionExpired`: the client learns
//! its outcome is unknown); a retry of a session's very first request
//! (sequence 1) cannot be told from a new session and is applied again.
//!
//! Sessions expire by *log time* (the largest leader stamp applied, see
//! `KvCommand.timeMs`), never by a replica's clock: one idle for more than
//! [`SESSION_EXPIRY_MS`] is dropped at the same entry on every replica. When
//! more than [`SESSIONS_MAX`] are live, the least recently active is evicted
//! (by log time, then client id: deterministic).

use std::collections::{BTreeMap, BTreeSet};

use crate::constants::{SESSION_EXPIRY_MS, SESSION_VALUE_BYTES_MAX, SESSIONS_MAX};
use crate::kv::{Current, KvResponse};

/// One client's session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    /// The last sequence applied.
    pub sequence: u64,
    /// Log time of its last request (applied or answered as a duplicate).
    pub last_active_ms: u64,
    /// The response the last sequence got (in its recorded form, see
    /// [`KvResponse::recorded`]).
    pub response: KvResponse,
}

/// What the session table says about a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Check {
    /// A retry of the last request: answer this, apply nothing.
    Duplicate(KvResponse),
    /// A new request: apply it, then [`Sessions::record`] the response.
    Fresh,
    /// Older than the last request applied (a delayed duplicate).
    Stale {
        /// The last sequence applied.
        last: u64,
    },
    /// No session, and the sequence is not 1: the session expired (or never
    /// existed).
    Expired,
}

/// The session table. Iterates in client-id order (the snapshot order).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sessions {
    by_client: BTreeMap<u64, Session>,
    /// (last active ms, client id) of every session: the eviction order.
    by_activity: BTreeSet<(u64, u64)>,
}

impl Sessions {
    /// Number of live sessions.
    pub fn len(&self) -> usize {
        self.by_client.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.by_client.is_empty()
    }

    /// The session of `client_id`.
    pub fn get(&self, client_id: u64) -> Option<&Session> {
        self.by_client.get(&client_id)
    }

    /// Sessions in client-id order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &Session)> {
        self.by_client.iter().map(|(id, session)| (*id, session))
    }

    /// Classifies a request of `client_id` (non-zero) numbered `sequence`.
    pub fn check(&self, client_id: u64, sequence: u64) -> Check {
        debug_assert_ne!(client_id, 0, "client 0 has no session");
        match self.by_client.get(&client_id) {
            Some(session) if sequence == session.sequence => {
                Check::Duplicate(session.response.clone())
            }
            Some(session) if sequence < session.sequence => Check::Stale {
                last: session.sequence,
            },
            Some(_) => Check::Fresh,
            None if sequence == 1 => Check::Fresh,
            None => Check::Expired,
        }
    }

    /// Drops every session idle for more than [`SESSION_EXPIRY_MS`] of log
    /// time at `now_ms`. Returns how many.
    pub fn expire(&mut self, now_ms: u64) -> usize {
        let mut expired = 0;
        while let Some(&(active_ms, client_id)) = self.by_activity.first() {
            if active_ms.saturating_add(SESSION_EXPIRY_MS) >= now_ms {
                break;
            }
            self.by_activity.pop_first();
            self.by_client.remove(&client_id);
            expired += 1;
        }
        expired
    }

    /// Marks a session active at `now_ms` (a duplicate was answered).
    pub fn touch(&mut self, client_id: u64, now_ms: u64) {
        if let Some(session) = self.by_client.get_mut(&client_id) {
            let removed = self
                .by_activity
                .remove(&(session.last_active_ms, client_id));
            debug_assert!(removed, "activity index matches the sessions");
            session.last_active_ms = session.last_active_ms.max(now_ms);
            self.by_activity.insert((session.last_active_ms, client_id));
        }
    }

    /// Records that `client_id` applied `sequence` at `now_ms` and got
    /// `response`. Creates the session if needed, evicting the least
    /// recently active one when the table is full.
    pub fn record(&mut self, client_id: u64, sequence: u64, now_ms: u64, response: &KvResponse) {
        debug_assert_ne!(client_id, 0, "client 0 has no session");
        let response = response.recorded();
        if let Some(session) = self.by_client.get_mut(&client_id) {
            debug_assert!(
                sequence > session.sequence,
                "only a newer request is recorded"
            );
            self.by_activity
                .remove(&(session.last_active_ms, client_id));
            session.sequence = sequence;
            session.last_active_ms = session.last_active_ms.max(now_ms);
            session.response = response;
            self.by_activity.insert((session.last_active_ms, client_id));
            return;
        }
        if self.by_client.len() >= SESSIONS_MAX
            && let Some((_, evicted)) = self.by_activity.pop_first()
        {
            self.by_client.remove(&evicted);
        }
        self.insert(
            client_id,
            Session {
                sequence,
                last_active_ms: now_ms,
                response,
            },
        );
        debug_assert!(self.by_client.len() <= SESSIONS_MAX);
    }

    /// Inserts a whole session (snapshot restore; the caller checked it).
    pub(crate) fn insert(&mut self, client_id: u64, session: Session) {
        self.by_activity.insert((session.last_active_ms, client_id));
        let previous = self.by_client.insert(client_id, session);
        debug_assert!(previous.is_none(), "one session per client");
    }

    /// Asserts the two indexes agree (tests, debug builds).
    pub fn check_invariants(&self) {
        assert_eq!(self.by_client.len(), self.by_activity.len());
        assert!(self.by_client.len() <= SESSIONS_MAX);
        for (client_id, session) in &self.by_client {
            assert_ne!(*client_id, 0);
            assert!(session.sequence >= 1);
            assert!(
                self.by_activity
                    .contains(&(session.last_active_ms, *client_id))
            );
            if let KvResponse::CasMismatch(Current::Value(value)) = &session.response {
                assert!(value.len() <= SESSION_VALUE_BYTES_MAX);
            }
        }
    }
}
