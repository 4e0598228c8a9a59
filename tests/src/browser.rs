//! Debian's headless Chromium (`scripts/setup.sh --test` installs it),
//! run inside a test namespace so that the pages it loads reach only that
//! namespace's addresses, and a small reader of the DOM it prints.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};

use crate::netns::Netns;
use crate::util::{OutputWithin, COMMAND_LIMIT};

/// Runs chromium in `ns` on `url` with `extra` arguments; its profile
/// lives in a folder removed afterwards. Returns what it printed.
fn chromium(ns: &Netns, url: &str, extra: &[&str]) -> Result<String> {
    let profile = tempfile::tempdir()?;
    let out = ns
        .cmd("chromium")
        .args(["--headless", "--no-sandbox", "--disable-gpu"])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(["--no-first-run", "--disable-extensions", "--disable-sync"])
        .args(extra)
        .arg(url)
        .output_within(COMMAND_LIMIT)
        .context("running chromium (install it: scripts/setup.sh --test)")?;
    anyhow::ensure!(
        out.status.success(),
        "chromium on {url}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The DOM of `url` once loaded, as the browser serialises it.
pub fn dump_dom(ns: &Netns, url: &str) -> Result<String> {
    chromium(ns, url, &["--dump-dom"])
}

/// Saves a screenshot of `url` (`width` x `height`) as PNG at `to`.
pub fn screenshot(ns: &Netns, url: &str, to: &Path, width: u32, height: u32) -> Result<()> {
    chromium(
        ns,
        url,
        &[
            &format!("--screenshot={}", to.display()),
            &format!("--window-size={width},{height}"),
            "--hide-scrollbars",
        ],
    )?;
    anyhow::ensure!(to.exists(), "chromium wrote no {}", to.display());
    Ok(())
}

/// The attributes of every `<tag ...>` in `dom`, in document order
/// (entities in values decoded).
pub fn tags(dom: &str, tag: &str) -> Vec<BTreeMap<String, String>> {
    let open = format!("<{tag} ");
    let mut out = Vec::new();
    let mut rest = dom;
    while let Some(i) = rest.find(&open) {
        rest = &rest[i + open.len()..];
        let Some(end) = rest.find('>') else { break };
        out.push(attributes(&rest[..end]));
    }
    out
}

/// [`tags`] whose `class` is `class`.
pub fn elements(dom: &str, tag: &str, class: &str) -> Vec<BTreeMap<String, String>> {
    tags(dom, tag)
        .into_iter()
        .filter(|a| a.get("class").map(String::as_str) == Some(class))
        .collect()
}

/// The text of the elements between `<tag ... class="class" ...>` and
/// its closing tag: its cells' text joined by `|`.
pub fn texts(dom: &str, tag: &str, class: &str) -> Vec<String> {
    let open = format!("<{tag} ");
    let close = format!("</{tag}>");
    let mut out = Vec::new();
    let mut rest = dom;
    while let Some(i) = rest.find(&open) {
        rest = &rest[i + open.len()..];
        let Some(end) = rest.find('>') else { break };
        if attributes(&rest[..end]).get("class").map(String::as_str) != Some(class) {
            continue;
        }
        let body = &rest[end + 1..];
        let body = &body[..body.find(&close).unwrap_or(body.len())];
        out.push(cells(body).join("|"));
    }
    out
}

/// The text of each `<td>` or `<th>` in `body`, tags removed, entities decoded.
fn cells(body: &str) -> Vec<String> {
    body.split("<td")
        .flat_map(|p| p.split("<th"))
        .skip(1)
        .map(|cell| {
            let cell = &cell[cell.find('>').map_or(0, |i| i + 1)..];
            let mut text = String::new();
            let mut in_tag = false;
            for c in cell.chars() {
                match c {
                    '<' => in_tag = true,
                    '>' => in_tag = false,
                    c if !in_tag => text.push(c),
                    _ => {}
                }
            }
            decode(&text)
        })
        .collect()
}

fn attributes(tag: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = tag.trim();
    while let Some(eq) = rest.find("=\"") {
        let name = rest[..eq].trim().to_string();
        let after = &rest[eq + 2..];
        let Some(q) = after.find('"') else { break };
        out.insert(name, decode(&after[..q]));
        rest = &after[q + 1..];
    }
    out
}

fn decode(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&nbsp;", "\u{a0}")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elements_and_their_text_are_read_by_class() {
        let dom = r#"<table><tr class="job" data-job="a&amp;b" data-stage="started"><td>a&amp;b</td><td>x</td></tr><tr class="other" data-job="c"></tr></table>"#;
        let rows = elements(dom, "tr", "job");
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0]["data-job"], "a&b");
        assert_eq!(rows[0]["data-stage"], "started");
        assert_eq!(texts(dom, "tr", "job"), vec!["a&b|x"]);
    }
}
