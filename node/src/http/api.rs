//! The gateway's routes (described in `openapi.json` beside this file, which a test
//! checks against [`ROUTES`]), who may call them, and the JSON they speak.
//!
//! Errors are `{"error": {"code", "message"}}` with a stable `code`: `unauthorized`
//! (401), `forbidden` (403), `bad_request` (400), `not_found` (404),
//! `method_not_allowed` (405), `payload_too_large` (413), `out_of_range` (416, with
//! `skip_cursor`), `unavailable` (503), `outcome_unknown` (504), `internal` (500).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use cairn_client::{Cursor, Delivered, Error as ClientError, PublishOptions, ReadOptions, SubscribeOptions};
use cairn_inventory::{DbName, Message, MessageKey, Stored, Topic, TopicFilter, now_ms};
use cairn_transport::{Ack, Identity, Request};
use http_body_util::{BodyExt, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, StatusCode, header};
use serde::Deserialize;
use serde_json::{Value, json};

use super::Gateway;
use super::body::{ResponseBody, full, streamed};
use crate::service::authorize::{Asked, authorize};

/// Every route the gateway serves: (method, path as the OpenAPI document writes it).
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/healthz"),
    ("GET", "/v1/openapi.json"),
    ("GET", "/v1/cluster"),
    ("GET", "/ui"),
    ("POST", "/v1/dbs/{db}/messages"),
    ("GET", "/v1/dbs/{db}/messages"),
    ("GET", "/v1/dbs/{db}/subscribe"),
];

/// The API's description, served at `/v1/openapi.json`.
const OPENAPI: &str = include_str!("openapi.json");
/// The live page of the cluster, served at `/ui`: self-contained (no asset from
/// elsewhere; the Content-Security-Policy says so too).
const UI: &str = include_str!("ui.html");
/// What the page may load: nothing but itself and this site's API.
const UI_POLICY: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:";
/// Largest request body taken.
const MAX_BODY: usize = 16 << 20;
/// Most entries one read answers.
const MAX_READ: usize = 10_000;
/// Longest long poll.
const MAX_WAIT_MS: u64 = 30_000;
/// A subscription quiet for this long gets a line with just its cursor.
const HEARTBEAT: Duration = Duration::from_secs(10);

/// A request the gateway understood.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    Healthz,
    OpenApi,
    Cluster,
    Ui,
    Publish(DbName),
    Read(DbName),
    Subscribe(DbName),
}

/// A response the gateway could not give otherwise.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    extra: Option<(&'static str, Value)>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), extra: None }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    fn response(self) -> hyper::Response<ResponseBody> {
        let mut error = json!({"code": self.code, "message": self.message});
        if let Some((key, value)) = self.extra {
            error[key] = value;
        }
        json_response(self.status, &json!({ "error": error }))
    }
}

impl From<ClientError> for ApiError {
    fn from(error: ClientError) -> Self {
        match error {
            ClientError::Forbidden(why) => Self::new(StatusCode::FORBIDDEN, "forbidden", why),
            ClientError::OutOfRange { shard, gone, skip } => Self {
                extra: Some(("skip_cursor", json!(skip.token()))),
                ..Self::new(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    "out_of_range",
                    format!("shard {shard}: {gone}"),
                )
            },
            ClientError::OutcomeUnknown(why) => {
                Self::new(StatusCode::GATEWAY_TIMEOUT, "outcome_unknown", why)
            }
            ClientError::Invalid(why) => Self::bad_request(why),
            ClientError::Rejected(why) if why.contains("unknown db") => {
                Self::new(StatusCode::NOT_FOUND, "not_found", why)
            }
            ClientError::Rejected(why) => Self::bad_request(why),
            other @ (ClientError::Unreachable(_) | ClientError::Closed(_) | ClientError::Transport(_)) => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", other.to_string())
            }
        }
    }
}

fn json_response(status: StatusCode, value: &Value) -> hyper::Response<ResponseBody> {
    hyper::Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(full(format!("{value}\n")))
        .unwrap_or_else(|_| hyper::Response::new(full("")))
}

/// Which route `method` and `path` name.
fn route(method: &Method, path: &str) -> Result<Route, ApiError> {
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    let (route, allowed): (Route, &Method) = match segments[..] {
        ["healthz"] => (Route::Healthz, &Method::GET),
        ["v1", "openapi.json"] => (Route::OpenApi, &Method::GET),
        ["v1", "cluster"] => (Route::Cluster, &Method::GET),
        ["ui"] => (Route::Ui, &Method::GET),
        ["v1", "dbs", db, "messages"] => {
            let db = decode(db)?.parse::<DbName>().map_err(|e| ApiError::bad_request(e.to_string()))?;
            return match *method {
                Method::POST => Ok(Route::Publish(db)),
                Method::GET => Ok(Route::Read(db)),
                _ => Err(ApiError::new(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method_not_allowed",
                    "use GET or POST",
                )),
            };
        }
        ["v1", "dbs", db, "subscribe"] => {
            let db = decode(db)?.parse::<DbName>().map_err(|e| ApiError::bad_request(e.to_string()))?;
            (Route::Subscribe(db), &Method::GET)
        }
        _ => return Err(ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no route {path}"))),
    };
    if method != allowed && !(method == Method::HEAD && allowed == Method::GET) {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("use {allowed}"),
        ));
    }
    Ok(route)
}

/// What the access table is asked for each route (the QUIC request it stands for).
fn asked_for(route: &Route) -> Option<Request> {
    let db = |db: &DbName| db.clone();
    match route {
        Route::Healthz | Route::OpenApi => None,
        // The page shows the cluster view: who may read it may see the page.
        Route::Cluster | Route::Ui => Some(Request::Dump),
        // Routes stand for the data requests: the table treats them alike.
        Route::Publish(d) | Route::Read(d) | Route::Subscribe(d) => Some(Request::Routes { db: db(d) }),
    }
}

/// Answers one request.
pub(super) async fn handle(
    gateway: &Arc<Gateway>,
    request: hyper::Request<Incoming>,
    by_certificate: &Option<Result<Identity, String>>,
) -> hyper::Response<ResponseBody> {
    match answer(gateway, request, by_certificate).await {
        Ok(response) => response,
        Err(error) => error.response(),
    }
}

async fn answer(
    gateway: &Arc<Gateway>,
    request: hyper::Request<Incoming>,
    by_certificate: &Option<Result<Identity, String>>,
) -> Result<hyper::Response<ResponseBody>, ApiError> {
    let route = route(request.method(), request.uri().path())?;
    let query = parse_query(request.uri().query().unwrap_or(""))?;
    if let Some(asked) = asked_for(&route) {
        // A browser gets to the page through a link that carries a token.
        let in_link = if route == Route::Ui { query.get("token").map(String::as_str) } else { None };
        let identity = identify(gateway, &request, by_certificate, in_link)?;
        let asked = match route {
            Route::Subscribe(_) => Asked::Subscribe,
            _ => Asked::Request(&asked),
        };
        authorize(&identity, asked, None)
            .map_err(|why| ApiError::new(StatusCode::FORBIDDEN, "forbidden", why))?;
    }
    match route {
        Route::Healthz => Ok(json_response(StatusCode::OK, &json!({"status": "ok"}))),
        Route::OpenApi => Ok(hyper::Response::builder()
            .header(header::CONTENT_TYPE, "application/json")
            .body(full(OPENAPI))
            .unwrap_or_else(|_| hyper::Response::new(full("")))),
        Route::Ui => Ok(hyper::Response::builder()
            .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
            .header("content-security-policy", UI_POLICY)
            .header(header::CACHE_CONTROL, "no-store")
            .body(full(UI))
            .unwrap_or_else(|_| hyper::Response::new(full("")))),
        Route::Cluster => {
            let view = gateway.view.borrow().clone();
            let json = serde_json::to_value(&*view)
                .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
            Ok(json_response(StatusCode::OK, &json))
        }
        Route::Publish(db) => publish(gateway, &db, &query, request.into_body()).await,
        Route::Read(db) => read(gateway, &db, &query).await,
        Route::Subscribe(db) => subscribe(gateway, &db, &query).await,
    }
}

/// Who asks: the identity its certificate names, else its bearer token's; neither is a
/// 401, and so is a revoked one.
fn identify(
    gateway: &Gateway,
    request: &hyper::Request<Incoming>,
    by_certificate: &Option<Result<Identity, String>>,
    in_link: Option<&str>,
) -> Result<Identity, ApiError> {
    let unauthorized = |why: String| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", why);
    match by_certificate {
        Some(Ok(identity)) => return Ok(identity.clone()),
        Some(Err(why)) => return Err(unauthorized(format!("the client certificate is not taken: {why}"))),
        None => {}
    }
    let token = match (request.headers().get(header::AUTHORIZATION), in_link) {
        (Some(value), _) => value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| unauthorized("Authorization must be \"Bearer TOKEN\"".into()))?,
        (None, Some(token)) => token,
        (None, None) => {
            return Err(unauthorized(
                "present a client certificate of the cluster, or a bearer token (cairn cluster issue-token)"
                    .into(),
            ));
        }
    };
    let identity = gateway.certificate.trust().check_token(token.trim(), now_ms()).map_err(unauthorized)?;
    if let Some(why) = gateway.endpoint.revoked().revokes_identity(&identity) {
        return Err(unauthorized(why));
    }
    Ok(identity)
}

fn decode(text: &str) -> Result<String, ApiError> {
    percent_encoding::percent_decode_str(text)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| ApiError::bad_request("a percent-encoded part of the URL is not UTF-8"))
}

/// The query string's parameters (percent-decoded; `+` is a plus, as topic filters
/// need).
fn parse_query(query: &str) -> Result<BTreeMap<String, String>, ApiError> {
    let mut out = BTreeMap::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        out.insert(decode(key)?, decode(value)?);
    }
    Ok(out)
}

fn param<T: std::str::FromStr>(query: &BTreeMap<String, String>, name: &str) -> Result<Option<T>, ApiError>
where
    T::Err: std::fmt::Display,
{
    query
        .get(name)
        .map(|v| v.parse::<T>().map_err(|e| ApiError::bad_request(format!("{name}: {e}"))))
        .transpose()
}

/// One message of a publish body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MessageIn {
    #[serde(default)]
    topic: String,
    key: Option<String>,
    payload: Option<String>,
    payload_base64: Option<String>,
    ts_ms: Option<u64>,
}

impl MessageIn {
    fn message(self, n: usize) -> Result<Message, ApiError> {
        let bad = |why: String| ApiError::bad_request(format!("message {n}: {why}"));
        let payload = match (self.payload, self.payload_base64) {
            (Some(text), None) => text.into_bytes(),
            (None, Some(b64)) => STANDARD.decode(b64).map_err(|e| bad(format!("payload_base64: {e}")))?,
            _ => return Err(bad("give exactly one of payload (text) and payload_base64".into())),
        };
        let topic = Topic::new(self.topic).map_err(|e| bad(e.to_string()))?;
        let key =
            self.key.map(|k| MessageKey::new(k.into_bytes())).transpose().map_err(|e| bad(e.to_string()))?;
        Ok(Message { topic, key, ts_ms: self.ts_ms, payload })
    }
}

/// The messages of a publish body: one JSON object, an array of them, or NDJSON lines.
fn parse_messages(body: &[u8]) -> Result<Vec<Message>, ApiError> {
    let whole: Result<Value, _> = serde_json::from_slice(body);
    let values: Vec<Value> = match whole {
        Ok(Value::Array(items)) => items,
        Ok(value) => vec![value],
        Err(_) => body
            .split(|b| *b == b'\n')
            .enumerate()
            .filter(|(_, line)| !line.iter().all(u8::is_ascii_whitespace))
            .map(|(i, line)| {
                serde_json::from_slice(line)
                    .map_err(|e| ApiError::bad_request(format!("line {}: {e}", i + 1)))
            })
            .collect::<Result<_, _>>()?,
    };
    if values.is_empty() {
        return Err(ApiError::bad_request("no message in the body"));
    }
    values
        .into_iter()
        .enumerate()
        .map(|(i, value)| {
            let message: MessageIn = serde_json::from_value(value)
                .map_err(|e| ApiError::bad_request(format!("message {i}: {e}")))?;
            message.message(i)
        })
        .collect()
}

async fn publish(
    gateway: &Gateway,
    db: &DbName,
    query: &BTreeMap<String, String>,
    body: Incoming,
) -> Result<hyper::Response<ResponseBody>, ApiError> {
    let ack: Ack = param(query, "ack")?.unwrap_or_default();
    let bytes = Limited::new(body, MAX_BODY).collect().await.map_err(|e| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the body: {e} (at most {MAX_BODY} bytes)"),
        )
    })?;
    let messages = parse_messages(&bytes.to_bytes())?;
    // Each message to the shard its key (or topic) routes to; each shard's in order.
    let routes = gateway.client.routes(db).await?;
    let shards = routes.settings.shards.get();
    let mut by_shard: BTreeMap<u32, Vec<(usize, Message)>> = BTreeMap::new();
    for (i, message) in messages.into_iter().enumerate() {
        let shard = routes.settings.routing.shard(&message.topic, message.key.as_ref(), shards);
        by_shard.entry(shard).or_default().push((i, message));
    }
    let mut ids: Vec<Option<(u32, Stored)>> = Vec::new();
    for (shard, group) in by_shard {
        let (order, messages): (Vec<usize>, Vec<Message>) = group.into_iter().unzip();
        let options = PublishOptions { ack, shard: Some(shard), ..Default::default() };
        let published = gateway.client.publish(db, messages, &options).await?;
        for (i, stored) in order.into_iter().zip(published.ids) {
            if ids.len() <= i {
                ids.resize(i + 1, None);
            }
            ids[i] = Some((shard, stored));
        }
    }
    let ids: Vec<Value> = ids
        .into_iter()
        .flatten()
        .map(|(shard, s)| {
            let mut id = json!({"shard": shard, "origin": s.id.origin.to_string(), "seq": s.id.seq});
            if s.duplicate {
                id["duplicate"] = json!(true);
            }
            id
        })
        .collect();
    Ok(json_response(StatusCode::OK, &json!({ "ids": ids })))
}

/// The filter, start time, shard and cursor a read or subscription gives.
fn reading(
    query: &BTreeMap<String, String>,
) -> Result<(TopicFilter, Option<u64>, Option<u32>, Cursor), ApiError> {
    let filter = match query.get("filter") {
        Some(f) => TopicFilter::new(f.clone()).map_err(|e| ApiError::bad_request(format!("filter: {e}")))?,
        None => TopicFilter::all(),
    };
    let since_ms = query
        .get("since")
        .map(|s| crate::since::parse_since(s, now_ms()))
        .transpose()
        .map_err(ApiError::bad_request)?;
    let shard = param(query, "shard")?;
    let cursor = match query.get("cursor") {
        Some(token) if !token.is_empty() => {
            Cursor::parse(token).map_err(|e| ApiError::bad_request(e.to_string()))?
        }
        _ => Cursor::default(),
    };
    Ok((filter, since_ms, shard, cursor))
}

/// An entry as the API writes it: text payloads as text, others in base64.
fn entry_json(delivered: &Delivered) -> Value {
    let e = &delivered.entry;
    let mut out = json!({
        "topic": e.topic.as_str(),
        "key": e.key.as_ref().map(|k| String::from_utf8_lossy(k.as_bytes()).into_owned()),
        "ts_ms": e.origin_ms,
        "shard": delivered.shard,
        "origin": e.id.origin.to_string(),
        "seq": e.id.seq,
    });
    match std::str::from_utf8(&e.payload) {
        Ok(text) => out["payload"] = json!(text),
        Err(_) => out["payload_base64"] = json!(STANDARD.encode(&e.payload)),
    }
    out
}

async fn read(
    gateway: &Gateway,
    db: &DbName,
    query: &BTreeMap<String, String>,
) -> Result<hyper::Response<ResponseBody>, ApiError> {
    let (filter, since_ms, shard, cursor) = reading(query)?;
    let max = param::<usize>(query, "max")?.unwrap_or(1000).min(MAX_READ);
    let wait_ms = param::<u64>(query, "wait_ms")?.unwrap_or(0).min(MAX_WAIT_MS);
    let options = ReadOptions { filter, since_ms, shard, max, wait: Duration::from_millis(wait_ms) };
    let batch = gateway.client.read(db, &cursor, &options).await?;
    let entries: Vec<Value> = batch.entries.iter().map(entry_json).collect();
    Ok(json_response(StatusCode::OK, &json!({"entries": entries, "cursor": batch.cursor.token()})))
}

async fn subscribe(
    gateway: &Gateway,
    db: &DbName,
    query: &BTreeMap<String, String>,
) -> Result<hyper::Response<ResponseBody>, ApiError> {
    let (filter, since_ms, shard, cursor) = reading(query)?;
    let options = SubscribeOptions { filter, since_ms, shard, ..Default::default() };
    let mut subscription = gateway.client.subscribe(db, cursor, &options).await?;
    let (lines, body) = tokio::sync::mpsc::channel::<Bytes>(64);
    tokio::spawn(async move {
        loop {
            let line = match tokio::time::timeout(HEARTBEAT, subscription.next()).await {
                Ok(Some(Ok(delivered))) => {
                    let mut line = entry_json(&delivered);
                    line["cursor"] = json!(subscription.cursor().token());
                    line
                }
                Ok(Some(Err(error))) => {
                    let error = ApiError::from(error);
                    let mut line = json!({"error": {"code": error.code, "message": error.message}});
                    if let Some((key, value)) = error.extra {
                        line["error"][key] = value;
                    }
                    let _ = lines.send(Bytes::from(format!("{line}\n"))).await;
                    return;
                }
                Ok(None) => return,
                Err(_) => json!({"cursor": subscription.cursor().token()}),
            };
            if lines.send(Bytes::from(format!("{line}\n"))).await.is_err() {
                return; // The client went away.
            }
        }
    });
    Ok(hyper::Response::builder()
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(streamed(body))
        .unwrap_or_else(|_| hyper::Response::new(full(""))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_openapi_document_describes_exactly_the_routes() {
        let doc: Value = serde_json::from_str(OPENAPI).unwrap();
        let mut described: Vec<(String, String)> = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys().filter(|k| *k != "parameters") {
                described.push((method.to_uppercase(), path.clone()));
            }
        }
        described.sort();
        let mut served: Vec<(String, String)> =
            ROUTES.iter().map(|(m, p)| ((*m).to_owned(), (*p).to_owned())).collect();
        served.sort();
        assert_eq!(described, served);
    }

    #[test]
    fn the_page_fetches_nothing_from_elsewhere() {
        for needle in ["http://", "https://", "//cdn", "src=\"//", "@import", "url("] {
            assert!(!UI.contains(needle), "the page names {needle}");
        }
        assert!(UI.contains("fetch(\"/v1/cluster\""), "the page reads this site's API");
    }

    #[test]
    fn every_route_in_the_table_is_routed_and_nothing_else_is() {
        for (method, path) in ROUTES {
            let method: Method = method.parse().unwrap();
            let path = path.replace("{db}", "demo");
            assert!(route(&method, &path).is_ok(), "{method} {path}");
        }
        assert_eq!(route(&Method::GET, "/v1/nothing").unwrap_err().code, "not_found");
        assert_eq!(route(&Method::DELETE, "/v1/cluster").unwrap_err().code, "method_not_allowed");
        assert_eq!(route(&Method::GET, "/v1/dbs/no%20way/messages").unwrap_err().code, "bad_request");
    }

    #[test]
    fn bodies_are_objects_arrays_or_ndjson_and_anything_else_is_a_bad_request() {
        assert_eq!(parse_messages(br#"{"topic": "a/b", "payload": "x"}"#).unwrap().len(), 1);
        assert_eq!(parse_messages(br#"[{"payload": "x"}, {"payload_base64": "AAE="}]"#).unwrap().len(), 2);
        let ndjson =
            b"{\"topic\":\"a\",\"payload\":\"1\"}\n{\"topic\":\"b\",\"key\":\"k\",\"payload\":\"2\"}\n";
        let messages = parse_messages(ndjson).unwrap();
        assert_eq!(messages[1].key.as_ref().unwrap().as_bytes(), b"k");
        for bad in [
            &b""[..],
            b"nope",
            br#"{"payload": 1}"#,
            br#"{"topic": "a/+", "payload": "x"}"#,
            br#"{"payload": "x", "extra": 1}"#,
            br#"{"payload": "x", "payload_base64": "AA=="}"#,
        ] {
            assert_eq!(
                parse_messages(bad).unwrap_err().code,
                "bad_request",
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn query_values_are_percent_decoded_and_plus_stays_a_plus() {
        let q = parse_query("filter=sensors/+/temp&cursor=c1.x%2Dy&max=5").unwrap();
        assert_eq!(q["filter"], "sensors/+/temp");
        assert_eq!(q["cursor"], "c1.x-y");
        assert_eq!(param::<usize>(&q, "max").unwrap(), Some(5));
        assert!(param::<usize>(&parse_query("max=lots").unwrap(), "max").is_err());
    }
}
