//! Running `estuary admin …` as a process, and curl against the admin API.

use std::{process::Stdio, time::Duration};

use serde_json::Value;

/// What an `estuary admin` run printed.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// stdout as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("{e}: {} / {}", self.stdout, self.stderr))
    }
}

/// Runs `estuary admin ARGS` with `env`, for at most 30 s.
pub async fn estuary_admin(args: &[&str], env: &[(&str, &str)]) -> Run {
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_estuary"))
        .arg("admin")
        .args(args)
        .env_remove("ESTUARY_ADMIN_TOKEN")
        .env_remove("ESTUARY_ADMIN_URL")
        .env_remove("ESTUARY_CONFIG")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("estuary admin");
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("estuary admin did not finish")
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// curl `method url` with an optional bearer token: (status, body).
pub fn curl(method: &str, url: &str, token: Option<&str>) -> (u16, String) {
    let mut cmd = std::process::Command::new("curl");
    cmd.args([
        "-s",
        "--max-time",
        "10",
        "-X",
        method,
        "-w",
        "\n%{http_code}",
    ]);
    if let Some(t) = token {
        cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    let out = cmd.arg(url).output().expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.parse().unwrap(), body.to_owned())
}
