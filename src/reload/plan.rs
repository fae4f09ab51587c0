//! What a reload may change live, and what needs a restart.
//!
//! A reload diffs the running config against the new file key by key (on their JSON
//! form, so every key is covered without a hand-kept list of fields). A key on
//! [`RESTART_ONLY`] keeps its running value and is reported; every other change is
//! applied. The config put in force is therefore always one consistent whole: never half
//! of a restart-only change.

use serde_json::Value;

use crate::config::Config;

/// Keys (or whole sections) a running node cannot change; a reload keeps their running
/// value and reports them as needing a restart.
///
/// - Listeners and their certificates are bound once: `srt.listen`, `srt.latency` (the
///   listener's SRT option), `rtmp.enabled`, `rtmp.listen`, `rtmp.tls_*`, `http.listen`,
///   `http.tls_*`.
/// - `hls.part_target`, `part_hold_back`, `segment_target`, `max_segment`,
///   `window_segments` are fixed
///   for the life of a stream (a stream outlives its publishers).
/// - `cache.max_bytes`: the cache is sized when built.
/// - `interact.bus` and the room settings fixed when a room opens (reaction list, send
///   queue, chat rate, slow mode, timers).
/// - `[upstream]`: the origin client, its TLS identity and the Redis directory.
/// - `[steering]`: the pathways and their health probes start with the node.
/// - The webhook client and its answer cache (`auth.publish_*`, `auth.play_*`,
///   `auth.hook_*`).
pub const RESTART_ONLY: &[&str] = &[
    "srt.listen",
    "srt.latency",
    "rtmp.enabled",
    "rtmp.listen",
    "rtmp.tls_listen",
    "rtmp.tls_cert",
    "rtmp.tls_key",
    "http.listen",
    "http.tls_cert",
    "http.tls_key",
    "hls.part_target",
    "hls.part_hold_back",
    "hls.segment_target",
    "hls.max_segment",
    "hls.window_segments",
    "cache.max_bytes",
    "interact.bus",
    "interact.reactions",
    "interact.send_queue",
    "interact.chat_rate_per_min",
    "interact.chat_burst",
    "interact.slow_mode",
    "interact.room_idle_timeout",
    "interact.reaction_interval",
    "interact.poll_tally_interval",
    "interact.daterange_keep",
    "upstream",
    "steering",
    "auth.publish_url",
    "auth.publish_timeout",
    "auth.publish_fail_open",
    "auth.play_url",
    "auth.play_timeout",
    "auth.play_fail_open",
    "auth.play_cache_ttl",
    "auth.play_cache_entries",
    "auth.hook_secret",
    "auth.hook_ca_file",
];

/// The outcome of comparing the running config with a new one.
#[derive(Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Plan {
    /// Keys whose new value is applied (dotted; a stream added or removed is
    /// `streams.NAME`).
    pub changed: Vec<String>,
    /// Keys that changed in the file but keep their running value until a restart.
    pub restart_required: Vec<String>,
}

/// Why a new config could not be merged (only if the config types stop round-tripping
/// through JSON, which the tests guard).
#[derive(Debug, thiserror::Error)]
#[error("cannot merge the new config: {0}")]
pub struct MergeError(String);

/// Merges `new` onto `running`: the config to put in force and what changed.
///
/// # Errors
/// [`MergeError`] if a config does not round-trip through JSON.
pub fn merge(running: &Config, new: Config) -> Result<(Config, Plan), MergeError> {
    let to_json = |c: &Config| serde_json::to_value(c).map_err(|e| MergeError(e.to_string()));
    let old = to_json(running)?;
    let mut merged = to_json(&new)?;
    let mut plan = Plan::default();
    let mut diffs = Vec::new();
    diff("", &old, &merged, &mut diffs);
    for key in diffs {
        match RESTART_ONLY.iter().find(|r| covers(r, &key)) {
            Some(restart) => {
                // Put the running value back, for the whole restart-only key.
                let path: Vec<&str> = restart.split('.').collect();
                if let (Some(v), Some(slot)) = (get(&old, &path), get_mut(&mut merged, &path)) {
                    *slot = v.clone();
                }
                plan.restart_required.push(key);
            }
            None => plan.changed.push(key),
        }
    }
    if plan.restart_required.is_empty() {
        // Nothing to put back: keep the parsed value as it is.
        return Ok((new, plan));
    }
    let cfg = serde_json::from_value(merged).map_err(|e| MergeError(e.to_string()))?;
    Ok((cfg, plan))
}

/// Whether restart-only `prefix` covers the dotted `key`.
fn covers(prefix: &str, key: &str) -> bool {
    key == prefix
        || key
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('.'))
}

/// Appends the dotted keys at which `a` and `b` differ: a leaf, an array, or an object
/// entry present on one side only.
fn diff(at: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
    let join = |k: &str| {
        if at.is_empty() {
            k.to_owned()
        } else {
            format!("{at}.{k}")
        }
    };
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                match (x.get(k), y.get(k)) {
                    (Some(p), Some(q)) => diff(&join(k), p, q, out),
                    _ => out.push(join(k)),
                }
            }
        }
        _ if a != b => out.push(at.to_owned()),
        _ => {}
    }
}

fn get<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, k| v.get(k))
}

fn get_mut<'a>(v: &'a mut Value, path: &[&str]) -> Option<&'a mut Value> {
    path.iter().try_fold(v, |v, k| v.get_mut(k))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(text: &str) -> Config {
        Config::from_toml(text).unwrap()
    }

    #[test]
    fn the_shipped_config_round_trips() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/estuary.toml");
        let c = Config::load(&path).unwrap();
        let back: Config = serde_json::from_value(serde_json::to_value(&c).unwrap()).unwrap();
        assert_eq!(
            serde_json::to_value(&back).unwrap(),
            serde_json::to_value(&c).unwrap()
        );
    }

    #[test]
    fn live_keys_apply_and_restart_keys_keep_their_running_value() {
        let running = cfg("[streams.a]\npassphrase = \"0123456789ab\"\n[http]\nlisten = \"127.0.0.1:8080\"\n[hls]\npart_target = \"200ms\"");
        let new = cfg("[streams.a]\npassphrase = \"ba9876543210\"\n[streams.b]\n[http]\nlisten = \"127.0.0.1:9090\"\ncors_origin = \"https://x\"\n[hls]\npart_target = \"300ms\"\n[upstream]\norigins = [\"http://o/live\"]");
        let (merged, plan) = merge(&running, new).unwrap();
        assert_eq!(
            plan.changed,
            ["http.cors_origin", "streams.a.passphrase", "streams.b"]
        );
        assert_eq!(
            plan.restart_required,
            ["hls.part_target", "http.listen", "upstream.origins"]
        );
        assert_eq!(merged.http.listen, running.http.listen);
        assert_eq!(merged.hls.part_target, running.hls.part_target);
        assert!(merged.upstream.origins.is_empty());
        assert_eq!(merged.http.cors_origin, "https://x");
        assert_eq!(
            merged.streams["a"].passphrase.as_deref(),
            Some("ba9876543210")
        );
        assert!(merged.streams.contains_key("b"));
    }

    #[test]
    fn no_change_is_an_empty_plan() {
        let (_, plan) = merge(&cfg("[streams.a]"), cfg("[streams.a]")).unwrap();
        assert_eq!(plan, Plan::default());
        let (_, plan) = merge(&cfg("[streams.a]"), cfg("")).unwrap();
        assert_eq!(plan.changed, ["streams.a"]);
        assert!(covers("upstream", "upstream.secret") && !covers("http.tls", "http.tls_cert"));
    }
}
