//! The README's main job (`main-job --json`, what `scripts/quickstart.sh
//! --json` runs) end to end: it exits 0, its summary table lists every
//! job as passed on a named host with both times present and positive,
//! how its VM started and every stage of its start timed (a wait for the
//! wake on vmhost02), one cold job and one from a saved slot on vmhost01, the sleeping
//! host was woken and went back to sleep, the JSON lines say what the
//! table says, and nothing of the run is left: no namespace, no daemon or
//! QEMU, no folder.

use std::process::Command;
use std::time::{Duration, Instant};

use testbed::util::{bin_dir, OutputWithin};

/// One row of the summary table.
#[derive(Debug)]
struct Row {
    job: String,
    host: String,
    to_vm: f64,
    to_agent: f64,
    /// How the job's VM started: `cold`, `warm` or `saved`.
    kind: String,
    /// Seconds per stage of the launcher's breakdown (reserve, wake,
    /// token, start, agent); `None` where it printed `-`.
    stages: Vec<Option<f64>>,
    result: String,
}

fn summary(text: &str) -> Vec<Row> {
    let mut lines = text
        .lines()
        .skip_while(|l| !(l.starts_with("job ") && l.contains("s to VM start")));
    assert!(lines.next().is_some(), "no summary table in:\n{text}");
    lines
        .take_while(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(f.len(), 11, "a summary row has 11 columns: {l:?}");
            let num = |s: &str| {
                s.parse::<f64>()
                    .unwrap_or_else(|_| panic!("{s:?} is not a number of seconds in {l:?}"))
            };
            Row {
                job: f[0].into(),
                host: f[1].into(),
                to_vm: num(f[2]),
                to_agent: num(f[3]),
                kind: f[4].into(),
                stages: f[5..10]
                    .iter()
                    .map(|s| (*s != "-").then(|| num(s)))
                    .collect(),
                result: f[10].into(),
            }
        })
        .collect()
}

/// Checks that the `--json` lines (one object per job, after the table)
/// say what `rows` say.
fn json_agrees(text: &str, rows: &[Row]) {
    let lines: Vec<serde_json::Value> = text
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?} is not JSON: {e}")))
        .collect();
    assert_eq!(lines.len(), rows.len(), "one JSON line per job:\n{text}");
    let close = |v: &serde_json::Value, want: f64, what: &str| {
        let got = v
            .as_f64()
            .unwrap_or_else(|| panic!("{what} is not a number: {v}"));
        assert!(
            (got - want).abs() < 0.051,
            "{what}: {got} in JSON, {want} in the table"
        );
    };
    for (o, r) in lines.iter().zip(rows) {
        assert_eq!(o["job"], r.job.as_str(), "{o}");
        assert_eq!(o["host"], r.host.as_str(), "{o}");
        assert_eq!(o["kind"], r.kind.as_str(), "{o}");
        assert_eq!(o["result"], r.result.as_str(), "{o}");
        close(&o["seconds_to_vm"], r.to_vm, "seconds_to_vm");
        close(&o["seconds_to_agent"], r.to_agent, "seconds_to_agent");
        for (name, v) in ["reserve", "wake", "token", "start", "agent"]
            .iter()
            .zip(&r.stages)
        {
            match v {
                Some(v) => close(&o[*name], *v, name),
                None => assert!(o[*name].is_null(), "{name}: {o}"),
            }
        }
        assert_eq!(
            o.as_object().map(|m| m.len()),
            Some(11),
            "job, host, kind, two times, five stages, result: {o}"
        );
    }
}

#[test]
fn the_main_job_runs_every_job_in_its_own_vm_and_leaves_nothing_behind() {
    let t0 = Instant::now();
    let out = Command::new(bin_dir().join("main-job"))
        .arg("--json")
        .env_remove("BUILDKITE_AGENT_TOKEN")
        .output_within(Duration::from_secs(600))
        .expect("main-job runs (cargo build --workspace --bins first)");
    let wall = t0.elapsed();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let err = String::from_utf8_lossy(&out.stderr);
    eprintln!("{text}{err}\nmain-job took {:.1} s", wall.as_secs_f64());
    assert!(out.status.success(), "main-job failed: {:?}", out.status);

    let rows = summary(&text);
    assert_eq!(
        rows.iter().map(|r| r.job.as_str()).collect::<Vec<_>>(),
        ["job1", "job2", "job3", "job4"]
    );
    json_agrees(&text, &rows);
    for r in &rows {
        assert_eq!(r.result, "passed", "{r:?}");
        assert!(
            r.host == "vmhost01" || r.host == "vmhost02",
            "a row names its host: {r:?}"
        );
        assert!(r.to_vm > 0.0 && r.to_agent > r.to_vm, "{r:?}");
        // Every stage is timed (the VMs have job acquisition tokens), and
        // the agent registers after its VM started.
        assert!(r.stages.iter().all(Option::is_some), "{r:?}");
        assert!(r.stages[4] > Some(0.0), "{r:?}");
        // A listed job is reserved in the same pass, right after the
        // listing (the hosts' probe before it is not the job's wait).
        assert!(r.stages[0] < Some(2.0), "{r:?}");
    }
    // vmhost02 slept: a start there waited for its wake.
    assert!(
        rows.iter()
            .any(|r| r.host == "vmhost02" && r.stages[1] > Some(1.0)),
        "{rows:?}"
    );
    // vmhost01 runs one job cold and, once its saved slot is ready, the
    // last one from the slot, which skips the boot; it takes two VMs at a
    // time (the slot's build among them while it runs), so the others
    // wake vmhost02.
    let kinds = |host: &str| {
        let mut k: Vec<&str> = rows
            .iter()
            .filter(|r| r.host == host)
            .map(|r| r.kind.as_str())
            .collect();
        k.sort();
        k
    };
    assert_eq!(kinds("vmhost01"), ["cold", "saved"], "{rows:?}");
    assert_eq!(kinds("vmhost02"), ["cold", "cold"], "{rows:?}");
    let saved = &rows[3];
    assert_eq!(saved.kind, "saved", "{rows:?}");
    let cold = rows
        .iter()
        .find(|r| r.host == "vmhost01" && r.kind == "cold");
    assert!(
        saved.stages[4] < cold.and_then(|c| c.stages[4]),
        "a slot's clone's agent takes its job sooner than a cold VM's: {rows:?}"
    );
    assert!(text.contains("is ready: job4 scheduled"), "{text}");
    assert!(text.contains("vmhost02 woken by the launcher"), "{text}");
    assert!(text.contains("vmhost02 asleep again"), "{text}");
    assert!(
        text.contains("no job's VM left on vmhost01 or vmhost02"),
        "{text}"
    );
    assert!(
        text.contains("always-on VM 'service': running"),
        "the always-on VM outlives the jobs: {text}"
    );

    // Nothing of the run is left.
    let id = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("run id "))
        .and_then(|l| l.split(':').next())
        .unwrap_or_else(|| panic!("no run id in:\n{text}"))
        .to_string();
    let marker = format!("-{id}-");
    let netns = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let left: Vec<String> = String::from_utf8_lossy(&netns.stdout)
        .lines()
        .filter(|l| l.starts_with("kvmbe-") && l.contains(&marker))
        .map(String::from)
        .collect();
    assert!(left.is_empty(), "namespaces left: {left:?}");
    let folders: Vec<String> = std::fs::read_dir("/tmp")
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            n.starts_with("kvmbe-") && (n.contains(&marker) || n.ends_with(&format!("-{id}")))
        })
        .collect();
    assert!(folders.is_empty(), "folders left in /tmp: {folders:?}");
    // No libvirtd, QEMU, sshd or powernapd of the run (their command lines
    // name the run's folders).
    let procs: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| !testbed::util::is_zombie(*p))
        .filter_map(|p| {
            let cmd = std::fs::read(format!("/proc/{p}/cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            (cmd.contains(&format!("kvmbe-bed-{id}-")) || cmd.contains(&format!("kvmbe-lab-{id}-")))
                .then(|| format!("{p}: {cmd}"))
        })
        .collect();
    assert!(procs.is_empty(), "processes left: {procs:?}");
}
