//! The status page served at `/` next to `/metrics`: plain HTML that
//! refreshes itself, for people who run no Grafana. It shows each host,
//! each job followed now with the stage it reached, and the last starts
//! as bars of their stages to one scale.

use std::fmt::Write;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::hosts::HostRt;
use crate::schedule::{HostView, Power};
use crate::stages::{Journal, Kind, Record, Stage};

/// How often the page reloads itself (seconds).
pub const REFRESH_SECS: u32 = 5;

/// How many jobs in flight the page lists at most (the furthest along).
pub const MAX_LISTED: usize = 200;

/// Where the page reads the launcher's state from.
#[derive(Clone)]
pub struct Status {
    /// The hosts of the config.
    pub hosts: Vec<Arc<HostRt>>,
    /// The jobs' stages.
    pub journal: Arc<Journal>,
}

/// A host as the page shows it.
#[derive(Debug, Clone)]
pub struct HostLine {
    /// Its name in the config.
    pub name: String,
    /// Its state and counts (launches under way not included).
    pub view: HostView,
}

impl Status {
    /// The page as of now.
    pub fn render(&self) -> String {
        let hosts: Vec<HostLine> = self
            .hosts
            .iter()
            .map(|h| HostLine {
                name: h.def.name.clone(),
                view: h.view(0, 0),
            })
            .collect();
        page(
            &hosts,
            &self.journal.open(),
            &self.journal.recent(),
            Instant::now(),
            SystemTime::now(),
        )
    }
}

/// Escapes text for HTML content and quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The power state's word on the page, and why for the states that say.
fn power(p: &Power) -> (&'static str, Option<&str>) {
    match p {
        Power::Awake => ("awake", None),
        Power::Asleep => ("asleep", None),
        Power::Waking => ("waking", None),
        Power::Failing(why) => ("failing", Some(why)),
        Power::Unusable(why) => ("unusable", Some(why)),
    }
}

fn mib(kib: u64) -> String {
    format!("{} MiB", kib / 1024)
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// `HH:MM:SS` UTC of `t`.
fn clock(t: SystemTime) -> String {
    let s = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
        % 86_400;
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

const STYLE: &str = "body{font-family:sans-serif;margin:1.5em;color:#222}\
table{border-collapse:collapse;margin-bottom:1.5em}\
th,td{text-align:left;padding:.2em .8em;border-bottom:1px solid #ddd}\
td.num{text-align:right;white-space:nowrap}\
.awake{color:#176a1d}.asleep{color:#666}.waking{color:#a66300}.failing,.unusable{color:#b00020}\
.bar{display:flex;width:30em;height:1em;background:#f3f3f3}\
.bar span{display:block;height:100%}\
.s-reserve{background:#9e9e9e}.s-wake{background:#f0a030}.s-token{background:#8e6bbf}\
.s-start{background:#3f7fd0}.s-agent{background:#3aa655}\
.key span{display:inline-block;width:1em;height:1em;margin:0 .3em 0 1em;vertical-align:middle}";

/// The page for `hosts`, the jobs followed now (`open`) and the `recent`
/// starts (newest first), as of `now` (wall clock `wall`).
pub fn page(
    hosts: &[HostLine],
    open: &[Record],
    recent: &[Record],
    now: Instant,
    wall: SystemTime,
) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_SECS}\">\
         <title>buildkite-agent-launcher</title><style>{STYLE}</style></head>\n<body>\n\
         <h1>buildkite-agent-launcher</h1>\n<p>As of {} UTC; this page reloads every {REFRESH_SECS} s. \
         Counters and histograms are at <a href=\"/metrics\">/metrics</a>.</p>\n",
        clock(wall)
    );

    s.push_str("<h2>Hosts</h2>\n<table id=\"hosts\"><tr><th>host</th><th>state</th><th>VMs</th><th>memory in use</th></tr>\n");
    for h in hosts {
        let (word, why) = power(&h.view.power);
        let v = &h.view;
        let vms = match v.max_vms {
            Some(m) => format!("{} of {m}", v.vms),
            None => v.vms.to_string(),
        };
        let mem = match v.limit_kib {
            u64::MAX => mib(v.used_kib),
            l => format!("{} of {}", mib(v.used_kib), mib(l)),
        };
        let _ = writeln!(
            s,
            "<tr class=\"host\" data-host=\"{n}\" data-power=\"{word}\" data-vms=\"{vms_n}\">\
             <td>{n}</td><td class=\"{word}\">{word}{why}</td><td class=\"num\">{vms}</td><td class=\"num\">{mem}</td></tr>",
            n = esc(&h.name),
            vms_n = v.vms,
            why = why.map(|w| format!(": {}", esc(w))).unwrap_or_default(),
        );
    }
    s.push_str("</table>\n");

    let _ = writeln!(
        s,
        "<h2>Jobs in flight ({})</h2>\n<table id=\"inflight\"><tr><th>job</th><th>definition</th><th>host</th><th>stage reached</th><th>for</th><th>since seen</th></tr>",
        open.len()
    );
    if open.is_empty() {
        s.push_str("<tr><td colspan=\"6\">none</td></tr>\n");
    }
    for r in open.iter().take(MAX_LISTED) {
        let stage = r.reached();
        let _ = writeln!(
            s,
            "<tr class=\"job\" data-job=\"{j}\" data-stage=\"{st}\"><td>{j}</td><td>{d}</td><td>{h}</td>\
             <td>{st}{woke}</td><td class=\"num\">{for_}</td><td class=\"num\">{total}</td></tr>",
            j = esc(&r.job),
            d = esc(r.definition.as_deref().unwrap_or("-")),
            h = esc(r.host.as_deref().unwrap_or("-")),
            st = stage.name(),
            woke = woke(r),
            for_ = secs(now.saturating_duration_since(r.reached_at())),
            total = secs(now.saturating_duration_since(first(r))),
        );
    }
    if open.len() > MAX_LISTED {
        let _ = writeln!(
            s,
            "<tr><td colspan=\"6\">and {} more</td></tr>",
            open.len() - MAX_LISTED
        );
    }
    s.push_str("</table>\n");

    let _ = write!(
        s,
        "<h2>Last starts ({})</h2>\n<p class=\"key\">",
        recent.len()
    );
    for st in &Stage::ALL[1..] {
        let _ = write!(s, "<span class=\"s-{0}\"></span>{0}", st.span());
    }
    s.push_str("</p>\n<table id=\"recent\"><tr><th>seen</th><th>job</th><th>definition</th><th>host</th><th>kind</th><th>seen to agent</th><th>stages</th></tr>\n");
    // One scale for every bar: the longest start fills its bar.
    let longest = recent
        .iter()
        .map(Record::total)
        .max()
        .unwrap_or_default()
        .as_secs_f64();
    for r in recent {
        let mut bar = String::new();
        let mut words = Vec::new();
        for (st, d) in r.spans() {
            let pct = if longest > 0.0 {
                100.0 * d.as_secs_f64() / longest
            } else {
                0.0
            };
            let _ = write!(
                bar,
                "<span class=\"s-{n}\" data-stage=\"{n}\" data-seconds=\"{v:.3}\" style=\"width:{pct:.2}%\" title=\"{n} {t}\"></span>",
                n = st.span(),
                v = d.as_secs_f64(),
                t = secs(d),
            );
            words.push(format!("{} {}", st.span(), secs(d)));
        }
        let _ = writeln!(
            s,
            "<tr class=\"start\" data-job=\"{j}\" data-host=\"{h}\" data-seconds=\"{tv:.3}\" data-kind=\"{k}\"><td>{seen}</td><td>{j}</td><td>{d}</td><td>{h}</td>\
             <td>{k}</td><td class=\"num\">{t}</td><td><div class=\"bar\" title=\"{w}\">{bar}</div></td></tr>",
            seen = clock(r.seen_at),
            j = esc(&r.job),
            d = esc(r.definition.as_deref().unwrap_or("-")),
            h = esc(r.host.as_deref().unwrap_or("-")),
            k = r.kind.map_or("-", Kind::name),
            tv = r.total().as_secs_f64(),
            t = secs(r.total()),
            w = esc(&words.join(", ")),
        );
    }
    if recent.is_empty() {
        s.push_str("<tr><td colspan=\"7\">none yet</td></tr>\n");
    }
    s.push_str("</table>\n</body></html>\n");
    s
}

/// When `r` was seen.
fn first(r: &Record) -> Instant {
    r.reached_at() - r.total()
}

/// `(woken in 5.0 s)` after the stage when the job's host had to be woken.
fn woke(r: &Record) -> String {
    match r.wake {
        Some(d) if r.reached() >= Stage::Awake => format!(" (host woken in {})", secs(d)),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stages::Via;

    fn host(name: &str, power: Power, vms: u32, max: Option<u32>) -> HostLine {
        HostLine {
            name: name.into(),
            view: HostView {
                power,
                used_kib: 768 * 1024,
                limit_kib: 2048 * 1024,
                vms,
                max_vms: max,
            },
        }
    }

    #[test]
    fn the_page_shows_hosts_jobs_and_starts_with_every_value_escaped() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut waiting = Record::new("<job&1>", Via::Listing, t0);
        waiting.mark(Stage::Reserved, t0 + ms(100));
        waiting.definition = Some("lin\"ux".into());
        waiting.host = Some("<b>h2</b>".into());
        let mut done = Record::new("j2", Via::Webhook, t0);
        done.definition = Some("linux".into());
        done.host = Some("vmhost02".into());
        done.wake = Some(ms(5_000));
        done.mark(Stage::Reserved, t0);
        done.mark(Stage::Awake, t0 + ms(5_000));
        done.mark(Stage::Started, t0 + ms(5_500));
        done.mark(Stage::Agent, t0 + ms(10_000));
        let mut short = done.clone();
        short.job = "j3".into();
        short.kind = Some(Kind::Warm);
        short.mark(Stage::Agent, t0 + ms(7_500));
        let mut restored = short.clone();
        restored.job = "j4".into();
        restored.kind = Some(Kind::Saved);
        let html = page(
            &[
                host("vmhost01", Power::Awake, 1, Some(1)),
                host("<b>h2</b>", Power::Failing("a <script>".into()), 0, None),
            ],
            &[waiting],
            &[done, short, restored],
            t0 + ms(2_100),
            SystemTime::UNIX_EPOCH + Duration::from_secs(3 * 3600 + 4 * 60 + 5),
        );
        assert!(html.contains("<meta http-equiv=\"refresh\" content=\"5\">"));
        assert!(html.contains("As of 03:04:05 UTC"));
        assert!(!html.contains("<b>") && !html.contains("<script>") && !html.contains("<job"));
        assert!(html.contains("data-host=\"vmhost01\" data-power=\"awake\" data-vms=\"1\""));
        assert!(html
            .contains("<td class=\"num\">1 of 1</td><td class=\"num\">768 MiB of 2048 MiB</td>"));
        assert!(html.contains("data-host=\"&lt;b&gt;h2&lt;/b&gt;\" data-power=\"failing\""));
        assert!(html.contains("failing: a &lt;script&gt;"));
        assert!(html.contains(
            "data-job=\"&lt;job&amp;1&gt;\" data-stage=\"reserved\"><td>&lt;job&amp;1&gt;</td><td>lin&quot;ux</td>"
        ));
        // Reserved 2.0 s ago, seen 2.1 s ago.
        assert!(html.contains("<td class=\"num\">2.0 s</td><td class=\"num\">2.1 s</td>"));
        // Bars share one scale: the 10 s start's wake fills half its bar,
        // the 7.5 s start's agent stage a fifth.
        assert!(html.contains("data-stage=\"wake\" data-seconds=\"5.000\" style=\"width:50.00%\""));
        assert!(html.contains("data-kind=\"warm\"><td>"), "{html}");
        assert!(html.contains("data-kind=\"saved\"><td>"), "{html}");
        assert!(html.contains("data-kind=\"-\"><td>"), "{html}");
        assert!(html.contains("data-stage=\"agent\" data-seconds=\"2.000\" style=\"width:20.00%\""));
        assert!(html.contains("data-stage=\"agent\" data-seconds=\"4.500\" style=\"width:45.00%\""));
        assert!(html.contains("title=\"reserve 0.0 s, wake 5.0 s, start 0.5 s, agent 4.5 s\""));
        assert!(html.find("data-job=\"j2\"").unwrap() < html.find("data-job=\"j3\"").unwrap());
    }

    #[test]
    fn an_idle_launcher_says_so() {
        let html = page(&[], &[], &[], Instant::now(), SystemTime::now());
        assert!(html.contains("Jobs in flight (0)"));
        assert!(html.contains("none yet"));
    }
}
