//! The routes, one module per family. Each path is a resource, so a wrong method gets 405.

mod health;
mod home;

use actix_web::web;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/healthz").get(health::healthz))
        .service(web::resource("/readyz").get(health::readyz))
        .service(web::resource("/").get(home::home))
        .service(web::resource("/static/portcullis.css").get(home::stylesheet));
}
