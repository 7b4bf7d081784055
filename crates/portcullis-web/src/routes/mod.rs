//! The routes, one module per family. Each path is a resource, so a wrong method gets 405.

mod account;
mod account_keys;
mod account_security;
mod authorize;
mod discovery;
mod health;
mod home;
pub(crate) mod login;
mod logout;
mod oauth;
mod registration;
pub(crate) mod second_factor;
mod userinfo;

use actix_web::web;

use crate::paths;

pub fn configure(cfg: &mut web::ServiceConfig, max_body: usize) {
    let oauth_form = || {
        web::FormConfig::default()
            .limit(max_body)
            .error_handler(oauth::form_error)
    };
    let authorize_query = || web::QueryConfig::default().error_handler(authorize::query_error);
    cfg.service(web::resource("/healthz").get(health::healthz))
        .service(web::resource("/readyz").get(health::readyz))
        .service(web::resource("/metrics").get(crate::metrics::scrape))
        .service(web::resource("/").get(home::home))
        .service(web::resource("/static/portcullis.css").get(home::stylesheet))
        .service(web::resource(paths::METADATA).get(discovery::metadata))
        .service(web::resource(paths::OPENID_CONFIGURATION).get(discovery::metadata))
        .service(web::resource(paths::JWKS).get(discovery::jwks))
        .service(
            web::resource(paths::AUTHORIZE)
                .app_data(authorize_query())
                .get(authorize::get)
                .post(authorize::post),
        )
        .service(web::resource(paths::CONSENT).post(authorize::consent))
        .service(
            web::resource(paths::LOGIN)
                .get(login::show)
                .post(login::submit),
        )
        .service(
            web::resource(paths::SECOND_FACTOR)
                .get(second_factor::show)
                .post(second_factor::submit),
        )
        .service(web::resource(paths::ACCOUNT).get(account::show))
        .service(
            web::resource("/account/password")
                .get(account_security::show_password)
                .post(account_security::change_password),
        )
        .service(
            web::resource("/account/sessions/others/revoke").post(account_security::end_others),
        )
        .service(web::resource("/account/sessions/{id}/revoke").post(account_security::end_session))
        .service(
            web::resource(paths::ACCOUNT_TOTP)
                .get(account::show_setup)
                .post(account::submit_setup),
        )
        .service(
            web::resource(paths::ACCOUNT_API_KEYS)
                .get(account_keys::show)
                .post(account_keys::create),
        )
        .service(web::resource("/account/api-keys/{id}/revoke").post(account_keys::revoke))
        .service(web::resource("/account/consents/{client}/revoke").post(account::revoke_consent))
        .service(
            web::resource(paths::CHANGE_PASSWORD)
                .get(login::show_change)
                .post(login::submit_change),
        )
        .service(
            web::resource(paths::TOKEN)
                .app_data(oauth_form())
                .post(oauth::token),
        )
        .service(
            web::resource(paths::USERINFO)
                .get(userinfo::userinfo)
                .post(userinfo::userinfo),
        )
        .service(
            web::resource(paths::INTROSPECT)
                .app_data(oauth_form())
                .post(oauth::introspect),
        )
        .service(
            web::resource(paths::REVOKE)
                .app_data(oauth_form())
                .post(oauth::revoke),
        )
        .service(web::resource(paths::REGISTER).post(registration::register))
        .service(
            web::resource("/oauth2/register/{client_id}")
                .get(registration::read)
                .put(registration::replace)
                .delete(registration::delete),
        )
        .configure(crate::admin::configure)
        .configure(crate::admin_ui::configure)
        .service(
            web::resource(paths::END_SESSION)
                .get(logout::get)
                .post(logout::post),
        );
}
