//! OIDC userinfo (Core §5.3): a Bearer access token in the Authorization header, never in the
//! query string. Errors per RFC 6750 §3.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use portcullis_core::code_flow::userinfo_claims;
use portcullis_core::oauth;

use crate::errors::InternalError;
use crate::state::AppState;

fn challenge(status: StatusCode, error: Option<&str>) -> HttpResponse {
    let value = match error {
        Some(e) => format!(r#"Bearer realm="portcullis", error="{e}""#),
        None => r#"Bearer realm="portcullis""#.to_owned(),
    };
    let mut res = HttpResponse::build(status);
    res.insert_header((header::CACHE_CONTROL, "no-store"));
    if let Ok(v) = HeaderValue::from_str(&value) {
        res.insert_header((header::WWW_AUTHENTICATE, v));
    }
    match error {
        Some(e) => res.json(serde_json::json!({ "error": e })),
        None => res.finish(),
    }
}

pub async fn userinfo(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, InternalError> {
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    // A token in the URL leaks into logs and Referer headers: refused outright (RFC 9700 §2.2.1).
    if web::Query::<Vec<(String, String)>>::from_query(req.query_string())
        .is_ok_and(|q| q.iter().any(|(k, _)| k == "access_token"))
    {
        return Ok(challenge(StatusCode::BAD_REQUEST, Some("invalid_request")));
    }
    let Some(header) = header else {
        return Ok(challenge(StatusCode::UNAUTHORIZED, None));
    };
    let token = match header.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer")
                && !token.trim().is_empty()
                && !token.trim().contains(char::is_whitespace) =>
        {
            token.trim().to_owned()
        }
        _ => return Ok(challenge(StatusCode::BAD_REQUEST, Some("invalid_request"))),
    };
    let st = state.clone();
    let found = web::block(
        move || -> anyhow::Result<Option<(String, bool, Option<portcullis_core::model::User>)>> {
            let ctx = st.oauth_context();
            let Some(claims) = oauth::active_access_token(&ctx, st.grants.as_ref(), &token)? else {
                return Ok(None);
            };
            // Meant for this server: a token for another audience is not a userinfo token.
            if !claims.aud.contains(st.issuer.as_str()) {
                return Ok(None);
            }
            // Without `openid` the answer is 403 whoever the user is: no need to look.
            let openid = claims.scope.split(' ').any(|s| s == "openid");
            let user = match uuid::Uuid::parse_str(&claims.sub) {
                Ok(id) if openid && claims.gid.is_some() => st
                    .users
                    .find_user(portcullis_core::model::UserId(id))?
                    .filter(|u| u.status == portcullis_core::model::UserStatus::Active),
                _ => None,
            };
            Ok(Some((claims.scope, claims.roles.is_some(), user)))
        },
    )
    .await??;
    Ok(match found {
        None => challenge(StatusCode::UNAUTHORIZED, Some("invalid_token")),
        Some((scope, _, _)) if !scope.split(' ').any(|s| s == "openid") => {
            challenge(StatusCode::FORBIDDEN, Some("insufficient_scope"))
        }
        Some((_, _, None)) => challenge(StatusCode::UNAUTHORIZED, Some("invalid_token")),
        Some((scope, roles, Some(user))) => HttpResponse::Ok()
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .json(userinfo_claims(&user, &scope, roles)),
    })
}
