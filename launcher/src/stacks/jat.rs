//! Job acquisition tokens (JATs): right before a reserved job's VM
//! starts, the launcher asks the Stacks API for a short-lived token that
//! registers one agent and acquires that one job
//! (`POST /stacks/:key/job-acquisition-tokens`). The VM's seed carries
//! the JAT as its agent token; the cluster token stays with the launcher.
//!
//! Buildkite answers `201` with `job_acquisition_tokens` (`job_uuid`,
//! `job_acquisition_token`, `expires_at`) and `not_issued` (jobs whose
//! reservation lapsed or that were taken): a job in `not_issued` gets no
//! VM. A token expires after the lifetime asked for (15 minutes by
//! default, an hour at most) or with the job's reservation, if sooner.

use std::time::{Duration, SystemTime};

use reqwest::Method;
use serde::Deserialize;
use serde_json::json;

use super::Client;
use crate::config::Secret;
use crate::retry::ApiError;

/// The longest lifetime the Stacks API issues a token for.
pub const MAX_LIFETIME: Duration = Duration::from_secs(3600);

/// A token issued for one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jat {
    /// The job it acquires.
    pub job: String,
    /// The token (`bkjat_...`); never logged.
    pub token: Secret,
    /// When Buildkite stops accepting it for a registration.
    pub expires_at: SystemTime,
}

/// The answer to one request for tokens.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Issued {
    /// Tokens, one per job that got one.
    pub tokens: Vec<Jat>,
    /// Jobs that got none: their reservation lapsed, or they were taken.
    pub not_issued: Vec<String>,
}

/// Why a job got no token, and so no VM.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JatError {
    /// Buildkite listed the job in `not_issued` (or did not answer for it).
    #[error("no job acquisition token was issued for the job (its reservation lapsed or it was taken); it gets no VM")]
    NotIssued,
    /// 403 or 404: most likely the organisation has no job acquisition tokens.
    #[error("the Stacks API refused a job acquisition token ({message}); if the organisation has no job acquisition tokens, set agent_tokens = \"cluster\" on [[agent]] {definition}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// What Buildkite said.
        message: String,
        /// The agent definition whose VM it was for.
        definition: String,
    },
    /// Another refusal (400, 401, 422, ...): retrying the same request does not help.
    #[error("the job acquisition token request was refused: {0}")]
    Failed(String),
    /// No answer, 429 or 5xx, still so after the retries: the job is placed again.
    #[error("no job acquisition token: {0}; the job is placed again")]
    Unavailable(String),
}

impl JatError {
    /// Whether the job should be placed again on the next pass (only when
    /// Buildkite may answer differently soon).
    pub fn place_again(&self) -> bool {
        matches!(self, JatError::Unavailable(_))
    }

    /// The result's name in `launcher_job_acquisition_tokens_total`.
    pub fn kind(&self) -> &'static str {
        match self {
            JatError::NotIssued => "not_issued",
            JatError::Refused { .. } => "refused",
            JatError::Failed(_) => "failed",
            JatError::Unavailable(_) => "unavailable",
        }
    }

    /// The short note for the job's page in Buildkite (at most 256 bytes).
    pub fn note(&self) -> String {
        match self {
            JatError::NotIssued => {
                "no VM: no job acquisition token was issued (the reservation lapsed or the job was taken)".into()
            }
            JatError::Refused { status, definition, .. } => format!(
                "no VM: job acquisition tokens were refused (HTTP {status}); without them, set agent_tokens = \"cluster\" on the launcher's [[agent]] {definition}"
            ),
            JatError::Failed(_) => "no VM: the job acquisition token request was refused".into(),
            JatError::Unavailable(_) => {
                "no job acquisition token yet (Buildkite did not answer); trying again".into()
            }
        }
    }
}

/// How long a VM's token should live: from just before the start call
/// until its agent registers, which the boot timeout bounds (plus a
/// minute for the host lock and the start call itself).
pub fn lifetime(boot_timeout: Duration) -> Duration {
    boot_timeout
        .saturating_add(Duration::from_secs(60))
        .clamp(Duration::from_secs(1), MAX_LIFETIME)
}

#[derive(Deserialize)]
struct RawIssued {
    #[serde(default)]
    job_acquisition_tokens: Vec<RawJat>,
    #[serde(default)]
    not_issued: Vec<String>,
}

#[derive(Deserialize)]
struct RawJat {
    job_uuid: String,
    job_acquisition_token: String,
    #[serde(default)]
    expires_at: Option<String>,
}

impl Client {
    /// `POST /stacks/:key/job-acquisition-tokens` for reserved jobs, each
    /// token to live `lifetime` (1 s to 1 h) at most. A token's expiry is
    /// the sooner of Buildkite's `expires_at` and `lifetime` from now, so
    /// a clock that runs behind Buildkite's does not make it last longer.
    pub async fn issue_job_acquisition_tokens(
        &self,
        key: &str,
        ids: &[String],
        lifetime: Duration,
    ) -> Result<Issued, ApiError> {
        let lifetime = lifetime.clamp(Duration::from_secs(1), MAX_LIFETIME);
        let mut issued = Issued::default();
        for chunk in ids.chunks(1000) {
            let asked = SystemTime::now();
            let raw: RawIssued = self
                .call(
                    Method::POST,
                    &format!("/stacks/{key}/job-acquisition-tokens"),
                    Some(json!({
                        "job_uuids": chunk,
                        "token_lifetime_seconds": lifetime.as_secs(),
                    })),
                )
                .await?;
            let latest = asked + lifetime;
            issued.tokens.extend(
                raw.job_acquisition_tokens
                    .into_iter()
                    .filter(|t| chunk.contains(&t.job_uuid))
                    .map(|t| Jat {
                        expires_at: t
                            .expires_at
                            .as_deref()
                            .and_then(crate::daemon::parse_rfc3339)
                            .map_or(latest, |at| at.min(latest)),
                        job: t.job_uuid,
                        token: Secret::new(t.job_acquisition_token),
                    }),
            );
            issued.not_issued.extend(raw.not_issued);
        }
        Ok(issued)
    }

    /// The token for one reserved job of definition `definition`, or why
    /// there is none.
    pub async fn job_acquisition_token(
        &self,
        key: &str,
        job: &str,
        definition: &str,
        lifetime: Duration,
    ) -> Result<Jat, JatError> {
        match self
            .issue_job_acquisition_tokens(key, &[job.to_string()], lifetime)
            .await
        {
            Ok(issued) => issued
                .tokens
                .into_iter()
                .find(|t| t.job == job)
                .ok_or(JatError::NotIssued),
            Err(e @ ApiError::Transient { .. }) => Err(JatError::Unavailable(e.to_string())),
            Err(ApiError::Permanent {
                status: Some(status @ (403 | 404)),
                message,
            }) => Err(JatError::Refused {
                status,
                message,
                definition: definition.to_string(),
            }),
            Err(e) => Err(JatError::Failed(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests;
