//! OpenAI's official Python SDK against the example proxy (contract section 11): its
//! `client.conversations` calls, with strict response validation, on both backends.
//!
//! The SDK runs in the Python that `OPENAI_SDK_PYTHON` names, a virtual environment with
//! the pinned `tests/python/requirements.txt` installed; `.ci/run` makes it and sets the
//! variable, so CI always runs this test. Without the variable it says so and passes.

use crate::support::process::Proxy;

backend_tests! {
    async fn the_official_python_sdk_drives_conversations_and_items_end_to_end(db: TestDb) {
        let Some(python) = std::env::var_os("OPENAI_SDK_PYTHON") else {
            eprintln!("skipped: OPENAI_SDK_PYTHON names no Python with the openai SDK (.ci/run sets it)");
            return;
        };
        let proxy = Proxy::start(&["--database-url", &db.url], &[]).await;
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/openai_sdk.py");
        let output = tokio::process::Command::new(&python)
            .arg(script)
            .arg(proxy.url("/v1"))
            .output()
            .await
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.to_string_lossy()));
        assert!(
            output.status.success(),
            "the SDK script failed:\n{}\n{}\nproxy log:\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            proxy.log()
        );
    }
}
