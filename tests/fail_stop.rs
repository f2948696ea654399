//! Fail-stop: with the hook a node installs, a panic on any thread aborts
//! the whole process, while a panic inside `contain` (the key-value apply)
//! is caught and the process goes on. Each case runs as a child process
//! (this test binary again, with `RAST_FAIL_STOP_CHILD` naming the case).

use std::process::Command;

const CHILD_VARIABLE: &str = "RAST_FAIL_STOP_CHILD";

/// The child: installs the hook and panics as its case says; exits 0 if
/// it is still alive afterwards.
#[test]
fn fail_stop_child() {
    let Ok(case) = std::env::var(CHILD_VARIABLE) else {
        return;
    };
    rast::fail_stop::abort_on_panic();
    match case.as_str() {
        "thread" => {
            // A core's thread panics; the process must not outlive it.
            let _ = std::thread::spawn(|| panic!("a core's thread panics")).join();
        }
        "contained" => {
            let caught = rast::fail_stop::contain(|| panic!("an apply panics"));
            assert!(caught.is_err());
            assert!(!rast::fail_stop::contained());
        }
        other => panic!("unknown case {other}"),
    }
    std::process::exit(0);
}

fn run(case: &str) -> std::process::ExitStatus {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "fail_stop_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_VARIABLE, case)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap()
}

/// A panic on a thread of its own aborts the whole process (SIGABRT).
#[test]
fn a_panic_on_any_thread_aborts_the_process() {
    use std::os::unix::process::ExitStatusExt;
    let status = run("thread");
    assert_eq!(
        status.signal(),
        Some(nix::libc::SIGABRT),
        "the process outlived its panicking thread: {status}"
    );
}

/// A panic inside `contain` is caught; the process goes on.
#[test]
fn a_contained_panic_does_not_stop_the_process() {
    let status = run("contained");
    assert!(status.success(), "{status}");
}
