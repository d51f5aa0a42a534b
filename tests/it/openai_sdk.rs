//! OpenAI's official Python SDK against the example proxy (contract sections 11 and 12):
//! its `client.conversations` and `client.responses` calls, with strict response
//! validation, on both backends.
//!
//! The SDK runs in the Python that `OPENAI_SDK_PYTHON` names, a virtual environment with
//! the pinned `tests/python/requirements.txt` installed; `.ci/run` makes it and sets the
//! variable, so CI always runs this test. Without the variable it says so and passes.

use crate::support::process::Proxy;

/// Runs `tests/python/<script>` against a proxy on `database_url` with the demo model;
/// `false` when no SDK Python is named (the test then says so and passes).
async fn run_script(script: &str, database_url: &str) -> bool {
    let Some(python) = std::env::var_os("OPENAI_SDK_PYTHON") else {
        eprintln!(
            "skipped: OPENAI_SDK_PYTHON names no Python with the openai SDK (.ci/run sets it)"
        );
        return false;
    };
    let proxy = Proxy::start(&["--database-url", database_url], &[]).await;
    let script = format!("{}/tests/python/{script}", env!("CARGO_MANIFEST_DIR"));
    let output = tokio::process::Command::new(&python)
        .arg(&script)
        .arg(proxy.url("/v1"))
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.to_string_lossy()));
    assert!(
        output.status.success(),
        "{script} failed:\n{}\n{}\nproxy log:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        proxy.log()
    );
    true
}

backend_tests! {
    async fn the_official_python_sdk_drives_conversations_and_items_end_to_end(db: TestDb) {
        run_script("openai_sdk.py", &db.url).await;
    }

    async fn the_official_python_sdk_drives_responses_end_to_end(db: TestDb) {
        run_script("openai_sdk_responses.py", &db.url).await;
    }
}
