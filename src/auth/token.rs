//! Akamai EdgeAuth (Auth Token 2.0) tokens, HMAC-SHA256.
//!
//! A token is `~`-separated `name=value` fields ending in `hmac=<hex>`. Akamai's
//! generators write them in this order: `ip`, `st`, `exp`, `acl` (or nothing for a URL
//! token), `id`, `data`, then `hmac`:
//!
//! ```text
//! [ip=IP~][st=START~]exp=END~acl=/live/NAME/*[~id=SESSION][~data=PAYLOAD]~hmac=HEX
//! ```
//!
//! The HMAC covers the token's own text before `~hmac=` (so any field order a
//! generator chose verifies), followed by `~url=PATH` for a URL token (one without
//! `acl`) and `~salt=SALT` when a salt is configured; the key is the hex-decoded
//! `playback_key`. `acl` holds one or more path patterns separated by `!`, where `*`
//! matches any run of characters (`/` included) and `?` exactly one. `st` and `exp` are
//! Unix seconds: a token is valid from `st` (inclusive) until `exp` (exclusive).

use std::net::IpAddr;

use ring::hmac;

/// Longest token accepted, in bytes.
pub const MAX_TOKEN_LEN: usize = 4096;

/// Why a request is refused. [`Refusal::code`] is the stable code in the JSON answer
/// and the `reason` label of `estuary_playback_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The stream is signed and the request carries no token.
    Missing,
    /// The token is not `name=value~…~hmac=HEX`, or has an unknown or repeated field.
    Malformed,
    /// The HMAC does not match: a wrong key or a changed field.
    BadSignature,
    /// `exp` has passed.
    Expired,
    /// `st` is still ahead.
    NotYetValid,
    /// The request path matches none of the `acl` patterns (or not the `url`).
    OutsideAcl,
    /// The token is bound to another client address.
    IpMismatch,
    /// The play webhook said no.
    Denied,
    /// The play webhook failed or timed out, and `play_fail_open` is false.
    HookFailed,
}

impl Refusal {
    /// Stable code.
    pub fn code(self) -> &'static str {
        match self {
            Refusal::Missing => "token_missing",
            Refusal::Malformed => "token_malformed",
            Refusal::BadSignature => "bad_signature",
            Refusal::Expired => "expired",
            Refusal::NotYetValid => "not_yet_valid",
            Refusal::OutsideAcl => "outside_acl",
            Refusal::IpMismatch => "ip_mismatch",
            Refusal::Denied => "denied",
            Refusal::HookFailed => "hook_failed",
        }
    }

    /// A sentence for the viewer.
    pub fn message(self) -> &'static str {
        match self {
            Refusal::Missing => "this stream needs a playback token",
            Refusal::Malformed => "the playback token is malformed",
            Refusal::BadSignature => "the playback token's signature does not match",
            Refusal::Expired => "the playback token has expired",
            Refusal::NotYetValid => "the playback token is not valid yet",
            Refusal::OutsideAcl => "the playback token does not cover this path",
            Refusal::IpMismatch => "the playback token is bound to another address",
            Refusal::Denied => "playback was refused",
            Refusal::HookFailed => "playback could not be authorised right now",
        }
    }
}

/// The fields of a verified token that matter after the check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// `id`: the session id, if any.
    pub id: Option<String>,
    /// `exp`.
    pub exp: u64,
}

/// What a new token says.
#[derive(Debug, Clone, Default)]
pub struct Grant {
    /// `acl` patterns (joined with `!`).
    pub acl: Vec<String>,
    /// `st`.
    pub start: Option<u64>,
    /// `exp`.
    pub exp: u64,
    /// `ip`.
    pub ip: Option<String>,
    /// `id`.
    pub id: Option<String>,
    /// `data`.
    pub data: Option<String>,
}

fn sign(key: &[u8], text: &str) -> String {
    let k = hmac::Key::new(hmac::HMAC_SHA256, key);
    hex::encode(hmac::sign(&k, text.as_bytes()).as_ref())
}

/// Mints an ACL token in Akamai's field order.
pub fn mint(key: &[u8], salt: Option<&str>, g: &Grant) -> String {
    let mut fields = Vec::new();
    if let Some(ip) = &g.ip {
        fields.push(format!("ip={ip}"));
    }
    if let Some(st) = g.start {
        fields.push(format!("st={st}"));
    }
    fields.push(format!("exp={}", g.exp));
    fields.push(format!("acl={}", g.acl.join("!")));
    if let Some(id) = &g.id {
        fields.push(format!("id={id}"));
    }
    if let Some(d) = &g.data {
        fields.push(format!("data={d}"));
    }
    let body = fields.join("~");
    let mut signed = body.clone();
    if let Some(s) = salt {
        signed.push_str("~salt=");
        signed.push_str(s);
    }
    format!("{body}~hmac={}", sign(key, &signed))
}

/// Checks `token` for a request of `path` from `client` at Unix time `now`.
///
/// # Errors
/// The [`Refusal`]: the signature is checked first, so a changed field reads as
/// [`Refusal::BadSignature`], never as the changed value.
pub fn verify(
    token: &str,
    key: &[u8],
    salt: Option<&str>,
    path: &str,
    client: IpAddr,
    now: u64,
) -> Result<Claims, Refusal> {
    if token.is_empty() || token.len() > MAX_TOKEN_LEN {
        return Err(Refusal::Malformed);
    }
    let (body, mac_hex) = token.rsplit_once("~hmac=").ok_or(Refusal::Malformed)?;
    let mac = hex::decode(mac_hex).map_err(|_| Refusal::Malformed)?;
    let mut f = Fields::default();
    for field in body.split('~') {
        let (k, v) = field.split_once('=').ok_or(Refusal::Malformed)?;
        let slot = match k {
            "ip" => &mut f.ip,
            "st" => &mut f.st,
            "exp" => &mut f.exp,
            "acl" => &mut f.acl,
            "id" => &mut f.id,
            "data" => &mut f.data,
            _ => return Err(Refusal::Malformed),
        };
        if slot.replace(v).is_some() {
            return Err(Refusal::Malformed);
        }
    }
    let exp = f.exp.and_then(num).ok_or(Refusal::Malformed)?;
    let st = match f.st {
        Some(s) => Some(num(s).ok_or(Refusal::Malformed)?),
        None => None,
    };
    let mut signed = body.to_owned();
    if f.acl.is_none() {
        // A URL token: the URL is signed but not sent; it is the request's path.
        signed.push_str("~url=");
        signed.push_str(path);
    }
    if let Some(s) = salt {
        signed.push_str("~salt=");
        signed.push_str(s);
    }
    let k = hmac::Key::new(hmac::HMAC_SHA256, key);
    hmac::verify(&k, signed.as_bytes(), &mac).map_err(|_| Refusal::BadSignature)?;
    if st.is_some_and(|st| now < st) {
        return Err(Refusal::NotYetValid);
    }
    if now >= exp {
        return Err(Refusal::Expired);
    }
    if let Some(ip) = f.ip {
        let want = percent_decode(ip).parse::<IpAddr>().ok();
        if want.map(canonical) != Some(canonical(client)) {
            return Err(Refusal::IpMismatch);
        }
    }
    let covered = match f.acl {
        Some(acl) => acl.split('!').any(|p| glob(p.as_bytes(), path.as_bytes())),
        // A URL token's path was part of the signed text.
        None => true,
    };
    if !covered {
        return Err(Refusal::OutsideAcl);
    }
    Ok(Claims {
        id: f.id.map(percent_decode),
        exp,
    })
}

#[derive(Default)]
struct Fields<'a> {
    ip: Option<&'a str>,
    st: Option<&'a str>,
    exp: Option<&'a str>,
    acl: Option<&'a str>,
    id: Option<&'a str>,
    data: Option<&'a str>,
}

fn num(s: &str) -> Option<u64> {
    (!s.is_empty() && s.len() <= 19 && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

/// Akamai's `escape_early` url-quotes `ip` and `id`; plain values pass unchanged.
fn percent_decode(s: &str) -> String {
    form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// `*` matches any run of bytes (including `/`), `?` exactly one; the rest literally.
/// Iterative with one backtrack point, so a hostile pattern costs O(len²) at worst.
fn glob(pat: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pat.len() && (pat[p] == b'?' || pat[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pat.len() && pat[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pat[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "00112233445566778899aabbccddeeff";
    const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    fn key() -> Vec<u8> {
        hex::decode(KEY).unwrap()
    }

    fn grant(acl: &str) -> Grant {
        Grant {
            acl: vec![acl.into()],
            exp: 2000,
            ..Grant::default()
        }
    }

    /// The token Akamai's reference generator (EdgeAuth-Token-Python, `sha256`,
    /// `escape_early=False`) builds for key KEY, `end_time=2000`, `acl=/live/demo/*`; the
    /// HMAC was computed independently with `printf 'exp=2000~acl=/live/demo/*' |
    /// openssl dgst -sha256 -mac HMAC -macopt hexkey:KEY`.
    #[test]
    fn akamai_layout_and_hmac_input() {
        let t = mint(&key(), None, &grant("/live/demo/*"));
        assert_eq!(
            t,
            "exp=2000~acl=/live/demo/*~hmac=3c21bb718cdb96b35510263e5e2791144c0de61e8b666d555013952c70df9a68"
        );
        let full = mint(
            &key(),
            Some("pepper"),
            &Grant {
                acl: vec!["/live/a/*".into(), "/live/b/*".into()],
                start: Some(1000),
                exp: 2000,
                ip: Some("127.0.0.1".into()),
                id: Some("s1".into()),
                data: Some("d".into()),
            },
        );
        let body = "ip=127.0.0.1~st=1000~exp=2000~acl=/live/a/*!/live/b/*~id=s1~data=d";
        assert_eq!(
            full,
            format!(
                "{body}~hmac={}",
                sign(&key(), &format!("{body}~salt=pepper"))
            )
        );
        let ok = verify(&full, &key(), Some("pepper"), "/live/b/x.m4s", LOCAL, 1500);
        assert_eq!(
            ok,
            Ok(Claims {
                id: Some("s1".into()),
                exp: 2000
            })
        );
        // Without the salt the HMAC differs.
        assert_eq!(
            verify(&full, &key(), None, "/live/b/x.m4s", LOCAL, 1500),
            Err(Refusal::BadSignature)
        );
    }

    #[test]
    fn the_matrix() {
        let k = key();
        let t = mint(&k, None, &grant("/live/demo/*"));
        let v = |tok: &str, path: &str, ip: IpAddr, now: u64| verify(tok, &k, None, path, ip, now);
        assert!(v(&t, "/live/demo/index.m3u8", LOCAL, 1999).is_ok());
        assert_eq!(v(&t, "/live/demo/x", LOCAL, 2000), Err(Refusal::Expired));
        assert_eq!(v(&t, "/live/other/x", LOCAL, 10), Err(Refusal::OutsideAcl));
        let wrong = mint(&[7u8; 16], None, &grant("/live/demo/*"));
        assert_eq!(
            v(&wrong, "/live/demo/x", LOCAL, 10),
            Err(Refusal::BadSignature)
        );
        let tampered = t.replace("exp=2000", "exp=9999");
        assert_eq!(
            v(&tampered, "/live/demo/x", LOCAL, 10),
            Err(Refusal::BadSignature)
        );
        let widened = t.replace("/live/demo/*", "/live/*");
        assert_eq!(
            v(&widened, "/live/other/x", LOCAL, 10),
            Err(Refusal::BadSignature)
        );
        let later = mint(
            &k,
            None,
            &Grant {
                start: Some(100),
                ..grant("/live/demo/*")
            },
        );
        assert_eq!(
            v(&later, "/live/demo/x", LOCAL, 99),
            Err(Refusal::NotYetValid)
        );
        assert!(v(&later, "/live/demo/x", LOCAL, 100).is_ok());
        let bound = mint(
            &k,
            None,
            &Grant {
                ip: Some("127.0.0.2".into()),
                ..grant("/live/demo/*")
            },
        );
        assert_eq!(
            v(&bound, "/live/demo/x", LOCAL, 10),
            Err(Refusal::IpMismatch)
        );
        let two = "127.0.0.2".parse().unwrap();
        assert!(v(&bound, "/live/demo/x", two, 10).is_ok());
        let mapped = "::ffff:127.0.0.2".parse().unwrap();
        assert!(v(&bound, "/live/demo/x", mapped, 10).is_ok());
        for bad in [
            "",
            "exp=1",
            "exp=1~hmac=zz",
            "exp=x~acl=/*~hmac=00",
            "acl=/*~hmac=00",
            "exp=1~exp=2~acl=/*~hmac=00",
            "exp=1~foo=2~acl=/*~hmac=00",
            "exp=1~acl=/*~url=/x~hmac=00",
            "exp=1~acl=/*~salt=x~hmac=00",
            "noequals~hmac=00",
        ] {
            assert_eq!(
                v(bad, "/live/demo/x", LOCAL, 0),
                Err(Refusal::Malformed),
                "{bad}"
            );
        }
        assert_eq!(
            v(&"a".repeat(MAX_TOKEN_LEN + 1), "/", LOCAL, 0),
            Err(Refusal::Malformed)
        );
    }

    #[test]
    fn url_tokens_sign_the_path() {
        let k = key();
        let body = "exp=2000";
        let t = format!(
            "{body}~hmac={}",
            sign(&k, "exp=2000~url=/live/demo/index.m3u8")
        );
        assert!(verify(&t, &k, None, "/live/demo/index.m3u8", LOCAL, 1).is_ok());
        assert_eq!(
            verify(&t, &k, None, "/live/demo/p1.m4s", LOCAL, 1),
            Err(Refusal::BadSignature)
        );
    }

    #[test]
    fn globs() {
        assert!(glob(b"/live/demo/*", b"/live/demo/720p/p1.m4s"));
        assert!(glob(b"/live/*/index.m3u8", b"/live/x/index.m3u8"));
        assert!(glob(b"/live/?/a", b"/live/x/a"));
        assert!(!glob(b"/live/?/a", b"/live/xy/a"));
        assert!(!glob(b"/live/demo/*", b"/live/demo2/x"));
        assert!(glob(b"/live/demo*", b"/live/demo2/x"));
        assert!(glob(b"*", b""));
        assert!(!glob(b"/live/demo", b"/live/demo/x"));
        assert!(glob(
            b"*a*a*a*a*b",
            &[b'a'; 40].iter().copied().chain([b'b']).collect::<Vec<_>>()
        ));
        assert!(!glob(b"*a*a*a*a*b", &[b'a'; 200]));
    }

    /// Outside input: every one-byte change of a valid token, every truncation and a
    /// batch of pseudo-random strings; nothing panics, and any change to the signed
    /// text is refused.
    #[test]
    fn mutated_tokens_never_panic() {
        let k = key();
        let t = mint(
            &k,
            None,
            &Grant {
                ip: Some("127.0.0.1".into()),
                start: Some(1),
                id: Some("x".into()),
                ..grant("/live/demo/*!/live/d?mo/*")
            },
        );
        let signed_len = t.rfind("~hmac=").unwrap();
        let check = |s: &str| verify(s, &k, Some("salt"), "/live/demo/p1.m4s", LOCAL, 10);
        for i in 0..t.len() {
            for b in [b'~', b'=', b'!', b'*', b'?', b'0', b'z', b'%', 0xff] {
                let mut m = t.clone().into_bytes();
                if m[i] == b {
                    continue;
                }
                m[i] = b;
                let Ok(s) = String::from_utf8(m) else {
                    continue;
                };
                let r = verify(&s, &k, None, "/live/demo/p1.m4s", LOCAL, 10);
                if i < signed_len {
                    assert!(r.is_err(), "{s}");
                }
                let _ = check(&s);
            }
            let _ = check(&t[..i]);
        }
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..2000 {
            let len = (x % 200) as usize;
            let s: String = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    char::from(b"~=!*?hmacexpstacl0123456789abcdef/%."[(x % 36) as usize])
                })
                .collect();
            let _ = check(&s);
            let _ = glob(s.as_bytes(), b"/live/demo/abc");
            let _ = crate::auth::carry::carry(&s, "t=1");
            let _ = crate::auth::carry::split_path(&s);
            let _ = crate::auth::carry::from_query(Some(&s), "hmac");
        }
    }
}
