//! The TypeScript SDK (`clients/typescript`, `@tickmesh/client`) as a Node user runs it: its
//! `node --test` suite against `tickmesh up` (GOOG's daily bars through `ingestCandles` and back
//! through `candles` equal to the CSV, typed errors, retries from the shipped service config,
//! indicators equal to TA-Lib's), and a live stream that survives a restart of the mesh (the
//! same scenario as the Python SDK's, `sdk_python::stream_survives_a_restart`). The
//! package is compiled with its own `tsc` first, which type-checks it and its tests.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use crate::support::{
    Process, against_mesh, describe, in_repo, program, readme_blocks, run, scratch_file,
};

const HINT: &str = "clients/typescript has no node_modules: run scripts/test.sh --install-only (or `npm ci` in clients/typescript)";

pub fn node() -> PathBuf {
    program(
        "node",
        "install Node.js 18+ with `apt-get install nodejs npm`",
    )
}

/// `clients/typescript` compiled (`dist/` and `dist-test/`) once per test run, or a panic with
/// tsc's errors. Every test here runs the compiled JavaScript.
pub fn built_sdk() -> PathBuf {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let dir = in_repo("clients/typescript");
    let built = BUILT.get_or_init(|| {
        let tsc = dir.join("node_modules/typescript/bin/tsc");
        if !tsc.exists() {
            return Err(HINT.to_owned());
        }
        for config in ["tsconfig.json", "tsconfig.test.json"] {
            let output = run(Command::new(node())
                .arg(&tsc)
                .args(["-p", config])
                .current_dir(&dir));
            if !output.status.success() {
                return Err(format!("tsc -p {config}: {}", describe(&output)));
            }
        }
        Ok(())
    });
    if let Err(e) = built {
        panic!("{e}");
    }
    dir
}

/// The JSON a reference script of this directory prints (TA-Lib's or pandas' values on GOOG),
/// as a file for the Node tests.
fn reference(script: &str) -> PathBuf {
    let python = program("python3", crate::support::VENV_HINT);
    let output =
        run(Command::new(python).arg(in_repo(&format!("services/tickmesh/tests/it/{script}"))));
    assert!(output.status.success(), "{script}: {}", describe(&output));
    let path = scratch_file(script);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, &output.stdout).unwrap();
    path
}

#[test]
fn typescript_sdk_suite_passes_against_tickmesh_up() {
    let dir = built_sdk();
    let talib = reference("talib_goog.py");
    let resampled = reference("pandas_goog_resampled.py");
    let mesh = Process::start(&["up", "--base-port", "0"], |_| {});
    let mut suite = Command::new(node());
    suite
        .args(["--test", "--test-concurrency=1", "dist-test/live.test.js"])
        .current_dir(&dir)
        .env("TALIB_JSON", &talib)
        .env("RESAMPLED_JSON", &resampled);
    let output = run(against_mesh(&mut suite, &mesh));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "node --test clients/typescript/dist-test/live.test.js: {}\n--- mesh log\n{}",
        describe(&output),
        mesh.log()
    );
    // Every test ran and passed: none skipped, cancelled or left as todo.
    for want in [
        "# pass 15",
        "# fail 0",
        "# cancelled 0",
        "# skipped 0",
        "# todo 0",
    ] {
        assert!(stdout.contains(want), "{want:?} missing from:\n{stdout}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typescript_stream_survives_a_restart_of_the_mesh_without_gaps_or_duplicates() {
    let dir = built_sdk();
    crate::sdk_python::stream_survives_a_restart(|| {
        let mut command = Command::new(node());
        command.arg(dir.join("dist-test/stream_resume.js"));
        command
    })
    .await;
}

/// Every ts block of clients/typescript/README.md, run by test/readme.test.ts in order, as one
/// module type-checked by the package's tsc, against `tickmesh up` on an empty store. The blocks
/// use the default addresses (`connect("127.0.0.1:7404")` alone, ingestion and computation
/// found by the README's port rule), so this mesh runs on consecutive ports from a free base
/// port, not `--base-port 0`: the rule is exercised for real and the test only swaps the
/// default base for the free one (as `sdk_python::python_readme_blocks_run_against_tickmesh_up`).
/// The README's browser block (`connectWeb()`, the page's origin) runs on Node's fetch against
/// the mesh's gRPC-Web endpoint (the dashboard's address, the port before the base port).
#[test]
fn typescript_readme_blocks_run_against_tickmesh_up() {
    let dir = built_sdk();
    let base = crate::sdk_python::free_base_port().to_string();
    let mesh = Process::start(&["up", "--base-port", &base], |_| {});
    let mut command = Command::new(node());
    command
        .args(["--test", "--test-concurrency=1", "dist-test/readme.test.js"])
        .current_dir(&dir)
        .env("TICKMESH_WEB", mesh.addr("web"));
    let output = run(against_mesh(&mut command, &mesh));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "node --test clients/typescript/dist-test/readme.test.js: {}\n--- mesh log\n{}",
        describe(&output),
        mesh.log()
    );
    // Counted here from the README itself, not from what node --test ran: one test per ts
    // block, plus the file's two checks (every fence labelled; every block ran), none skipped.
    let blocks = readme_blocks("clients/typescript/README.md", "ts");
    let passed = format!("# pass {}", blocks + 2);
    for want in [
        passed.as_str(),
        "# fail 0",
        "# cancelled 0",
        "# skipped 0",
        "# todo 0",
    ] {
        assert!(
            stdout.lines().any(|line| line == want),
            "{want:?} missing ({blocks} README blocks) from:\n{stdout}"
        );
    }
    let last = format!("ok {blocks} - block {blocks:02}, README.md line ");
    assert!(
        stdout
            .lines()
            .any(|line| line.trim_start().starts_with(&last)),
        "{last:?} missing from:\n{stdout}"
    );
}
