//! A bearer-token server for the test registry: Docker's token protocol, as Docker Hub and most
//! private registries authenticate. `GET /token?service=S&scope=repository:NAME:pull,push&account=A`
//! with Basic credentials answers `{"token", "access_token", "expires_in"}`: a JWT signed ES256
//! whose `x5c` header carries the signing certificate, which docker-registry trusts through its
//! `auth: token: rootcertbundle`. Wrong credentials get 401; no credentials get a token that grants
//! nothing (as Docker Hub does, so the registry itself refuses the private repository). Plain
//! HTTP on 127.0.0.1; every token issued is recorded, so a test can prove tokens were used.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};

/// The `iss` of every token, the registry's `auth: token: issuer`.
pub const ISSUER: &str = "shoal-test-token-issuer";
/// How long a token lives.
const LIFETIME_SECS: u64 = 300;

/// One token handed out: to whom (None: anonymous) and the scopes it grants.
#[derive(Debug, Clone, PartialEq)]
pub struct Issued {
    pub account: Option<String>,
    pub access: Vec<Access>,
}

/// A grant in a token's `access` claim.
#[derive(Debug, Clone, PartialEq)]
pub struct Access {
    pub kind: String,
    pub name: String,
    pub actions: Vec<String>,
}

/// Signs tokens: an ECDSA P-256 key and its self-signed certificate.
pub struct Signer {
    key: EcdsaKeyPair,
    cert_der: Vec<u8>,
    pub cert_pem: String,
}

impl Signer {
    pub fn generate() -> Signer {
        let pair = rcgen::KeyPair::generate().expect("generate a P-256 key");
        let cert = rcgen::CertificateParams::new(vec![ISSUER.to_string()])
            .expect("certificate params")
            .self_signed(&pair)
            .expect("self-sign the token certificate");
        let key = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            &pair.serialize_der(),
            &SystemRandom::new(),
        )
        .expect("ring reads rcgen's key");
        Signer {
            key,
            cert_der: cert.der().to_vec(),
            cert_pem: cert.pem(),
        }
    }

    /// A compact JWS of `claims`: ES256 (r ‖ s, as JWS wants), the certificate in `x5c`.
    pub fn sign(&self, claims: &serde_json::Value) -> String {
        let header = serde_json::json!({
            "typ": "JWT",
            "alg": "ES256",
            "x5c": [STANDARD.encode(&self.cert_der)],
        });
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let sig = self
            .key
            .sign(&SystemRandom::new(), input.as_bytes())
            .expect("ECDSA signing");
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    }
}

/// A `scope` parameter (`repository:NAME:pull,push`; NAME may hold `:` only in a tag-less
/// form, so the last `:` separates the actions). Only pull and push are granted.
pub fn parse_scope(scope: &str) -> Option<Access> {
    let (kind, rest) = scope.split_once(':')?;
    let (name, actions) = rest.rsplit_once(':')?;
    Some(Access {
        kind: kind.to_string(),
        name: name.to_string(),
        actions: actions
            .split(',')
            .filter(|a| matches!(*a, "pull" | "push"))
            .map(str::to_string)
            .collect(),
    })
}

/// The claims of a token for `account` (None: anonymous, granted nothing) asking `scopes`.
pub fn claims(
    account: Option<&str>,
    service: &str,
    scopes: &[Access],
    now: u64,
    jti: &str,
) -> serde_json::Value {
    let access: Vec<_> = if account.is_some() {
        scopes
            .iter()
            .filter(|a| a.kind == "repository")
            .map(|a| serde_json::json!({"type": a.kind, "name": a.name, "actions": a.actions}))
            .collect()
    } else {
        Vec::new()
    };
    serde_json::json!({
        "iss": ISSUER,
        "sub": account.unwrap_or(""),
        "aud": service,
        "exp": now + LIFETIME_SECS,
        "nbf": now.saturating_sub(10),
        "iat": now,
        "jti": jti,
        "access": access,
    })
}

/// `%XX` and `+` decoded, as in a query string.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                match std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The decoded `key=value` pairs of a request target's query.
pub fn query_pairs(target: &str) -> Vec<(String, String)> {
    let query = target.split_once('?').map_or("", |(_, q)| q);
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// `user` and `password` from an `Authorization: Basic …` value.
pub fn basic_credentials(header: &str) -> Option<(String, String)> {
    let encoded = header.strip_prefix("Basic ")?.trim();
    let decoded = String::from_utf8(STANDARD.decode(encoded).ok()?).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

struct State {
    signer: Signer,
    user: String,
    password: String,
    issued: Mutex<Vec<Issued>>,
    refused: Mutex<usize>,
}

/// The running server; stopped on drop.
pub struct TokenServer {
    state: Arc<State>,
    stop: Arc<AtomicBool>,
    port: u16,
    /// The signing certificate, for the registry's `rootcertbundle`.
    pub cert_bundle: PathBuf,
}

impl TokenServer {
    /// Serves tokens for one user, `user`/`password`; writes the certificate for the registry
    /// to trust under `dir`: the signer's when `trusted`, else another key's (so the registry
    /// refuses every token, as with a misconfigured `rootcertbundle`).
    pub fn start(dir: &Path, user: &str, password: &str, trusted: bool) -> TokenServer {
        let signer = Signer::generate();
        let cert_bundle = dir.join("token-signer.crt");
        let pem = if trusted {
            signer.cert_pem.clone()
        } else {
            Signer::generate().cert_pem
        };
        std::fs::write(&cert_bundle, pem).expect("write the token certificate");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the token server");
        let port = listener.local_addr().expect("its address").port();
        let state = Arc::new(State {
            signer,
            user: user.to_string(),
            password: password.to_string(),
            issued: Mutex::new(Vec::new()),
            refused: Mutex::new(0),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let (st, stopping) = (state.clone(), stop.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(stream) = stream {
                    let st = st.clone();
                    // One thread a connection: a client holding one open blocks no other.
                    std::thread::spawn(move || serve(&st, stream));
                }
            }
        });
        TokenServer {
            state,
            stop,
            port,
            cert_bundle,
        }
    }

    /// The registry's `auth: token: realm`.
    pub fn realm(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.port)
    }

    /// Every token issued so far.
    pub fn issued(&self) -> Vec<Issued> {
        self.state
            .issued
            .lock()
            .map(|i| i.clone())
            .unwrap_or_default()
    }

    /// How many requests were refused for wrong credentials.
    pub fn refused(&self) -> usize {
        self.state.refused.lock().map(|r| *r).unwrap_or_default()
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so that it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Answers one request on `stream`.
fn serve(state: &State, mut stream: TcpStream) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let Ok(reader) = stream.try_clone() else {
        return;
    };
    let mut lines = BufReader::new(reader).lines();
    let target = match lines.next() {
        Some(Ok(line)) => line.split_whitespace().nth(1).unwrap_or("").to_string(),
        _ => return,
    };
    let mut authorization = None;
    for line in lines.by_ref() {
        let Ok(line) = line else { return };
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("authorization") {
                authorization = Some(value.trim().to_string());
            }
        }
    }
    let (status, body) = answer(state, &target, authorization.as_deref());
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
}

/// The status line and body for a request of `target` with `authorization`.
fn answer(state: &State, target: &str, authorization: Option<&str>) -> (&'static str, String) {
    if !target.starts_with("/token") {
        return ("404 Not Found", "{}".to_string());
    }
    let account = match authorization {
        None => None,
        Some(header) => match basic_credentials(header) {
            Some((u, p)) if u == state.user && p == state.password => Some(u),
            _ => {
                if let Ok(mut refused) = state.refused.lock() {
                    *refused += 1;
                }
                let body = r#"{"errors":[{"code":"UNAUTHORIZED","message":"incorrect username or password"}]}"#;
                return ("401 Unauthorized", body.to_string());
            }
        },
    };
    let pairs = query_pairs(target);
    let service = pairs
        .iter()
        .find(|(k, _)| k == "service")
        .map_or("", |(_, v)| v.as_str());
    let scopes: Vec<Access> = pairs
        .iter()
        .filter(|(k, _)| k == "scope")
        .flat_map(|(_, v)| v.split(' ').filter_map(parse_scope).collect::<Vec<_>>())
        .collect();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut jti = [0u8; 16];
    let _ = ring::rand::SecureRandom::fill(&SystemRandom::new(), &mut jti);
    let jti = hex::encode(jti);
    let token = state
        .signer
        .sign(&claims(account.as_deref(), service, &scopes, now, &jti));
    let granted = if account.is_some() {
        scopes
    } else {
        Vec::new()
    };
    if let Ok(mut issued) = state.issued.lock() {
        issued.push(Issued {
            account,
            access: granted,
        });
    }
    let body = serde_json::json!({
        "token": token,
        "access_token": token,
        "expires_in": LIFETIME_SECS,
    });
    ("200 OK", body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_FIXED};

    #[test]
    fn scopes_queries_and_credentials_are_read() {
        let a = parse_scope("repository:private/busybox:pull,push,delete").unwrap();
        assert_eq!(a.kind, "repository");
        assert_eq!(a.name, "private/busybox");
        assert_eq!(a.actions, ["pull", "push"]);
        assert_eq!(parse_scope("nonsense"), None);
        let q = query_pairs("/token?service=reg&scope=repository%3Aa%2Fb%3Apull&account=al+ice");
        assert_eq!(
            q,
            [
                ("service".to_string(), "reg".to_string()),
                ("scope".to_string(), "repository:a/b:pull".to_string()),
                ("account".to_string(), "al ice".to_string()),
            ]
        );
        assert_eq!(query_pairs("/token"), []);
        assert_eq!(percent_decode("100%"), "100%");
        let header = format!("Basic {}", STANDARD.encode("alice:pa:ss"));
        assert_eq!(
            basic_credentials(&header),
            Some(("alice".to_string(), "pa:ss".to_string()))
        );
        assert_eq!(basic_credentials("Bearer x"), None);
    }

    #[test]
    fn claims_grant_the_asked_scopes_to_users_only() {
        let scopes = [parse_scope("repository:p/b:pull").unwrap()];
        let c = claims(Some("alice"), "reg", &scopes, 1000, "j1");
        assert_eq!(c["iss"], ISSUER);
        assert_eq!(c["sub"], "alice");
        assert_eq!(c["aud"], "reg");
        assert_eq!(
            (c["nbf"].as_u64(), c["exp"].as_u64()),
            (Some(990), Some(1300))
        );
        assert_eq!(
            c["access"],
            serde_json::json!([{"type": "repository", "name": "p/b", "actions": ["pull"]}])
        );
        let anon = claims(None, "reg", &scopes, 1000, "j2");
        assert_eq!(anon["access"], serde_json::json!([]));
    }

    #[test]
    fn tokens_verify_with_the_certificate_in_their_header() {
        let signer = Signer::generate();
        let token = signer.sign(&serde_json::json!({"sub": "alice"}));
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(header["alg"], "ES256");
        let der = STANDARD.decode(header["x5c"][0].as_str().unwrap()).unwrap();
        assert_eq!(der, signer.cert_der);
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let public = cert.public_key().subject_public_key.data.to_vec();
        let sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        let signed = format!("{}.{}", parts[0], parts[1]);
        let key = UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, public);
        assert!(key.verify(signed.as_bytes(), &sig).is_ok());
        assert!(key.verify(b"tampered", &sig).is_err());
    }
}
