//! The audit log, read-only: a page of records with filters and a cursor, or every matching
//! record exported as JSON lines (or one JSON array), streamed page by page. Nothing here
//! writes: `PUT`, `POST` and `DELETE` get 405.

use actix_web::http::header;
use actix_web::web::Bytes;
use actix_web::{HttpRequest, HttpResponse, web};
use portcullis_core::UnixTime;
use portcullis_core::audit::{AuditQuery, AuditRecord, Outcome};
use portcullis_core::rbac::Permission;
use serde::Deserialize;
use serde_json::json;

use super::openapi::{
    AuditExportFormat, AuditFormat, AuditOrder, AuditPage, AuditRecord as RecordSchema, BadRequest,
    Forbidden, Outcome as OutcomeSchema, Unauthorized,
};
use super::{ApiError, ApiResult, blocking, limit, ok, query, require, time};
use crate::state::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/audit").get(page))
        .service(web::resource("/audit/export").get(export));
}

/// A record as the API shows it. Every field is text we wrote or escaped on the way in; as
/// JSON, any control character in it is escaped again.
pub fn record_json(r: &AuditRecord) -> serde_json::Value {
    let e = &r.event;
    json!({
        "seq": r.seq,
        "id": r.id,
        "occurred_at": time(r.occurred_at),
        "event_type": e.event_type,
        "outcome": e.outcome.as_str(),
        "actor": e.actor,
        "subject": e.subject,
        "client_id": e.client_id,
        "source_ip": e.source_ip,
        "user_agent": e.user_agent,
        "request_id": e.request_id,
        "details": e.details,
        "prev_hash": r.prev_hash,
        "hash": r.hash,
    })
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct Filters {
    /// Records at or after this time: RFC 3339 or seconds since the epoch.
    #[param(example = "2026-11-23T10:00:00Z")]
    since: Option<String>,
    /// Records before this time: RFC 3339 or seconds since the epoch.
    until: Option<String>,
    /// Who acted, exactly: `user:<id>`, `client:<id>`, `cli` or `system`.
    actor: Option<String>,
    /// What it was done to, exactly: `user:<id>`, `role:billing`, `api_key:<id>`, …
    subject: Option<String>,
    /// The client concerned.
    client_id: Option<String>,
    /// An event type (`user.login`) or a family (`user.*`).
    event_type: Option<String>,
    /// `success` or `failure`.
    #[param(value_type = Option<OutcomeSchema>)]
    outcome: Option<String>,
    /// The `next_cursor` of the page before.
    cursor: Option<String>,
    /// How many records, 1 to 500 (a larger number is capped); 50 when not given.
    #[param(minimum = 1)]
    limit: Option<u32>,
    /// `desc` (newest first, the default) or `asc`.
    #[param(value_type = Option<AuditOrder>)]
    order: Option<String>,
    /// `json` (the default) or `jsonl`.
    #[param(value_type = Option<AuditFormat>)]
    format: Option<String>,
}

/// A time given as RFC 3339 or as seconds since the epoch.
fn instant(field: &'static str, raw: &str) -> Result<UnixTime, ApiError> {
    if let Ok(secs) = raw.parse::<i64>() {
        return Ok(UnixTime::from_secs(secs));
    }
    time::OffsetDateTime::parse(raw, &time::format_description::well_known::Rfc3339)
        .map(|t| UnixTime::from_secs(t.unix_timestamp()))
        .map_err(|_| {
            ApiError::field(
                field,
                "is not a time; use RFC 3339 (2026-11-23T10:00:00Z) or seconds since the epoch",
            )
        })
}

/// Free-text filters are compared exactly; they are bounded so a query stays cheap.
fn text(field: &'static str, raw: Option<String>) -> Result<Option<String>, ApiError> {
    match raw {
        Some(v) if v.is_empty() || v.len() > 256 => {
            Err(ApiError::field(field, "must have 1 to 256 characters"))
        }
        other => Ok(other),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    JsonLines,
}

fn parse(f: Filters) -> Result<(AuditQuery, Format), ApiError> {
    let event_type = match f.event_type {
        Some(t) => {
            let name = t.strip_suffix(".*").unwrap_or(&t);
            let ok = !name.is_empty()
                && name.len() <= 64
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._".contains(&b));
            if !ok {
                return Err(ApiError::field(
                    "event_type",
                    "is an event type such as user.login, or a family such as user.*",
                ));
            }
            Some(t)
        }
        None => None,
    };
    let outcome = match f.outcome.as_deref() {
        None => None,
        Some("success") => Some(Outcome::Success),
        Some("failure") => Some(Outcome::Failure),
        Some(_) => return Err(ApiError::field("outcome", "is success or failure")),
    };
    let oldest_first = match f.order.as_deref() {
        None | Some("desc") => false,
        Some("asc") => true,
        Some(_) => return Err(ApiError::field("order", "is asc or desc")),
    };
    let format = match f.format.as_deref() {
        None | Some("json") => Format::Json,
        Some("jsonl") => Format::JsonLines,
        Some(_) => return Err(ApiError::field("format", "is json or jsonl")),
    };
    let cursor = f
        .cursor
        .as_deref()
        .map(|c| {
            c.parse::<i64>()
                .ok()
                .filter(|n| *n >= 0)
                .ok_or_else(|| ApiError::field("cursor", "is not a cursor this API returned"))
        })
        .transpose()?;
    Ok((
        AuditQuery {
            since: f
                .since
                .as_deref()
                .map(|s| instant("since", s))
                .transpose()?,
            until: f
                .until
                .as_deref()
                .map(|s| instant("until", s))
                .transpose()?,
            actor: text("actor", f.actor)?,
            subject: text("subject", f.subject)?,
            client_id: text("client_id", f.client_id)?,
            event_type,
            outcome,
            cursor,
            oldest_first,
            limit: limit(f.limit)?,
        },
        format,
    ))
}

/// The audit query of a filter form's query string: empty fields are left out, and the
/// page holds 50 records unless `limit` says otherwise.
pub fn query_of_form(raw: &str) -> Result<AuditQuery, ApiError> {
    let kept: Vec<(String, String)> = url::form_urlencoded::parse(raw.as_bytes())
        .filter(|(_, v)| !v.trim().is_empty())
        .map(|(k, v)| (k.into_owned(), v.trim().to_owned()))
        .collect();
    let filters: Filters = web::Query::<Filters>::from_query(
        &url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(kept)
            .finish(),
    )
    .map(web::Query::into_inner)
    .map_err(|e| ApiError::bad_request(format!("the filter is not valid: {e}")))?;
    parse(filters).map(|(q, _)| q)
}

/// Read the audit log
///
/// One page of records, newest first unless `order=asc`. The cursor of the next page is in
/// `next_cursor` (JSON) or the `Audit-Next-Cursor` header (JSON lines); none when this is the
/// last. Needs `audit:read`.
#[utoipa::path(
    get,
    path = "/admin/api/audit",
    operation_id = "list_audit_records",
    tag = "audit",
    params(Filters),
    responses(
        (status = 200, description = "A page of records.",
            content(
                (AuditPage = "application/json"),
                (String = "application/x-ndjson"),
            ),
            headers(("Audit-Next-Cursor" = String, description = "With `format=jsonl`: the cursor of the next page, when there is one."))),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
    ),
)]
async fn page(req: HttpRequest, state: web::Data<AppState>) -> ApiResult {
    require(&req, &state, Permission::AuditRead).await?;
    let (q, format) = parse(query(&req)?)?;
    let st = state.clone();
    let wanted = q.limit;
    let records = blocking(move || Ok(st.audit.search_audit(&q)?)).await?;
    let next = (records.len() == wanted as usize)
        .then(|| records.last().map(|r| r.seq.to_string()))
        .flatten();
    match format {
        Format::Json => Ok(ok(&json!({
            "items": records.iter().map(record_json).collect::<Vec<_>>(),
            "next_cursor": next,
        }))),
        Format::JsonLines => {
            let mut res = HttpResponse::Ok();
            res.insert_header((header::CONTENT_TYPE, "application/x-ndjson"))
                .insert_header((header::CACHE_CONTROL, "no-store"));
            if let Some(next) = next {
                res.insert_header(("Audit-Next-Cursor", next));
            }
            Ok(res.body(lines(&records)))
        }
    }
}

fn lines(records: &[AuditRecord]) -> Vec<u8> {
    let mut out = Vec::new();
    for r in records {
        // A Value always serialises.
        if serde_json::to_writer(&mut out, &record_json(r)).is_ok() {
            out.push(b'\n');
        }
    }
    out
}

/// How many records each step of an export reads.
const EXPORT_PAGE: u32 = 500;

/// Where an export has got to.
struct Step {
    q: AuditQuery,
    state: web::Data<AppState>,
    first: bool,
    done: bool,
}

/// The end of an export that failed part-way: the status is already sent, so the body ends
/// short, and the log says why.
fn cut_short(error: &str, mut step: Step) -> (Result<Bytes, actix_web::Error>, Step) {
    tracing::error!(error, "audit export failed part-way");
    step.done = true;
    (
        Err(actix_web::error::ErrorInternalServerError("export failed")),
        step,
    )
}

/// Export the audit log
///
/// Every matching record, oldest first, streamed: JSON lines by default, or one JSON array
/// with `format=json`. Takes the filters of the audit log but `limit` and `order`. Needs
/// `audit:read`.
#[utoipa::path(
    get,
    path = "/admin/api/audit/export",
    operation_id = "export_audit_records",
    tag = "audit",
    params(
        ("since" = Option<String>, Query, description = "Records at or after this time: RFC 3339 or seconds since the epoch."),
        ("until" = Option<String>, Query, description = "Records before this time: RFC 3339 or seconds since the epoch."),
        ("actor" = Option<String>, Query, description = "Who acted, exactly: `user:<id>`, `client:<id>`, `cli` or `system`."),
        ("subject" = Option<String>, Query, description = "What it was done to, exactly: `user:<id>`, `role:billing`, `api_key:<id>`, …"),
        ("client_id" = Option<String>, Query, description = "The client concerned."),
        ("event_type" = Option<String>, Query, description = "An event type (`user.login`) or a family (`user.*`)."),
        ("outcome" = Option<OutcomeSchema>, Query, description = "`success` or `failure`."),
        ("cursor" = Option<String>, Query, description = "Only records after this one: a record's `seq`, or a `next_cursor`."),
        ("format" = Option<AuditExportFormat>, Query, description = "`jsonl` (the default) or `json`."),
    ),
    responses(
        (status = 200, description = "Every matching record, oldest first.",
            content(
                (String = "application/x-ndjson"),
                (Vec<RecordSchema> = "application/json"),
            ),
            headers(("Content-Disposition" = String, description = "`attachment`, named `audit.jsonl` or `audit.json`."))),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
    ),
)]
async fn export(req: HttpRequest, state: web::Data<AppState>) -> ApiResult {
    require(&req, &state, Permission::AuditRead).await?;
    let mut filters: Filters = query(&req)?;
    let as_array = match filters.format.take().as_deref() {
        None | Some("jsonl") => false,
        Some("json") => true,
        Some(_) => return Err(ApiError::field("format", "is jsonl or json")),
    };
    if filters.limit.is_some() || filters.order.is_some() {
        return Err(ApiError::bad_request(
            "an export has every matching record, oldest first: limit and order do not apply",
        ));
    }
    let (mut q, _) = parse(filters)?;
    q.oldest_first = true;
    q.limit = EXPORT_PAGE;
    let start = Step {
        q,
        state: state.clone(),
        first: true,
        done: false,
    };
    let stream = futures_util::stream::unfold(start, move |mut step| async move {
        if step.done {
            return None;
        }
        let (st, q) = (step.state.clone(), step.q.clone());
        let page = match web::block(move || st.audit.search_audit(&q)).await {
            Ok(Ok(page)) => page,
            Ok(Err(e)) => return Some(cut_short(&e.to_string(), step)),
            Err(e) => return Some(cut_short(&e.to_string(), step)),
        };
        let last = page.len() < EXPORT_PAGE as usize;
        step.q.cursor = page.last().map(|r| r.seq).or(step.q.cursor);
        let mut chunk = Vec::new();
        if as_array {
            for r in &page {
                chunk.push(if step.first { b'[' } else { b',' });
                step.first = false;
                // A Value always serialises.
                let _ = serde_json::to_writer(&mut chunk, &record_json(r));
            }
            if last {
                if step.first {
                    chunk.push(b'[');
                }
                chunk.push(b']');
            }
        } else {
            chunk = lines(&page);
        }
        step.done = last;
        Some((Ok::<_, actix_web::Error>(Bytes::from(chunk)), step))
    });
    let content_type = if as_array {
        "application/json"
    } else {
        "application/x-ndjson"
    };
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, content_type))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((
            header::CONTENT_DISPOSITION,
            if as_array {
                "attachment; filename=\"audit.json\""
            } else {
                "attachment; filename=\"audit.jsonl\""
            },
        ))
        .streaming(stream))
}
