//! Both SDKs as a new user meets them: GOOG's daily bars replayed with `tickmesh replay`, then
//! read back in a few lines (`clients/python/tests/goog_replayed.py`,
//! `clients/typescript/test/goog_replayed.ts`) equal to the CSV, against `tickmesh up` and
//! against the four-process mesh on PostgreSQL and Redis.

use std::process::Command;

use crate::sdk_typescript::{built_sdk, node};
use crate::support::{
    FourProcesses, Process, VENV_HINT, describe, goog_csv, in_repo, program, run, tickmesh,
};

/// Replays GOOG into the mesh, then reads it with both SDKs; `logs` gives the mesh's logs for
/// a failure's message.
fn replay_then_read_with_both_sdks(
    query: &str,
    ingestion: &str,
    computation: &str,
    logs: impl Fn() -> String,
) {
    let csv = goog_csv();
    let output = run(tickmesh()
        .args(["replay", "--symbol", "GOOG", "--target", ingestion])
        .arg(&csv));
    assert!(
        output.status.success(),
        "replay: {}\n{}",
        describe(&output),
        logs()
    );

    let python = program("python3", VENV_HINT);
    let output = run(Command::new(python)
        .arg(in_repo("clients/python/tests/goog_replayed.py"))
        .args([query, ingestion, computation])
        .arg(&csv));
    assert!(
        output.status.success(),
        "python: {}\n{}",
        describe(&output),
        logs()
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("2148 bars equal"));

    let dir = built_sdk();
    let output = run(Command::new(node())
        .arg(dir.join("dist-test/goog_replayed.js"))
        .args([query, ingestion, computation])
        .arg(&csv));
    assert!(
        output.status.success(),
        "node: {}\n{}",
        describe(&output),
        logs()
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("2148 bars equal"));
}

#[test]
fn both_sdks_read_goog_replayed_into_tickmesh_up() {
    let mesh = Process::start(&["up", "--base-port", "0"], |_| {});
    replay_then_read_with_both_sdks(
        mesh.addr("query"),
        mesh.addr("ingestion"),
        mesh.addr("computation"),
        || mesh.log(),
    );
}

#[test]
fn both_sdks_read_goog_replayed_into_four_processes_on_postgres_and_redis() {
    let pg = tickmesh_testkit::Postgres::start().expect("a throwaway PostgreSQL");
    let redis = tickmesh_testkit::Redis::start().expect("a throwaway Redis");
    let mesh = FourProcesses::start(&pg, &redis);
    replay_then_read_with_both_sdks(
        mesh.query.addr("query"),
        mesh.ingestion.addr("ingestion"),
        mesh.computation.addr("computation"),
        || mesh.logs(),
    );
}
