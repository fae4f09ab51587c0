//! hls.js in Debian's Chromium, driven by playwright-core (`web/tests/latency.mjs`).

use std::{path::PathBuf, time::Duration};

/// `web/`, after checking that `npm ci` ran there (playwright-core, hls.js): a missing
/// prerequisite is a failure, not a skip. Also the config lines that serve the player
/// page and hls.js from it.
pub fn web_pages() -> (PathBuf, String) {
    let web = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("web");
    for m in ["playwright-core/package.json", "hls.js/dist/hls.min.js"] {
        assert!(
            web.join("node_modules").join(m).exists(),
            "web/node_modules/{m} is missing: run `npm ci` in web/ (scripts/setup.sh --test)"
        );
    }
    let pages = format!(
        "http.web_root = {:?}\nhttp.hlsjs = {:?}\n",
        web.display().to_string(),
        web.join("node_modules/hls.js/dist/hls.min.js")
            .display()
            .to_string()
    );
    (web, pages)
}

/// Plays `url` (a player page) for `secs` after `settle` seconds and returns the
/// script's RESULT object (see `web/tests/latency.mjs`); fails when the script does.
pub async fn play(url: &str, secs: u32, settle: u32, label: &str) -> serde_json::Value {
    let (web, _) = web_pages();
    let out = tokio::time::timeout(
        Duration::from_secs(150),
        tokio::process::Command::new("node")
            .arg(web.join("tests/latency.mjs"))
            .current_dir(&web)
            .args(["--url", url])
            .args(["--secs", &secs.to_string(), "--settle", &settle.to_string()])
            .args(["--label", label])
            .output(),
    )
    .await
    .expect("latency.mjs did not finish")
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result = text
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .unwrap_or_else(|| panic!("no RESULT: {text}"));
    println!("{result}");
    serde_json::from_str(result).unwrap()
}

/// hls.js played `v` (a [`play`] result) smoothly, with parts: no fatal error, no stall,
/// at least `min_parts` parts loaded, at about real speed.
pub fn assert_played_smoothly(v: &serde_json::Value, min_parts: u64) {
    assert_eq!(v["fatal_errors"], 0, "{v}");
    assert_eq!(v["stalls"], 0, "{v}");
    assert!(v["parts_loaded"].as_u64().unwrap() >= min_parts, "{v}");
    let rate = v["playback_rate_ok"].as_f64().unwrap();
    assert!((0.8..1.3).contains(&rate), "{v}");
}
