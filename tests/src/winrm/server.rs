//! HTTP(S) in front of the shells: Basic authentication, the `/wsman`
//! endpoint, and the shell and command table the operations act on.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc::{self, UnboundedReceiver};

use super::ntlm;
use super::power::Phase;
use super::shell::{self, Event, Machine};
use super::soap::{self, Operation, Output};
use super::{Config, Recorded};

/// A command started in a shell.
struct Running {
    events: tokio::sync::Mutex<UnboundedReceiver<Event>>,
    task: tokio::task::JoinHandle<()>,
    /// Its entry in the record.
    index: usize,
}

/// Everything the connections share.
pub(super) struct State {
    pub config: Config,
    pub url: String,
    pub machine: Machine,
    /// Open shells, each with its commands.
    shells: Mutex<HashMap<String, HashMap<String, Arc<Running>>>>,
    pub record: Mutex<Vec<Recorded>>,
    pub timed_out: AtomicUsize,
    pub unauthorized: AtomicUsize,
    pub challenges: AtomicUsize,
    pub dropped: AtomicUsize,
    /// The addresses connections came in on, each once, in order.
    pub local_addrs: Mutex<Vec<std::net::SocketAddr>>,
    /// The address of every connection's peer, in order of arrival.
    pub peers: Mutex<Vec<std::net::SocketAddr>>,
    /// The restarts whose going down has cleared the shells.
    restarts_seen: std::sync::atomic::AtomicU64,
}

impl State {
    pub fn new(config: Config, url: String, machine: Machine) -> State {
        State {
            config,
            url,
            machine,
            shells: Mutex::default(),
            record: Mutex::default(),
            timed_out: AtomicUsize::new(0),
            unauthorized: AtomicUsize::new(0),
            challenges: AtomicUsize::new(0),
            dropped: AtomicUsize::new(0),
            local_addrs: Mutex::default(),
            peers: Mutex::default(),
            restarts_seen: std::sync::atomic::AtomicU64::new(0),
        }
    }

    pub fn open_shells(&self) -> usize {
        self.shells.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether the machine answers now. A restart that has gone down
    /// takes every shell and command with it.
    fn answering(&self) -> bool {
        let (phase, downs) = self.machine.power.phase();
        if self.restarts_seen.swap(downs, Ordering::SeqCst) != downs {
            for (_, commands) in self.shells().drain() {
                for run in commands.values() {
                    run.task.abort();
                }
            }
        }
        if phase == Phase::Down {
            self.dropped.fetch_add(1, Ordering::SeqCst);
            return false;
        }
        true
    }

    fn shells(&self) -> std::sync::MutexGuard<'_, HashMap<String, HashMap<String, Arc<Running>>>> {
        self.shells.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Serves connections from `listener` until the task is dropped.
pub(super) async fn serve(
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    state: Arc<State>,
) {
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        if let Ok(local) = stream.local_addr() {
            let mut seen = state.local_addrs.lock().unwrap_or_else(|e| e.into_inner());
            if !seen.contains(&local) {
                seen.push(local);
            }
        }
        state
            .peers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(peer);
        if !state.answering() {
            drop(stream);
            continue;
        }
        let (state, tls) = (state.clone(), tls.clone());
        tokio::spawn(async move {
            match tls {
                None => connection(stream, state).await,
                Some(acceptor) => {
                    if let Ok(Ok(s)) =
                        tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await
                    {
                        connection(s, state).await;
                    }
                }
            }
        });
    }
}

async fn connection<I>(io: I, state: Arc<State>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let auth = Arc::new(Mutex::new(ntlm::Connection::default()));
    let service = hyper::service::service_fn(move |req| {
        let (state, auth) = (state.clone(), auth.clone());
        async move {
            // A machine gone down mid-connection answers nothing: the
            // connection is dropped.
            if !state.answering() {
                return Err(std::io::Error::other("the machine is restarting"));
            }
            Ok(handle(state, &auth, req).await)
        }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(hyper_util::rt::TokioIo::new(io), service)
        .await;
}

fn reply(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/soap+xml;charset=UTF-8"),
    );
    r
}

fn authorized(config: &Config, req: &Request<Incoming>) -> bool {
    let Some(value) = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some(b64) = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))
    else {
        return false;
    };
    let want = format!("{}:{}", config.username, config.password);
    base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .is_ok_and(|got| got == want.as_bytes())
}

/// A 401 offering `offers` as `WWW-Authenticate` values.
fn unauthorized(offers: &[&str]) -> Response<Full<Bytes>> {
    let mut r = reply(StatusCode::UNAUTHORIZED, String::new());
    for offer in offers {
        if let Ok(v) = hyper::header::HeaderValue::from_str(offer) {
            r.headers_mut().append(hyper::header::WWW_AUTHENTICATE, v);
        }
    }
    r
}

/// The NTLM handshake's answer to a request, or `None` to serve it; a
/// refusal of credentials is counted.
fn ntlm_step(
    state: &State,
    auth: &Mutex<ntlm::Connection>,
    req: &Request<Incoming>,
) -> Option<Response<Full<Bytes>>> {
    let config = &state.config;
    let mut conn = auth.lock().unwrap_or_else(|e| e.into_inner());
    let header = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let step = match header.map(ntlm::token) {
        None if conn.authenticated => ntlm::Step::Accepted,
        // Anonymous: the offer a client starts from.
        None => return Some(unauthorized(&["Negotiate", "NTLM"])),
        Some(Some((scheme, message))) => conn.step(
            scheme,
            &message,
            &config.username,
            &config.password,
            &config.hostname,
        ),
        Some(None) => ntlm::Step::Refused,
    };
    match step {
        ntlm::Step::Accepted => None,
        ntlm::Step::Challenge(value) => {
            state.challenges.fetch_add(1, Ordering::SeqCst);
            Some(unauthorized(&[&value]))
        }
        ntlm::Step::Refused => {
            conn.authenticated = false;
            state.unauthorized.fetch_add(1, Ordering::SeqCst);
            Some(unauthorized(&["Negotiate", "NTLM"]))
        }
    }
}

async fn handle(
    state: Arc<State>,
    auth: &Mutex<ntlm::Connection>,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    if req.uri().path() != "/wsman" {
        return reply(StatusCode::NOT_FOUND, String::new());
    }
    let refusal = if state.config.ntlm {
        ntlm_step(&state, auth, &req)
    } else if authorized(&state.config, &req) {
        None
    } else {
        state.unauthorized.fetch_add(1, Ordering::SeqCst);
        Some(unauthorized(&["Negotiate", "Basic realm=\"WSMAN\""]))
    };
    // The body is read in any case, so the connection carries on.
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return reply(StatusCode::BAD_REQUEST, String::new()),
    };
    if let Some(r) = refusal {
        return r;
    }
    let request = match soap::parse(&String::from_utf8_lossy(&body)) {
        Ok(r) => r,
        Err(e) => return reply(StatusCode::BAD_REQUEST, e.to_string()),
    };
    match operate(&state, &request).await {
        Ok(body) => reply(StatusCode::OK, body),
        Err(fault) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            soap::fault(&request, fault),
        ),
    }
}

async fn operate(state: &Arc<State>, request: &soap::Request) -> Result<String, soap::Fault> {
    let shell_id = || request.shell_id.clone().ok_or(soap::INVALID_SELECTORS);
    match &request.operation {
        Operation::Create if request.resource_uri != soap::CMD_SHELL => {
            Err(soap::ACTION_NOT_SUPPORTED)
        }
        Operation::Create => {
            let id = uuid::Uuid::new_v4().to_string().to_uppercase();
            state.shells().insert(id.clone(), HashMap::new());
            Ok(soap::created(request, &state.url, &id))
        }
        Operation::Delete => {
            let gone = state
                .shells()
                .remove(&shell_id()?)
                .ok_or(soap::INVALID_SELECTORS)?;
            for run in gone.values() {
                run.task.abort();
            }
            Ok(soap::deleted(request))
        }
        Operation::Command { line } => {
            let shell = shell_id()?;
            if !state.shells().contains_key(&shell) {
                return Err(soap::INVALID_SELECTORS);
            }
            let command_id = uuid::Uuid::new_v4().to_string().to_uppercase();
            let index = {
                let mut record = state.record.lock().unwrap_or_else(|e| e.into_inner());
                record.push(Recorded {
                    shell_id: shell.clone(),
                    line: line.clone(),
                    script: shell::encoded_script(line),
                    exit_code: None,
                    signalled: false,
                });
                record.len() - 1
            };
            if let Some(hook) = &state.config.on_command {
                hook(line);
            }
            let (tx, rx) = mpsc::unbounded_channel();
            let (machine, line) = (state.machine.clone(), line.clone());
            let task = tokio::spawn(async move { shell::run(&machine, &line, tx).await });
            let run = Arc::new(Running {
                events: tokio::sync::Mutex::new(rx),
                task,
                index,
            });
            match state.shells().get_mut(&shell) {
                Some(commands) => commands.insert(command_id.clone(), run),
                None => return Err(soap::INVALID_SELECTORS),
            };
            Ok(soap::command_started(request, &command_id))
        }
        Operation::Receive { command_id } => {
            let run = state
                .shells()
                .get(&shell_id()?)
                .and_then(|c| c.get(command_id))
                .cloned()
                .ok_or(soap::INVALID_SELECTORS)?;
            let (output, exit) = receive(&run, state.config.receive_wait).await;
            if output.is_empty() && exit.is_none() {
                state.timed_out.fetch_add(1, Ordering::SeqCst);
                return Err(soap::TIMED_OUT);
            }
            if let Some(code) = exit {
                state.record.lock().unwrap_or_else(|e| e.into_inner())[run.index].exit_code =
                    Some(code);
            }
            Ok(soap::received(request, command_id, &output, exit))
        }
        Operation::Signal { command_id, code } => {
            let run = state
                .shells()
                .get_mut(&shell_id()?)
                .and_then(|c| c.remove(command_id))
                .ok_or(soap::INVALID_SELECTORS)?;
            if code.ends_with("/terminate") || code.ends_with("/ctrl_c") {
                run.task.abort();
                state.record.lock().unwrap_or_else(|e| e.into_inner())[run.index].signalled = true;
            }
            Ok(soap::signalled(request))
        }
        Operation::Other(_) => Err(soap::ACTION_NOT_SUPPORTED),
    }
}

/// Output that is there, waiting up to `wait` for the first of it.
async fn receive(run: &Running, wait: Duration) -> (Vec<Output>, Option<i32>) {
    let mut events = run.events.lock().await;
    let mut output = Vec::new();
    let mut exit = None;
    let mut take = |e: Event, output: &mut Vec<Output>| match e {
        Event::Out(o) => output.push(o),
        Event::Exit(c) => exit = Some(c),
    };
    if let Ok(Some(e)) = tokio::time::timeout(wait, events.recv()).await {
        take(e, &mut output);
        while let Ok(e) = events.try_recv() {
            take(e, &mut output);
        }
    }
    (output, exit)
}
