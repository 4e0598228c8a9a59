//! REST builds listing: `GET /v2/organizations/{org}/builds` and the
//! per-pipeline variant, paged with a `Link` header.

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::query;
use super::render::{message, rest_build, ApiError};
use super::server::AppState;

const PER_PAGE_DEFAULT: u64 = 30;
const PER_PAGE_MAX: u64 = 100;

/// Lists an organization's builds, newest first.
pub async fn list_org_builds(
    State(state): State<Arc<AppState>>,
    Path(org): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    let path = format!("/v2/organizations/{org}/builds");
    list(&state, &org, None, &path, raw.as_deref())
}

/// Lists one pipeline's builds, newest first.
pub async fn list_pipeline_builds(
    State(state): State<Arc<AppState>>,
    Path((org, pipeline)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> Response {
    let path = format!("/v2/organizations/{org}/pipelines/{pipeline}/builds");
    list(&state, &org, Some(&pipeline), &path, raw.as_deref())
}

fn list(
    state: &AppState,
    org: &str,
    pipeline: Option<&str>,
    path: &str,
    raw: Option<&str>,
) -> Response {
    if org != state.config.org {
        return message(StatusCode::NOT_FOUND, "No organization found");
    }
    let pairs = query::parse(raw);
    let page = match positive(&pairs, "page", 1) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let per_page = match positive(&pairs, "per_page", PER_PAGE_DEFAULT) {
        Ok(p) => p.min(PER_PAGE_MAX),
        Err(e) => return e.into_response(),
    };
    let mut wanted = query::all(&pairs, "state[]");
    wanted.extend(query::all(&pairs, "state"));
    let listing = state.read(|store| {
        if let Some(slug) = pipeline {
            if !store.pipelines.contains_key(slug) {
                return None;
            }
        }
        let builds: Vec<_> = store
            .builds
            .iter()
            .rev()
            .filter(|b| pipeline.is_none_or(|slug| b.pipeline_slug == slug))
            .filter(|b| wanted.is_empty() || wanted.contains(&store.build_state(b)))
            .collect();
        let total = builds.len() as u64;
        let skip = usize::try_from((page - 1).saturating_mul(per_page)).unwrap_or(usize::MAX);
        let items: Vec<Value> = builds
            .into_iter()
            .skip(skip)
            .take(per_page as usize)
            .map(|b| rest_build(&state.base_url, store, b, true))
            .collect();
        Some((total, items))
    });
    let Some((total, items)) = listing else {
        return message(StatusCode::NOT_FOUND, "No pipeline found");
    };
    let last_page = total.div_ceil(per_page).max(1);
    let mut response = axum::Json(Value::Array(items)).into_response();
    let link = link_header(&state.base_url, path, &pairs, page, last_page);
    if let Some(value) = link.and_then(|l| HeaderValue::from_str(&l).ok()) {
        response.headers_mut().insert("Link", value);
    }
    response
}

fn positive(pairs: &[(String, String)], key: &str, default: u64) -> Result<u64, ApiError> {
    match query::last(pairs, key) {
        None | Some("") => Ok(default),
        Some(v) => match v.parse::<u64>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("{key} must be a positive integer, got {v:?}"),
            )),
        },
    }
}

/// The `Link` header for `page` of `last_page`, as Buildkite and GitHub write it.
pub fn link_header(
    base: &str,
    path: &str,
    pairs: &[(String, String)],
    page: u64,
    last_page: u64,
) -> Option<String> {
    let url = |p: u64| {
        let mut kept: Vec<(String, String)> =
            pairs.iter().filter(|(k, _)| k != "page").cloned().collect();
        kept.push(("page".to_string(), p.to_string()));
        format!("<{base}{path}?{}>", query::join(&kept))
    };
    let mut links = Vec::new();
    if page > 1 {
        links.push(format!("{}; rel=\"first\"", url(1)));
        links.push(format!("{}; rel=\"prev\"", url(page - 1)));
    }
    if page < last_page {
        links.push(format!("{}; rel=\"next\"", url(page + 1)));
        links.push(format!("{}; rel=\"last\"", url(last_page)));
    }
    (!links.is_empty()).then(|| links.join(", "))
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn middle_pages_link_every_way() {
        let pairs = query::parse(Some("state[]=scheduled&page=2&per_page=3"));
        let link = link_header("http://h", "/b", &pairs, 2, 3).unwrap();
        assert_eq!(
            link,
            "<http://h/b?state%5B%5D=scheduled&per_page=3&page=1>; rel=\"first\", \
             <http://h/b?state%5B%5D=scheduled&per_page=3&page=1>; rel=\"prev\", \
             <http://h/b?state%5B%5D=scheduled&per_page=3&page=3>; rel=\"next\", \
             <http://h/b?state%5B%5D=scheduled&per_page=3&page=3>; rel=\"last\""
        );
        assert_eq!(link_header("http://h", "/b", &[], 1, 1), None);
    }
}
