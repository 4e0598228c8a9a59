//! Job acquisition tokens, as Buildkite documents them: the Stacks API
//! issues one per reserved job (`POST /v3/stacks/:key/job-acquisition-tokens`,
//! `bkjat_` tokens living the asked lifetime, 15 minutes by default, an
//! hour at most, never past the job's reservation); the agent API takes
//! one in place of a registration token, once, before it expires, and the
//! agent it registers may acquire only that job.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use axum::http::StatusCode;

use super::model::{JobState, Store};
use super::render::ApiError;

/// Lifetime of a token when the request names none.
pub const LIFETIME_DEFAULT: Duration = Duration::from_secs(900);
/// The longest lifetime the Stacks API issues.
pub const LIFETIME_MAX: Duration = Duration::from_secs(3600);

/// A token the stand-in issued, and what became of it.
#[derive(Clone, Debug)]
pub struct IssuedJat {
    /// The token (`bkjat_...`).
    pub token: String,
    /// The one job it acquires.
    pub job_id: String,
    /// The stack that asked for it.
    pub stack: String,
    /// When it was issued.
    pub issued_at: SystemTime,
    /// When it stops registering agents.
    pub expires_at: SystemTime,
    /// The agent it registered, if it did.
    pub agent_id: Option<String>,
    /// Registrations refused with it (a second one, or after it expired).
    pub refused: u32,
    expires: Instant,
}

/// The issued tokens, by token.
#[derive(Clone, Debug, Default)]
pub struct Jats {
    by_token: BTreeMap<String, IssuedJat>,
}

impl Jats {
    /// Every token issued, oldest first.
    pub fn all(&self) -> Vec<IssuedJat> {
        let mut all: Vec<IssuedJat> = self.by_token.values().cloned().collect();
        all.sort_by_key(|j| j.issued_at);
        all
    }

    /// Whether `token` is one of ours (used or not, expired or not).
    pub fn knows(&self, token: &str) -> bool {
        self.by_token.contains_key(token)
    }

    /// Takes `token` for the registration of agent `agent_id`: it must be
    /// unused and unexpired. Gives the job the agent is restricted to.
    pub fn redeem(
        &mut self,
        token: &str,
        agent_id: &str,
        now: Instant,
    ) -> Result<String, ApiError> {
        let refuse = |jat: &mut IssuedJat, why: String| {
            jat.refused += 1;
            Err(ApiError::new(StatusCode::UNAUTHORIZED, why))
        };
        let Some(jat) = self.by_token.get_mut(token) else {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "Invalid job acquisition token",
            ));
        };
        if let Some(other) = &jat.agent_id {
            let why = format!(
                "This job acquisition token already registered agent {other}; each registers one agent"
            );
            return refuse(jat, why);
        }
        if now >= jat.expires {
            let why =
                "This job acquisition token has expired; the stack must issue a new one".into();
            return refuse(jat, why);
        }
        jat.agent_id = Some(agent_id.to_string());
        Ok(jat.job_id.clone())
    }
}

/// A new opaque token.
fn new_token() -> String {
    format!(
        "bkjat_{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

impl Store {
    /// Issues a token to `stack` for each job it holds a reservation on,
    /// living `lifetime` or until the reservation ends, whichever is first;
    /// returns (issued, not issued).
    pub fn issue_jats(
        &mut self,
        stack: &str,
        job_ids: &[String],
        lifetime: Duration,
        now: Instant,
    ) -> (Vec<IssuedJat>, Vec<String>) {
        let wall = SystemTime::now();
        let mut issued = Vec::new();
        let mut not_issued = Vec::new();
        for id in job_ids {
            let reserved_until = self.jobs.get(id).and_then(|j| match &j.reservation {
                Some((s, until))
                    if j.state == JobState::Scheduled && s == stack && *until > now =>
                {
                    Some(*until)
                }
                _ => None,
            });
            let Some(until) = reserved_until else {
                not_issued.push(id.clone());
                continue;
            };
            let expires = until.min(now + lifetime);
            let jat = IssuedJat {
                token: new_token(),
                job_id: id.clone(),
                stack: stack.to_string(),
                issued_at: wall,
                expires_at: wall + (expires - now),
                agent_id: None,
                refused: 0,
                expires,
            };
            self.jats.by_token.insert(jat.token.clone(), jat.clone());
            issued.push(jat);
        }
        (issued, not_issued)
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::buildkite::model::{BuildSpec, JobSpec};

    fn store_with_reserved_job(stack: &str, for_: Duration) -> (Store, String, Instant) {
        let mut store = Store::new("org", "default");
        store.add_pipeline("p").unwrap();
        let b = store
            .add_build(
                "p",
                BuildSpec::new(vec![JobSpec::new(&["queue=linux"])]),
                &mut Vec::new(),
            )
            .unwrap();
        let id = b.job_ids[0].clone();
        let now = Instant::now();
        let (reserved, _) = store.reserve(stack, std::slice::from_ref(&id), now + for_, now);
        assert_eq!(reserved, vec![id.clone()]);
        (store, id, now)
    }

    #[test]
    fn a_token_is_issued_only_to_the_stack_holding_the_reservation() {
        let (mut store, id, now) = store_with_reserved_job("s1", Duration::from_secs(600));
        let (issued, not) =
            store.issue_jats("s2", std::slice::from_ref(&id), LIFETIME_DEFAULT, now);
        assert!(issued.is_empty());
        assert_eq!(not, vec![id.clone()]);
        let (issued, not) =
            store.issue_jats("s1", std::slice::from_ref(&id), LIFETIME_DEFAULT, now);
        assert!(not.is_empty());
        assert!(issued[0].token.starts_with("bkjat_"), "{}", issued[0].token);
        assert_eq!(issued[0].job_id, id);
    }

    #[test]
    fn a_token_never_outlives_the_reservation() {
        let (mut store, id, now) = store_with_reserved_job("s1", Duration::from_secs(60));
        let (issued, _) = store.issue_jats("s1", &[id], LIFETIME_MAX, now);
        let life = issued[0]
            .expires_at
            .duration_since(issued[0].issued_at)
            .unwrap();
        assert!(life <= Duration::from_secs(60), "{life:?}");
    }

    #[test]
    fn a_token_registers_one_agent_and_not_after_it_expired() {
        let (mut store, id, now) = store_with_reserved_job("s1", Duration::from_secs(600));
        let (issued, _) = store.issue_jats(
            "s1",
            std::slice::from_ref(&id),
            Duration::from_secs(30),
            now,
        );
        let token = &issued[0].token;
        assert_eq!(store.jats.redeem(token, "agent-1", now), Ok(id.clone()));
        let again = store.jats.redeem(token, "agent-2", now).unwrap_err();
        assert_eq!(again.status, StatusCode::UNAUTHORIZED);
        assert!(
            again.message.contains("already registered agent agent-1"),
            "{}",
            again.message
        );

        let (issued, _) = store.issue_jats(
            "s1",
            std::slice::from_ref(&id),
            Duration::from_secs(30),
            now,
        );
        let late = now + Duration::from_secs(31);
        let expired = store
            .jats
            .redeem(&issued[0].token, "agent-3", late)
            .unwrap_err();
        assert!(expired.message.contains("expired"), "{}", expired.message);
        let all = store.jats.all();
        assert_eq!(all.len(), 2);
        assert_eq!(all.iter().map(|j| j.refused).sum::<u32>(), 2);
    }
}
