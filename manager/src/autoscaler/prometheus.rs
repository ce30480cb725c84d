//! Evaluating a PromQL policy: one instant query against the swarm's Prometheus
//! (`Cluster.prometheus_url`, set with `shoal swarm update --prometheus-url`), through its
//! HTTP API (`GET /api/v1/query`).
//!
//! The query must come to one number: a scalar, or a vector of exactly one sample (aggregate
//! with `sum()`/`avg()`). Like HPA's `Value` target, that number is compared with the policy's
//! target for the whole service, so a per-replica quantity (an average) is what to ask for.

use std::time::Duration;

use serde_json::Value;

/// How long one query may take, connection included. Kept short: a round evaluates every
/// query policy, and a server that does not answer only holds the replica count.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QueryError {
    #[error("invalid Prometheus URL {url:?}: {detail}")]
    BadUrl { url: String, detail: String },
    #[error("cannot reach Prometheus at {url}: {detail}")]
    Unreachable { url: String, detail: String },
    #[error("Prometheus refused the query ({kind}): {message}")]
    Refused { kind: String, message: String },
    #[error("Prometheus at {url} answered HTTP {status}: {body}")]
    Http {
        url: String,
        status: u16,
        body: String,
    },
    #[error("the query returned no data")]
    NoData,
    #[error(
        "the query returned {0} series; aggregate them to one value (e.g. with sum() or avg())"
    )]
    Series(usize),
    #[error("the query's value is not a number ({0})")]
    NotANumber(String),
    #[error("unexpected answer from Prometheus: {0}")]
    BadAnswer(String),
    #[error("cannot set up the HTTP client: {0}")]
    Client(String),
}

/// Checks a Prometheus base URL: http or https, with a host.
pub fn validate_url(url: &str) -> Result<reqwest::Url, QueryError> {
    let bad = |detail: &str| QueryError::BadUrl {
        url: url.to_string(),
        detail: detail.to_string(),
    };
    let parsed = reqwest::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(bad(
            "use an http:// or https:// URL, e.g. http://127.0.0.1:9090",
        ));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(bad("the URL has no host"));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(bad(
            "give the server's base URL, without a query or fragment",
        ));
    }
    Ok(parsed)
}

/// The error and its causes on one line: reqwest's own message names only the request.
fn chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

/// The value of a `/api/v1/query` answer (HTTP status `status`, body `body`).
pub fn parse_answer(status: u16, body: &[u8]) -> Result<f64, QueryError> {
    let json: Value = serde_json::from_slice(body).map_err(|_| {
        QueryError::BadAnswer(format!(
            "HTTP {status}, not JSON: {}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        ))
    })?;
    if json["status"] != "success" {
        return Err(QueryError::Refused {
            kind: json["errorType"].as_str().unwrap_or("error").to_string(),
            message: json["error"].as_str().unwrap_or("no message").to_string(),
        });
    }
    let data = &json["data"];
    let sample = match data["resultType"].as_str() {
        Some("scalar") => &data["result"],
        Some("vector") => {
            let series = data["result"]
                .as_array()
                .ok_or_else(|| QueryError::BadAnswer("vector result is not a list".into()))?;
            match series.len() {
                0 => return Err(QueryError::NoData),
                1 => &series[0]["value"],
                n => return Err(QueryError::Series(n)),
            }
        }
        Some(other) => {
            return Err(QueryError::BadAnswer(format!(
                "a {other} result; the query must give a scalar or a one-sample vector"
            )))
        }
        None => return Err(QueryError::BadAnswer("no resultType".into())),
    };
    // A sample is [timestamp, "value"]; the value is a string so that NaN and ±Inf survive.
    let text = sample[1]
        .as_str()
        .ok_or_else(|| QueryError::BadAnswer(format!("malformed sample {sample}")))?;
    let value: f64 = text
        .parse()
        .map_err(|_| QueryError::NotANumber(text.to_string()))?;
    if value.is_finite() {
        Ok(value)
    } else {
        Err(QueryError::NotANumber(text.to_string()))
    }
}

/// An HTTP client for Prometheus servers.
#[derive(Clone)]
pub struct Prometheus {
    http: reqwest::Client,
}

impl Prometheus {
    pub fn new() -> Result<Prometheus, QueryError> {
        let http = reqwest::Client::builder()
            .timeout(QUERY_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .map_err(|e| QueryError::Client(chain(&e)))?;
        Ok(Prometheus { http })
    }

    /// Evaluates `query` now on the server at `base_url`.
    pub async fn query(&self, base_url: &str, query: &str) -> Result<f64, QueryError> {
        validate_url(base_url)?;
        let endpoint = format!("{}/api/v1/query", base_url.trim_end_matches('/'));
        let response = self
            .http
            .get(&endpoint)
            .query(&[("query", query)])
            .send()
            .await
            .map_err(|e| QueryError::Unreachable {
                url: base_url.to_string(),
                detail: chain(&e),
            })?;
        let status = response.status().as_u16();
        let body = response
            .bytes()
            .await
            .map_err(|e| QueryError::Unreachable {
                url: base_url.to_string(),
                detail: chain(&e),
            })?;
        match parse_answer(status, &body) {
            // Prometheus answers errors with JSON too; anything else is a proxy or a wrong URL.
            Err(QueryError::BadAnswer(_)) if status != 200 => Err(QueryError::Http {
                url: base_url.to_string(),
                status,
                body: String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
            }),
            other => other,
        }
    }

    /// The check made when a query policy is created or changed: the server must answer and
    /// accept the query. A query that has no data yet, or no number yet, is accepted (the
    /// series may appear once the service runs); several series are not, that will not change.
    pub async fn check_query(&self, base_url: &str, query: &str) -> Result<(), QueryError> {
        match self.query(base_url, query).await {
            Ok(_) | Err(QueryError::NoData) | Err(QueryError::NotANumber(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_come_to_one_number() {
        let vector = br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1700000000.1,"42.5"]}]}}"#;
        assert_eq!(parse_answer(200, vector), Ok(42.5));
        let scalar =
            br#"{"status":"success","data":{"resultType":"scalar","result":[1700000000.1,"3"]}}"#;
        assert_eq!(parse_answer(200, scalar), Ok(3.0));
        let empty = br#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert_eq!(parse_answer(200, empty), Err(QueryError::NoData));
        let two = br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"a":"1"},"value":[1,"1"]},{"metric":{"a":"2"},"value":[1,"2"]}]}}"#;
        assert_eq!(parse_answer(200, two), Err(QueryError::Series(2)));
        let nan = br#"{"status":"success","data":{"resultType":"scalar","result":[1,"NaN"]}}"#;
        assert_eq!(
            parse_answer(200, nan),
            Err(QueryError::NotANumber("NaN".into()))
        );
        let matrix = br#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#;
        assert!(matches!(
            parse_answer(200, matrix),
            Err(QueryError::BadAnswer(_))
        ));
        let refused = br#"{"status":"error","errorType":"bad_data","error":"invalid parameter \"query\": 1:5: parse error: unexpected identifier \"bar\""}"#;
        assert_eq!(
            parse_answer(400, refused).unwrap_err().to_string(),
            "Prometheus refused the query (bad_data): invalid parameter \"query\": 1:5: parse \
             error: unexpected identifier \"bar\""
        );
        assert!(matches!(
            parse_answer(404, b"404 page not found"),
            Err(QueryError::BadAnswer(_))
        ));
    }

    #[test]
    fn urls_are_checked() {
        assert!(validate_url("http://127.0.0.1:9090").is_ok());
        assert!(validate_url("https://prom.example.com/prefix/").is_ok());
        for bad in [
            "127.0.0.1:9090",
            "ftp://x",
            "http://",
            "not a url",
            "http://h:9090/?x=1",
        ] {
            assert!(validate_url(bad).is_err(), "{bad} accepted");
        }
    }

    #[tokio::test]
    async fn an_unreachable_server_is_reported_as_such() {
        // A port nothing listens on: bind one, then close it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap();
        let url = format!("http://127.0.0.1:{port}");
        let err = Prometheus::new()
            .unwrap()
            .query(&url, "up")
            .await
            .unwrap_err();
        assert!(matches!(&err, QueryError::Unreachable { .. }), "{err:?}");
        assert!(err
            .to_string()
            .starts_with(&format!("cannot reach Prometheus at {url}: ")));
    }
}
