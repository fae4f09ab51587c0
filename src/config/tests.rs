//! Unit tests of the config: parsing, defaults, validation messages.

use super::*;

#[test]
fn durations_and_sizes_parse() {
    let cfg = Config::from_toml(
        r#"
        [hls]
        part_target = "250ms"
        segment_target = "2s"
        [cache]
        max_bytes = 67108864
        [streams.cam1]
        passphrase = "0123456789abc"
        "#,
    )
    .unwrap();
    assert_eq!(cfg.hls.part_target, Duration::from_millis(250));
    assert_eq!(cfg.hls.segment_target, Duration::from_secs(2));
    assert_eq!(cfg.cache.max_bytes, 64 * 1024 * 1024);
    assert_eq!(
        cfg.streams["cam1"].passphrase.as_deref(),
        Some("0123456789abc")
    );
}

#[test]
fn shipped_config_is_valid_and_documents_the_defaults() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/estuary.toml");
    let cfg = Config::load(&path).unwrap();
    let d = Config::default();
    assert_eq!(cfg.hls.part_target, d.hls.part_target);
    assert_eq!(cfg.hls.segment_target, d.hls.segment_target);
    assert_eq!(cfg.hls.max_segment(), d.hls.max_segment());
    assert_eq!(cfg.cache.max_bytes, d.cache.max_bytes);
    assert_eq!(cfg.srt.listen, d.srt.listen);
    assert_eq!(cfg.http.idle_timeout, d.http.idle_timeout);
    assert_eq!(cfg.rtmp.enabled, d.rtmp.enabled);
    assert_eq!(cfg.rtmp.listen, d.rtmp.listen);
    assert_eq!(cfg.rtmp.tls_listen, d.rtmp.tls_listen);
    assert_eq!(cfg.rtmp.max_connections, d.rtmp.max_connections);
    assert_eq!(cfg.rtmp.handshake_timeout, d.rtmp.handshake_timeout);
    assert_eq!(cfg.rtmp.idle_timeout, d.rtmp.idle_timeout);
    assert!(cfg.rtmp.tls_cert.is_none() && cfg.rtmp.tls_key.is_none());
    assert_eq!(cfg.interact.history_size, d.interact.history_size);
    assert_eq!(cfg.interact.reactions, d.interact.reactions);
    assert!(cfg.streams.contains_key("demo"));
    assert!(cfg.ladder.passthrough && cfg.ladder.rungs.len() == 5);
    let (u, du) = (&cfg.upstream, &d.upstream);
    assert_eq!(
        (u.idle, u.failover_after, u.request_timeout, u.max_body),
        (du.idle, du.failover_after, du.request_timeout, du.max_body)
    );
    assert_eq!(
        (u.require_secret, u.cleartext_http2, u.origins.len()),
        (du.require_secret, du.cleartext_http2, 0)
    );
    assert_eq!(u.lease, du.lease);
    assert!(u.redis.is_none() && u.secret.is_none() && u.client_cert.is_none());
}

#[test]
fn rtmps_certificate_falls_back_to_the_http_one() {
    let none = Config::from_toml("").unwrap();
    assert!(none.rtmp.tls_files(&none.http).is_none());
    let http = Config::from_toml("[http]\ntls_cert = \"/h.pem\"\ntls_key = \"/h.key\"").unwrap();
    let (c, k) = http.rtmp.tls_files(&http.http).unwrap();
    assert_eq!((c.to_str(), k.to_str()), (Some("/h.pem"), Some("/h.key")));
    let own = Config::from_toml(
        "[rtmp]\ntls_cert = \"/r.pem\"\ntls_key = \"/r.key\"\n[http]\ntls_cert = \"/h.pem\"\ntls_key = \"/h.key\"",
    )
    .unwrap();
    let (c, k) = own.rtmp.tls_files(&own.http).unwrap();
    assert_eq!((c.to_str(), k.to_str()), (Some("/r.pem"), Some("/r.key")));
    let key = Config::from_toml("[streams.s]\nrtmp_key = \"abc-DEF_1.~\"").unwrap();
    assert_eq!(key.streams["s"].rtmp_key.as_deref(), Some("abc-DEF_1.~"));
}

#[test]
fn ladders() {
    let cfg = Config::from_toml(
        r#"
        [ladder]
        passthrough = true
        [[ladder.rungs]]
        name = "720p"
        codec = "h264"
        width = 1280
        height = 720
        max_fps = 30
        bitrate_kbps = 2500
        [[ladder.rungs]]
        name = "hevc540"
        codec = "h265"
        width = 960
        height = 540
        bitrate_kbps = 1200
        preset = "ultrafast"
        [streams.a]
        [streams.b.ladder]
        passthrough = true
        "#,
    )
    .unwrap();
    assert_eq!(cfg.ladder_for("a").rungs.len(), 2);
    assert_eq!(cfg.ladder_for("a").rungs[1].codec, RungCodec::H265);
    assert_eq!(cfg.ladder_for("a").rungs[0].preset, "veryfast");
    assert!(cfg.ladder_for("b").rungs.is_empty());
}

#[test]
fn errors_name_the_key() {
    let e = Config::from_toml("[hls]\npart_target = \"10ms\"").unwrap_err();
    assert!(e.to_string().contains("hls.part_target"), "{e}");
    let e = Config::from_toml("[streams.x]\npassphrase = \"short\"").unwrap_err();
    assert!(e.to_string().contains("streams.x.passphrase"), "{e}");
    // PART-HOLD-BACK under three part targets breaks RFC 8216bis; over a minute is a typo.
    for bad in ["\"500ms\"", "\"2m\""] {
        let e = Config::from_toml(&format!("[hls]\npart_hold_back = {bad}")).unwrap_err();
        assert!(e.to_string().contains("hls.part_hold_back"), "{e}");
    }
    let hold = |toml: &str| Config::from_toml(toml).unwrap().hls.part_hold_back();
    assert_eq!(
        hold("[hls]\npart_hold_back = \"900ms\""),
        Duration::from_millis(900)
    );
    // The default: three parts, never under 0.75 s.
    assert_eq!(hold(""), Duration::from_millis(750));
    assert_eq!(
        hold("[hls]\npart_target = \"100ms\""),
        Duration::from_millis(750)
    );
    assert_eq!(
        hold("[hls]\npart_target = \"500ms\""),
        Duration::from_millis(1500)
    );
    let e = Config::from_toml("[hls]\nbogus = 1").unwrap_err();
    assert!(e.to_string().contains("bogus"), "{e}");
    let e = Config::from_toml("[hls]\npart_target = \"soon\"").unwrap_err();
    assert!(e.to_string().contains("part_target"), "{e}");
    let e = Config::from_toml(
        "[[ladder.rungs]]\nname = \"x\"\ncodec = \"h264\"\nwidth = 640\nheight = 360\nbitrate_kbps = 800\npreset = \"warp\"",
    )
    .unwrap_err();
    assert!(e.to_string().contains("ladder.rungs[0].preset"), "{e}");
    let e = Config::from_toml(
        "[[ladder.rungs]]\nname = \"source\"\ncodec = \"h264\"\nwidth = 640\nheight = 360\nbitrate_kbps = 800",
    )
    .unwrap_err();
    assert!(e.to_string().contains("ladder.rungs[0].name"), "{e}");
    let e = Config::from_toml("[streams.x.ladder]\npassthrough = false").unwrap_err();
    assert!(e.to_string().contains("streams.x.ladder"), "{e}");
    for bad in ["\"english\"", "\"e1\"", "\"en\"\naudio_pid = 257"] {
        let e = Config::from_toml(&format!("[streams.x]\naudio_language = {bad}")).unwrap_err();
        assert!(e.to_string().contains("streams.x.audio_language"), "{e}");
    }
    let e = Config::from_toml("[streams.x]\nrtmp_key = \"a&b\"").unwrap_err();
    assert!(e.to_string().contains("streams.x.rtmp_key"), "{e}");
    let e = Config::from_toml("[rtmp]\ntls_cert = \"/c.pem\"").unwrap_err();
    assert!(e.to_string().contains("rtmp.tls_cert"), "{e}");
    let e = Config::from_toml("[rtmp]\nmax_connections = 0").unwrap_err();
    assert!(e.to_string().contains("rtmp.max_connections"), "{e}");
    let e = Config::from_toml("[rtmp]\nidle_timeout = \"0s\"").unwrap_err();
    assert!(e.to_string().contains("rtmp.idle_timeout"), "{e}");
    let e = Config::from_toml("[streams.\"a b\"]").unwrap_err();
    assert!(e.to_string().contains("streams.a b"), "{e}");
}

#[test]
fn errors_carry_the_key() {
    let key = |text: &str| {
        Config::from_toml(text)
            .unwrap_err()
            .key()
            .map(str::to_owned)
    };
    assert_eq!(
        key("[http]\nlisten = \"0.0.0.0:80\"\n[hls]\npart_target = \"soon\"").as_deref(),
        Some("hls.part_target")
    );
    assert_eq!(key("[hls]\nbogus = 1").as_deref(), Some("hls.bogus"));
    assert_eq!(
        key("allow_unknown_streams = 3").as_deref(),
        Some("allow_unknown_streams")
    );
    assert_eq!(
        key("[streams.x]\npassphrase = \"short\"").as_deref(),
        Some("streams.x.passphrase")
    );
    assert_eq!(key("[streams.x\n").as_deref(), Some("streams.x"));
}

#[test]
fn zero_ingest_timeouts_are_refused() {
    for (toml, key) in [
        ("[srt]\nidle_timeout = \"0s\"", "srt.idle_timeout"),
        ("[srt]\nno_video_timeout = \"0s\"", "srt.no_video_timeout"),
        ("[rtmp]\nidle_timeout = \"0s\"", "rtmp.idle_timeout"),
        ("[http]\nidle_timeout = \"0s\"", "http.idle_timeout"),
    ] {
        let e = Config::from_toml(toml).unwrap_err();
        assert!(e.to_string().contains(key), "{toml}: {e}");
    }
}
