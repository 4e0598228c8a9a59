//! Runs the Buildkite API stand-in by hand on 127.0.0.1 and prints its URL
//! and tokens; stop it with Ctrl-C.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use testbed::buildkite::{BuildSpec, Config, JobSpec, StandIn, WebhookAuth, WebhookConfig};

const USAGE: &str = "usage: buildkite-standin [--port N] [--org SLUG] [--jobs N] [--queue KEY]
                         [--webhook-url URL (--webhook-token T | --webhook-secret S)]
  --port N          listen on 127.0.0.1:N (default: a free port)
  --org SLUG        organization slug (default: test-org)
  --jobs N          seed pipeline \"demo\" with one build of N scheduled jobs (default: 0)
  --queue KEY       queue the seeded jobs target (default: default)
  --webhook-url     POST job events there (loopback only)";

fn main() -> ExitCode {
    // Errors go out as one readable chain, without a backtrace.
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("buildkite-standin: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run() -> anyhow::Result<()> {
    let mut config = Config::default();
    let mut jobs = 0usize;
    let mut queue = None;
    let mut hook_url = None;
    let mut hook_auth = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || {
            args.next()
                .with_context(|| format!("{flag} needs a value\n{USAGE}"))
        };
        match flag.as_str() {
            "--port" => {
                let v = value()?;
                config.port = v
                    .parse()
                    .with_context(|| format!("--port {v:?}: give a port number 0-65535"))?;
            }
            "--org" => config.org = value()?,
            "--jobs" => {
                let v = value()?;
                jobs = v
                    .parse()
                    .with_context(|| format!("--jobs {v:?}: give a count"))?;
            }
            "--queue" => queue = Some(value()?),
            "--webhook-url" => hook_url = Some(value()?),
            "--webhook-token" => hook_auth = Some(WebhookAuth::Token(value()?)),
            "--webhook-secret" => hook_auth = Some(WebhookAuth::Secret(value()?)),
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    config.webhook = match (hook_url, hook_auth) {
        (Some(url), Some(auth)) => Some(WebhookConfig { url, auth }),
        (None, None) => None,
        _ => bail!(
            "--webhook-url needs --webhook-token or --webhook-secret, and the other way round"
        ),
    };
    let standin = StandIn::start(config)?;
    if jobs > 0 {
        let rules: Vec<String> = queue.iter().map(|q| format!("queue={q}")).collect();
        standin.add_pipeline("demo")?;
        let specs = (0..jobs)
            .map(|i| JobSpec::new(&rules).step_key(&format!("step-{i}")))
            .collect();
        let build = standin.add_build("demo", BuildSpec::new(specs))?;
        for id in &build.job_ids {
            println!("job           {id}");
        }
    }
    println!("url           {}", standin.url());
    println!("org           {}", standin.org());
    println!("api_token     {}", standin.api_token());
    println!("cluster_token {}", standin.cluster_token());
    println!("agent_token   {}", standin.agent_token());
    println!(
        "try: curl -H 'Authorization: Bearer {}' '{}/v2/organizations/{}/builds?state[]=scheduled'",
        standin.api_token(),
        standin.url(),
        standin.org()
    );
    // Serves until killed.
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
