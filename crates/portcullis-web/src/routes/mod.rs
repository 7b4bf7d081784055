//! The routes, one module per family. Each path is a resource, so a wrong method gets 405.

mod discovery;
mod health;
mod home;
mod oauth;

use actix_web::web;

use crate::paths;

pub fn configure(cfg: &mut web::ServiceConfig, max_body: usize) {
    let oauth_form = || {
        web::FormConfig::default()
            .limit(max_body)
            .error_handler(oauth::form_error)
    };
    cfg.service(web::resource("/healthz").get(health::healthz))
        .service(web::resource("/readyz").get(health::readyz))
        .service(web::resource("/").get(home::home))
        .service(web::resource("/static/portcullis.css").get(home::stylesheet))
        .service(web::resource(paths::METADATA).get(discovery::metadata))
        .service(web::resource(paths::JWKS).get(discovery::jwks))
        .service(
            web::resource(paths::TOKEN)
                .app_data(oauth_form())
                .post(oauth::token),
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
        );
}
