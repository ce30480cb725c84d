//! Image references, normalised as docker does.
//!
//! Every crate names images the same way: `busybox` and `docker.io/library/busybox:latest` are
//! one image, so the manager, the worker's image store and the CLI all go through
//! [`parse_normalized`]. The grammar and the normalisation rules follow docker's
//! `distribution/reference` package (`ParseNormalizedNamed` followed by `TagNameOnly`), so an
//! image name that docker accepts is accepted here and means the same image.

use std::fmt;
use std::str::FromStr;

/// The registry docker uses for names without one.
pub const DEFAULT_REGISTRY: &str = "docker.io";
/// The repository prefix docker adds to single-component names on the default registry.
pub const OFFICIAL_REPO_PREFIX: &str = "library/";
/// The tag docker assumes when a reference has neither tag nor digest.
pub const DEFAULT_TAG: &str = "latest";

/// Docker limits the name (registry + "/" + repository) to this many characters.
const NAME_TOTAL_MAX: usize = 255;
/// Docker limits a tag to this many characters.
const TAG_MAX: usize = 128;

/// A fully normalised image reference: `registry/repository[:tag][@digest]`.
///
/// After [`parse_normalized`] the registry is always set (`docker.io` by default), official
/// images carry their `library/` prefix, and `tag` is `Some("latest")` unless the reference
/// names a digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    /// Registry host with an optional port, e.g. `docker.io` or `localhost:5000`.
    pub registry: String,
    /// Repository path inside the registry, e.g. `library/busybox`.
    pub repository: String,
    pub tag: Option<String>,
    /// Content digest such as `sha256:…`.
    pub digest: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error(
        "invalid reference format: the image reference is empty; give an image such as \
         `busybox` or `registry.example.com/app:1.0`"
    )]
    Empty,
    #[error(
        "invalid repository name ({0}), cannot specify 64-byte hexadecimal strings; name the \
         image by repository (e.g. `busybox`) or by digest (`busybox@sha256:…`)"
    )]
    HexIdentifier(String),
    #[error(
        "invalid reference format: repository name ({repository}) must be lowercase; write it \
         as `{suggestion}`"
    )]
    Uppercase {
        repository: String,
        suggestion: String,
    },
    #[error(
        "invalid reference format \"{reference}\": {detail}; an image reference looks like \
         `[registry[:port]/]repository[:tag][@sha256:digest]`"
    )]
    InvalidFormat { reference: String, detail: String },
    #[error(
        "invalid tag format \"{0}\": a tag is 1 to 128 letters, digits, '_', '.' or '-' and \
         must not start with '.' or '-'"
    )]
    InvalidTag(String),
    #[error("invalid digest format \"{digest}\": {detail}")]
    InvalidDigest { digest: String, detail: String },
    #[error(
        "invalid reference format: repository name ({0}) must not be more than 255 characters"
    )]
    NameTooLong(String),
}

/// Parses `s` as docker does and fills in the defaults: registry `docker.io`, the `library/`
/// prefix for official images, and tag `latest` when neither tag nor digest is given.
///
/// A reference with both a tag and a digest keeps both; the digest is what identifies the
/// content.
pub fn parse_normalized(s: &str) -> Result<Reference, ReferenceError> {
    if s.is_empty() {
        return Err(ReferenceError::Empty);
    }
    if s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(ReferenceError::HexIdentifier(s.to_string()));
    }
    let invalid = |detail: &str| ReferenceError::InvalidFormat {
        reference: s.to_string(),
        detail: detail.to_string(),
    };

    let (named, digest) = match s.split_once('@') {
        Some((named, digest)) => {
            validate_digest(digest)?;
            (named, Some(digest.to_string()))
        }
        None => (s, None),
    };
    // A ':' after the last '/' starts the tag; one before it belongs to the registry's port.
    let last_slash = named.rfind('/');
    let (name, tag) = match named.rfind(':') {
        Some(colon) if last_slash.is_none_or(|slash| colon > slash) => {
            (&named[..colon], Some(named[colon + 1..].to_string()))
        }
        _ => (named, None),
    };
    if let Some(tag) = &tag {
        validate_tag(tag)?;
    }

    let (registry, repository) = split_docker_domain(name);
    if repository.to_lowercase() != repository {
        return Err(ReferenceError::Uppercase {
            suggestion: repository.to_lowercase(),
            repository,
        });
    }
    validate_domain(&registry).map_err(|detail| invalid(&detail))?;
    validate_path(&repository).map_err(|detail| invalid(&detail))?;
    let full_name = format!("{registry}/{repository}");
    if full_name.len() > NAME_TOTAL_MAX {
        return Err(ReferenceError::NameTooLong(full_name));
    }

    let tag = match (tag, &digest) {
        (None, None) => Some(DEFAULT_TAG.to_string()),
        (tag, _) => tag,
    };
    Ok(Reference {
        registry,
        repository,
        tag,
        digest,
    })
}

impl Reference {
    /// `registry/repository`, without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The short form docker prints: `busybox:latest`, `user/app:1`, `localhost:5000/x:latest`.
    pub fn familiar(&self) -> String {
        let mut out = self.familiar_name();
        self.push_suffix(&mut out);
        out
    }

    /// The short repository name docker prints, without tag or digest (`busybox`).
    pub fn familiar_name(&self) -> String {
        if self.registry != DEFAULT_REGISTRY {
            return self.name();
        }
        match self.repository.strip_prefix(OFFICIAL_REPO_PREFIX) {
            Some(short) if !short.contains('/') => short.to_string(),
            _ => self.repository.clone(),
        }
    }

    /// The tag-or-digest a registry is asked for: the digest when there is one, since it pins
    /// the content, otherwise the tag.
    pub fn tag_or_digest(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or(DEFAULT_TAG)
    }

    fn push_suffix(&self, out: &mut String) {
        if let Some(tag) = &self.tag {
            out.push(':');
            out.push_str(tag);
        }
        if let Some(digest) = &self.digest {
            out.push('@');
            out.push_str(digest);
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = self.name();
        self.push_suffix(&mut out);
        f.write_str(&out)
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_normalized(s)
    }
}

/// Docker's `splitDockerDomain`: the first component is a registry only if it looks like a
/// host (has a '.' or ':', is `localhost`, or has upper case, which a repository cannot).
fn split_docker_domain(name: &str) -> (String, String) {
    let (mut domain, mut remainder) = match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.to_lowercase() != first =>
        {
            (first.to_string(), rest.to_string())
        }
        _ => (DEFAULT_REGISTRY.to_string(), name.to_string()),
    };
    if domain == "index.docker.io" {
        domain = DEFAULT_REGISTRY.to_string();
    }
    if domain == DEFAULT_REGISTRY && !remainder.contains('/') {
        remainder = format!("{OFFICIAL_REPO_PREFIX}{remainder}");
    }
    (domain, remainder)
}

/// `host[:port]` where host is a dotted DNS name, an IPv4 address or a bracketed IPv6 address.
fn validate_domain(domain: &str) -> Result<(), String> {
    let (host, port) = if let Some(rest) = domain.strip_prefix('[') {
        let (v6, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("registry \"{domain}\" has an unclosed '['"))?;
        if v6.is_empty() || !v6.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
            return Err(format!("registry \"{domain}\" is not a valid IPv6 address"));
        }
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| format!("unexpected \"{p}\" after IPv6 registry"))?,
            ),
        };
        (None, port)
    } else {
        match domain.split_once(':') {
            Some((host, port)) => (Some(host), Some(port)),
            None => (Some(domain), None),
        }
    };
    if let Some(host) = host {
        let component_ok = |c: &str| {
            !c.is_empty()
                && c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !c.starts_with('-')
                && !c.ends_with('-')
        };
        if !host.split('.').all(component_ok) {
            return Err(format!("registry host \"{host}\" is not a valid host name"));
        }
    }
    if let Some(port) = port {
        if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("registry port \"{port}\" is not a number"));
        }
    }
    Ok(())
}

/// Repository path: '/'-separated components of lower-case letters and digits, joined inside a
/// component by '.', '_', '__' or runs of '-'.
fn validate_path(path: &str) -> Result<(), String> {
    for component in path.split('/') {
        if component.is_empty() {
            return Err("repository name has an empty path component".to_string());
        }
        let bytes = component.as_bytes();
        let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        if !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
            return Err(format!(
                "repository component \"{component}\" must start and end with a lower-case \
                 letter or digit"
            ));
        }
        let mut i = 0;
        while i < bytes.len() {
            if alnum(bytes[i]) {
                i += 1;
                continue;
            }
            let start = i;
            while i < bytes.len() && !alnum(bytes[i]) {
                i += 1;
            }
            let sep = &component[start..i];
            let ok = matches!(sep, "." | "_" | "__") || sep.bytes().all(|b| b == b'-');
            if !ok {
                return Err(format!(
                    "repository component \"{component}\" contains \"{sep}\"; only '.', '_', \
                     '__' or '-' may separate letters and digits"
                ));
            }
        }
    }
    Ok(())
}

fn validate_tag(tag: &str) -> Result<(), ReferenceError> {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let bytes = tag.as_bytes();
    let ok = !bytes.is_empty()
        && bytes.len() <= TAG_MAX
        && word(bytes[0])
        && bytes.iter().all(|&b| word(b) || b == b'.' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(ReferenceError::InvalidTag(tag.to_string()))
    }
}

/// `algorithm:hex`, with the hex length the algorithm requires (as go-digest checks it).
fn validate_digest(digest: &str) -> Result<(), ReferenceError> {
    let err = |detail: &str| ReferenceError::InvalidDigest {
        digest: digest.to_string(),
        detail: detail.to_string(),
    };
    let (algorithm, hex) = digest
        .split_once(':')
        .ok_or_else(|| err("a digest is `sha256:` followed by 64 hex digits"))?;
    let len = match algorithm {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => {
            return Err(err(
                "unsupported digest algorithm; use sha256, sha384 or sha512",
            ))
        }
    };
    if hex.len() != len {
        return Err(err(&format!(
            "a {algorithm} digest has {len} hex digits, this one has {}",
            hex.len()
        )));
    }
    if !hex
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(err("digest must be lower-case hex digits"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn norm(s: &str) -> String {
        parse_normalized(s).expect(s).to_string()
    }

    #[test]
    fn normalises_like_docker() {
        assert_eq!(norm("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(norm("busybox:1.36"), "docker.io/library/busybox:1.36");
        assert_eq!(norm("user/app"), "docker.io/user/app:latest");
        assert_eq!(
            norm("docker.io/busybox"),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(
            norm("index.docker.io/library/busybox"),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(norm("localhost/x"), "localhost/x:latest");
        assert_eq!(norm("localhost:5000/x"), "localhost:5000/x:latest");
        assert_eq!(
            norm("127.0.0.1:5000/test/busybox:1"),
            "127.0.0.1:5000/test/busybox:1"
        );
        assert_eq!(norm("[::1]:5000/a/b:c"), "[::1]:5000/a/b:c");
        assert_eq!(norm("quay.io/a/b/c"), "quay.io/a/b/c:latest");
        // Without a '/', "localhost:5000" is a repository with a tag, as docker reads it.
        assert_eq!(norm("localhost:5000"), "docker.io/library/localhost:5000");
        assert_eq!(
            norm("a__b-c---e/f_g.h"),
            "docker.io/a__b-c---e/f_g.h:latest"
        );
    }

    #[test]
    fn digests_are_kept_and_suppress_the_default_tag() {
        let r = parse_normalized(&format!("busybox@{DIGEST}")).unwrap();
        assert_eq!(r.tag, None);
        assert_eq!(r.digest.as_deref(), Some(DIGEST));
        assert_eq!(r.to_string(), format!("docker.io/library/busybox@{DIGEST}"));
        assert_eq!(r.tag_or_digest(), DIGEST);

        let r = parse_normalized(&format!("localhost:5000/x:1@{DIGEST}")).unwrap();
        assert_eq!(r.registry, "localhost:5000");
        assert_eq!(r.tag.as_deref(), Some("1"));
        assert_eq!(r.familiar(), format!("localhost:5000/x:1@{DIGEST}"));
    }

    #[test]
    fn fields_and_familiar_form() {
        let r = parse_normalized("busybox").unwrap();
        assert_eq!(r.registry, "docker.io");
        assert_eq!(r.repository, "library/busybox");
        assert_eq!(r.tag.as_deref(), Some("latest"));
        assert_eq!(r.familiar(), "busybox:latest");
        assert_eq!(r.familiar_name(), "busybox");
        assert_eq!(r.name(), "docker.io/library/busybox");
        assert_eq!(
            parse_normalized("user/app:2").unwrap().familiar(),
            "user/app:2"
        );
        assert_eq!(
            parse_normalized("docker.io/library/a/b")
                .unwrap()
                .familiar(),
            "library/a/b:latest"
        );
        assert_eq!(
            parse_normalized("localhost:5000/x").unwrap().familiar(),
            "localhost:5000/x:latest"
        );
        let parsed: Reference = "busybox:1".parse().unwrap();
        assert_eq!(parsed.tag.as_deref(), Some("1"));
    }

    #[test]
    fn uppercase_repository_is_rejected() {
        let err = parse_normalized("Busybox").unwrap_err();
        assert!(matches!(err, ReferenceError::Uppercase { .. }), "{err:?}");
        assert!(err.to_string().contains("must be lowercase"), "{err}");
        assert!(err.to_string().contains("library/busybox"), "{err}");
        assert!(parse_normalized("docker.io/User/app").is_err());
        // Upper case in the first component makes it a registry host, which may have it.
        assert_eq!(norm("Registry.Example/app"), "Registry.Example/app:latest");
        // Tags may have upper case.
        assert_eq!(norm("busybox:V1"), "docker.io/library/busybox:V1");
    }

    #[test]
    fn malformed_references_are_rejected() {
        let bad = [
            "",
            "busybox:",
            "busybox:-x",
            "busybox:.x",
            "busybox:a b",
            "busy box",
            "/busybox",
            "busybox/",
            "a//b",
            "-a/b",
            "a-/b",
            "a/b-",
            "a/.b",
            "a/b..c",
            "a/b___c",
            "localhost:port/x",
            "my_registry.com/x",
            "busybox@sha256:abc",
            "busybox@md5:d41d8cd98f00b204e9800998ecf8427e",
            "busybox@sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            "busybox@",
            "a:b:c",
        ];
        for s in bad {
            assert!(parse_normalized(s).is_err(), "{s:?} should be rejected");
        }
        let long_tag = format!("busybox:{}", "a".repeat(129));
        assert!(matches!(
            parse_normalized(&long_tag),
            Err(ReferenceError::InvalidTag(_))
        ));
        let long_name = format!("example.com/{}", "a".repeat(250));
        assert!(matches!(
            parse_normalized(&long_name),
            Err(ReferenceError::NameTooLong(_))
        ));
        let hex = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert!(matches!(
            parse_normalized(hex),
            Err(ReferenceError::HexIdentifier(_))
        ));
    }
}
