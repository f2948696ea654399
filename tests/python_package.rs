//! The Python package (`clients/python`) as a user gets it: `pip install`ed
//! into a fresh virtual environment, then its pytest suite run from
//! outside the source tree against a real cluster of this build's `rast`.

use std::path::Path;
use std::process::Command;

fn run(command: &mut Command) -> String {
    let output = command.output().expect("spawn");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{command:?} failed:\n{text}");
    text
}

/// The package ships the schema it speaks: the repository's own.
#[test]
fn the_package_schema_is_the_repository_schema() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let shipped = std::fs::read(root.join("clients/python/rast_client/rast.capnp")).unwrap();
    let schema = std::fs::read(root.join("schema/rast.capnp")).unwrap();
    assert!(
        shipped == schema,
        "clients/python/rast_client/rast.capnp differs from schema/rast.capnp: copy it over"
    );
}

#[test]
fn pip_installed_package_passes_its_tests_against_a_cluster() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let work = std::env::temp_dir().join(format!("rast-python-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    let venv = work.join("venv");
    // System site packages: pycapnp and pytest come from scripts/setup.
    run(Command::new("python3")
        .args(["-m", "venv", "--system-site-packages"])
        .arg(&venv));
    let python = venv.join("bin/python");
    run(Command::new(&python)
        .args(["-m", "pip", "install", "-q", "--no-deps"])
        .arg(root.join("clients/python")));
    // From outside the source tree: the installed package is what imports.
    let report = run(Command::new(&python)
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .arg(root.join("clients/python/tests"))
        .current_dir(&work)
        .env("RAST_BIN", env!("CARGO_BIN_EXE_rast")));
    let imported = run(Command::new(&python)
        .args(["-c", "import rast_client; print(rast_client.__file__)"])
        .current_dir(&work));
    assert!(imported.contains("venv"), "imported from {imported}");
    let summary = report.lines().last().unwrap_or_default();
    assert!(
        summary.contains(" passed") && !summary.contains("failed") && !summary.contains("error"),
        "{report}"
    );
    println!("{summary}");
    std::fs::remove_dir_all(&work).unwrap();
}
