//! `kvmbe-handoff` as a warm VM runs it: its stderr may be a console that
//! cannot be written (a VM without a serial port).

use std::process::{Command, Stdio};

#[test]
fn an_unwritable_stderr_does_not_stop_the_program() {
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .expect("/dev/full");
    // A port that does not exist: the program says so (to a stderr that
    // takes nothing) and ends with its own status, not a panic's 101.
    let status = Command::new(env!("CARGO_BIN_EXE_kvmbe-handoff"))
        .args(["--port", "/nonexistent/org.kvmbe.handoff"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(full)
        .status()
        .expect("running kvmbe-handoff");
    assert_eq!(status.code(), Some(2), "{status:?}");
}
